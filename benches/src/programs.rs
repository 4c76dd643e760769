//! What the soak and reload drivers share: finding the programs they run,
//! the open-loop request schedule, stopping early on Ctrl-C or SIGTERM,
//! and turning a run's verdict into the exit status.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

/// Exit status when a driver ran and found a failure.
pub const EXIT_FOUND: u8 = 1;
/// Exit status when a driver could not run.
pub const EXIT_ERROR: u8 = 2;

/// The programs a harness runs.
#[derive(Clone, Debug)]
pub struct Programs {
    pub proxy: PathBuf,
    pub origin: PathBuf,
    pub redis: PathBuf,
    /// FerretDB 1.24.2.
    pub ferretdb: PathBuf,
}

/// Where to find them, from the command line.
#[derive(clap::Args, Debug)]
pub struct ProgramFlags {
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
}

impl ProgramFlags {
    /// Finds every program, failing with how to build or name a missing one.
    pub fn locate(self) -> anyhow::Result<Programs> {
        let here = std::env::current_exe()
            .context("locating this binary")?
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default();
        let redis = self.redis_bin.unwrap_or_else(|| {
            e2e::process::find_binary(
                "redis-server",
                "REDIS_SERVER_BIN",
                &[],
                e2e::servers::REDIS_INSTALL_HINT,
            )
        });
        let ferretdb = self.ferretdb_bin.unwrap_or_else(|| {
            let mut extra = Vec::new();
            if let Ok(out) = std::process::Command::new("go").args(["env", "GOPATH"]).output() {
                let gopath = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                if !gopath.is_empty() {
                    extra.push(PathBuf::from(gopath).join("bin"));
                }
            }
            e2e::process::find_binary("ferretdb", "FERRETDB_BIN", &extra, e2e::servers::FERRETDB_INSTALL_HINT)
        });
        // Absolute, because the servers run in folders of their own and a
        // relative program path would be looked up from there (a bare name
        // is left to the PATH search).
        let absolute = |path: PathBuf| match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => std::path::absolute(&path).unwrap_or(path),
            _ => path,
        };
        let programs = Programs {
            proxy: absolute(self.proxy_bin.unwrap_or_else(|| here.join("proxy"))),
            origin: absolute(self.origin_bin.unwrap_or_else(|| here.join("origin"))),
            redis: absolute(redis),
            ferretdb: absolute(ferretdb),
        };
        for (name, path) in [("proxy", &programs.proxy), ("origin", &programs.origin)] {
            anyhow::ensure!(
                path.is_file(),
                "no {name} binary at {} (build with `cargo build --release -p {name}`, or pass --{name}-bin)",
                path.display()
            );
        }
        Ok(programs)
    }
}

/// Runs `run` on a new multi-threaded runtime: success when it passed,
/// [`EXIT_FOUND`] when it found a failure, [`EXIT_ERROR`] when it could not
/// run.
pub fn drive(run: impl Future<Output = anyhow::Result<bool>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: starting the runtime: {err}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match runtime.block_on(run) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_FOUND),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Ctrl-C or SIGTERM: a driver stops its load early and still reports. A
/// second one exits at once (the servers die with this process).
pub async fn interrupted() {
    proxy::termination_signal().await;
    tokio::spawn(async {
        proxy::termination_signal().await;
        eprintln!("interrupted again: exiting without a report");
        std::process::exit(130);
    });
}

/// Starts one request at each slot of `rate` per second from `start`
/// until `until` (or until `stop` turns true), open loop: each is sent on
/// time whatever the earlier ones do. `request(due)` makes the request due
/// at `due`. Returns the requests still in flight.
pub async fn open_loop<F, Fut>(
    rate: u64,
    start: std::time::Instant,
    until: std::time::Instant,
    stop: tokio::sync::watch::Receiver<bool>,
    mut request: F,
) -> tokio::task::JoinSet<()>
where
    F: FnMut(std::time::Instant) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    let rate = rate.max(1);
    for i in 0u64.. {
        let due = start + std::time::Duration::from_nanos(i.saturating_mul(1_000_000_000) / rate);
        if due >= until || *stop.borrow() {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        // Reap what has finished, so the set holds only what is in flight.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(request(due));
    }
    tasks
}
