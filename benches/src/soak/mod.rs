//! The soak test: a fixed offered rate of reads and writes through two
//! proxy instances sharing one Redis, for minutes, while a chaos loop kills
//! and pauses Redis and restarts the origin and the client drops some writes
//! mid-write; a checker that knows every committed version of every user
//! judges each answer.
//!
//! Not part of the test suite: it runs for minutes and its figures depend
//! on the machine. `benches/soak` builds the release binaries and runs it.
//!
//! # Layout
//! - [`stack`]: the processes (FerretDB, Redis, origin, two proxies).
//! - [`ledger`]: per-user versions and what makes a read stale (pure).
//! - [`workload`]: the open-loop requests, the checker, dropped writes and
//!   the resolver of unknown outcomes.
//! - [`chaos`]: the fault loop and its timeline.
//! - [`report`]: the table and the JSON.

pub mod chaos;
pub mod ledger;
pub mod report;
pub mod stack;
pub mod workload;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use chaos::{ChaosSchedule, Timeline};
use report::{Inputs, Report, Rss};
use stack::{Binaries, RedisSettings, Stack};
use workload::{Workload, WorkloadSettings};

/// How often RSS is sampled and progress printed.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// How long requests still in flight when the load stops may take: an
/// answer's timeout plus a whole resolution of an unknown write.
const DRAIN_LIMIT: Duration = Duration::from_secs(40);
/// After the last fault, before the final sweep: longer than the proxies'
/// circuit breaker stays open (1 s) and their retry of deferred
/// invalidations (100 ms), so the sweep sees them settled.
const SETTLE_BEFORE_SWEEP: Duration = Duration::from_secs(3);

/// `(seconds into the soak, RSS of proxy a, of proxy b)`, kB.
type RssSamples = Vec<(f64, Option<u64>, Option<u64>)>;

/// Everything a soak run needs.
#[derive(Clone, Debug)]
pub struct SoakSettings {
    /// Load under chaos, after the warm-up.
    pub duration: Duration,
    /// Load without chaos first; RSS "start" is taken at its end.
    pub warmup: Duration,
    pub workload: WorkloadSettings,
    pub chaos: ChaosSchedule,
    /// Gap between dropped-write probes (see [`Workload::probe`]); `None`
    /// runs none.
    pub probe_every: Option<Duration>,
    pub redis: RedisSettings,
    pub binaries: Binaries,
    /// Folder of the JSON report and the servers' logs.
    pub out: PathBuf,
}

