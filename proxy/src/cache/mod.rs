//! The response cache: policy, storability, status reporting and stores.
//!
//! This module decides *what* may be cached and how it is reported; the
//! [`CacheStore`] implementations decide *where* (Redis or process memory).
//!
//! Correctness rests on tag generations. Every cacheable rule lists tags;
//! each tag has a current generation, a random token. Before a miss is
//! forwarded, the current generations of the rule's tags are read, and the
//! stored entry records them. A write through the proxy replaces the
//! generations of the tags it invalidates with fresh random tokens before
//! its response is released. A lookup serves an entry only if every
//! recorded generation is still current, so:
//! - an entry cached before a write is never served after it;
//! - a read that raced a write (read generations, write committed and
//!   bumped, read stored) recorded the old generation and is never served;
//! - a generation lost to a Redis restart or eviction reads as missing,
//!   which is a miss, and the fresh random token that replaces it matches
//!   no entry recorded before (a counter restarting at 0 could).

pub mod breaker;
pub mod entry;
pub mod key;
pub mod memory;
pub mod purge;
pub mod redis;
pub mod settings;

use std::time::Duration;

use async_trait::async_trait;
use http::header::{CACHE_CONTROL, SET_COOKIE, VARY};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

pub use self::entry::{Entry, Generations};
pub use self::key::{CacheKey, KeyParts, ScopeKey};
pub use self::purge::{Filed, IndexInfo, PurgeRequest, Purged};

/// Whose responses an entry may be served to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Per verified subject; the default for authenticated rules.
    User,
    /// Per set of roles.
    Role,
    /// One entry for everyone the rule admits; must be declared on
    /// authenticated rules (RFC 9111 §3.5: a shared cache may store a
    /// response to an authenticated request only when told it may).
    Shared,
}

/// A cacheable rule's settings.
#[derive(Debug, Clone)]
pub struct CachePolicy {
    pub scope: Scope,
    /// Upper bound; the origin's `s-maxage`/`max-age` can only shorten it.
    pub ttl: Duration,
    pub statuses: Vec<u16>,
    /// Request headers that are part of the key and forwarded upstream.
    pub vary: Vec<HeaderName>,
    /// Tags whose invalidation removes this rule's entries.
    pub tags: Vec<String>,
    /// RFC 5861 windows past expiry, unless the origin sends its own.
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
    /// Cap on the windows the origin's `Cache-Control` asks for.
    pub max_origin_stale: Duration,
}

/// How long a stored response is fresh, then usable stale.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    pub ttl: Duration,
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
}

/// Why a response was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStorable {
    Status,
    NoStore,
    NoCache,
    Private,
    SetCookie,
    VaryStar,
    /// The origin varies on a header that does not reach it.
    VaryUnkeyed,
    ZeroTtl,
}

/// Decides whether a response may be stored under `policy`, and for how
/// long. Pure: depends on nothing but its arguments.
/// `forwarded` are the request headers that reach the origin besides the
/// rule's `vary`: an answer may vary on those (they join its key), on
/// nothing else.
pub fn storability(
    policy: &CachePolicy,
    forwarded: &[HeaderName],
    status: StatusCode,
    headers: &HeaderMap,
) -> Result<Lifetime, NotStorable> {
    if !policy.statuses.contains(&status.as_u16()) {
        return Err(NotStorable::Status);
    }
    if headers.contains_key(SET_COOKIE) {
        return Err(NotStorable::SetCookie);
    }
    let cc = CacheControl::parse(headers);
    if cc.no_store {
        return Err(NotStorable::NoStore);
    }
    if cc.no_cache {
        // Storing would require revalidating on every use; not supported,
        // so the safe reading is "do not store".
        return Err(NotStorable::NoCache);
    }
    if cc.private && policy.scope != Scope::User {
        return Err(NotStorable::Private);
    }
    for value in headers.get_all(VARY) {
        for name in value
            .to_str()
            .unwrap_or("*")
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            if name == "*" {
                return Err(NotStorable::VaryStar);
            }
            if !policy
                .vary
                .iter()
                .chain(forwarded)
                .any(|v| v.as_str().eq_ignore_ascii_case(name))
            {
                return Err(NotStorable::VaryUnkeyed);
            }
        }
    }
    let ttl = match cc.s_maxage.or(cc.max_age) {
        Some(origin_ttl) => policy.ttl.min(origin_ttl),
        None => policy.ttl,
    };
    if ttl < Duration::from_secs(1) {
        return Err(NotStorable::ZeroTtl);
    }
    Ok(Lifetime {
        ttl,
        stale_while_revalidate: cc
            .stale_while_revalidate
            .map_or(policy.stale_while_revalidate, |asked| {
                asked.min(policy.max_origin_stale)
            }),
        stale_if_error: cc
            .stale_if_error
            .map_or(policy.stale_if_error, |asked| asked.min(policy.max_origin_stale)),
    })
}

