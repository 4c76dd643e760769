//! The reload harness: what a configuration reload and a socket hand-over
//! cost the proxy's clients, measured under open-loop load.
//!
//! - Scenario `reload` ([`reloads`]): one proxy, 21 reloads (SIGHUP and
//!   `POST /reload` in turn, one invalid file), nothing may be dropped and
//!   every answer must follow one of the two rule sets, the right one once
//!   a reload is confirmed.
//! - Scenario `handover` ([`handover`]): a second proxy binds the same
//!   client address (`SO_REUSEPORT`), the first gets SIGTERM and drains;
//!   repeated; nothing may be dropped.
//!
//! Not part of the test suite: it needs the release binaries, FerretDB and
//! Redis, and runs for minutes. `benches/reload` builds and runs it.
//! FerretDB, Redis and the origin are the soak's ([`crate::soak::stack`]),
//! shared by both scenarios; each scenario starts its own proxies.
//!
//! # Layout
//! - [`rules`]: configs A, B and the invalid one; expected answers.
//! - [`proxy`]: a proxy process and the admin API the harness assumes.
//! - [`load`]: users, the open-loop requests and their samples.
//! - [`judge`]: the rule timeline and the verdict on every answer (pure).
//! - [`reloads`], [`handover`]: the scenarios.
//! - [`records`]: what the scenarios record; [`report`]: table and JSON.

pub mod handover;
pub mod judge;
pub mod load;
pub mod proxy;
pub mod records;
pub mod reloads;
pub mod report;
pub mod rules;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::programs::Programs;
use crate::soak::stack::{FerretDb, Origin, Redis, RedisSettings};
use load::{Load, LoadSettings, Users};
use report::{HandoverReport, ReloadReport};

/// How often progress is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Which scenarios to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    Reload,
    Handover,
    Both,
}

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct Settings {
    pub scenario: Scenario,
    /// Load per scenario; the reloads and hand-overs are spread over it.
    pub duration: Duration,
    /// Hand-overs in scenario `handover`.
    pub handovers: usize,
    pub load: LoadSettings,
    pub binaries: Programs,
    /// Folder of the JSON reports, the config files and the servers' logs.
    pub out: PathBuf,
}

/// What one run produced: a report per scenario run.
#[derive(Debug, Default)]
pub struct Reports {
    pub reload: Option<ReloadReport>,
    pub handover: Option<HandoverReport>,
}

impl Reports {
    pub fn passed(&self) -> bool {
        self.reload.as_ref().is_none_or(|r| r.passed) && self.handover.as_ref().is_none_or(|r| r.passed)
    }
}

/// FerretDB, Redis and the origin, and the users registered on them.
pub struct Backends {
    pub origin_addr: SocketAddr,
    pub redis_url: String,
    pub users: Arc<Users>,
    // Killed by pid when dropped.
    _origin: Origin,
    _redis: Redis,
    _mongo: FerretDb,
}

impl Backends {
    /// Starts them with logs in `out/logs/` and registers `users` users.
    pub async fn start(binaries: &Programs, users: usize, out: &std::path::Path) -> anyhow::Result<Backends> {
        let logs = out.join("logs");
        let redis_dir = out.join("redis");
        for dir in [&logs, &redis_dir] {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        for name in ["ferretdb.log", "redis.log", "origin.log"] {
            let _ = std::fs::remove_file(logs.join(name));
        }
        let mongo = FerretDb::start(&binaries.ferretdb, &out.join("ferretdb"), &logs).await?;
        let redis = Redis::start(
            &binaries.redis,
            &RedisSettings {
                maxmemory: "256mb".into(),
            },
            &redis_dir,
            &logs,
        )
        .await?;
        let origin = Origin::start(&binaries.origin, mongo.uri(), &logs, out).await?;
        eprintln!(
            "redis pid {} on {}; origin pid {} on {}; logs in {}",
            redis.pid().unwrap_or_default(),
            redis.port,
            origin.pid().unwrap_or_default(),
            origin.addr,
            logs.display()
        );
        eprintln!("registering {users} users ...");
        let users = Users::register(origin.addr, users).await?;
        Ok(Backends {
            origin_addr: origin.addr,
            redis_url: redis.url(),
            users: Arc::new(users),
            _origin: origin,
            _redis: redis,
            _mongo: mongo,
        })
    }
}

/// Runs the chosen scenarios, one after the other, on one set of backends;
/// `interrupt` resolving ends the running scenario early (still reported)
/// and skips the rest.
pub async fn run(settings: Settings, interrupt: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<Reports> {
    std::fs::create_dir_all(&settings.out).with_context(|| format!("creating {}", settings.out.display()))?;
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        interrupt.await;
        eprintln!("interrupted: stopping the load and reporting");
        let _ = stop_tx.send(true);
    });
    eprintln!("starting FerretDB, Redis and the origin ...");
    let backends = Backends::start(&settings.binaries, settings.load.users, &settings.out).await?;
    let mut reports = Reports::default();
    if matches!(settings.scenario, Scenario::Reload | Scenario::Both) {
        reports.reload = Some(reloads::run(&settings, &backends, stop.clone()).await?);
    }
    if matches!(settings.scenario, Scenario::Handover | Scenario::Both) && !*stop.borrow() {
        reports.handover = Some(handover::run(&settings, &backends, stop.clone()).await?);
    }
    Ok(reports)
}