/// Runs the soak; `interrupt` resolving ends the load early (the report is
/// still made).
pub async fn run(
    settings: SoakSettings,
    interrupt: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Report> {
    let t0 = Instant::now();
    let started_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    std::fs::create_dir_all(&settings.out).with_context(|| format!("creating {}", settings.out.display()))?;
    eprintln!("starting FerretDB, Redis, the origin and two proxies ...");
    let stack = Arc::new(Stack::start(&settings.binaries, &settings.redis, &settings.out).await?);
    {
        let redis = stack.redis.lock().await;
        eprintln!(
            "redis pid {} on {}; origin pid {} on {}; proxy a pid {} on {}; proxy b pid {} on {}; logs in {}",
            redis.pid().unwrap_or_default(),
            redis.port,
            stack.origin.lock().await.pid().unwrap_or_default(),
            stack.origin_addr,
            stack.proxies[0].pid(),
            stack.proxies[0].addr,
            stack.proxies[1].pid(),
            stack.proxies[1].addr,
            settings.out.join("logs").display()
        );
    }
    eprintln!("registering {} users ...", settings.workload.users);
    let workload = Arc::new(Workload::setup(&stack, settings.workload.clone(), t0).await?);

    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    {
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            interrupt.await;
            eprintln!("interrupted: stopping the load and reporting");
            let _ = stop_tx.send(true);
        });
    }
    let timeline = Arc::new(Mutex::new(Timeline::default()));
    let load_start = Instant::now();
    let chaos_from = load_start + settings.warmup;
    let until = chaos_from + settings.duration;
    eprintln!(
        "load: {} requests/s for {:?} of warm-up, then {:?} with chaos every {:?}–{:?}",
        settings.workload.rate, settings.warmup, settings.duration, settings.chaos.min, settings.chaos.max
    );
    let driver = {
        let (workload, stop_rx) = (workload.clone(), stop_rx.clone());
        tokio::spawn(async move { workload.drive(load_start, until, stop_rx).await })
    };

    let mut stop_wait = stop_rx.clone();
    tokio::select! {
        () = tokio::time::sleep_until(chaos_from.into()) => {}
        _ = stop_wait.wait_for(|s| *s) => {}
    }
    let rss_start = rss(&stack);
    let chaos = tokio::spawn(chaos::run(
        stack.clone(),
        timeline.clone(),
        settings.chaos,
        t0,
        stop_rx.clone(),
    ));
    let probes = settings
        .probe_every
        .map(|every| spawn_probes(workload.clone(), every, stop_rx.clone()));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = spawn_sampler(
        stack.clone(),
        workload.clone(),
        timeline.clone(),
        samples.clone(),
        t0,
        stop_rx.clone(),
    );

    let mut in_flight = driver.await.context("the load driver panicked")?;
    let load_seconds = load_start.elapsed().as_secs_f64();
    let rss_end = rss(&stack);
    let _ = stop_tx.send(true);
    let _ = sampler.await;
    if let Some(probes) = probes {
        let _ = probes.await;
    }
    // The chaos loop finishes the fault it is in (Redis is always resumed,
    // the origin always restarted) before it stops.
    let chaos_result = chaos.await.context("the chaos loop panicked")?;
    if let Err(err) = &chaos_result {
        eprintln!("chaos loop stopped: {err:#}");
    }
    eprintln!(
        "load stopped after {load_seconds:.0} s; waiting for {} requests in flight and unresolved writes ...",
        workload.in_flight()
    );
    let drained = tokio::time::timeout(DRAIN_LIMIT, async { while in_flight.join_next().await.is_some() {} }).await;
    let unfinished = if drained.is_err() {
        let left = in_flight.len() as u64;
        in_flight.abort_all();
        while in_flight.join_next().await.is_some() {}
        left
    } else {
        0
    };

    let final_sweep = if chaos_result.is_ok() {
        tokio::time::sleep(SETTLE_BEFORE_SWEEP).await;
        eprintln!("final sweep: every user through both proxies, and the ledger against the origin ...");
        workload.final_sweep().await
    } else {
        workload::FinalSweep::default()
    };

    let mut proxy_counters = BTreeMap::new();
    let mut proxies_alive = BTreeMap::new();
    for proxy in &stack.proxies {
        proxies_alive.insert(proxy.name.to_owned(), proxy.is_running());
        if let Some(page) = proxy.metrics().await {
            proxy_counters.insert(proxy.name.to_owned(), report::counters(&page));
        }
    }
    let samples = std::mem::take(&mut *samples.lock().expect("samples lock"));
    let rss = BTreeMap::from([
        (
            "a".to_owned(),
            Rss::new(
                stack.proxies[0].pid(),
                rss_start.0,
                rss_end.0,
                samples.iter().map(|s| s.1),
            ),
        ),
        (
            "b".to_owned(),
            Rss::new(
                stack.proxies[1].pid(),
                rss_start.1,
                rss_end.1,
                samples.iter().map(|s| s.2),
            ),
        ),
    ]);
    // The workload goes first: its client's kept-alive connections close with
    // it, so a proxy's shutdown is not held for the `shutdown_grace` it gives
    // idle clients, and a slow stop means the proxy itself was slow.
    let workload = Arc::into_inner(workload).context("every request task has ended")?;
    let tally = workload.into_tally();
    let stack = Arc::into_inner(stack).context("every task using the stack has ended")?;
    let slow_to_stop = stack.stop().await.into_iter().map(str::to_owned).collect();

    let timeline = timeline.lock().expect("timeline lock");
    let inputs = Inputs {
        started_at,
        settings: serde_json::json!({
            "duration_s": settings.duration.as_secs_f64(),
            "warmup_s": settings.warmup.as_secs_f64(),
            "workload": settings.workload,
            "chaos_every_s": [settings.chaos.min.as_secs_f64(), settings.chaos.max.as_secs_f64()],
            "probe_every_s": settings.probe_every.map(|d| d.as_secs_f64()),
            "redis_maxmemory": settings.redis.maxmemory,
            "config": settings.binaries.config,
        }),
        load_seconds,
        unfinished,
        rss,
        rss_samples: samples,
        final_sweep,
        proxies_alive,
        slow_to_stop,
        proxy_counters,
    };
    Ok(report::build(tally, &timeline, inputs))
}

/// Both proxies' RSS, kB.
fn rss(stack: &Stack) -> (Option<u64>, Option<u64>) {
    (stack.proxies[0].rss_kib(), stack.proxies[1].rss_kib())
}

/// A dropped-write probe every `every` until `stop`.
fn spawn_probes(workload: Arc<Workload>, every: Duration, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            workload.probe().await;
        }
    })
}

/// Every [`SAMPLE_EVERY`] until `stop`: samples both proxies' RSS into
/// `samples`, notices a proxy that exited, and prints a progress line.
fn spawn_sampler(
    stack: Arc<Stack>,
    workload: Arc<Workload>,
    timeline: Arc<Mutex<Timeline>>,
    samples: Arc<Mutex<RssSamples>>,
    t0: Instant,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        let mut reported_dead = [false; 2];
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let (a, b) = rss(&stack);
            let now_s = t0.elapsed().as_secs_f64();
            samples.lock().expect("samples lock").push((now_s, a, b));
            for (i, proxy) in stack.proxies.iter().enumerate() {
                if !reported_dead[i] && !proxy.is_running() {
                    reported_dead[i] = true;
                    eprintln!(
                        "[{now_s:7.1}s] proxy {} (pid {}) has exited; see {}",
                        proxy.name,
                        proxy.pid(),
                        proxy.log.display()
                    );
                }
            }
            let (offered, stale, five_xx) = {
                let tally = workload.tally.lock().expect("tally lock");
                (tally.offered, tally.stale, tally.five_xx.len())
            };
            let events = timeline.lock().expect("timeline lock").events.len();
            eprintln!(
                "[{now_s:7.1}s] offered {offered}, in flight {}, stale {stale}, 5xx {five_xx}, chaos events {events}, rss a {} kB b {} kB",
                workload.in_flight(),
                a.unwrap_or_default(),
                b.unwrap_or_default()
            );
        }
    })
}