/// The response `Cache-Control` directives storability depends on.
#[derive(Debug, Default, PartialEq, Eq)]
struct CacheControl {
    no_store: bool,
    no_cache: bool,
    private: bool,
    max_age: Option<Duration>,
    s_maxage: Option<Duration>,
    stale_while_revalidate: Option<Duration>,
    stale_if_error: Option<Duration>,
}

impl CacheControl {
    fn parse(headers: &HeaderMap) -> CacheControl {
        let mut cc = CacheControl::default();
        for value in headers.get_all(CACHE_CONTROL) {
            let Ok(value) = value.to_str() else {
                // Unreadable directives could say anything; assume the worst.
                cc.no_store = true;
                continue;
            };
            for directive in value.split(',') {
                let (name, arg) = match directive.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                    None => (directive.trim(), None),
                };
                let seconds = || arg.and_then(|a| a.parse::<u64>().ok()).map(Duration::from_secs);
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => cc.no_store = true,
                    // `private="field"` and `no-cache="field"` restrict only some
                    // fields in theory; treating them as whole-response is safe.
                    "no-cache" => cc.no_cache = true,
                    "private" => cc.private = true,
                    // A malformed age is treated as 0: do not cache.
                    "max-age" => cc.max_age = Some(seconds().unwrap_or(Duration::ZERO)),
                    "s-maxage" => cc.s_maxage = Some(seconds().unwrap_or(Duration::ZERO)),
                    // RFC 5861; a malformed window is no window.
                    "stale-while-revalidate" => cc.stale_while_revalidate = Some(seconds().unwrap_or(Duration::ZERO)),
                    "stale-if-error" => cc.stale_if_error = Some(seconds().unwrap_or(Duration::ZERO)),
                    _ => {}
                }
            }
        }
        cc
    }
}

// === Cache status reporting ===

/// Why a request did not use the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bypass {
    /// Writes and other non-GET/HEAD methods (`fwd=method`).
    Method,
    /// The rule has no cache policy (`fwd=bypass`).
    Uncacheable,
    /// No rule matched (`fwd=uri-miss`).
    NoRule,
    /// The store failed or its circuit breaker is open.
    StoreUnavailable,
    /// The request's key material exceeds `cache.max_key_bytes`.
    KeyTooLarge,
    /// The proxy answered itself (an error) before any cache step.
    Error,
}

/// Why an expired entry was served (RFC 5861).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleReason {
    WhileRevalidate,
    IfError,
}

/// How the cache took part in a request; becomes `X-Cache` and
/// `Cache-Status` on the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit {
        ttl_left: Duration,
    },
    /// Served past expiry: while a background refresh runs, or because the
    /// upstream failed.
    Stale {
        expired_for: Duration,
        reason: StaleReason,
    },
    /// Expired, revalidated upstream (304) and served from the cache.
    Revalidated {
        stored: bool,
    },
    Miss {
        stored: bool,
    },
    Bypass(Bypass),
}

impl CacheStatus {
    pub fn x_cache(&self) -> HeaderValue {
        HeaderValue::from_static(match self {
            CacheStatus::Hit { .. } => "HIT",
            CacheStatus::Stale { .. } => "STALE",
            CacheStatus::Revalidated { .. } => "HIT",
            CacheStatus::Miss { .. } => "MISS",
            CacheStatus::Bypass(_) => "BYPASS",
        })
    }

