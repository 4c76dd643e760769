//! The backend's endpoints: which one an attempt goes to, and passive
//! health.
//!
//! One or more `host:port` endpoints serve the same backend. Each attempt
//! picks one, round robin or least outstanding, skipping those passive
//! health has ejected: `eject_after` consecutive attempts that could not
//! connect or got no response headers in time eject an endpoint for
//! `eject_for`. Then one attempt probes it (the others keep away until the
//! probe ends), and any answer re-admits it; a failed probe ejects it for
//! another `eject_for`. When every endpoint is ejected, the one whose
//! ejection ends soonest is used anyway: a health verdict that is wrong
//! must not take the whole backend away.
//!
//! The request path touches atomics only (no lock, no allocation). With a
//! single endpoint choosing costs nothing and nothing is ever ejected.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use http::uri::Authority;
use http::HeaderValue;
use prometheus_client::metrics::gauge::Gauge;
use tokio::time::Instant;

use crate::metrics::{EndpointMetrics, Metrics};

/// How attempts are spread over the endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Each endpoint in turn.
    RoundRobin,
    /// The endpoint with the fewest attempts awaiting their response
    /// headers; among equals, the first from where round robin stands.
    LeastOutstanding,
}

/// What one attempt at an endpoint came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Response headers arrived, whatever their status.
    Ok,
    /// Refused, reset or unresolvable before anything was sent.
    ConnectError,
    /// No connection within the connect timeout.
    ConnectTimeout,
    /// No response headers within the response timeout.
    Timeout,
    /// The connection failed after the request was (possibly) sent; says
    /// nothing about the endpoint's health (a pooled connection the
    /// backend closed as it was reused ends this way).
    Error,
}

impl Outcome {
    /// Whether it counts towards ejection.
    fn is_failure(self) -> bool {
        matches!(self, Outcome::ConnectError | Outcome::ConnectTimeout | Outcome::Timeout)
    }

    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ConnectError => "connect_error",
            Outcome::ConnectTimeout => "connect_timeout",
            Outcome::Timeout => "timeout",
            Outcome::Error => "error",
        }
    }
}

/// One `host:port` of the backend.
pub struct Endpoint {
    pub authority: Authority,
    /// The `Host` it is sent: its own authority, so virtual hosting on the
    /// backend works and clients cannot steer it.
    pub host: HeaderValue,
    /// Failures since the last answer.
    failures: AtomicU32,
    /// Milliseconds after the pool's epoch until which it is ejected (a
    /// probe under way pushes it on); 0 while admitted.
    ejected_until: AtomicU64,
    metrics: EndpointMetrics,
}

/// The endpoints of one backend, with their health.
pub struct Endpoints {
    list: Box<[Endpoint]>,
    balance: Balance,
    eject_after: u32,
    eject_for: Duration,
    /// Where the next pick starts looking.
    next: AtomicUsize,
    /// What `ejected_until` counts from.
    epoch: Instant,
}

/// Whether an endpoint may take an attempt now.
enum Admission {
    Admitted,
    Ejected,
    /// Its ejection is over and this attempt is the one probing it.
    Probe,
}

impl Endpoints {
    /// `authorities`: at least one, in the configured order.
    pub fn new(
        authorities: Vec<Authority>,
        balance: Balance,
        eject_after: u32,
        eject_for: Duration,
        metrics: &Metrics,
    ) -> Endpoints {
        assert!(!authorities.is_empty(), "a backend has at least one endpoint");
        let list = authorities
            .into_iter()
            .map(|authority| Endpoint {
                host: HeaderValue::from_str(authority.as_str()).expect("an authority is a valid header value"),
                metrics: metrics.endpoint(authority.as_str()),
                authority,
                failures: AtomicU32::new(0),
                ejected_until: AtomicU64::new(0),
            })
            .collect();
        Endpoints {
            list,
            balance,
            eject_after: eject_after.max(1),
            eject_for,
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
        }
    }

