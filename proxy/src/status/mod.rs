//! The operator's live view on the admin listener: `GET /` and `/status`
//! (a page refreshing itself every second) and `/status.json` (what it
//! shows, for scripts too).
//!
//! An observer task samples the metrics every second (see [`board`]) and
//! sets the store's gauges (`proxy_cache_store_up`, breakers, pending
//! invalidations, local entries and bytes), so Prometheus alerts on the
//! same figures the page shows.

mod board;
mod exposition;

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

pub use self::board::Board;
use crate::access_log::AccessSink;
use crate::body;
use crate::cache::Store;
use crate::metrics::Metrics;
use crate::runtime::{Runtime, Snapshot};
use crate::upstream::ProxyBody;

/// How often the observer samples.
pub const EVERY: Duration = Duration::from_secs(1);

/// The page: one file, its script and styles inline, no request leaves the
/// admin listener (no CDN, no fonts).
const PAGE: &str = include_str!("page.html");

/// What the status page reads, kept by the proxy.
pub struct Status {
    board: Board,
    started: Instant,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    /// For its count of dropped lines.
    log: Arc<dyn AccessSink>,
}

impl Status {
    pub fn new(store: Arc<dyn Store>, metrics: Arc<Metrics>, log: Arc<dyn AccessSink>) -> Arc<Status> {
        Arc::new(Status {
            board: Board::default(),
            started: Instant::now(),
            store,
            metrics,
            log,
        })
    }
}

/// Samples the metrics and the store's state every [`EVERY`] until the
/// proxy (which holds `status`) is gone.
pub async fn observe(status: Weak<Status>) {
    let mut ticks = tokio::time::interval(EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(status) = status.upgrade() else { return };
        let up = matches!(tokio::time::timeout(EVERY, status.store.ping()).await, Ok(Ok(())));
        status.metrics.store_state(up, &status.store.state());
        status.metrics.log_lines_dropped(status.log.dropped_lines());
        let points = exposition::parse(&status.metrics.encode());
        // Monotonic: a wall-clock step must not skew the rates.
        status.board.record(status.started.elapsed().as_secs_f64(), points);
    }
}

/// `GET /status.json`: what `status` saw, for the rules of `snap`, with
/// `runtime`'s reloads.
pub fn json(status: &Status, runtime: &Runtime, snap: &Snapshot) -> Response<ProxyBody> {
    let mut response = body::json_response(StatusCode::OK, &view(status, runtime, snap));
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /` and `/status`.
pub fn page() -> Response<ProxyBody> {
    let mut response = Response::new(body::full(Bytes::from_static(PAGE.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The page runs its own inline script and fetches /status.json from
    // where it came; nothing else.
    headers.insert(
        http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Whether the status endpoints (and `/metrics`) may be read: always
/// without `PROXY_STATUS_TOKEN`; else with it or the admin token, as a
/// bearer token or as Basic's password (what a browser asks for).
pub fn may_read(snap: &Snapshot, headers: &HeaderMap) -> bool {
    let Some(status_token) = &snap.settings.status_token else {
        return true;
    };
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    let Some(offered) = offered_secret(value) else {
        return false;
    };
    let matches = |secret: &str| bool::from(secret.as_bytes().ct_eq(offered.as_bytes()));
    matches(&status_token.0) || snap.settings.admin_token.as_ref().is_some_and(|t| matches(&t.0))
}

fn offered_secret(value: &HeaderValue) -> Option<String> {
    let (scheme, credentials) = value.to_str().ok()?.split_once(' ')?;
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(credentials.to_owned());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(credentials).ok()?;
        let (_, password) = String::from_utf8(decoded)
            .ok()?
            .split_once(':')
            .map(|(u, p)| (u.to_owned(), p.to_owned()))?;
        return Some(password);
    }
    None
}

/// 401 asking for the status credential; a browser prompts for it.
pub fn refused() -> Response<ProxyBody> {
    let mut response = body::json_response(
        StatusCode::UNAUTHORIZED,
        &json!({"error": "the status page needs PROXY_STATUS_TOKEN (or PROXY_ADMIN_TOKEN) as a bearer token or Basic password"}),
    );
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"proxy status\", charset=\"UTF-8\""),
    );
    response
}

fn view(status: &Status, runtime: &Runtime, snap: &Snapshot) -> Value {
    let board = &status.board;
    let configured: Vec<&str> = snap.settings.routes.iter().map(|rule| rule.name).collect();
    let state = status.store.state();
    let counters = |name: &str, label: &str| json!(board.counters(name, label));
    json!({
        "time": unix_now(),
        "uptime_seconds": status.started.elapsed().as_secs(),
        "version": &*snap.version,
        "totals": board.totals(),
        "connections_open": board.value("proxy_connections_open"),
        "rules": board.rules(&configured),
        "store": {
            "kind": status.store.kind(),
            "up": board.value("proxy_cache_store_up").map(|v| v > 0.0),
            "breakers_open": state.breakers_open,
            "breakers": state.breakers,
            "pending_invalidations": state.pending_invalidations,
            "local_entries": state.local_entries,
            "local_bytes": state.local_bytes,
        },
        "counters": {
            "coalesced": counters("proxy_coalesced_total", "outcome"),
            "leases": counters("proxy_leases_total", "outcome"),
            "stale": counters("proxy_stale_total", "outcome"),
            "purges": counters("proxy_purges_total", "outcome"),
            "conditional": counters("proxy_conditional_total", "outcome"),
            "invalidations": counters("proxy_invalidations_total", "operation"),
            "l1_lookups": counters("proxy_l1_lookups_total", "outcome"),
            "connections_closed": counters("proxy_connections_closed_total", "reason"),
            "rate_limited": counters("proxy_rate_limited_total", "rule"),
            "revoked": counters("proxy_revoked_total", "rule"),
            "revocations": counters("proxy_revocations_total", "source"),
            "guard_fallback": counters("proxy_guard_fallback_total", "check"),
        },
        "upstream": {
            "endpoints": counters("proxy_upstream_endpoint_requests_total", "endpoint"),
            "ejected": counters("proxy_upstream_endpoint_ejected", "endpoint"),
        },
        "config": {
            "version": &*snap.version,
            "reloads": runtime.reloads(),
        },
    })
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
