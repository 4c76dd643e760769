//! The soak's report: what the tallies, the chaos timeline and the RSS
//! samples add up to, as a table for the terminal and as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::chaos::{ChaosEvent, ChaosKind, Timeline};
use super::workload::{Anomaly, FinalSweep, FiveXx, ProbeTally, Slow, StaleRead, Tally, Unexpected, WriteTally};

/// RSS growth above which the report calls memory not flat. Allocators keep
/// freed memory and caches warm up, so a few percent is noise.
const RSS_GROWTH_FINDING_PCT: f64 = 10.0;
/// Findings listed per kind in the table (the JSON has up to 50).
const SHOWN: usize = 5;

/// RSS of one proxy over the run.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Rss {
    pub pid: u32,
    /// After the warm-up, kB.
    pub start_kib: Option<u64>,
    /// When the offered load stopped, kB.
    pub end_kib: Option<u64>,
    pub max_kib: Option<u64>,
    pub growth_kib: Option<i64>,
    pub growth_pct: Option<f64>,
}

impl Rss {
    pub fn new(pid: u32, start: Option<u64>, end: Option<u64>, samples: impl Iterator<Item = Option<u64>>) -> Rss {
        let growth_kib = start.zip(end).map(|(s, e)| e as i64 - s as i64);
        Rss {
            pid,
            start_kib: start,
            end_kib: end,
            max_kib: samples.flatten().chain(start).chain(end).max(),
            growth_kib,
            growth_pct: growth_kib.zip(start).map(|(g, s)| 100.0 * g as f64 / s.max(1) as f64),
        }
    }
}

/// 5xx answers of one proxy instance, split by whether the origin was down.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FiveXxSplit {
    /// 502/504 while the origin was down or restarting: expected.
    pub origin_down: u64,
    /// Any other 5xx: a finding.
    pub other: u64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    fn of(h: &hdrhistogram::Histogram<u64>) -> Latency {
        let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
        Latency {
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: h.max() as f64 / 1000.0,
        }
    }
}

/// Everything the soak found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    pub started_at: String,
    pub settings: serde_json::Value,
    /// Seconds of offered load (warm-up included).
    pub load_seconds: f64,
    /// Requests of the open-loop schedule.
    pub requests_offered: u64,
    /// Every request made: the schedule's, the probes' and the final
    /// sweep's.
    pub requests_sent: u64,
    /// Requests still unanswered when the run ended (abandoned).
    pub unfinished: u64,
    pub in_flight_max: u64,
    /// By status code, or `error:<kind>` for no answer, or `dropped`.
    pub statuses: BTreeMap<String, u64>,
    pub by_op: BTreeMap<String, BTreeMap<String, u64>>,
    pub by_instance: BTreeMap<String, BTreeMap<String, u64>>,
    /// From due time to the end of the answer, over every answered read
    /// and write (dropped writes excluded), and by operation.
    pub latency: Latency,
    pub latency_by_op: BTreeMap<String, Latency>,
    /// The slowest answers, with the chaos event before each.
    pub slowest: Vec<Slow>,
    /// Versions judged.
    pub checks: u64,
    pub stale_reads: u64,
    pub stale_examples: Vec<StaleRead>,
    /// Reads of a version the resolver had given up on, which committed
    /// after all: the origin went back, not the proxy (not counted stale).
    pub late_commits: u64,
    pub anomalies: BTreeMap<String, u64>,
    pub anomaly_examples: Vec<Anomaly>,
    pub writes: WriteTally,
    pub probes: ProbeTally,
    pub five_xx: BTreeMap<String, FiveXxSplit>,
    /// 5xx not explained by the origin being down (first 50).
    pub five_xx_findings: Vec<FiveXx>,
    pub unexpected_statuses: u64,
    pub unexpected_examples: Vec<Unexpected>,
    pub rss: BTreeMap<String, Rss>,
    /// `[seconds, rss a kB, rss b kB]` every few seconds.
    pub rss_samples: Vec<(f64, Option<u64>, Option<u64>)>,
    pub chaos_counts: BTreeMap<ChaosKind, u64>,
    pub chaos_events: Vec<ChaosEvent>,
    pub final_sweep: FinalSweep,
    /// Proxies still running at the end (false: it crashed).
    pub proxies_alive: BTreeMap<String, bool>,
    /// Proxies that did not exit within 5 s of SIGTERM.
    pub slow_to_stop: Vec<String>,
    /// Counter series from each proxy's `/metrics` at the end.
    pub proxy_counters: BTreeMap<String, BTreeMap<String, f64>>,
    /// One line per problem found; empty is a clean run.
    pub findings: Vec<String>,
    /// No stale read and no answer that is wrong whatever the timing.
    pub passed: bool,
}

