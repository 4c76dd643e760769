//! Scenario `handover`: a restart in which a second process takes over the
//! client socket, under open-loop load, a few times in a row.
//!
//! The "old" proxy listens on a fixed address L. For each hand-over a "new"
//! proxy is started with the same config and the same `--listen L` (the
//! proxy sets `SO_REUSEPORT`, so both bind it) but its own admin address;
//! once its `/readyz` answers 200 the old one gets SIGTERM and the harness
//! times its exit (it drains within `server.shutdown_grace`). The load
//! never stops and never changes address: every request it loses while the
//! kernel moves L's connections from one process to the other is counted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::watch;

use super::judge::{self, RuleTimeline};
use super::load::Load;
use super::proxy::{self, ProxyInstance, ProxySpec};
use super::records::HandoverRecord;
use super::report::HandoverReport;
use super::rules::RuleSet;
use super::{end_load, forward_stop, progress, start_first_proxy, Backends, Settings};
use e2e::process::free_port;

/// The rendered files' `server.shutdown_grace`, plus a margin: an old
/// proxy still running after this is killed and reported.
const EXIT_LIMIT: Duration = Duration::from_secs(15);

/// Runs the scenario against `backends`; `stop` turning true ends it early.
pub async fn run(
    settings: &Settings,
    backends: &Backends,
    stop_rx: watch::Receiver<bool>,
) -> anyhow::Result<HandoverReport> {
    let dir = settings.out.join("handover");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let config = dir.join("proxy.toml");
    let logs = settings.out.join("logs");
    let log = |generation: usize| {
        let path = logs.join(format!("proxy-handover-{generation}.log"));
        let _ = std::fs::remove_file(&path);
        path
    };

    let (mut old, addrs) = start_first_proxy("handover-0", settings, backends, &dir, &config, log(0)).await?;
    eprintln!(
        "[handover] proxy 0 pid {} on {} (admin {}); {} hand-overs",
        old.pid(),
        old.listen,
        old.admin,
        settings.handovers
    );

    let (stop_tx, stop) = watch::channel(false);
    let forward = forward_stop(stop_rx, stop_tx.clone());
    let t0 = Instant::now();
    let load = Arc::new(Load::new(
        t0,
        settings.load.clone(),
        backends.users.clone(),
        addrs.listen,
    )?);
    let until = t0 + settings.duration;
    eprintln!(
        "[handover] load: {} requests/s on {} for {:?}",
        settings.load.rate, addrs.listen, settings.duration
    );
    let driver = {
        let (load, stop) = (load.clone(), stop.clone());
        tokio::spawn(async move { load.drive(t0, until, stop).await })
    };
    let progress = progress("handover", load.clone(), stop.clone());

    let mut records = Vec::new();
    let mut aborted = None;
    let mut stop_wait = stop.clone();
    for h in 1..=settings.handovers {
        let due = t0 + settings.duration.mul_f64(h as f64 / (settings.handovers + 1) as f64);
        tokio::select! {
            () = tokio::time::sleep_until(due.into()) => {}
            _ = stop_wait.wait_for(|s| *s) => break,
        }
        if Instant::now() >= until {
            break;
        }
        let mut record = HandoverRecord {
            index: h,
            at_s: t0.elapsed().as_secs_f64(),
            old_pid: old.pid(),
            new_pid: None,
            new_admin: None,
            new_ready_ms: None,
            old_exit_ms: None,
            old_exit: None,
            old_exit_code: None,
            old_killed: false,
            error: None,
        };
        let admin = ([127, 0, 0, 1], free_port()).into();
        let spec = ProxySpec {
            bin: &settings.binaries.proxy,
            config: &config,
            listen: addrs.listen,
            admin,
            upstream: addrs.upstream,
            redis_url: &addrs.redis_url,
            log: log(h),
            cwd: &dir,
        };
        let spawned = Instant::now();
        let new = match ProxyInstance::start(format!("handover-{h}"), spec).await {
            Ok(new) => new,
            Err(err) => {
                let error = format!(
                    "the new proxy did not come up beside the old one on {} (does it set SO_REUSEPORT?): {err:#}",
                    addrs.listen
                );
                eprintln!("[handover] {h}: {error}");
                record.error = Some(error.clone());
                records.push(record);
                aborted = Some(format!("hand-over {h}: {error}"));
                let _ = stop_tx.send(true);
                break;
            }
        };
        record.new_ready_ms = Some(spawned.elapsed().as_secs_f64() * 1000.0);
        record.new_pid = Some(new.pid());
        record.new_admin = Some(new.admin.to_string());

        let signalled = Instant::now();
        old.signal(libc::SIGTERM);
        match old.wait_exit(EXIT_LIMIT).await {
            Some(status) => {
                record.old_exit_ms = Some(signalled.elapsed().as_secs_f64() * 1000.0);
                record.old_exit = Some(proxy::describe(status));
                record.old_exit_code = status.code();
                if !status.success() {
                    record.error = Some(format!(
                        "the old proxy ended with {}; {}",
                        proxy::describe(status),
                        proxy::see_log(&old.log)
                    ));
                }
            }
            None => {
                old.kill();
                record.old_killed = true;
                record.old_exit = Some("killed".into());
                record.error = Some(format!("the old proxy was still running {EXIT_LIMIT:?} after SIGTERM"));
            }
        }
        eprintln!(
            "[handover] {h}/{}: new pid {} ready in {:.0} ms; old pid {} {} in {}",
            settings.handovers,
            new.pid(),
            record.new_ready_ms.unwrap_or_default(),
            record.old_pid,
            record.old_exit.as_deref().unwrap_or("?"),
            record.old_exit_ms.map_or("-".to_owned(), |ms| format!("{ms:.0} ms"))
        );
        records.push(record);
        old = new;
    }

    let ended = end_load("handover", driver, t0, &stop_tx, forward, progress, &load).await?;
    let (load_seconds, unfinished) = (ended.seconds, ended.unfinished);
    let (exit, _) = old.stop(EXIT_LIMIT).await;
    let last_exit = exit.map_or_else(|| "killed".to_owned(), proxy::describe);

    // One rule set throughout: every answer is judged against A.
    let timeline = RuleTimeline::starting(RuleSet::A, Duration::ZERO);
    let judgement = judge::judge(&load.take_samples(), &timeline);
    Ok(HandoverReport::build(
        settings,
        load.sent(),
        unfinished,
        load.in_flight_max(),
        load_seconds,
        judgement,
        records,
        aborted,
        last_exit,
    ))
}
