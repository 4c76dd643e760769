//! Scenario `reload`: one proxy under open-loop load while its config file
//! is rewritten and reloaded 21 times, alternately by SIGHUP and by
//! `POST /reload`, one of the files invalid.
//!
//! Each reload is confirmed before the next: a POST by its answer, a SIGHUP
//! by `GET /config`'s version changing or `proxy_config_reloads_total`
//! moving. The confirmations feed the [`RuleTimeline`] against which
//! [`super::judge`] checks every rule-dependent answer. A proxy that dies
//! (a SIGHUP without a handler kills it) ends the scenario at once, with
//! the reason, rather than leaving the harness waiting.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;
use tokio::sync::watch;

use super::judge::{self, RuleTimeline};
use super::load::{self, Load};
use super::proxy::{self, ProxyInstance, ReloadCounts};
use super::records::{ReloadOutcome, ReloadRecord, Trigger, INVALID_AT, RELOADS};
use super::report::ReloadReport;
use super::rules::{self, ConfigFile, RuleSet};
use super::{end_load, forward_stop, progress, start_first_proxy, Backends, Settings};

/// How long a reload may take to show.
const CONFIRM_LIMIT: Duration = Duration::from_secs(10);
/// The proxy's `server.shutdown_grace` in the rendered files, and a margin.
const STOP_LIMIT: Duration = Duration::from_secs(15);

/// The files installed, in order, and how each reload is triggered: B, A,
/// B, ... with the invalid file at `invalid_at`; SIGHUP and POST in turn.
pub fn plan(reloads: usize, invalid_at: usize) -> Vec<(ConfigFile, Trigger)> {
    let mut valid = 0;
    (0..reloads)
        .map(|k| {
            let trigger = if k % 2 == 0 { Trigger::Sighup } else { Trigger::Http };
            let file = if k == invalid_at {
                ConfigFile::Invalid
            } else {
                valid += 1;
                ConfigFile::Valid(if valid % 2 == 1 { RuleSet::B } else { RuleSet::A })
            };
            (file, trigger)
        })
        .collect()
}

