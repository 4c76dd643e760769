//! Judging the load's answers against the rule sets: pure, after the run.
//!
//! The reload controller keeps a [`RuleTimeline`]: *settled periods*, each
//! running from the moment a reload was confirmed in effect to the moment
//! the next one that could change the rules was triggered. Between them
//! (a reload in progress, or one that was never confirmed) either rule set
//! is right.
//!
//! Every answer must be allowed by A or by B ([`Kind::allowed`]); one
//! allowed by neither is *inconsistent*. A rule-dependent answer to a
//! request that started and ended inside one settled period must also be
//! allowed by that period's set; one that is not was answered by *stale
//! rules*. Being strict there is sound because the proxy takes its rules
//! once per request: a request that starts after a reload was confirmed
//! must see the new rules, and one that ends before the next reload was
//! triggered cannot have seen newer ones. An invalid file starts no new
//! period: the running rules must not change at all.
//!
//! Transport errors are *failed*, never retried, and 5xx answers are
//! counted apart; both are findings whatever the rules.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::load::{CacheSeen, Outcome, Sample};
use super::rules::{Kind, RuleSet};

/// Findings kept as examples, per kind of finding.
const EXAMPLES: usize = 20;

/// A span during which the proxy runs one known rule set.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Period {
    pub set: RuleSet,
    /// Since the scenario's start.
    #[serde(serialize_with = "secs")]
    pub from: Duration,
    /// `None`: still running when the scenario ended.
    #[serde(serialize_with = "opt_secs")]
    pub until: Option<Duration>,
    /// The reload (1-based) that started it; `None` for the start-up rules.
    pub after_reload: Option<usize>,
}

/// The settled periods, in order.
#[derive(Clone, Debug, Default)]
pub struct RuleTimeline {
    periods: Vec<Period>,
}

impl RuleTimeline {
    /// The proxy runs `set` from `at` on.
    pub fn starting(set: RuleSet, at: Duration) -> RuleTimeline {
        RuleTimeline {
            periods: vec![Period {
                set,
                from: at,
                until: None,
                after_reload: None,
            }],
        }
    }

    /// A reload that may change the rules is triggered at `at`: the current
    /// period, if any, ends there.
    pub fn unsettle(&mut self, at: Duration) {
        if let Some(open) = self.periods.last_mut().filter(|p| p.until.is_none()) {
            open.until = Some(at);
        }
    }

    /// Reload `reload` (1-based) was confirmed in effect at `at` with `set`.
    pub fn settle(&mut self, set: RuleSet, at: Duration, reload: usize) {
        self.unsettle(at);
        self.periods.push(Period {
            set,
            from: at,
            until: None,
            after_reload: Some(reload),
        });
    }

    pub fn periods(&self) -> &[Period] {
        &self.periods
    }

    /// The period holding all of `[start, end]`.
    fn containing(&self, start: Duration, end: Duration) -> Option<usize> {
        self.periods
            .iter()
            .position(|p| p.from <= start && p.until.is_none_or(|until| end <= until))
    }
}

/// What a settled period's rule-dependent answers showed.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PeriodCheck {
    #[serde(flatten)]
    pub period: Period,
    /// Rule-dependent answers judged inside it.
    pub judged: u64,
    /// Of those, answered by the wrong set's rules.
    pub stale: u64,
}

impl PeriodCheck {
    /// Its rules were seen in effect: answers were judged, all right.
    pub fn verified(&self) -> bool {
        self.judged > 0 && self.stale == 0
    }
}

/// One answer worth looking at.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Finding {
    pub kind: &'static str,
    pub start_s: f64,
    pub end_s: f64,
    /// The status, or `error:<class>`.
    pub answer: String,
    pub cache_status: String,
    /// What it should have been, or why it is wrong.
    pub detail: String,
}

/// Latency from due time to the end of the answer, of every answer.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// Cache outcomes of 200 answers on cacheable routes, from `Cache-Status`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CacheTally {
    pub hits: u64,
    pub misses: u64,
    /// Bypass, stale, or no header.
    pub other: u64,
    /// Hits / (hits + misses + other).
    pub hit_ratio: f64,
    /// The same, of the hot keys only.
    pub hot_hit_ratio: f64,
    /// Largest `ttl=` a hit reported, seconds.
    pub max_hit_ttl_s: Option<i64>,
}