/// Prints a progress line every [`PROGRESS_EVERY`] until `stop`.
fn progress(scenario: &'static str, load: Arc<Load>, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        let mut tick = tokio::time::interval_at(start + PROGRESS_EVERY, PROGRESS_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            eprintln!(
                "[{scenario}] {:5.1} s: sent {}, in flight {}, failed {}",
                start.elapsed().as_secs_f64(),
                load.sent(),
                load.in_flight(),
                load.failed_so_far()
            );
        }
    })
}

/// Sets `to` once `from` turns true: a scenario's own stop follows the
/// run's, and can also be set alone (a dead proxy).
/// How a scenario's load ended.
pub(crate) struct Ended {
    /// From the start of the load to its driver's last request.
    pub seconds: f64,
    /// Requests still unanswered after the drain.
    pub unfinished: u64,
}

/// Ends a scenario's load: waits for its driver, stops the progress lines
/// and the stop forwarding, and drains the requests in flight.
pub(crate) async fn end_load(
    scenario: &str,
    driver: JoinHandle<tokio::task::JoinSet<()>>,
    t0: std::time::Instant,
    stop_tx: &watch::Sender<bool>,
    forward: JoinHandle<()>,
    progress: JoinHandle<()>,
    load: &Load,
) -> anyhow::Result<Ended> {
    let in_flight = driver.await.context("the load driver panicked")?;
    let seconds = t0.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    forward.abort();
    let _ = progress.await;
    eprintln!(
        "[{scenario}] load stopped after {seconds:.1} s; waiting for {} requests in flight ...",
        load.in_flight()
    );
    let unfinished = load::drain(in_flight).await;
    Ok(Ended { seconds, unfinished })
}

fn forward_stop(mut from: watch::Receiver<bool>, to: watch::Sender<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        if from.wait_for(|s| *s).await.is_ok() {
            let _ = to.send(true);
        }
    })
}

/// Fresh ports tried for a scenario's first proxy: a port found free may
/// be taken before the proxy binds it.
const START_ATTEMPTS: usize = 3;

/// Renders config A for a fresh client and admin address into `config`,
/// and starts a proxy on it; retried on fresh ports.
async fn start_first_proxy(
    name: &str,
    settings: &Settings,
    backends: &Backends,
    dir: &std::path::Path,
    config: &std::path::Path,
    log: PathBuf,
) -> anyhow::Result<(proxy::ProxyInstance, rules::Addresses)> {
    let mut last_error = anyhow::anyhow!("no attempt made");
    for _ in 0..START_ATTEMPTS {
        let addrs = rules::Addresses {
            listen: ([127, 0, 0, 1], e2e::process::free_port()).into(),
            admin: ([127, 0, 0, 1], e2e::process::free_port()).into(),
            upstream: backends.origin_addr,
            redis_url: backends.redis_url.clone(),
        };
        rules::install(
            config,
            &rules::render(rules::ConfigFile::Valid(rules::RuleSet::A), &addrs),
        )?;
        let spec = proxy::ProxySpec {
            bin: &settings.binaries.proxy,
            config,
            listen: addrs.listen,
            admin: addrs.admin,
            upstream: addrs.upstream,
            redis_url: &addrs.redis_url,
            log: log.clone(),
            cwd: dir,
        };
        match proxy::ProxyInstance::start(name, spec).await {
            Ok(proxy) => return Ok((proxy, addrs)),
            Err(err) => last_error = err,
        }
    }
    Err(last_error.context(format!("starting proxy {name}")))
}
