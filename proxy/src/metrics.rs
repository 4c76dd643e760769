//! Prometheus metrics, labelled by rule name, never by raw path (unbounded
//! label values would grow memory without limit).
//!
//! Uses `prometheus-client`, the Prometheus project's own Rust client: a
//! typed registry and the text exposition format without a global.
//!
//! Rule labels are `&'static str` (see [`crate::route::Rule::name`]) so
//! recording a request allocates nothing.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub rule: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub rule: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    pub rule: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabels {
    pub cause: &'static str,
}

/// One backend endpoint (`host:port`): few, named in the config, so a
/// bounded label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointOutcomeLabels {
    pub endpoint: String,
    pub outcome: &'static str,
}

/// Label for requests that matched no rule.
pub const NO_RULE: &str = "none";

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    cache: Family<CacheLabels, Counter>,
    upstream_seconds: Family<RuleLabels, Histogram>,
    request_seconds: Family<RuleLabels, Histogram>,
    store_errors: Family<OperationLabels, Counter>,
    invalidations: Family<OperationLabels, Counter>,
    redis_errors: Family<OperationLabels, Counter>,
    unreplicated_invalidations: Counter,
    read_round_trips: Counter,
    l1_lookups: Family<OutcomeLabels, Counter>,
    l1_evictions: Family<CauseLabels, Counter>,
    coalesced: Family<OutcomeLabels, Counter>,
    leases: Family<OutcomeLabels, Counter>,
    stale: Family<OutcomeLabels, Counter>,
    purges: Family<OutcomeLabels, Counter>,
    conditional: Family<OutcomeLabels, Counter>,
    connections_closed: Family<ReasonLabels, Counter>,
    connections_open: Gauge,
    upstream_rejected: Family<RuleLabels, Counter>,
    endpoint_requests: Family<EndpointOutcomeLabels, Counter>,
    endpoint_ejected: Family<EndpointLabels, Gauge>,
    endpoint_ejections: Family<EndpointLabels, Counter>,
    endpoint_outstanding: Family<EndpointLabels, Gauge>,
    config_reloads: Family<OutcomeLabels, Counter>,
    config_info: Family<VersionLabels, Gauge>,
    jwks_fetches: Family<JwksOutcomeLabels, Counter>,
    jwks_keys: Family<JwksLabels, Gauge>,
    store: StoreGauges,
    log_lines_dropped: Counter,
    rate_limited: Family<LimitLabels, Counter>,
    revoked: Family<RuleLabels, Counter>,
    revocations: Family<SourceLabels, Counter>,
    guard_fallbacks: Family<GuardLabels, Counter>,
}

/// A rate limit: its rule and its key as configured (`subject`,
/// `header:x-api-key`): bounded by the config, never a key's value.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    pub rule: &'static str,
    pub key: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GuardLabels {
    pub check: &'static str,
    pub outcome: &'static str,
}

