//! `proxy` binary: CLI, `.env`, config loading, listeners, logging.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use proxy::access_log::{AccessFormat, AccessOutput};
use proxy::config::{ConfigErrors, ConfigFile, Overrides};
use proxy::log_writer::LogWriter;
use proxy::server::{bind_shared, queued_connections_migrate};
use proxy::ReloadFrom;

/// JWT-aware caching reverse proxy.
///
/// Settings come from the config file, then the environment, then these
/// flags, each overriding the one before.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Path to config.toml.
    #[arg(long, env = "PROXY_CONFIG", default_value = "config.toml")]
    config: PathBuf,
    /// Validate the configuration (key files included) and exit (0 when
    /// valid, 2 when not).
    #[arg(long)]
    check: bool,
    /// Also reload when the config file or `.env` changes (looked at every
    /// second). SIGHUP and `POST /reload` reload either way.
    #[arg(long)]
    watch: bool,
    /// Client listener address (env PROXY_LISTEN).
    #[arg(long)]
    listen: Option<String>,
    /// Admin listener address (env PROXY_ADMIN_LISTEN).
    #[arg(long)]
    admin_listen: Option<String>,
    /// Backend base URL, http://host:port (env UPSTREAM_URL).
    #[arg(long)]
    upstream: Option<String>,
    /// Redis URL; without one the cache lives in process memory (env REDIS_URL).
    #[arg(long)]
    redis_url: Option<String>,
}

/// mimalloc: the hit path allocates small, short-lived buffers on two
/// threads at once, where glibc malloc's arena locking and consolidation
/// showed up at ~9 % of the proxy's CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How often `--watch` looks at the config file.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// Exit status for an invalid configuration, distinct from runtime failure.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    // Taken before `.env` is read: a reload re-reads `.env`, whose values
    // yield to the real environment's.
    let environment: HashMap<String, String> = std::env::vars().collect();
    // A missing .env is normal; a malformed one is worth saying.
    let dotenv = match dotenvy::dotenv() {
        Ok(path) => Some(path),
        Err(err) if err.not_found() => None,
        Err(err) => {
            eprintln!("warning: ignoring .env: {err}");
            None
        }
    };
    let cli = Cli::parse();
    let file = ConfigFile {
        path: cli.config.clone(),
        environment,
        dotenv,
        flags: Overrides {
            listen: cli.listen.clone(),
            admin_listen: cli.admin_listen.clone(),
            upstream: cli.upstream.clone(),
            redis_url: cli.redis_url.clone(),
            ..Overrides::default()
        },
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("starting the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let prepared = match runtime.block_on(load(&file)) {
        Ok(prepared) => prepared,
        Err(errors) => {
            eprintln!("{}: invalid configuration:\n{errors}", cli.config.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if cli.check {
        println!(
            "{}: valid ({} routes, {} cache), version {}",
            cli.config.display(),
            prepared.snapshot.settings.routes.iter().count(),
            prepared.boot.store.backend.kind(),
            prepared.snapshot.version,
        );
        return ExitCode::SUCCESS;
    }
    let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json");
    // One writer thread for every log line, access lines included (see
    // proxy::log_writer): a request never waits on stdout.
    let (writer, written_at_exit) = match LogWriter::start(std::io::stdout()) {
        Ok(started) => started,
        Err(err) => {
            eprintln!("starting the log writer thread: {err}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(writer.clone(), json);
    let mut prepared = prepared;
    prepared.access = AccessOutput {
        sink: Arc::new(writer),
        format: if json { AccessFormat::Json } else { AccessFormat::Text },
    };
    let reload_from = ReloadFrom {
        file,
        watch: cli.watch.then_some(WATCH_EVERY),
    };
    let served = runtime.block_on(serve(prepared, reload_from));
    // Tasks dropped as the runtime shuts down may still log: the writer
    // is flushed only after it is gone.
    drop(runtime);
    let code = match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    };
    drop(written_at_exit);
    code
}

/// Reads, validates and puts to use what `file` says (key files included).
async fn load(file: &ConfigFile) -> Result<proxy::Prepared, ConfigErrors> {
    proxy::prepare(file.load()?).await
}

fn init_logging(writer: LogWriter, json: bool) {
    // The redis client logs each reconnection attempt during an outage or a
    // failover; the proxy says the same once per episode, with the error.
    let filter = tracing_subscriber::EnvFilter::try_from_env("LOG").unwrap_or_else(|_| "info,redis=off".into());
    // Colours only for a person at a terminal, not in journald or a file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn serve(prepared: proxy::Prepared, reload_from: ReloadFrom) -> anyhow::Result<()> {
    let (listen, admin_listen) = (prepared.boot.listen, prepared.boot.admin_listen);
    let listener = bind_shared(listen).with_context(|| format!("binding listen address {listen}"))?;
    let admin = bind_shared(admin_listen).with_context(|| format!("binding admin_listen address {admin_listen}"))?;
    if queued_connections_migrate() == Some(false) {
        tracing::info!(
            "net.ipv4.tcp_migrate_req is 0: when this process stops while another takes over its port, \
             a connection arriving in the instant of the hand-over may be reset (see the README's upgrade procedure)"
        );
    }
    proxy::run(listener, admin, prepared, Some(reload_from), shutdown_signal()).await
}
async fn shutdown_signal() {
    proxy::termination_signal().await;
    tracing::info!("shutting down; draining connections");
}