    /// This cache's member of `Cache-Status` (RFC 9211); it names itself
    /// `proxy`.
    pub fn cache_status(&self) -> HeaderValue {
        match self {
            CacheStatus::Hit { ttl_left } => {
                HeaderValue::from_str(&format!("proxy; hit; ttl={}", ttl_left.as_secs())).expect("ascii")
            }
            CacheStatus::Stale { expired_for, reason } => {
                let detail = match reason {
                    StaleReason::WhileRevalidate => "stale-while-revalidate",
                    StaleReason::IfError => "stale-if-error",
                };
                HeaderValue::from_str(&format!("proxy; hit; ttl=-{}; detail={detail}", expired_for.as_secs()))
                    .expect("ascii")
            }
            CacheStatus::Revalidated { stored: true } => {
                HeaderValue::from_static("proxy; fwd=stale; fwd-status=304; stored")
            }
            CacheStatus::Revalidated { stored: false } => HeaderValue::from_static("proxy; fwd=stale; fwd-status=304"),
            CacheStatus::Miss { stored: true } => HeaderValue::from_static("proxy; fwd=miss; stored"),
            CacheStatus::Miss { stored: false } => HeaderValue::from_static("proxy; fwd=miss"),
            CacheStatus::Bypass(Bypass::Method) => HeaderValue::from_static("proxy; fwd=method"),
            CacheStatus::Bypass(Bypass::Uncacheable) => HeaderValue::from_static("proxy; fwd=bypass"),
            CacheStatus::Bypass(Bypass::NoRule) => HeaderValue::from_static("proxy; fwd=uri-miss"),
            CacheStatus::Bypass(Bypass::KeyTooLarge) => {
                HeaderValue::from_static("proxy; fwd=bypass; detail=key-too-large")
            }
            CacheStatus::Bypass(Bypass::StoreUnavailable) => {
                HeaderValue::from_static("proxy; fwd=bypass; detail=store-unavailable")
            }
            CacheStatus::Bypass(Bypass::Error) => HeaderValue::from_static("proxy; fwd=bypass; detail=error"),
        }
    }

    /// Label for the cache-outcome metric.
    pub fn outcome(&self) -> &'static str {
        match self {
            CacheStatus::Hit { .. } => "hit",
            CacheStatus::Stale { .. } => "stale",
            CacheStatus::Revalidated { .. } => "revalidated",
            CacheStatus::Miss { .. } => "miss",
            CacheStatus::Bypass(_) => "bypass",
        }
    }
}

// === Stores ===

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    /// A fresh entry whose every tag generation is current. Shared, so the
    /// memory store hands out its own copy without cloning headers.
    Hit(std::sync::Arc<Entry>),
    /// An expired entry still within a stale window, its every tag
    /// generation current (so its `generations` are the current ones): an
    /// invalidated entry is never returned, stale or not.
    Stale(std::sync::Arc<Entry>),
    /// Nothing servable. Carries the current generations of the rule's
    /// tags (created when missing), to be recorded in the entry stored for
    /// this miss.
    Miss(Generations),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The circuit breaker is open, or invalidations recorded during an
    /// outage have not been applied yet: caching is paused.
    #[error("cache store unavailable")]
    Unavailable,
    #[error("cache operation timed out")]
    Timeout,
    #[error("cache store error: {0}")]
    Backend(String),
}

/// Where entries live: the data operations of the request path and the
/// purge index. Implementations must make a completed
/// [`Invalidate::invalidate`] visible to every later
/// [`lookup`](CacheStore::lookup).
#[async_trait]
pub trait CacheStore: Send + Sync + 'static {
    /// Finds a servable entry for `key`, checking its generations against
    /// the current ones of `tags` in the same round trip.
    async fn lookup(&self, key: &CacheKey, tags: &[String]) -> Result<Lookup, StoreError>;

    /// Stores `entry` for as long as it may be used (fresh or stale),
    /// indexed for purging as `index` says.
    async fn store(&self, key: &CacheKey, entry: &Entry, index: &IndexInfo<'_>) -> Result<(), StoreError>;

    /// The keys of the entries filed under `place` in the purge index.
    async fn filed(&self, place: Filed<'_>) -> Result<Vec<CacheKey>, StoreError>;

    /// Removes, or with `soft` marks expired, the entries under `keys`;
    /// returns how many there were.
    async fn remove(&self, keys: Vec<CacheKey>, soft: bool) -> Result<u64, StoreError>;
}

/// Tag generations: how a write makes every instance stop serving what it
/// replaced.
#[async_trait]
pub trait Invalidate: Send + Sync + 'static {
    /// Gives each tag a fresh generation, so no entry recorded under the
    /// old one is served again. Returns only once the change is durable in
    /// the store (for Redis: acknowledged).
    async fn invalidate(&self, tags: &[String]) -> Result<(), StoreError>;
}