/// Runs the scenario against `backends`; `stop` turning true ends it early.
pub async fn run(
    settings: &Settings,
    backends: &Backends,
    stop_rx: watch::Receiver<bool>,
) -> anyhow::Result<ReloadReport> {
    let dir = settings.out.join("reload");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let live = dir.join("proxy.toml");
    let log = settings.out.join("logs").join("proxy-reload.log");
    let _ = std::fs::remove_file(&log);

    let (proxy, addrs) = start_first_proxy("reload", settings, backends, &dir, &live, log).await?;
    eprintln!(
        "[reload] proxy pid {} on {} (admin {}), config {}",
        proxy.pid(),
        proxy.listen,
        proxy.admin,
        live.display()
    );
    let texts: BTreeMap<&'static str, String> = [
        ConfigFile::Valid(RuleSet::A),
        ConfigFile::Valid(RuleSet::B),
        ConfigFile::Invalid,
    ]
    .into_iter()
    .map(|f| (f.label(), rules::render(f, &addrs)))
    .collect();
    for (label, text) in &texts {
        std::fs::write(dir.join(format!("{label}.toml")), text).context("writing a copy of a config file")?;
    }

    // The scenario's own stop: the caller's, or a dead proxy.
    let (stop_tx, stop) = watch::channel(false);
    let forward = forward_stop(stop_rx, stop_tx.clone());

    let t0 = Instant::now();
    let timeline = Mutex::new(RuleTimeline::starting(RuleSet::A, Duration::ZERO));
    let load = Arc::new(Load::new(
        t0,
        settings.load.clone(),
        backends.users.clone(),
        proxy.listen,
    )?);
    let until = t0 + settings.duration;
    eprintln!(
        "[reload] load: {} requests/s for {:?}; {RELOADS} reloads, one every {:.1} s",
        settings.load.rate,
        settings.duration,
        settings.duration.as_secs_f64() / (RELOADS + 1) as f64
    );
    let driver = {
        let (load, stop) = (load.clone(), stop.clone());
        tokio::spawn(async move { load.drive(t0, until, stop).await })
    };
    let progress = progress("reload", load.clone(), stop.clone());

    let mut records = Vec::new();
    let mut aborted = None;
    let mut version = proxy.api.config_version().await.ok();
    let mut versions: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    if let Some(v) = &version {
        versions.entry("A").or_default().insert(v.clone());
    }
    let mut stop_wait = stop.clone();
    for (k, (file, trigger)) in plan(RELOADS, INVALID_AT).into_iter().enumerate() {
        let due = t0 + settings.duration.mul_f64((k + 1) as f64 / (RELOADS + 1) as f64);
        tokio::select! {
            () = tokio::time::sleep_until(due.into()) => {}
            _ = stop_wait.wait_for(|s| *s) => break,
        }
        // Slow confirmations can push reloads past the load: none are made
        // without load to judge them by.
        if Instant::now() >= until {
            break;
        }
        rules::install(&live, &texts[file.label()])?;
        let record = reload_once(&proxy, &timeline, t0, k + 1, file, trigger, version.clone()).await;
        eprintln!(
            "[reload] {:>2}/{RELOADS} {:<7} by {:<6} -> {:?} in {:.0} ms{}",
            record.index,
            record.file,
            format!("{:?}", record.trigger).to_lowercase(),
            record.outcome,
            record.ms,
            if record.outcome == ReloadOutcome::Ok || record.outcome == ReloadOutcome::Invalid {
                String::new()
            } else {
                format!(": {}", record.detail)
            }
        );
        if record.outcome == ReloadOutcome::Ok {
            version = record.version_after.clone().or(version);
            if let Some(v) = &record.version_after {
                versions.entry(file.label()).or_default().insert(v.clone());
            }
        }
        let exited = record.outcome == ReloadOutcome::ProxyExited;
        if exited {
            aborted = Some(format!("reload {} ({}): {}", record.index, record.file, record.detail));
        }
        records.push(record);
        if exited {
            let _ = stop_tx.send(true);
            break;
        }
    }

    let ended = end_load("reload", driver, t0, &stop_tx, forward, progress, &load).await?;
    let (load_seconds, unfinished) = (ended.seconds, ended.unfinished);

    let page = proxy.api.metrics().await;
    let metric_reloads = page.as_deref().map(proxy::reload_counts);
    let metrics_hit_ratio = page
        .as_deref()
        .map(proxy::cache_counts)
        .and_then(|(hits, all)| (all > 0).then(|| hits as f64 / all as f64));
    let (exit, killed) = proxy.stop(STOP_LIMIT).await;
    let proxy_exit = match (exit, killed) {
        (Some(status), _) => proxy::describe(status),
        (None, _) => format!("killed: still running {STOP_LIMIT:?} after SIGTERM"),
    };

    let timeline = timeline.into_inner().expect("timeline lock");
    let samples = load.take_samples();
    let judgement = judge::judge(&samples, &timeline);
    Ok(ReloadReport::build(
        settings,
        load.sent(),
        unfinished,
        load.in_flight_max(),
        load_seconds,
        judgement,
        records,
        metric_reloads,
        metrics_hit_ratio,
        versions
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.into_iter().collect()))
            .collect(),
        aborted,
        proxy_exit,
        proxy.log.clone(),
    ))
}

/// What a reload came to, before it is stamped into a record.
struct Confirmation {
    outcome: ReloadOutcome,
    version_after: Option<String>,
    detail: String,
}

impl Confirmation {
    fn new(outcome: ReloadOutcome, version_after: Option<String>, detail: impl Into<String>) -> Confirmation {
        Confirmation {
            outcome,
            version_after,
            detail: detail.into(),
        }
    }

    fn failed(detail: impl Into<String>) -> Confirmation {
        Confirmation::new(ReloadOutcome::Failed, None, detail)
    }

    fn proxy_exited(detail: impl Into<String>) -> Confirmation {
        Confirmation::new(ReloadOutcome::ProxyExited, None, detail)
    }
}

