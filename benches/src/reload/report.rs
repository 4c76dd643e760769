//! The scenarios' reports: what passed, what did not and why, as a table
//! for the terminal and as JSON (`reload.json`, `handover.json`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::{json, Value};

use super::judge::Judgement;
use super::proxy::ReloadCounts;
use super::records::{HandoverRecord, ReloadOutcome, ReloadRecord, INVALID_AT, RELOADS};
use super::Settings;

/// Reloads of valid files a full run performs.
pub const EXPECTED_OK: u64 = (RELOADS - 1) as u64;
/// Reloads of the invalid file a full run performs.
pub const EXPECTED_INVALID: u64 = 1;
/// Examples shown per kind of finding in the table (the JSON has more).
const SHOWN: usize = 5;

fn settings_json(settings: &Settings) -> Value {
    json!({
        "duration_s": settings.duration.as_secs_f64(),
        "load": settings.load,
        "handovers": settings.handovers,
        "proxy_bin": settings.binaries.proxy,
        "origin_bin": settings.binaries.origin,
    })
}

/// Most requests in flight at once above which the stack is taken to have
/// fallen behind the offered rate: over a second's worth of requests.
fn fell_behind(in_flight_max: u64, settings: &Settings) -> Option<String> {
    (in_flight_max > settings.load.rate).then(|| {
        format!(
            "up to {in_flight_max} requests were in flight at once (over a second's worth): the stack fell behind \
             the offered rate, so failures may be overload (past 1024 connections the proxy's \
             max_connections_per_ip closes new ones), not the reload; try a lower --rate or --write-percent"
        )
    })
}

/// The findings every scenario shares, from the load's answers.
fn load_problems(j: &Judgement, unfinished: u64, problems: &mut Vec<String>) {
    if j.failed > 0 {
        problems.push(format!(
            "{} requests failed without an answer: {}",
            j.failed,
            classes(&j.failed_by_class)
        ));
    }
    if j.five_xx > 0 {
        problems.push(format!("{} answers were 5xx", j.five_xx));
    }
    if j.inconsistent > 0 {
        problems.push(format!(
            "{} answers were inconsistent with both rule sets",
            j.inconsistent
        ));
    }
    if j.stale_rules > 0 {
        problems.push(format!(
            "{} answers followed the other rule set inside a settled period",
            j.stale_rules
        ));
    }
    if unfinished > 0 {
        problems.push(format!(
            "{unfinished} requests were still unanswered when the harness gave up"
        ));
    }
}