/// Who fetches a missing entry when several instances miss it at once.
#[async_trait]
pub trait Leases: Send + Sync + 'static {
    /// Claims, for at most `ttl`, the fetch of the missing entry `key` on
    /// behalf of every instance sharing this store. A store no other
    /// instance shares always grants it, without a token.
    async fn lease(&self, _key: &CacheKey, _ttl: Duration) -> Result<Lease, StoreError> {
        Ok(Lease::Granted(None))
    }

    /// Gives back a lease granted with `token`, unless it already expired
    /// (and may belong to someone else by now).
    async fn release(&self, _key: &CacheKey, _token: &str) {}

    /// Whether another instance still holds the lease on `key`.
    async fn leased(&self, _key: &CacheKey) -> Result<bool, StoreError> {
        Ok(false)
    }
}

/// The store as the operator sees it: readiness, warnings, shutdown.
#[async_trait]
pub trait StoreHealth: Send + Sync + 'static {
    /// Whether the store can serve right now (`/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// What in the store's own settings weakens a guarantee (`/readyz`).
    async fn warnings(&self) -> Vec<String> {
        Vec::new()
    }

    /// Last chance, at shutdown, to apply invalidations still pending.
    async fn close(&self) {}

    /// `"redis"` or `"memory"`, for logs and metrics.
    fn kind(&self) -> &'static str;
}

/// Everything the proxy asks of its store, as one object.
#[async_trait]
pub trait Store: CacheStore + Invalidate + Leases + StoreHealth {
    /// Purges what `request` names (see [`purge::run`]).
    async fn purge(&self, request: &PurgeRequest) -> Result<Purged, StoreError> {
        purge::run(self, request).await
    }
}

impl<T: CacheStore + Invalidate + Leases + StoreHealth> Store for T {}

/// The answer to a lease request.
#[derive(Debug, PartialEq, Eq)]
pub enum Lease {
    /// Fetch; give it back with the token (if any) once stored.
    Granted(Option<String>),
    /// Another instance is fetching: wait for its entry.
    HeldElsewhere,
}