/// Installs nothing (the file is in place): triggers reload `index` and
/// waits for its outcome, keeping `timeline` up to date.
async fn reload_once(
    proxy: &ProxyInstance,
    timeline: &Mutex<RuleTimeline>,
    t0: Instant,
    index: usize,
    file: ConfigFile,
    trigger: Trigger,
    version_before: Option<String>,
) -> ReloadRecord {
    // The version as the proxy reports it now, if it does: a failed reload
    // before may have left the harness's idea of it behind.
    let version_before = proxy.api.config_version().await.ok().or(version_before);
    let counts_before = proxy.api.reload_counts().await;
    let at = t0.elapsed();
    // Until confirmed, either rule set may answer.
    if matches!(file, ConfigFile::Valid(_)) {
        timeline.lock().expect("timeline lock").unsettle(at);
    }
    let started = Instant::now();
    let confirmation = match trigger {
        Trigger::Sighup => {
            proxy.signal(libc::SIGHUP);
            confirm_by_polling(proxy, file, version_before.as_deref(), counts_before).await
        }
        Trigger::Http => confirm_by_post(proxy, file, version_before.as_deref(), counts_before).await,
    };
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    {
        let mut timeline = timeline.lock().expect("timeline lock");
        match (confirmation.outcome, file) {
            (ReloadOutcome::Ok, ConfigFile::Valid(set)) => timeline.settle(set, t0.elapsed(), index),
            (ReloadOutcome::Ok | ReloadOutcome::Invalid, _) => {}
            // Whatever the proxy runs now is not known for sure.
            (ReloadOutcome::Failed | ReloadOutcome::ProxyExited, _) => timeline.unsettle(at),
        }
    }
    ReloadRecord {
        index,
        file: file.label(),
        trigger,
        at_s: at.as_secs_f64(),
        outcome: confirmation.outcome,
        ms,
        version_before,
        version_after: confirmation.version_after,
        detail: confirmation.detail,
    }
}

/// After a SIGHUP: polls `GET /config` and `/metrics` until the reload
/// shows, the proxy exits, or [`CONFIRM_LIMIT`] passes.
async fn confirm_by_polling(
    proxy: &ProxyInstance,
    file: ConfigFile,
    version_before: Option<&str>,
    counts_before: Option<ReloadCounts>,
) -> Confirmation {
    let deadline = Instant::now() + CONFIRM_LIMIT;
    loop {
        if let Some(exited) = exited(proxy) {
            return exited;
        }
        let version = proxy.api.config_version().await;
        let counts = proxy.api.reload_counts().await;
        // A version is compared only with a known one before.
        let version_moved = matches!((&version, version_before), (Ok(now), Some(before)) if now != before);
        let moved = |f: fn(&ReloadCounts) -> u64| {
            let before = counts_before.map_or(0, |c| f(&c));
            counts.as_ref().is_some_and(|c| f(c) > before)
        };
        let (ok_moved, invalid_moved) = (moved(|c| c.ok), moved(|c| c.invalid));
        let version_now = version.as_ref().ok().cloned();
        match file {
            ConfigFile::Valid(_) => {
                if invalid_moved {
                    return Confirmation::failed(
                        r#"proxy_config_reloads_total{outcome="invalid"} rose: the proxy refused a valid file"#,
                    );
                }
                // Where the version can be compared, only its change
                // confirms: a counter bumped before the swap would let
                // requests meet the old rules after "confirmation".
                let comparable = version.is_ok() && version_before.is_some();
                if version_moved {
                    let via = if ok_moved {
                        "GET /config version changed; ok counter rose"
                    } else {
                        "GET /config version changed"
                    };
                    return Confirmation::new(ReloadOutcome::Ok, version_now, via);
                }
                if ok_moved && !comparable {
                    return Confirmation::new(ReloadOutcome::Ok, version_now, "ok counter rose (no /config version)");
                }
            }
            ConfigFile::Invalid => {
                if version_moved || ok_moved {
                    return Confirmation::new(
                        ReloadOutcome::Failed,
                        version_now,
                        "the invalid file was applied (version changed or the ok counter rose)",
                    );
                }
                if invalid_moved {
                    return Confirmation::new(
                        ReloadOutcome::Invalid,
                        version_now,
                        "invalid counter rose; version unchanged",
                    );
                }
            }
        }
        if Instant::now() >= deadline {
            return Confirmation::failed(format!(
                "no sign of the reload within {CONFIRM_LIMIT:?}: {}; {}",
                match &version {
                    Ok(v) => format!("GET /config version stayed {v}"),
                    Err(why) => why.clone(),
                },
                match counts {
                    Some(c) if c.present =>
                        format!("proxy_config_reloads_total stayed ok={} invalid={}", c.ok, c.invalid),
                    Some(_) => "no proxy_config_reloads_total on /metrics".to_owned(),
                    None => "/metrics unreadable".to_owned(),
                }
            ));
        }
        tokio::time::sleep(proxy::POLL).await;
    }
}