fn classes(map: &BTreeMap<String, u64>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The report of scenario `reload`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ReloadReport {
    pub scenario: &'static str,
    pub passed: bool,
    /// Why it did not pass, one line each.
    pub problems: Vec<String>,
    /// Worth knowing, not failing.
    pub notes: Vec<String>,
    pub settings: Value,
    pub load_seconds: f64,
    /// Requests sent (the open loop's schedule, each once).
    pub sent: u64,
    /// Still in flight when the harness stopped waiting.
    pub unfinished: u64,
    pub in_flight_max: u64,
    pub expected: BTreeMap<&'static str, u64>,
    /// Valid files confirmed in effect.
    pub reloads_ok: u64,
    /// The invalid file refused, rules unchanged.
    pub reloads_invalid: u64,
    pub reloads_failed: u64,
    /// Valid reloads whose rules the load then saw in effect (rule-dependent
    /// answers inside the period it started, all right).
    pub reloads_applied: u64,
    /// Valid reloads whose period saw no rule-dependent answer to judge.
    pub reloads_unverified: u64,
    /// `proxy_config_reloads_total` at the end.
    pub metric_reloads: Option<ReloadCounts>,
    /// From `proxy_cache_total` at the end.
    pub metrics_hit_ratio: Option<f64>,
    /// Versions `GET /config` / `POST /reload` reported, per file.
    pub versions: BTreeMap<String, Vec<String>>,
    /// Why the scenario ended early.
    pub aborted: Option<String>,
    /// How the proxy ended when stopped with SIGTERM.
    pub proxy_exit: String,
    pub proxy_log: PathBuf,
    pub reloads: Vec<ReloadRecord>,
    pub judgement: Judgement,
}

impl ReloadReport {
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        settings: &Settings,
        sent: u64,
        unfinished: u64,
        in_flight_max: u64,
        load_seconds: f64,
        judgement: Judgement,
        reloads: Vec<ReloadRecord>,
        metric_reloads: Option<ReloadCounts>,
        metrics_hit_ratio: Option<f64>,
        versions: BTreeMap<String, Vec<String>>,
        aborted: Option<String>,
        proxy_exit: String,
        proxy_log: PathBuf,
    ) -> ReloadReport {
        let count = |o: ReloadOutcome| reloads.iter().filter(|r| r.outcome == o).count() as u64;
        let reloads_ok = count(ReloadOutcome::Ok);
        let reloads_invalid = count(ReloadOutcome::Invalid);
        let reloads_failed = count(ReloadOutcome::Failed) + count(ReloadOutcome::ProxyExited);
        let after_reload = || judgement.periods.iter().filter(|p| p.period.after_reload.is_some());
        let reloads_applied = after_reload().filter(|p| p.verified()).count() as u64;
        let reloads_unverified = after_reload().filter(|p| p.judged == 0).count() as u64;

        let mut problems = Vec::new();
        let mut notes = Vec::new();
        if let Some(why) = &aborted {
            problems.push(format!("aborted at {}", first_line(why)));
        }
        load_problems(&judgement, unfinished, &mut problems);
        if reloads.len() < RELOADS {
            problems.push(format!("only {} of {RELOADS} reloads were made", reloads.len()));
        }
        for r in reloads.iter().filter(|r| r.outcome == ReloadOutcome::Failed) {
            problems.push(format!(
                "reload {} ({} by {:?}) failed: {}",
                r.index,
                r.file,
                r.trigger,
                first_line(&r.detail)
            ));
        }
        if reloads_ok != EXPECTED_OK || reloads_invalid != EXPECTED_INVALID {
            problems.push(format!(
                "reloads ok {reloads_ok} (want {EXPECTED_OK}), invalid {reloads_invalid} (want {EXPECTED_INVALID})"
            ));
        }
        if reloads_applied + reloads_unverified < reloads_ok {
            problems.push(format!(
                "only {reloads_applied} of {reloads_ok} confirmed reloads were seen in effect by the load"
            ));
        }
        notes.extend(fell_behind(in_flight_max, settings));
        if reloads_unverified > 0 {
            notes.push(format!(
                "{reloads_unverified} reload periods saw no rule-dependent request (raise --rate or --rules-percent)"
            ));
        }
        match metric_reloads {
            Some(m) if m.present => {
                if m.ok != reloads_ok || m.invalid != reloads_invalid {
                    problems.push(format!(
                        "proxy_config_reloads_total says ok {} invalid {}; the harness confirmed ok {reloads_ok} invalid {reloads_invalid}",
                        m.ok, m.invalid
                    ));
                }
            }
            Some(_) => notes.push("the proxy's /metrics has no proxy_config_reloads_total".into()),
            None => notes.push("the proxy's /metrics could not be read at the end".into()),
        }
        if aborted.is_none() && proxy_exit != "exit 0" {
            problems.push(format!("the proxy ended with {proxy_exit} on SIGTERM, not exit 0"));
        }
        let expected = BTreeMap::from([
            ("ok", EXPECTED_OK),
            ("invalid", EXPECTED_INVALID),
            ("applied", EXPECTED_OK),
            ("invalid_at", INVALID_AT as u64 + 1),
        ]);
        ReloadReport {
            scenario: "reload",
            passed: problems.is_empty(),
            problems,
            notes,
            settings: settings_json(settings),
            load_seconds,
            sent,
            unfinished,
            in_flight_max,
            expected,
            reloads_ok,
            reloads_invalid,
            reloads_failed,
            reloads_applied,
            reloads_unverified,
            metric_reloads,
            metrics_hit_ratio,
            versions,
            aborted,
            proxy_exit,
            proxy_log,
            reloads,
            judgement,
        }
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "== scenario reload: {}", verdict(self.passed));
        load_table(
            &mut out,
            self.sent,
            self.unfinished,
            self.in_flight_max,
            self.load_seconds,
            &self.judgement,
        );
        let _ = writeln!(
            out,
            "  reloads             ok {} / {EXPECTED_OK}, invalid {} / {EXPECTED_INVALID}, failed {}, applied {} (unverified {})",
            self.reloads_ok, self.reloads_invalid, self.reloads_failed, self.reloads_applied, self.reloads_unverified
        );
        if let Some(m) = self.metric_reloads.filter(|m| m.present) {
            let _ = writeln!(
                out,
                "  reload metric       proxy_config_reloads_total ok {} invalid {}",
                m.ok, m.invalid
            );
        }
        if let Some(ratio) = self.metrics_hit_ratio {
            let _ = writeln!(out, "  hit ratio (metrics) {:.1} %", ratio * 100.0);
        }
        for (file, versions) in &self.versions {
            let _ = writeln!(out, "  versions of {file:<7} {}", versions.join(", "));
        }
        let _ = writeln!(
            out,
            "  proxy at the end    {} ({})",
            self.proxy_exit,
            self.proxy_log.display()
        );
        let _ = writeln!(out, "  #   file    trigger outcome       ms  version");
        for r in &self.reloads {
            let _ = writeln!(
                out,
                "  {:<3} {:<7} {:<7} {:<11} {:>6.0}  {}{}",
                r.index,
                r.file,
                format!("{:?}", r.trigger).to_lowercase(),
                format!("{:?}", r.outcome).to_lowercase(),
                r.ms,
                r.version_after.as_deref().unwrap_or("-"),
                if matches!(r.outcome, ReloadOutcome::Ok | ReloadOutcome::Invalid) {
                    String::new()
                } else {
                    format!("  {}", first_line(&r.detail))
                }
            );
        }
        findings_table(&mut out, &self.judgement);
        problems_table(&mut out, &self.problems, &self.notes);
        out
    }
}

