//! What the status page shows, computed from samples of the metrics taken
//! every second: rates and latency quantiles over the last
//! [`WINDOW`] samples, and a minute of per-second request rates per rule
//! for the sparklines.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;

use super::exposition::Point;

/// Samples the rates and quantiles are computed over (one a second).
pub const WINDOW: usize = 10;
/// Seconds of history each sparkline shows.
pub const HISTORY: usize = 60;

/// Outcomes of `proxy_cache_total` that were answered from the cache.
const SERVED_FROM_CACHE: &[&str] = &["hit", "stale", "revalidated"];

struct Sample {
    /// Seconds on a monotonic clock.
    at: f64,
    points: Vec<Point>,
}

#[derive(Default)]
struct History {
    /// Newest last; at most `WINDOW + 1`.
    samples: VecDeque<Sample>,
    /// Per second: each rule's requests/s, newest last; at most `HISTORY`.
    rates: VecDeque<BTreeMap<String, f64>>,
}

/// The samples, shared by the observer that takes them and the admin
/// endpoint that reads them.
#[derive(Default)]
pub struct Board {
    history: Mutex<History>,
}

/// One rule's line on the page.
#[derive(Debug, Serialize)]
pub struct RuleView {
    pub rule: String,
    pub requests_per_second: Option<f64>,
    /// Of the requests that could be answered from the cache (hits, stale,
    /// revalidated and misses; bypasses left out), the share that was.
    pub hit_ratio: Option<f64>,
    pub server_errors_per_second: Option<f64>,
    /// Time to response headers, in milliseconds, over the window.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub upstream_p50_ms: Option<f64>,
    pub upstream_p99_ms: Option<f64>,
    /// Requests/s, one value a second, oldest first.
    pub history: Vec<f64>,
}

/// Figures over the window, for the whole proxy.
#[derive(Debug, Serialize)]
pub struct Totals {
    pub window_seconds: Option<f64>,
    pub requests_per_second: Option<f64>,
    pub hit_ratio: Option<f64>,
    pub server_errors_per_second: Option<f64>,
    /// Attempts at the backend that failed (refused, timed out, broken).
    pub upstream_errors_per_second: Option<f64>,
    /// Requests answered 503 because too many were at the backend.
    pub upstream_rejected_per_second: Option<f64>,
    pub redis_errors_per_second: Option<f64>,
    /// Of the hits, the share served from L1 (Redis store).
    pub l1_hit_share: Option<f64>,
}

impl Board {
    /// Adds the sample taken at `at` (seconds on a monotonic clock).
    pub fn record(&self, at: f64, points: Vec<Point>) {
        let mut history = self.history.lock().expect("status history poisoned");
        if let Some(last) = history.samples.back() {
            let seconds = at - last.at;
            if seconds > 0.0 {
                let mut rates = BTreeMap::new();
                for rule in rules(&points) {
                    let count =
                        |sample: &[Point]| sum(sample, "proxy_requests_total", |p| p.label("rule") == Some(&rule));
                    rates.insert(
                        rule.clone(),
                        ((count(&points) - count(&last.points)) / seconds).max(0.0),
                    );
                }
                history.rates.push_back(rates);
                if history.rates.len() > HISTORY {
                    history.rates.pop_front();
                }
            }
        }
        history.samples.push_back(Sample { at, points });
        if history.samples.len() > WINDOW + 1 {
            history.samples.pop_front();
        }
    }

    /// Each rule's figures, `configured` rules first in their order, then
    /// any other label seen (requests that matched no rule).
    pub fn rules(&self, configured: &[&str]) -> Vec<RuleView> {
        let history = self.history.lock().expect("status history poisoned");
        let mut names: Vec<String> = configured.iter().map(|s| (*s).to_owned()).collect();
        let window = match (history.samples.front(), history.samples.back()) {
            (Some(old), Some(new)) => {
                for seen in rules(&new.points) {
                    if !names.contains(&seen) {
                        names.push(seen);
                    }
                }
                Window::between(old, new)
            }
            // Before the first sample: every rule, with no figures yet.
            _ => Window::empty(),
        };
        names
            .into_iter()
            .map(|rule| {
                let of_rule = |p: &Point| p.label("rule") == Some(rule.as_str());
                RuleView {
                    requests_per_second: window.rate("proxy_requests_total", of_rule),
                    hit_ratio: window.hit_ratio(of_rule),
                    server_errors_per_second: window.rate("proxy_requests_total", |p| of_rule(p) && is_5xx(p)),
                    p50_ms: window.quantile_ms(0.5, "proxy_request_duration_seconds_bucket", of_rule),
                    p99_ms: window.quantile_ms(0.99, "proxy_request_duration_seconds_bucket", of_rule),
                    upstream_p50_ms: window.quantile_ms(0.5, "proxy_upstream_duration_seconds_bucket", of_rule),
                    upstream_p99_ms: window.quantile_ms(0.99, "proxy_upstream_duration_seconds_bucket", of_rule),
                    history: history
                        .rates
                        .iter()
                        .map(|rates| rates.get(&rule).copied().unwrap_or(0.0))
                        .collect(),
                    rule,
                }
            })
            .collect()
    }