/// `POST /reload` and what its answer, `/config` and `/metrics` say.
async fn confirm_by_post(
    proxy: &ProxyInstance,
    file: ConfigFile,
    version_before: Option<&str>,
    counts_before: Option<ReloadCounts>,
) -> Confirmation {
    let (status, json, text) = match proxy.api.reload().await {
        Ok(answer) => answer,
        Err(err) => {
            if let Some(exited) = exited(proxy) {
                return exited;
            }
            return Confirmation::failed(format!("POST /reload: no answer ({})", load::classify(&err)));
        }
    };
    let version_now = proxy.api.config_version().await.ok();
    let counts = proxy.api.reload_counts().await;
    match file {
        ConfigFile::Valid(_) => {
            if status != 200 || json["reloaded"] != Value::Bool(true) {
                return Confirmation::failed(format!("POST /reload answered {status}: {}", proxy::snippet(&text)));
            }
            let answered = match &json["version"] {
                Value::String(v) => Some(v.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            };
            match (&answered, &version_now) {
                (None, _) => Confirmation::failed(format!(
                    "POST /reload answered 200 without a version: {}",
                    proxy::snippet(&text)
                )),
                (Some(a), Some(c)) if a != c => Confirmation::new(
                    ReloadOutcome::Failed,
                    answered.clone(),
                    format!("POST /reload said version {a}, GET /config then said {c}"),
                ),
                (Some(a), _) if version_before == Some(a.as_str()) => Confirmation::new(
                    ReloadOutcome::Failed,
                    answered.clone(),
                    format!("POST /reload answered 200 but the version stayed {a}"),
                ),
                (Some(_), _) => Confirmation::new(ReloadOutcome::Ok, answered, "200 reloaded"),
            }
        }
        ConfigFile::Invalid => {
            if status == 200 {
                return Confirmation::new(
                    ReloadOutcome::Failed,
                    version_now,
                    format!("the invalid file was accepted: {}", proxy::snippet(&text)),
                );
            }
            if status != 400 || !text.contains(rules::INVALID_FIELD_HINT) {
                return Confirmation::failed(format!(
                    "POST /reload of the invalid file answered {status}, wanted 400 naming the {} field: {}",
                    rules::INVALID_FIELD_HINT,
                    proxy::snippet(&text)
                ));
            }
            if let (Some(now), Some(before)) = (&version_now, version_before) {
                if now != before {
                    return Confirmation::new(
                        ReloadOutcome::Failed,
                        version_now.clone(),
                        format!("400, but GET /config's version moved from {before} to {now}"),
                    );
                }
            }
            let before = counts_before.unwrap_or_default();
            match counts {
                Some(c) if c.invalid > before.invalid && c.ok == before.ok => Confirmation::new(
                    ReloadOutcome::Invalid,
                    version_now,
                    "400 naming the field; invalid counter rose",
                ),
                Some(c) if c.present => Confirmation::new(
                    ReloadOutcome::Failed,
                    version_now,
                    format!(
                        "400 naming the field, but proxy_config_reloads_total went ok {}→{}, invalid {}→{}",
                        before.ok, c.ok, before.invalid, c.invalid
                    ),
                ),
                _ => Confirmation::new(
                    ReloadOutcome::Invalid,
                    version_now,
                    "400 naming the field (no proxy_config_reloads_total to check)",
                ),
            }
        }
    }
}

/// A confirmation that the proxy exited, if it has.
fn exited(proxy: &ProxyInstance) -> Option<Confirmation> {
    let status = proxy.exit_status()?;
    let hint = if status_is_signal(status, libc::SIGHUP) {
        " — the proxy does not handle SIGHUP (its default action is to exit)"
    } else {
        ""
    };
    Some(Confirmation::proxy_exited(format!(
        "the proxy exited ({}){hint}; {}",
        proxy::describe(status),
        proxy::see_log(&proxy.log)
    )))
}

fn status_is_signal(status: std::process::ExitStatus, signal: i32) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(signal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_alternates_files_and_triggers_with_one_invalid_file() {
        let plan = plan(RELOADS, INVALID_AT);
        assert_eq!(plan.len(), 21);
        let valid: Vec<_> = plan
            .iter()
            .filter_map(|(f, _)| match f {
                ConfigFile::Valid(set) => Some(*set),
                ConfigFile::Invalid => None,
            })
            .collect();
        assert_eq!(valid.len(), 20);
        assert!(valid.iter().step_by(2).all(|s| *s == RuleSet::B));
        assert!(valid.iter().skip(1).step_by(2).all(|s| *s == RuleSet::A));
        assert_eq!(plan[INVALID_AT], (ConfigFile::Invalid, Trigger::Http));
        assert_eq!(plan.iter().filter(|(_, t)| *t == Trigger::Sighup).count(), 11);
    }
}