/// A new random generation token: 128 bits, hex.
pub fn new_generation() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(scope: Scope) -> CachePolicy {
        CachePolicy {
            scope,
            ttl: Duration::from_secs(60),
            statuses: vec![200],
            vary: vec![HeaderName::from_static("accept-language")],
            tags: vec![],
            stale_while_revalidate: Duration::from_secs(30),
            stale_if_error: Duration::ZERO,
            max_origin_stale: Duration::from_secs(3600),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn lifetime(pairs: &[(&str, &str)]) -> Lifetime {
        storability(&policy(Scope::Shared), &[], StatusCode::OK, &headers(pairs)).unwrap()
    }

    fn verdict(scope: Scope, status: u16, pairs: &[(&str, &str)]) -> Result<Duration, NotStorable> {
        storability(
            &policy(scope),
            &[],
            StatusCode::from_u16(status).unwrap(),
            &headers(pairs),
        )
        .map(|l| l.ttl)
    }

    #[test]
    fn an_answer_may_vary_on_forwarded_headers_but_not_on_others_or_star() {
        let vary = |on: &'static str, forwarded: &[HeaderName]| {
            storability(
                &policy(Scope::Shared),
                forwarded,
                StatusCode::OK,
                &headers(&[("vary", on)]),
            )
            .map(|_| ())
        };
        let accept = [HeaderName::from_static("accept")];
        assert_eq!(vary("Accept", &accept), Ok(()));
        assert_eq!(vary("Accept", &[]), Err(NotStorable::VaryUnkeyed));
        assert_eq!(vary("Accept-Language, accept", &accept), Ok(()));
        assert_eq!(vary("X-Other", &accept), Err(NotStorable::VaryUnkeyed));
        assert_eq!(vary("*", &accept), Err(NotStorable::VaryStar));
    }

    #[test]
    fn stale_windows_come_from_the_rule_unless_the_origin_sends_its_own() {
        let from_rule = lifetime(&[]);
        assert_eq!(from_rule.stale_while_revalidate, Duration::from_secs(30));
        assert_eq!(from_rule.stale_if_error, Duration::ZERO);
        let from_origin = lifetime(&[(
            "cache-control",
            "max-age=5, stale-while-revalidate=0, stale-if-error=600",
        )]);
        assert_eq!(from_origin.stale_while_revalidate, Duration::ZERO);
        assert_eq!(from_origin.stale_if_error, Duration::from_secs(600));
        assert_eq!(
            lifetime(&[("cache-control", "stale-if-error=soon")]).stale_if_error,
            Duration::ZERO
        );
        let greedy = lifetime(&[(
            "cache-control",
            "stale-while-revalidate=31536000, stale-if-error=31536000",
        )]);
        assert_eq!(greedy.stale_while_revalidate, Duration::from_secs(3600), "capped");
        assert_eq!(greedy.stale_if_error, Duration::from_secs(3600), "capped");
    }

    #[test]
    fn a_plain_200_is_stored_for_the_rule_ttl() {
        assert_eq!(verdict(Scope::Shared, 200, &[]), Ok(Duration::from_secs(60)));
    }

    #[test]
    fn only_listed_statuses_are_stored() {
        assert_eq!(verdict(Scope::Shared, 404, &[]), Err(NotStorable::Status));
        assert_eq!(verdict(Scope::Shared, 500, &[]), Err(NotStorable::Status));
    }

    #[test]
    fn origin_directives_forbid_or_shorten() {
        assert_eq!(
            verdict(Scope::Shared, 200, &[("cache-control", "no-store")]),
            Err(NotStorable::NoStore)
        );
        assert_eq!(
            verdict(Scope::User, 200, &[("cache-control", "public, No-Store")]),
            Err(NotStorable::NoStore)
        );
        assert_eq!(
            verdict(Scope::Shared, 200, &[("cache-control", "no-cache")]),
            Err(NotStorable::NoCache)
        );
        assert_eq!(
            verdict(Scope::Shared, 200, &[("set-cookie", "a=b")]),
            Err(NotStorable::SetCookie)
        );
        assert_eq!(
            verdict(Scope::Shared, 200, &[("cache-control", "max-age=10")]),
            Ok(Duration::from_secs(10))
        );
        assert_eq!(
            verdict(Scope::Shared, 200, &[("cache-control", "max-age=10, s-maxage=20")]),
            Ok(Duration::from_secs(20))
        );
        assert_eq!(
            verdict(Scope::Shared, 200, &[("cache-control", "max-age=600")]),
            Ok(Duration::from_secs(60)),
            "capped by the rule"
        );
        assert_eq!(
            verdict(Scope::Shared, 200, &[("cache-control", "max-age=0")]),
            Err(NotStorable::ZeroTtl)
        );
        assert_eq!(
            verdict(Scope::Shared, 200, &[("cache-control", "max-age=soon")]),
            Err(NotStorable::ZeroTtl)
        );
    }

    #[test]
    fn private_is_stored_only_per_user() {
        assert_eq!(
            verdict(Scope::Shared, 200, &[("cache-control", "private")]),
            Err(NotStorable::Private)
        );
        assert_eq!(
            verdict(Scope::Role, 200, &[("cache-control", "private")]),
            Err(NotStorable::Private)
        );
        assert!(verdict(Scope::User, 200, &[("cache-control", "private")]).is_ok());
    }

    #[test]
    fn vary_must_be_keyed() {
        assert_eq!(
            verdict(Scope::Shared, 200, &[("vary", "*")]),
            Err(NotStorable::VaryStar)
        );
        assert_eq!(
            verdict(Scope::Shared, 200, &[("vary", "Cookie")]),
            Err(NotStorable::VaryUnkeyed)
        );
        assert!(verdict(Scope::Shared, 200, &[("vary", "Accept-Language")]).is_ok());
    }

    #[test]
    fn cache_status_headers_follow_rfc_9211() {
        assert_eq!(
            CacheStatus::Hit {
                ttl_left: Duration::from_millis(42_900)
            }
            .cache_status(),
            "proxy; hit; ttl=42"
        );
        assert_eq!(
            CacheStatus::Miss { stored: true }.cache_status(),
            "proxy; fwd=miss; stored"
        );
        assert_eq!(
            CacheStatus::Bypass(Bypass::NoRule).cache_status(),
            "proxy; fwd=uri-miss"
        );
        assert_eq!(CacheStatus::Bypass(Bypass::StoreUnavailable).x_cache(), "BYPASS");
        let stale = CacheStatus::Stale {
            expired_for: Duration::from_secs(3),
            reason: StaleReason::IfError,
        };
        assert_eq!(stale.x_cache(), "STALE");
        assert_eq!(stale.cache_status(), "proxy; hit; ttl=-3; detail=stale-if-error");
    }

    #[test]
    fn generations_are_random_and_distinct() {
        let (a, b) = (new_generation(), new_generation());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