/// Everything the answers add up to.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Judgement {
    /// Requests that ended (answered or failed).
    pub finished: u64,
    pub answered: u64,
    /// No answer: connection refused or reset, closed early, timeout.
    pub failed: u64,
    /// `failed` by class (`connect-refused`, `reset`, `timeout`, ...).
    pub failed_by_class: BTreeMap<String, u64>,
    /// Per kind, per status (or `error:<class>`).
    pub by_kind: BTreeMap<&'static str, BTreeMap<String, u64>>,
    pub five_xx: u64,
    /// Non-5xx answers neither rule set allows (or a hit's TTL above both).
    pub inconsistent: u64,
    /// Rule-dependent answers inside a settled period, judged against it.
    pub settled_checks: u64,
    /// Of those, allowed only by the other rule set.
    pub stale_rules: u64,
    pub periods: Vec<PeriodCheck>,
    pub cache: CacheTally,
    pub latency: Latency,
    pub failed_examples: Vec<Finding>,
    pub five_xx_examples: Vec<Finding>,
    pub inconsistent_examples: Vec<Finding>,
    pub stale_examples: Vec<Finding>,
}

/// Judges every sample against the timeline.
pub fn judge(samples: &[Sample], timeline: &RuleTimeline) -> Judgement {
    let mut j = Judgement {
        periods: timeline
            .periods()
            .iter()
            .map(|p| PeriodCheck {
                period: p.clone(),
                judged: 0,
                stale: 0,
            })
            .collect(),
        ..Judgement::default()
    };
    let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds");
    let (mut hot_hits, mut hot_all) = (0u64, 0u64);
    for s in samples {
        j.finished += 1;
        latency.saturating_record(s.latency_us.max(1));
        *j.by_kind
            .entry(s.kind.label())
            .or_default()
            .entry(s.outcome.label())
            .or_default() += 1;
        let finding = |detail: String| Finding {
            kind: s.kind.label(),
            start_s: s.start.as_secs_f64(),
            end_s: s.end.as_secs_f64(),
            answer: s.outcome.label(),
            cache_status: s.cache_status.clone(),
            detail,
        };
        let status = match s.outcome {
            Outcome::Failed(class) => {
                j.failed += 1;
                *j.failed_by_class.entry(class.to_owned()).or_default() += 1;
                keep(&mut j.failed_examples, finding("no answer".into()));
                continue;
            }
            Outcome::Status(status) => status,
        };
        j.answered += 1;
        // Only answers the route could have cached: a 403 from the rules
        // or an error never reaches the cache.
        if s.kind.cacheable() && status == 200 {
            let hit = matches!(s.cache, CacheSeen::Hit { .. });
            match s.cache {
                CacheSeen::Hit { .. } => j.cache.hits += 1,
                CacheSeen::Miss => j.cache.misses += 1,
                CacheSeen::Other => j.cache.other += 1,
            }
            if s.kind == Kind::Hot {
                hot_all += 1;
                hot_hits += u64::from(hit);
            }
        }
        if status >= 500 {
            j.five_xx += 1;
            keep(&mut j.five_xx_examples, finding("a 5xx".into()));
            continue;
        }
        let (a, b) = (s.kind.allowed(RuleSet::A), s.kind.allowed(RuleSet::B));
        if !a.contains(&status) && !b.contains(&status) {
            j.inconsistent += 1;
            keep(
                &mut j.inconsistent_examples,
                finding(format!("allowed: {a:?} under A, {b:?} under B")),
            );
            continue;
        }
        if let CacheSeen::Hit { ttl_s: Some(ttl) } = s.cache {
            j.cache.max_hit_ttl_s = Some(j.cache.max_hit_ttl_s.map_or(ttl, |m| m.max(ttl)));
            if let Some(bound) = s.kind.max_hit_ttl_s() {
                if ttl > bound as i64 {
                    j.inconsistent += 1;
                    keep(
                        &mut j.inconsistent_examples,
                        finding(format!("a hit with ttl={ttl}, above both sets' {bound} s")),
                    );
                    continue;
                }
            }
        }
        if !s.kind.depends_on_rules() {
            continue;
        }
        if let Some(i) = timeline.containing(s.start, s.end) {
            let check = &mut j.periods[i];
            check.judged += 1;
            j.settled_checks += 1;
            let set = check.period.set;
            if !s.kind.allowed(set).contains(&status) {
                check.stale += 1;
                j.stale_rules += 1;
                let after = check
                    .period
                    .after_reload
                    .map_or("start-up".to_owned(), |r| format!("reload {r}"));
                keep(
                    &mut j.stale_examples,
                    finding(format!(
                        "inside the {set:?} period from {:.3} s ({after}): {set:?} allows {:?}",
                        check.period.from.as_secs_f64(),
                        s.kind.allowed(set)
                    )),
                );
            }
        }
    }
    let cacheable = j.cache.hits + j.cache.misses + j.cache.other;
    j.cache.hit_ratio = ratio(j.cache.hits, cacheable);
    j.cache.hot_hit_ratio = ratio(hot_hits, hot_all);
    if !latency.is_empty() {
        let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
        j.latency = Latency {
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: latency.max() as f64 / 1000.0,
        };
    }
    j
}