/// The report of scenario `handover`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HandoverReport {
    pub scenario: &'static str,
    pub passed: bool,
    pub problems: Vec<String>,
    pub settings: Value,
    pub load_seconds: f64,
    pub sent: u64,
    pub unfinished: u64,
    pub in_flight_max: u64,
    pub handovers_done: usize,
    pub handovers: Vec<HandoverRecord>,
    pub aborted: Option<String>,
    /// How the last proxy ended when stopped with SIGTERM at the end.
    pub last_proxy_exit: String,
    pub notes: Vec<String>,
    pub judgement: Judgement,
}

impl HandoverReport {
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        settings: &Settings,
        sent: u64,
        unfinished: u64,
        in_flight_max: u64,
        load_seconds: f64,
        judgement: Judgement,
        handovers: Vec<HandoverRecord>,
        aborted: Option<String>,
        last_proxy_exit: String,
    ) -> HandoverReport {
        let mut problems = Vec::new();
        // A hand-over that went wrong is listed below, with its reason.
        if aborted.is_some() && !handovers.iter().any(|h| h.error.is_some()) {
            problems.push(format!(
                "aborted at {}",
                first_line(aborted.as_deref().unwrap_or_default())
            ));
        }
        load_problems(&judgement, unfinished, &mut problems);
        let handovers_done = handovers
            .iter()
            .filter(|h| h.old_exit_code == Some(0) && h.error.is_none())
            .count();
        if handovers.len() < settings.handovers {
            problems.push(format!(
                "only {} of {} hand-overs were attempted",
                handovers.len(),
                settings.handovers
            ));
        }
        for h in handovers.iter().filter(|h| h.error.is_some()) {
            problems.push(format!(
                "hand-over {}: {}",
                h.index,
                first_line(h.error.as_deref().unwrap_or_default())
            ));
        }
        if aborted.is_none() && last_proxy_exit != "exit 0" {
            problems.push(format!(
                "the last proxy ended with {last_proxy_exit} on SIGTERM, not exit 0"
            ));
        }
        HandoverReport {
            scenario: "handover",
            passed: problems.is_empty(),
            problems,
            settings: settings_json(settings),
            load_seconds,
            sent,
            unfinished,
            in_flight_max,
            handovers_done,
            handovers,
            aborted,
            last_proxy_exit,
            notes: fell_behind(in_flight_max, settings).into_iter().collect(),
            judgement,
        }
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "== scenario handover: {}", verdict(self.passed));
        load_table(
            &mut out,
            self.sent,
            self.unfinished,
            self.in_flight_max,
            self.load_seconds,
            &self.judgement,
        );
        let _ = writeln!(
            out,
            "  hand-overs          {} / {} clean",
            self.handovers_done,
            self.handovers.len()
        );
        let _ = writeln!(out, "  #   old pid  new pid  new ready ms  old exit   old exit ms");
        for h in &self.handovers {
            let _ = writeln!(
                out,
                "  {:<3} {:<8} {:<8} {:>12}  {:<10} {:>11}",
                h.index,
                h.old_pid,
                h.new_pid.map_or("-".to_owned(), |p| p.to_string()),
                h.new_ready_ms.map_or("-".to_owned(), |ms| format!("{ms:.0}")),
                h.old_exit.as_deref().unwrap_or("-"),
                h.old_exit_ms.map_or("-".to_owned(), |ms| format!("{ms:.0}")),
            );
        }
        let _ = writeln!(out, "  last proxy at end   {}", self.last_proxy_exit);
        findings_table(&mut out, &self.judgement);
        problems_table(&mut out, &self.problems, &self.notes);
        out
    }
}