/// The store's state, set every second by the status observer.
#[derive(Default)]
struct StoreGauges {
    up: Gauge,
    breakers_open: Gauge,
    pending_invalidations: Gauge,
    local_entries: Gauge,
    local_bytes: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JwksLabels {
    pub jwks: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JwksOutcomeLabels {
    pub jwks: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

fn latency_histogram() -> Histogram {
    // 100 µs to ~6.5 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("proxy");
        let requests = Family::default();
        registry.register("requests", "Requests answered, by rule and status", requests.clone());
        let cache = Family::default();
        registry.register("cache", "Cache outcomes (hit, miss, bypass), by rule", cache.clone());
        let upstream_seconds = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "upstream_duration_seconds",
            "Time to the upstream's response headers, by rule",
            upstream_seconds.clone(),
        );
        let request_seconds = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its response headers, by rule",
            request_seconds.clone(),
        );
        let store_errors = Family::default();
        registry.register(
            "cache_store_errors",
            "Failed or skipped cache store operations, by operation",
            store_errors.clone(),
        );
        let invalidations = Family::default();
        registry.register(
            "invalidations",
            "Tag invalidations, by outcome (applied, deferred)",
            invalidations.clone(),
        );
        let redis_errors = Family::default();
        registry.register(
            "redis_errors",
            "Failed Redis attempts (retries included), by kind (timeout, error)",
            redis_errors.clone(),
        );
        let unreplicated_invalidations = Counter::default();
        registry.register(
            "redis_unreplicated_invalidations",
            "Generation replacements the primary acknowledged but no replica confirmed within the wait (Sentinel, cluster): a failover at that moment could lose them",
            unreplicated_invalidations.clone(),
        );
        let read_round_trips = Counter::default();
        registry.register(
            "redis_read_round_trips",
            "Pipelines of lookups' reads sent to Redis, each one round trip to one node (concurrent lookups share them)",
            read_round_trips.clone(),
        );
        let l1_lookups = Family::default();
        registry.register(
            "l1_lookups",
            "Lookups that found an L1 copy, by outcome (hit: served after Redis confirmed it; outdated: Redis holds another entry or newer generations)",
            l1_lookups.clone(),
        );
        let l1_evictions = Family::default();
        registry.register(
            "l1_evictions",
            "L1 copies dropped, by cause (size, expired, outdated)",
            l1_evictions.clone(),
        );
        let coalesced = Family::default();
        registry.register(
            "coalesced",
            "Misses that found another request for the same key in flight here (joined), and those served its answer (shared)",
            coalesced.clone(),
        );
        let leases = Family::default();
        registry.register(
            "leases",
            "Misses whose key another instance was fetching (held_elsewhere), and whether its entry came (entry_from_elsewhere) or this one fetched anyway",
            leases.clone(),
        );
        let stale = Family::default();
        registry.register(
            "stale",
            "Expired entries served (while_revalidate, if_error) and background refreshes (refreshed, refresh_failed)",
            stale.clone(),
        );
        let purges = Family::default();
        registry.register(
            "purges",
            "Purges performed through POST /purge, by kind (hard, soft)",
            purges.clone(),
        );
        let conditional = Family::default();
        registry.register(
            "conditional",
            "304s answered to clients (not_modified) and expired entries refreshed by an upstream 304 (revalidated)",
            conditional.clone(),
        );
        let connections_closed = Family::default();
        registry.register(
            "connections_closed",
            "Connections the proxy closed or refused itself, by reason (per_ip_limit, first_request_timeout, idle_timeout, max_age)",
            connections_closed.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Client and admin connections open now",
            connections_open.clone(),
        );
        let upstream_rejected = Family::default();
        registry.register(
            "upstream_rejected",
            "Requests answered 503 because too many were at the backend already, by rule",
            upstream_rejected.clone(),
        );
        let endpoint_requests = Family::default();
        registry.register(
            "upstream_endpoint_requests",
            "Attempts sent to each backend endpoint, by outcome (ok: response headers received, whatever the status; connect_error, connect_timeout: nothing was sent; timeout: no response headers in time; error: the connection failed after sending); a retried request counts once per attempt",
            endpoint_requests.clone(),
        );
        let endpoint_ejected = Family::default();
        registry.register(
            "upstream_endpoint_ejected",
            "1 while a backend endpoint is ejected by passive health checks, else 0",
            endpoint_ejected.clone(),
        );
        let endpoint_ejections = Family::default();
        registry.register(
            "upstream_endpoint_ejections",
            "Times a backend endpoint was ejected after upstream.eject_after consecutive failures",
            endpoint_ejections.clone(),
        );
        let endpoint_outstanding = Family::default();
        registry.register(
            "upstream_endpoint_outstanding",
            "Attempts at each backend endpoint now, until their response headers",
            endpoint_outstanding.clone(),
        );
        let config_reloads = Family::default();
        registry.register(
            "config_reloads",
            "Reloads of config.toml, by outcome (ok, invalid)",
            config_reloads.clone(),
        );
        let config_info = Family::default();
        registry.register(
            "config_info",
            "1 for the version of the settings in use",
            config_info.clone(),
        );
        let jwks_fetches = Family::default();
        registry.register(
            "jwks_fetches",
            "Fetches of each JWKS URL, by outcome (ok, error)",
            jwks_fetches.clone(),
        );
        let jwks_keys = Family::default();
        registry.register(
            "jwks_keys",
            "Keys usable from each JWKS URL's last good fetch (0: none, tokens answered 503)",
            jwks_keys.clone(),
        );
        let store = StoreGauges::default();
        registry.register(
            "cache_store_up",
            "1 when the cache store answered its last ping (every second), else 0",
            store.up.clone(),
        );
        registry.register(
            "cache_breakers_open",
            "Redis circuit breakers open now (one per group): lookups there bypass the cache",
            store.breakers_open.clone(),
        );
        registry.register(
            "invalidations_pending",
            "Tags whose invalidation Redis has not acknowledged yet; caching of their routes is paused until it does",
            store.pending_invalidations.clone(),
        );
        registry.register(
            "cache_local_entries",
            "Entries held in process memory: the memory store's, or Redis's L1 copies",
            store.local_entries.clone(),
        );
        registry.register(
            "cache_local_bytes",
            "Bytes of the entries held in process memory (as weighed against memory_max_bytes or l1_max_bytes)",
            store.local_bytes.clone(),
        );
        let log_lines_dropped = Counter::default();
        registry.register(
            "log_lines_dropped",
            "Log lines (access lines and events) dropped because stdout fell 16 MiB of lines behind",
            log_lines_dropped.clone(),
        );
        let rate_limited = Family::default();
        registry.register(
            "rate_limited",
            "Requests refused with 429 by a rate limit, by rule and the limit's key",
            rate_limited.clone(),
        );
        let revoked = Family::default();
        registry.register(
            "revoked",
            "Requests refused with 401 because their token was revoked, by rule",
            revoked.clone(),
        );
        let revocations = Family::default();
        registry.register(
            "revocations",
            "Revocations written, by source (admin: POST /revoke; backend: a response header) and outcome",
            revocations.clone(),
        );
        let guard_fallbacks = Family::default();
        registry.register(
            "guard_fallback",
            "Requests whose rate limits or revocation check could not reach the shared store: limits counted per instance, revocation unchecked (open) or refused (closed)",
            guard_fallbacks.clone(),
        );
        Metrics {
            rate_limited,
            revoked,
            revocations,
            guard_fallbacks,
            log_lines_dropped,
            store,
            registry,
            jwks_fetches,
            jwks_keys,
            config_reloads,
            config_info,
            requests,
            cache,
            upstream_seconds,
            request_seconds,
            store_errors,
            invalidations,
            redis_errors,
            unreplicated_invalidations,
            read_round_trips,
            l1_lookups,
            l1_evictions,
            coalesced,
            leases,
            stale,
            purges,
            conditional,
            connections_closed,
            connections_open,
            upstream_rejected,
            endpoint_requests,
            endpoint_ejected,
            endpoint_ejections,
            endpoint_outstanding,
        }
    }