    pub fn totals(&self) -> Totals {
        let history = self.history.lock().expect("status history poisoned");
        let (Some(new), Some(old)) = (history.samples.back(), history.samples.front()) else {
            return Window::empty().totals();
        };
        Window::between(old, new).totals()
    }

    /// The newest sample's values of `name`, by the value of `label`
    /// (summed over other labels): e.g. `proxy_stale_total` by `outcome`.
    pub fn counters(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        let history = self.history.lock().expect("status history poisoned");
        let mut counters = BTreeMap::new();
        for point in history.samples.back().map(|s| s.points.as_slice()).unwrap_or_default() {
            if point.name == name {
                *counters
                    .entry(point.label(label).unwrap_or("").to_owned())
                    .or_insert(0.0) += point.value;
            }
        }
        counters
    }

    /// The newest value of an unlabelled series.
    pub fn value(&self, name: &str) -> Option<f64> {
        let history = self.history.lock().expect("status history poisoned");
        let newest = history.samples.back()?;
        newest.points.iter().find(|p| p.name == name).map(|p| p.value)
    }
}

/// Two samples: the oldest and the newest of the window (none when fewer
/// than two have been taken).
struct Window<'a> {
    old: &'a [Point],
    new: &'a [Point],
    seconds: Option<f64>,
}

impl<'a> Window<'a> {
    fn between(old: &'a Sample, new: &'a Sample) -> Window<'a> {
        let seconds = new.at - old.at;
        Window {
            old: &old.points,
            new: &new.points,
            seconds: (seconds > 0.0).then_some(seconds),
        }
    }

    fn empty() -> Window<'static> {
        Window {
            old: &[],
            new: &[],
            seconds: None,
        }
    }

    fn increase(&self, name: &str, filter: impl Fn(&Point) -> bool + Copy) -> f64 {
        (sum(self.new, name, filter) - sum(self.old, name, filter)).max(0.0)
    }

    fn rate(&self, name: &str, filter: impl Fn(&Point) -> bool + Copy) -> Option<f64> {
        Some(self.increase(name, filter) / self.seconds?)
    }

    fn hit_ratio(&self, filter: impl Fn(&Point) -> bool + Copy) -> Option<f64> {
        self.seconds?;
        let served = self.increase("proxy_cache_total", |p| {
            filter(p) && p.label("outcome").is_some_and(|o| SERVED_FROM_CACHE.contains(&o))
        });
        let missed = self.increase("proxy_cache_total", |p| filter(p) && p.label("outcome") == Some("miss"));
        (served + missed > 0.0).then(|| served / (served + missed))
    }

    /// The `q` quantile of a histogram's observations in the window, in
    /// milliseconds, interpolated within a bucket as Prometheus's
    /// `histogram_quantile` does.
    fn quantile_ms(&self, q: f64, bucket: &str, filter: impl Fn(&Point) -> bool + Copy) -> Option<f64> {
        self.seconds?;
        // The window's counts: the newest sample's less the oldest's (a
        // histogram's buckets never go away, so the bounds are the same).
        let mut bounds: BTreeMap<OrderedLe, f64> = BTreeMap::new();
        for (points, sign) in [(self.new, 1.0), (self.old, -1.0)] {
            for point in points.iter().filter(|p| p.name == bucket && filter(p)) {
                let le: f64 = match point.label("le")? {
                    "+Inf" => f64::INFINITY,
                    le => le.parse().ok()?,
                };
                *bounds.entry(OrderedLe(le)).or_insert(0.0) += sign * point.value;
            }
        }
        let buckets: Vec<(f64, f64)> = bounds.into_iter().map(|(le, count)| (le.0, count)).collect();
        quantile(q, &buckets).map(|seconds| seconds * 1000.0)
    }

    fn totals(&self) -> Totals {
        let all = |_: &Point| true;
        let outcome = |p: &Point, o: &str| p.label("outcome") == Some(o);
        let l1_hits = self.increase("proxy_l1_lookups_total", |p| outcome(p, "hit"));
        let hits = self.increase("proxy_cache_total", |p| outcome(p, "hit"));
        Totals {
            window_seconds: self.seconds,
            requests_per_second: self.rate("proxy_requests_total", all),
            hit_ratio: self.hit_ratio(all),
            server_errors_per_second: self.rate("proxy_requests_total", is_5xx),
            upstream_errors_per_second: self.rate("proxy_upstream_endpoint_requests_total", |p| {
                p.label("outcome") != Some("ok")
            }),
            upstream_rejected_per_second: self.rate("proxy_upstream_rejected_total", all),
            redis_errors_per_second: self.rate("proxy_redis_errors_total", all),
            l1_hit_share: (self.seconds.is_some() && hits > 0.0).then(|| (l1_hits / hits).min(1.0)),
        }
    }
}