/// What the run hands the report besides the tally.
pub struct Inputs {
    pub started_at: String,
    pub settings: serde_json::Value,
    pub load_seconds: f64,
    pub unfinished: u64,
    pub rss: BTreeMap<String, Rss>,
    pub rss_samples: Vec<(f64, Option<u64>, Option<u64>)>,
    pub final_sweep: FinalSweep,
    pub proxies_alive: BTreeMap<String, bool>,
    pub slow_to_stop: Vec<String>,
    pub proxy_counters: BTreeMap<String, BTreeMap<String, f64>>,
}

pub fn build(tally: Tally, timeline: &Timeline, inputs: Inputs) -> Report {
    let mut five_xx: BTreeMap<String, FiveXxSplit> = BTreeMap::new();
    for name in ["a", "b"] {
        five_xx.entry(name.into()).or_default();
    }
    let mut five_xx_findings = Vec::new();
    for answer in &tally.five_xx {
        let split = five_xx.entry(answer.instance.into()).or_default();
        if matches!(answer.status, 502 | 504) && timeline.origin_was_down(answer.start_s, answer.end_s) {
            split.origin_down += 1;
        } else {
            split.other += 1;
            if five_xx_findings.len() < 50 {
                five_xx_findings.push(answer.clone());
            }
        }
    }
    let after_chaos = |at_s: f64| {
        timeline.last_before(at_s).map(|(kind, since)| {
            if since < 0.0 {
                format!("during {}", kind.name())
            } else {
                format!("{:.1}s after {}", since, kind.name())
            }
        })
    };
    let mut stale_examples = tally.stale_examples.clone();
    for example in &mut stale_examples {
        example.after_chaos = after_chaos(example.start_s);
    }
    let mut slowest = tally.slowest.clone();
    for slow in &mut slowest {
        slow.after_chaos = after_chaos(slow.start_s);
    }
    let mut chaos_counts: BTreeMap<ChaosKind, u64> = ChaosKind::ALL.iter().map(|&k| (k, 0)).collect();
    for event in &timeline.events {
        *chaos_counts.entry(event.kind).or_default() += 1;
    }
    let mut report = Report {
        started_at: inputs.started_at,
        settings: inputs.settings,
        load_seconds: inputs.load_seconds,
        requests_offered: tally.offered,
        requests_sent: tally.sent,
        unfinished: inputs.unfinished,
        in_flight_max: tally.in_flight_max,
        statuses: tally.statuses.clone(),
        by_op: tally.by_op.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        by_instance: tally
            .by_instance
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        latency: Latency::of(&tally.latency_us),
        latency_by_op: tally
            .latency_by_op
            .iter()
            .map(|(op, h)| (op.to_string(), Latency::of(h)))
            .collect(),
        slowest,
        checks: tally.checks,
        stale_reads: tally.stale,
        stale_examples,
        late_commits: tally.late_commits,
        anomalies: tally.anomalies.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        anomaly_examples: tally.anomaly_examples.clone(),
        writes: tally.writes.clone(),
        probes: tally.probes.clone(),
        five_xx,
        five_xx_findings,
        unexpected_statuses: tally.unexpected,
        unexpected_examples: tally.unexpected_examples.clone(),
        rss: inputs.rss,
        rss_samples: inputs.rss_samples,
        chaos_counts,
        chaos_events: timeline.events.clone(),
        final_sweep: inputs.final_sweep,
        proxies_alive: inputs.proxies_alive,
        slow_to_stop: inputs.slow_to_stop,
        proxy_counters: inputs.proxy_counters,
        findings: Vec::new(),
        passed: false,
    };
    report.findings = findings(&report);
    report.passed = report.stale_reads == 0 && report.anomalies.values().all(|&n| n == 0);
    report
}