    /// The series of one backend endpoint, created now so that recording
    /// on the request path touches atomics only, and so that every outcome
    /// shows (at 0) from the start.
    pub fn endpoint(&self, endpoint: &str) -> EndpointMetrics {
        let outcome = |outcome: &'static str| {
            self.endpoint_requests.get_or_create_owned(&EndpointOutcomeLabels {
                endpoint: endpoint.to_owned(),
                outcome,
            })
        };
        let labels = EndpointLabels {
            endpoint: endpoint.to_owned(),
        };
        EndpointMetrics {
            ok: outcome("ok"),
            connect_error: outcome("connect_error"),
            connect_timeout: outcome("connect_timeout"),
            timeout: outcome("timeout"),
            error: outcome("error"),
            ejected: self.endpoint_ejected.get_or_create_owned(&labels),
            ejections: self.endpoint_ejections.get_or_create_owned(&labels),
            outstanding: self.endpoint_outstanding.get_or_create_owned(&labels),
        }
    }

    /// One answered request, `elapsed` after it arrived.
    pub fn request(&self, rule: &'static str, status: u16, cache_outcome: &'static str, elapsed: Duration) {
        self.requests.get_or_create(&RequestLabels { rule, status }).inc();
        self.request_seconds
            .get_or_create(&RuleLabels { rule })
            .observe(elapsed.as_secs_f64());
        self.cache
            .get_or_create(&CacheLabels {
                rule,
                outcome: cache_outcome,
            })
            .inc();
    }

    pub fn upstream_latency(&self, rule: &'static str, elapsed: Duration) {
        self.upstream_seconds
            .get_or_create(&RuleLabels { rule })
            .observe(elapsed.as_secs_f64());
    }

    pub fn store_error(&self, operation: &'static str) {
        self.store_errors.get_or_create(&OperationLabels { operation }).inc();
    }

    pub fn invalidation(&self, outcome: &'static str) {
        self.invalidations
            .get_or_create(&OperationLabels { operation: outcome })
            .inc();
    }

    pub fn redis_error(&self, kind: &'static str) {
        self.redis_errors
            .get_or_create(&OperationLabels { operation: kind })
            .inc();
    }

    pub fn read_round_trip(&self) {
        self.read_round_trips.inc();
    }

    pub fn unreplicated_invalidation(&self) {
        self.unreplicated_invalidations.inc();
    }

    pub fn l1_lookup(&self, outcome: &'static str) {
        self.l1_lookups.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn l1_eviction(&self, cause: &'static str) {
        self.l1_evictions.get_or_create(&CauseLabels { cause }).inc();
    }

    pub fn coalesced(&self, outcome: &'static str) {
        self.coalesced.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn lease(&self, outcome: &'static str) {
        self.leases.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn stale(&self, outcome: &'static str) {
        self.stale.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn purge(&self, kind: &'static str) {
        self.purges.get_or_create(&OutcomeLabels { outcome: kind }).inc();
    }

    pub fn conditional(&self, outcome: &'static str) {
        self.conditional.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn connection_closed(&self, reason: &'static str) {
        self.connections_closed.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn rate_limited(&self, rule: &'static str, key: &str) {
        self.rate_limited
            .get_or_create(&LimitLabels {
                rule,
                key: key.to_owned(),
            })
            .inc();
    }

    pub fn revoked(&self, rule: &'static str) {
        self.revoked.get_or_create(&RuleLabels { rule }).inc();
    }

    /// `source`: "admin" or "backend"; `outcome`: "applied" or "failed".
    pub fn revocation_written(&self, source: &'static str, outcome: &'static str) {
        self.revocations.get_or_create(&SourceLabels { source, outcome }).inc();
    }

    /// `check`: "limits" or "revocation"; `outcome`: "local", "open" or
    /// "closed".
    pub fn guard_fallback(&self, check: &'static str, outcome: &'static str) {
        self.guard_fallbacks
            .get_or_create(&GuardLabels { check, outcome })
            .inc();
    }

    pub fn upstream_rejected(&self, rule: &'static str) {
        self.upstream_rejected.get_or_create(&RuleLabels { rule }).inc();
    }

    /// One fetch of the JWKS at `url`; `keys`: how many the set in use
    /// holds after it.
    pub fn jwks_fetch(&self, url: &str, outcome: &'static str, keys: usize) {
        let jwks = url.to_owned();
        self.jwks_fetches
            .get_or_create(&JwksOutcomeLabels {
                jwks: jwks.clone(),
                outcome,
            })
            .inc();
        self.jwks_keys
            .get_or_create(&JwksLabels { jwks })
            .set(i64::try_from(keys).unwrap_or(i64::MAX));
    }

    pub fn config_reload(&self, outcome: &'static str) {
        self.config_reloads.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Marks `version` as the settings in use, and no other.
    pub fn config_version(&self, version: &str) {
        self.config_info.clear();
        self.config_info
            .get_or_create(&VersionLabels {
                version: version.to_owned(),
            })
            .set(1);
    }

    /// The store's state as the status observer last saw it.
    pub fn store_state(&self, up: bool, state: &crate::cache::StoreState) {
        let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        self.store.up.set(i64::from(up));
        self.store.breakers_open.set(gauge(state.breakers_open));
        self.store.pending_invalidations.set(gauge(state.pending_invalidations));
        self.store.local_entries.set(gauge(state.local_entries));
        self.store.local_bytes.set(gauge(state.local_bytes));
    }

    /// Brings the dropped-lines counter up to `total`, the writer's count.
    pub fn log_lines_dropped(&self, total: u64) {
        let counted = self.log_lines_dropped.get();
        if total > counted {
            self.log_lines_dropped.inc_by(total - counted);
        }
    }

    /// Counts a connection as open until the returned guard drops.
    pub fn connection_opened(&self) -> OpenConnection {
        self.connections_open.inc();
        OpenConnection(self.connections_open.clone())
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// The Prometheus text format (0.0.4), for scrapers and tools that do
    /// not ask for OpenMetrics (`promtool check metrics`, older agents).
    pub fn encode_prometheus_text(&self) -> String {
        openmetrics_to_text_004(&self.encode())
    }
}

/// OpenMetrics names a counter's family without `_total` (`# TYPE
/// proxy_requests counter`) and its samples with it; the 0.0.4 text format
/// names both with it, has no `# UNIT` and no `# EOF`. Everything else this
/// registry writes (gauges, histograms, label escaping) reads the same.
fn openmetrics_to_text_004(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let described = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|prefix| Some((prefix, line.strip_prefix(prefix)?)));
        match described {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// One backend endpoint's series (see [`Metrics::endpoint`]); handles onto
/// the registered atomics. `Default` gives unregistered ones, for tests.
#[derive(Clone, Debug, Default)]
pub struct EndpointMetrics {
    pub ok: Counter,
    pub connect_error: Counter,
    pub connect_timeout: Counter,
    pub timeout: Counter,
    pub error: Counter,
    pub ejected: Gauge,
    pub ejections: Counter,
    /// Attempts in flight: also what `least_outstanding` balancing reads.
    pub outstanding: Gauge,
}

/// One open connection in `proxy_connections_open`.
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_names_counters_with_total() {
        let m = Metrics::new();
        m.request("users-list", 200, "hit", Duration::from_micros(80));
        let text = m.encode_prometheus_text();
        assert!(text.contains("# HELP proxy_requests_total Requests answered"), "{text}");
        assert!(text.contains("# TYPE proxy_requests_total counter"), "{text}");
        assert!(text.contains("# TYPE proxy_connections_open gauge"), "{text}");
        assert!(
            text.contains("# TYPE proxy_request_duration_seconds histogram"),
            "{text}"
        );
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn exposition_is_labelled_by_rule() {
        let m = Metrics::new();
        m.request("users-list", 200, "hit", Duration::from_micros(80));
        m.upstream_latency("users-list", Duration::from_millis(3));
        m.store_error("lookup");
        let text = m.encode();
        assert!(
            text.contains(r#"proxy_requests_total{rule="users-list",status="200"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"proxy_cache_total{rule="users-list",outcome="hit"} 1"#),
            "{text}"
        );
        assert!(text.contains("proxy_upstream_duration_seconds_bucket"), "{text}");
        assert!(
            text.contains(r#"proxy_cache_store_errors_total{operation="lookup"} 1"#),
            "{text}"
        );
    }
}
