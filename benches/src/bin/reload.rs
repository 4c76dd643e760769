//! `reload`: the reload harness's driver (see `benches::reload`). Normally
//! run by `benches/reload`, which builds the release binaries first.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use benches::reload::load::LoadSettings;
use benches::reload::{self, Binaries, Scenario, Settings};
use clap::Parser;

/// Configuration reloads and socket hand-overs under fixed-rate load:
/// nothing may be dropped, every answer must follow a rule set.
#[derive(Parser, Debug)]
#[command(about)]
struct Cli {
    /// Which scenario: `reload` (21 reloads of one proxy), `handover`
    /// (a second process takes over the socket), or both in turn.
    #[arg(long, value_enum, default_value = "both")]
    scenario: Scenario,
    /// Offered requests per second (open loop: sent on time whatever the
    /// answers do).
    #[arg(long, default_value_t = 300)]
    rate: u64,
    /// Load per scenario; reloads and hand-overs are spread evenly over it.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    duration: Duration,
    /// Hand-overs in scenario `handover`.
    #[arg(long, default_value_t = 3)]
    handovers: usize,
    /// Users registered at the start (the first few are the hot keys).
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// Share of writes (PUT /users/{id}, POST /register), percent. Each
    /// write empties the cache of every user entry; FerretDB on SQLite
    /// commits each with an fsync, and on a small machine falls behind at
    /// 30 writes/s within a minute.
    #[arg(long, default_value_t = 3)]
    write_percent: u32,
    /// Share of rule-dependent requests (GET /users), percent.
    #[arg(long, default_value_t = 15)]
    rules_percent: u32,
    /// The proxy binary (default: next to this one).
    #[arg(long)]
    proxy_bin: Option<PathBuf>,
    /// The origin binary (default: next to this one).
    #[arg(long)]
    origin_bin: Option<PathBuf>,
    /// redis-server (default: $REDIS_SERVER_BIN, then PATH).
    #[arg(long)]
    redis_bin: Option<PathBuf>,
    /// FerretDB 1.24.2 (default: $FERRETDB_BIN, then PATH, then Go's bin
    /// folder).
    #[arg(long)]
    ferretdb_bin: Option<PathBuf>,
    /// Folder for reload.json, handover.json, the config files and the
    /// servers' logs.
    #[arg(long, default_value = "target/reload")]
    out: PathBuf,
}

/// Exit status when a scenario ran and failed.
const EXIT_FOUND: u8 = 1;
/// Exit status when the harness could not run.
const EXIT_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: starting the runtime: {err}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_FOUND),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    let here = std::env::current_exe()
        .context("locating this binary")?
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let redis = cli.redis_bin.unwrap_or_else(|| {
        e2e::process::find_binary(
            "redis-server",
            "REDIS_SERVER_BIN",
            &[],
            e2e::servers::REDIS_INSTALL_HINT,
        )
    });
    let ferretdb = cli.ferretdb_bin.unwrap_or_else(|| {
        let mut extra = Vec::new();
        if let Ok(out) = std::process::Command::new("go").args(["env", "GOPATH"]).output() {
            let gopath = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if !gopath.is_empty() {
                extra.push(PathBuf::from(gopath).join("bin"));
            }
        }
        e2e::process::find_binary("ferretdb", "FERRETDB_BIN", &extra, e2e::servers::FERRETDB_INSTALL_HINT)
    });
    let binaries = Binaries {
        proxy: cli.proxy_bin.unwrap_or_else(|| here.join("proxy")),
        origin: cli.origin_bin.unwrap_or_else(|| here.join("origin")),
        redis,
        ferretdb,
    };
    for (name, path) in [("proxy", &binaries.proxy), ("origin", &binaries.origin)] {
        anyhow::ensure!(
            path.is_file(),
            "no {name} binary at {} (build with `cargo build --release -p {name}`, or pass --{name}-bin)",
            path.display()
        );
    }
    anyhow::ensure!(cli.rate > 0, "--rate must be at least 1");
    anyhow::ensure!(
        cli.write_percent + cli.rules_percent <= 100,
        "--write-percent plus --rules-percent must not exceed 100"
    );
    let settings = Settings {
        scenario: cli.scenario,
        duration: cli.duration,
        handovers: cli.handovers,
        load: LoadSettings {
            rate: cli.rate,
            users: cli.users.max(1),
            write_percent: cli.write_percent,
            rules_percent: cli.rules_percent,
        },
        binaries,
        out: cli.out.clone(),
    };
    let reports = reload::run(settings, interrupted()).await?;
    if let Some(report) = &reports.reload {
        println!("{}", report.table());
        write_json(&cli.out.join("reload.json"), report)?;
    }
    if let Some(report) = &reports.handover {
        println!("{}", report.table());
        write_json(&cli.out.join("handover.json"), report)?;
    }
    Ok(reports.passed())
}

fn write_json(path: &std::path::Path, report: &impl serde::Serialize) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(report)?)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// Ctrl-C or SIGTERM: the harness stops its load early and still reports.
/// A second one exits at once (the servers die with this process).
async fn interrupted() {
    signalled().await;
    tokio::spawn(async {
        signalled().await;
        eprintln!("interrupted again: exiting without a report");
        std::process::exit(130);
    });
}

async fn signalled() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