/// A bucket's upper bound, ordered (bounds are never NaN).
#[derive(Clone, Copy)]
struct OrderedLe(f64);

impl PartialEq for OrderedLe {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for OrderedLe {}

impl PartialOrd for OrderedLe {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrderedLe {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// `histogram_quantile` over cumulative `(le, count)` buckets, ascending;
/// `None` without observations. Above the highest finite bound, that bound.
fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let within = count - below;
            return Some(if within > 0.0 {
                lower + (le - lower) * (rank - below) / within
            } else {
                le
            });
        }
        (lower, below) = (le, count);
    }
    Some(lower)
}

fn sum(points: &[Point], name: &str, filter: impl Fn(&Point) -> bool) -> f64 {
    points
        .iter()
        .filter(|p| p.name == name && filter(p))
        .map(|p| p.value)
        .sum()
}

fn is_5xx(point: &Point) -> bool {
    point.label("status").is_some_and(|s| s.starts_with('5'))
}

/// The rules named in `proxy_requests_total`.
fn rules(points: &[Point]) -> Vec<String> {
    let mut rules: Vec<String> = points
        .iter()
        .filter(|p| p.name == "proxy_requests_total")
        .filter_map(|p| p.label("rule").map(str::to_owned))
        .collect();
    rules.sort();
    rules.dedup();
    rules
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::status::exposition::parse;
    use std::time::Duration;

    #[test]
    fn quantiles_interpolate_within_a_bucket() {
        let buckets = [(0.001, 0.0), (0.002, 50.0), (0.004, 100.0), (f64::INFINITY, 100.0)];
        assert_eq!(quantile(0.5, &buckets), Some(0.002));
        assert!((quantile(0.75, &buckets).unwrap() - 0.003).abs() < 1e-12);
        assert_eq!(quantile(0.5, &[(0.001, 0.0), (f64::INFINITY, 0.0)]), None);
        assert_eq!(quantile(0.99, &[(0.001, 0.0), (f64::INFINITY, 10.0)]), Some(0.001));
    }

    #[test]
    fn rates_ratios_and_quantiles_come_from_the_window() {
        let metrics = Metrics::new();
        let board = Board::default();
        let before = board.rules(&["users"]);
        assert_eq!(
            (before.len(), before[0].requests_per_second),
            (1, None),
            "listed before any sample"
        );
        metrics.request("users", 200, "miss", Duration::from_millis(30));
        board.record(100.0, parse(&metrics.encode()));
        assert!(
            board.rules(&["users"])[0].requests_per_second.is_none(),
            "one sample: no rate yet"
        );
        for _ in 0..6 {
            metrics.request("users", 200, "hit", Duration::from_micros(300));
        }
        metrics.request("users", 200, "miss", Duration::from_millis(30));
        metrics.request("users", 502, "miss", Duration::from_millis(30));
        board.record(102.0, parse(&metrics.encode()));
        let users = &board.rules(&["users", "admin"])[0];
        assert_eq!(users.rule, "users");
        assert_eq!(users.requests_per_second, Some(4.0));
        assert_eq!(users.hit_ratio, Some(0.75));
        assert_eq!(users.server_errors_per_second, Some(0.5));
        let p50 = users.p50_ms.unwrap();
        assert!((0.2..=0.41).contains(&p50), "p50 {p50} ms: within the hits' bucket");
        assert!(users.p99_ms.unwrap() >= 25.0, "p99 {:?}: a miss's", users.p99_ms);
        assert_eq!(users.history, vec![4.0]);
        let admin = &board.rules(&["users", "admin"])[1];
        assert_eq!((admin.requests_per_second, admin.hit_ratio), (Some(0.0), None));
        assert_eq!(board.totals().requests_per_second, Some(4.0));
    }
}