fn keep(examples: &mut Vec<Finding>, finding: Finding) {
    if examples.len() < EXAMPLES {
        examples.push(finding);
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn opt_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn sample(kind: Kind, start: u64, end: u64, status: u16) -> Sample {
        Sample {
            kind,
            start: ms(start),
            end: ms(end),
            latency_us: 1000,
            outcome: Outcome::Status(status),
            cache: CacheSeen::Miss,
            cache_status: String::new(),
        }
    }

    /// A from 0, reload 1 to B triggered at 100 and confirmed at 120,
    /// reload 2 to A triggered at 200 and never confirmed.
    fn timeline() -> RuleTimeline {
        let mut t = RuleTimeline::starting(RuleSet::A, ms(0));
        t.unsettle(ms(100));
        t.settle(RuleSet::B, ms(120), 1);
        t.unsettle(ms(200));
        t
    }

    #[test]
    fn answers_inside_a_period_must_follow_its_rules() {
        let samples = [
            sample(Kind::RulesUser, 10, 20, 200),
            sample(Kind::RulesUser, 130, 140, 403),
            sample(Kind::RulesUser, 130, 140, 200),
        ];
        let j = judge(&samples, &timeline());
        assert_eq!((j.settled_checks, j.stale_rules, j.inconsistent), (3, 1, 0));
        assert_eq!(j.periods[1].stale, 1);
        assert!(j.periods[0].verified() && !j.periods[1].verified());
    }

    #[test]
    fn answers_across_a_reload_may_follow_either_set() {
        let samples = [
            sample(Kind::RulesUser, 90, 110, 403),
            sample(Kind::RulesUser, 110, 125, 200),
            sample(Kind::RulesUser, 190, 210, 200),
            // After an unconfirmed reload nothing is settled.
            sample(Kind::RulesUser, 300, 310, 403),
        ];
        let j = judge(&samples, &timeline());
        assert_eq!((j.settled_checks, j.stale_rules, j.inconsistent), (0, 0, 0));
    }

    #[test]
    fn answers_no_set_allows_are_inconsistent_and_5xx_and_errors_apart() {
        let mut failed = sample(Kind::Hot, 10, 20, 0);
        failed.outcome = Outcome::Failed("reset");
        let samples = [
            sample(Kind::RulesUser, 10, 20, 401),
            sample(Kind::Put, 10, 20, 502),
            failed,
            sample(Kind::Register, 10, 20, 201),
        ];
        let j = judge(&samples, &timeline());
        assert_eq!((j.inconsistent, j.five_xx, j.failed, j.answered), (1, 1, 1, 3));
        assert_eq!(j.failed_by_class["reset"], 1);
    }

    #[test]
    fn a_hit_may_not_outlive_both_ttls() {
        let mut long = sample(Kind::Hot, 10, 20, 200);
        long.cache = CacheSeen::Hit { ttl_s: Some(31) };
        let mut fine = sample(Kind::Hot, 10, 20, 200);
        fine.cache = CacheSeen::Hit { ttl_s: Some(29) };
        let j = judge(&[long, fine], &timeline());
        assert_eq!((j.inconsistent, j.cache.hits), (1, 2));
        assert_eq!(j.cache.hot_hit_ratio, 1.0);
    }
}