fn findings(r: &Report) -> Vec<String> {
    let mut out = Vec::new();
    if r.stale_reads > 0 {
        out.push(format!(
            "{} stale reads ({} in the final sweep)",
            r.stale_reads, r.final_sweep.stale
        ));
    }
    for (kind, n) in &r.anomalies {
        out.push(format!("{n} answers of kind {kind} (wrong whatever the timing)"));
    }
    let other_5xx: u64 = r.five_xx.values().map(|s| s.other).sum();
    if other_5xx > 0 {
        out.push(format!(
            "{other_5xx} 5xx answers not explained by the origin being down"
        ));
    }
    if r.unexpected_statuses > 0 {
        out.push(format!("{} answers with an unexpected status", r.unexpected_statuses));
    }
    let errors: u64 = r
        .statuses
        .iter()
        .filter(|(k, _)| k.starts_with("error:"))
        .map(|(_, v)| v)
        .sum();
    if errors > 0 {
        out.push(format!("{errors} requests got no answer (transport error or timeout)"));
    }
    if r.unfinished > 0 {
        out.push(format!("{} requests were still unanswered at the end", r.unfinished));
    }
    for (name, rss) in &r.rss {
        if let (Some(pct), Some(kib)) = (rss.growth_pct, rss.growth_kib) {
            if pct > RSS_GROWTH_FINDING_PCT {
                out.push(format!("proxy {name} RSS grew {kib} kB ({pct:.1} %)"));
            }
        }
    }
    for (name, alive) in &r.proxies_alive {
        if !alive {
            out.push(format!("proxy {name} exited during the soak"));
        }
    }
    for name in &r.slow_to_stop {
        out.push(format!("proxy {name} did not exit within 5 s of SIGTERM"));
    }
    for line in &r.final_sweep.ledger_disagreements {
        out.push(format!("checker and origin disagree: {line}"));
    }
    if r.late_commits > 0 {
        out.push(format!(
            "{} reads saw a write commit after the resolver had given up on it (the origin's doing; not counted stale)",
            r.late_commits
        ));
    }
    let failed_chaos = r.chaos_events.iter().filter(|e| e.failed).count();
    if failed_chaos > 0 {
        out.push(format!("{failed_chaos} chaos events could not be undone"));
    }
    out
}