fn verdict(passed: bool) -> &'static str {
    if passed {
        "PASSED"
    } else {
        "FAILED"
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

fn load_table(out: &mut String, sent: u64, unfinished: u64, in_flight_max: u64, load_seconds: f64, j: &Judgement) {
    let _ = writeln!(
        out,
        "  requests            sent {sent} in {load_seconds:.1} s, answered {}, failed {}, unfinished {unfinished} (at most {in_flight_max} in flight)",
        j.answered, j.failed
    );
    if j.failed > 0 {
        let _ = writeln!(out, "  failed by class     {}", classes(&j.failed_by_class));
    }
    let _ = writeln!(
        out,
        "  5xx {}, inconsistent with both rule sets {}, stale rules {} (of {} settled checks)",
        j.five_xx, j.inconsistent, j.stale_rules, j.settled_checks
    );
    let _ = writeln!(
        out,
        "  hit ratio           {:.1} % ({} hits, {} misses, {} other; hot keys {:.1} %)",
        j.cache.hit_ratio * 100.0,
        j.cache.hits,
        j.cache.misses,
        j.cache.other,
        j.cache.hot_hit_ratio * 100.0
    );
    let _ = writeln!(
        out,
        "  latency             p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms",
        j.latency.p50_ms, j.latency.p99_ms, j.latency.p999_ms, j.latency.max_ms
    );
    for (kind, statuses) in &j.by_kind {
        let _ = writeln!(out, "  {kind:<19} {}", classes(statuses));
    }
}

fn findings_table(out: &mut String, j: &Judgement) {
    for (title, examples) in [
        ("failed", &j.failed_examples),
        ("5xx", &j.five_xx_examples),
        ("inconsistent", &j.inconsistent_examples),
        ("stale rules", &j.stale_examples),
    ] {
        if examples.is_empty() {
            continue;
        }
        let _ = writeln!(out, "  {title} (first {}):", SHOWN.min(examples.len()));
        for f in examples.iter().take(SHOWN) {
            let _ = writeln!(
                out,
                "    {:<11} {:>8.3}-{:<8.3} {:<22} {}",
                f.kind, f.start_s, f.end_s, f.answer, f.detail
            );
        }
    }
}

fn problems_table(out: &mut String, problems: &[String], notes: &[String]) {
    for p in problems {
        let _ = writeln!(out, "  PROBLEM: {p}");
    }
    for n in notes {
        let _ = writeln!(out, "  note: {n}");
    }
}