    pub fn get(&self, index: usize) -> &Endpoint {
        &self.list[index]
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// The endpoint for the next attempt: an admitted one by the balance
    /// rule, or one whose ejection just ended (to probe it), never `avoid`
    /// (where a retried attempt failed) unless it is the only endpoint.
    /// When every candidate is ejected, the one back soonest.
    pub fn pick(&self, avoid: Option<usize>) -> usize {
        let n = self.list.len();
        if n == 1 {
            return 0;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut now = None;
        let mut least: Option<(usize, i64)> = None;
        for k in 0..n {
            let i = start.wrapping_add(k) % n;
            if avoid == Some(i) {
                continue;
            }
            let endpoint = &self.list[i];
            match self.admission(endpoint, &mut now) {
                Admission::Ejected => continue,
                Admission::Probe => return i,
                Admission::Admitted => {}
            }
            match self.balance {
                Balance::RoundRobin => return i,
                Balance::LeastOutstanding => {
                    let outstanding = endpoint.metrics.outstanding.get();
                    if least.is_none_or(|(_, fewest)| outstanding < fewest) {
                        least = Some((i, outstanding));
                    }
                }
            }
        }
        if let Some((i, _)) = least {
            return i;
        }
        (0..n)
            .filter(|&i| avoid != Some(i))
            .min_by_key(|&i| self.list[i].ejected_until.load(Ordering::Relaxed))
            .expect("two endpoints or more")
    }

    /// Counts an attempt at endpoint `index` as outstanding until the
    /// returned guard drops (with its response headers, its failure, or
    /// its cancellation).
    pub fn start(&self, index: usize) -> InFlight<'_> {
        let outstanding = &self.list[index].metrics.outstanding;
        outstanding.inc();
        InFlight(outstanding)
    }

    /// Records what an attempt at endpoint `index` came to.
    pub fn record(&self, index: usize, outcome: Outcome) {
        let endpoint = &self.list[index];
        let metrics = &endpoint.metrics;
        match outcome {
            Outcome::Ok => metrics.ok.inc(),
            Outcome::ConnectError => metrics.connect_error.inc(),
            Outcome::ConnectTimeout => metrics.connect_timeout.inc(),
            Outcome::Timeout => metrics.timeout.inc(),
            Outcome::Error => metrics.error.inc(),
        };
        if self.list.len() == 1 {
            // Ejecting the only endpoint would change nothing.
            return;
        }
        if outcome == Outcome::Ok {
            if endpoint.failures.load(Ordering::Relaxed) != 0 {
                endpoint.failures.store(0, Ordering::Relaxed);
            }
            if endpoint.ejected_until.load(Ordering::Acquire) != 0
                && endpoint.ejected_until.swap(0, Ordering::AcqRel) != 0
            {
                metrics.ejected.set(0);
                tracing::info!(endpoint = %endpoint.authority, "backend endpoint answers again: re-admitted");
            }
        } else if outcome.is_failure() {
            let failures = endpoint
                .failures
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |f| Some(f.saturating_add(1)))
                .expect("always Some")
                .saturating_add(1);
            if failures < self.eject_after {
                return;
            }
            let until = self.until(self.now_ms());
            if endpoint.ejected_until.swap(until, Ordering::AcqRel) == 0 {
                metrics.ejected.set(1);
                metrics.ejections.inc();
                tracing::warn!(
                    endpoint = %endpoint.authority,
                    failures,
                    last = outcome.label(),
                    eject_for = ?self.eject_for,
                    "backend endpoint ejected"
                );
            } else {
                tracing::debug!(endpoint = %endpoint.authority, last = outcome.label(), "backend endpoint still failing; stays ejected");
            }
        }
    }

    /// Whether `endpoint` may take an attempt; claims the probe when its
    /// ejection is over. `now` is read once per pick, and only when some
    /// endpoint is ejected.
    fn admission(&self, endpoint: &Endpoint, now: &mut Option<u64>) -> Admission {
        let until = endpoint.ejected_until.load(Ordering::Acquire);
        if until == 0 {
            return Admission::Admitted;
        }
        let now = *now.get_or_insert_with(|| self.now_ms());
        if now < until {
            return Admission::Ejected;
        }
        // One attempt probes; the ejection is pushed on for the others
        // until it answers (which re-admits) or fails.
        match endpoint
            .ejected_until
            .compare_exchange(until, self.until(now), Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Admission::Probe,
            Err(0) => Admission::Admitted,
            Err(_) => Admission::Ejected,
        }
    }

    fn now_ms(&self) -> u64 {
        millis(Instant::now().saturating_duration_since(self.epoch))
    }