/// The report for the terminal.
pub fn table(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\nsoak: {:.0} s of load, started {}", r.load_seconds, r.started_at);
    let _ = writeln!(
        s,
        "requests offered {} (open loop), sent {} (with probes and final sweep)   max in flight {}   unfinished {}",
        r.requests_offered, r.requests_sent, r.in_flight_max, r.unfinished
    );
    let _ = writeln!(
        s,
        "latency from due time: p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  p99.9 {:.1} ms  max {:.1} ms",
        r.latency.p50_ms, r.latency.p90_ms, r.latency.p99_ms, r.latency.p999_ms, r.latency.max_ms
    );
    let _ = writeln!(s, "\nstatus         count");
    for (status, n) in &r.statuses {
        let _ = writeln!(s, "{status:<14} {n}");
    }
    let _ = writeln!(s, "\noperation      p50 ms   p99 ms   max ms  statuses");
    for (op, statuses) in &r.by_op {
        let (p50, p99, max) = r
            .latency_by_op
            .get(op)
            .map_or((f64::NAN, f64::NAN, f64::NAN), |l| (l.p50_ms, l.p99_ms, l.max_ms));
        let _ = writeln!(s, "{op:<14} {p50:>6.1} {p99:>8.1} {max:>8.1}  {}", join(statuses));
    }
    for slow in r.slowest.iter().take(SHOWN) {
        let _ = writeln!(
            s,
            "  slow: {:.0} ms {} {} via {} at {:.1}s: {} X-Cache {}; {}",
            slow.ms,
            slow.op,
            slow.path,
            slow.instance,
            slow.start_s,
            slow.status,
            slow.x_cache,
            slow.after_chaos.as_deref().unwrap_or("before any chaos")
        );
    }
    let w = &r.writes;
    let _ = writeln!(
        s,
        "\nwrites: {} acknowledged, {} unknown by answer, {} unknown by error, {} dropped on purpose ({}); resolved from the origin: {} committed, {} lost; {} turned into reads (all users busy)",
        w.acknowledged,
        w.unknown_answer,
        w.unknown_error,
        w.dropped.values().sum::<u64>(),
        join(&w.dropped),
        w.resolved_committed,
        w.resolved_lost,
        w.skipped_all_users_busy
    );
    let p = &r.probes;
    let _ = writeln!(
        s,
        "dropped-write probes: {} run, {} conclusive (write committed), {} write lost, {} skipped; {} stale reads while they ran",
        p.run, p.conclusive, p.write_lost, p.skipped, p.stale_reads
    );
    let _ = writeln!(
        s,
        "\nchecker: {} versions judged, {} stale reads, {} late commits, anomalies: {}",
        r.checks,
        r.stale_reads,
        r.late_commits,
        if r.anomalies.is_empty() {
            "none".to_owned()
        } else {
            join(&r.anomalies)
        }
    );
    for e in r.stale_examples.iter().take(SHOWN) {
        let _ = writeln!(
            s,
            "  stale: {} {} via {} at {:.1}s: user {} v{} < floor v{} ({:?}, {}, at {:.1}s); X-Cache {} {}; Age {}; {}",
            e.op,
            e.path,
            e.instance,
            e.start_s,
            e.user,
            e.seen,
            e.floor.version,
            e.floor.via,
            e.floor.cause,
            e.floor.since_s,
            e.x_cache,
            e.cache_status,
            if e.age.is_empty() { "-" } else { &e.age },
            e.after_chaos.as_deref().unwrap_or("before any chaos")
        );
    }
    for e in r.anomaly_examples.iter().take(SHOWN) {
        let _ = writeln!(
            s,
            "  {}: {} via {} at {:.1}s: {}",
            e.kind, e.path, e.instance, e.start_s, e.detail
        );
    }
    let _ = writeln!(s, "\n5xx        origin down (expected)   other (finding)");
    for (name, split) in &r.five_xx {
        let _ = writeln!(s, "proxy {name:<4} {:>22}   {:>15}", split.origin_down, split.other);
    }
    for e in r.five_xx_findings.iter().take(SHOWN) {
        let _ = writeln!(
            s,
            "  {} {} {} via {} at {:.1}–{:.1}s, X-Cache {}: {}",
            e.status, e.op, e.path, e.instance, e.start_s, e.end_s, e.x_cache, e.error
        );
    }
    for e in r.unexpected_examples.iter().take(SHOWN) {
        let _ = writeln!(
            s,
            "  unexpected {} {} {} via {} at {:.1}s: {}",
            e.status, e.op, e.path, e.instance, e.start_s, e.detail
        );
    }
    let _ = writeln!(s, "\nRSS        start kB    end kB    max kB   growth");
    for (name, rss) in &r.rss {
        let _ = writeln!(
            s,
            "proxy {name:<4} {:>8} {:>9} {:>9}   {}",
            opt(rss.start_kib),
            opt(rss.end_kib),
            opt(rss.max_kib),
            match (rss.growth_kib, rss.growth_pct) {
                (Some(kib), Some(pct)) => format!("{kib:+} kB ({pct:+.1} %)"),
                _ => "-".into(),
            }
        );
    }
    let _ = writeln!(
        s,
        "\nchaos: {}",
        r.chaos_counts
            .iter()
            .map(|(k, n)| format!("{} {n}", k.name()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        s,
        "final sweep: {} reads, {} stale, {} ledger disagreements, {} users unresolved",
        r.final_sweep.reads,
        r.final_sweep.stale,
        r.final_sweep.ledger_disagreements.len(),
        r.final_sweep.unresolved
    );
    if r.findings.is_empty() {
        let _ = writeln!(s, "\nno findings");
    } else {
        let _ = writeln!(s, "\nfindings:");
        for f in &r.findings {
            let _ = writeln!(s, "  - {f}");
        }
    }
    s
}

fn join<K: std::fmt::Display, V: std::fmt::Display>(map: &BTreeMap<K, V>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// Counter series (`*_total`) from a `/metrics` page, except the request
/// counts the soak tallies itself.
pub fn counters(metrics: &str) -> BTreeMap<String, f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("proxy_requests_total"))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let name = series.split('{').next()?;
            name.ends_with("_total")
                .then(|| Some((series.to_owned(), value.parse().ok()?)))
                .flatten()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_growth_is_relative_to_the_start() {
        let rss = Rss::new(1, Some(1000), Some(1100), [Some(1200), None].into_iter());
        assert_eq!(rss.growth_kib, Some(100));
        assert_eq!(rss.growth_pct, Some(10.0));
        assert_eq!(rss.max_kib, Some(1200));
    }

    #[test]
    fn counters_keep_total_series_only() {
        let page = "# HELP x\nproxy_requests_total{rule=\"a\",status=\"200\"} 5\nproxy_cache_total{rule=\"a\",outcome=\"hit\"} 3\nproxy_upstream_duration_seconds_count{rule=\"a\"} 2\n";
        let counters = counters(page);
        assert_eq!(counters.len(), 1);
        assert_eq!(counters["proxy_cache_total{rule=\"a\",outcome=\"hit\"}"], 3.0);
    }
}