    /// When an ejection starting at `now` ends; never 0, which means
    /// admitted.
    fn until(&self, now: u64) -> u64 {
        now.saturating_add(millis(self.eject_for)).max(1)
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// An attempt in flight at an endpoint, for `least_outstanding` and
/// `proxy_upstream_endpoint_outstanding`.
pub struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EJECT_FOR: Duration = Duration::from_secs(10);

    fn pool(n: usize, balance: Balance) -> Endpoints {
        let authorities = (0..n).map(|i| format!("10.0.0.{i}:80").parse().unwrap()).collect();
        Endpoints::new(authorities, balance, 3, EJECT_FOR, &Metrics::new())
    }

    fn fail(pool: &Endpoints, index: usize, times: usize) {
        for _ in 0..times {
            pool.record(index, Outcome::ConnectError);
        }
    }

    fn picks(pool: &Endpoints, n: usize) -> Vec<usize> {
        (0..n).map(|_| pool.pick(None)).collect()
    }

    fn ejected(pool: &Endpoints, index: usize) -> bool {
        pool.get(index).metrics.ejected.get() == 1
    }

    #[tokio::test(start_paused = true)]
    async fn round_robin_takes_each_in_turn() {
        let pool = pool(3, Balance::RoundRobin);
        assert_eq!(picks(&pool, 6), [0, 1, 2, 0, 1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn least_outstanding_picks_the_least_busy_and_ties_go_in_turn() {
        let pool = pool(3, Balance::LeastOutstanding);
        let busy = [pool.start(0), pool.start(0), pool.start(1)];
        assert_eq!(picks(&pool, 3), [2, 2, 2]);
        let third = pool.start(2);
        // 0 has two, 1 and 2 one each: the tie goes to whichever comes
        // first from where the turn stands, so both get some.
        let tied = picks(&pool, 3);
        assert!(!tied.contains(&0) && tied.contains(&1) && tied.contains(&2), "{tied:?}");
        drop(busy);
        assert_eq!(pool.get(0).metrics.outstanding.get(), 0);
        let mut idle = picks(&pool, 2);
        idle.sort();
        assert_eq!(idle, [0, 1]);
        drop(third);
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_eject_and_an_answer_resets_the_count() {
        let pool = pool(3, Balance::RoundRobin);
        fail(&pool, 1, 2);
        pool.record(1, Outcome::Ok);
        fail(&pool, 1, 2);
        pool.record(1, Outcome::Error);
        assert!(
            !ejected(&pool, 1),
            "an answer in between resets the count; errors after sending do not count"
        );
        pool.record(1, Outcome::Timeout);
        assert!(ejected(&pool, 1));
        assert_eq!(pool.get(1).metrics.ejections.get(), 1);
        assert!(!picks(&pool, 12).contains(&1), "an ejected endpoint was picked");
        // Further failures (attempts already in flight) eject it once only.
        fail(&pool, 1, 5);
        assert_eq!(pool.get(1).metrics.ejections.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn after_eject_for_one_attempt_probes_and_an_answer_readmits() {
        let pool = pool(2, Balance::RoundRobin);
        fail(&pool, 1, 3);
        tokio::time::advance(EJECT_FOR - Duration::from_millis(1)).await;
        assert_eq!(picks(&pool, 4), [0, 0, 0, 0]);
        tokio::time::advance(Duration::from_millis(1)).await;
        let probes = picks(&pool, 6);
        assert_eq!(probes.iter().filter(|&&i| i == 1).count(), 1, "one probe: {probes:?}");
        assert!(ejected(&pool, 1), "still ejected while the probe is out");
        pool.record(1, Outcome::Ok);
        assert!(!ejected(&pool, 1));
        assert_eq!(picks(&pool, 4), [0, 1, 0, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_ejects_for_another_eject_for() {
        let pool = pool(2, Balance::LeastOutstanding);
        fail(&pool, 1, 3);
        tokio::time::advance(EJECT_FOR).await;
        assert_eq!(pool.pick(None), 1, "the due probe comes first");
        pool.record(1, Outcome::ConnectError);
        assert_eq!(pool.get(1).metrics.ejections.get(), 1, "one ejection, extended");
        tokio::time::advance(EJECT_FOR - Duration::from_millis(1)).await;
        assert_eq!(picks(&pool, 3), [0, 0, 0]);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(pool.pick(None), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn with_every_endpoint_ejected_the_one_back_soonest_serves() {
        let pool = pool(3, Balance::RoundRobin);
        fail(&pool, 2, 3);
        tokio::time::advance(Duration::from_millis(10)).await;
        fail(&pool, 0, 3);
        fail(&pool, 1, 3);
        assert_eq!(picks(&pool, 3), [2, 2, 2]);
        // A retry after failing on 2 goes elsewhere: 0 and 1 end together.
        assert_ne!(pool.pick(Some(2)), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_never_goes_back_to_where_it_failed() {
        let two = pool(2, Balance::RoundRobin);
        for _ in 0..4 {
            assert_eq!(two.pick(Some(0)), 1);
            assert_eq!(two.pick(Some(1)), 0);
        }
        fail(&two, 1, 3);
        assert_eq!(two.pick(Some(0)), 1, "even to an ejected one");
        assert_eq!(pool(1, Balance::RoundRobin).pick(Some(0)), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_endpoint_is_never_ejected() {
        let pool = pool(1, Balance::RoundRobin);
        fail(&pool, 0, 10);
        assert!(!ejected(&pool, 0));
        assert_eq!(pool.get(0).metrics.connect_error.get(), 10);
        assert_eq!(picks(&pool, 2), [0, 0]);
    }
}
