//! What may be stored, for how long, and which of its headers: the
//! decisions RFC 9111 leaves to a shared cache, made here and nowhere else.
//! Pure: every function depends on nothing but its arguments.

use std::time::{Duration, SystemTime};

use http::header::{HeaderName, AGE, CACHE_CONTROL, DATE, EXPIRES, LAST_MODIFIED, SET_COOKIE, VARY};
use http::{HeaderMap, StatusCode};

use super::status::X_CACHE;

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
    /// What an answer without explicit freshness gets.
    pub freshness: Freshness,
    /// Whether clients' `no-cache`, `max-age`, `min-fresh` and
    /// `only-if-cached` are followed (`no-store` always is).
    pub honour_request_directives: bool,
    /// A field targeted at this cache (RFC 9213, e.g. `CDN-Cache-Control`):
    /// when an answer carries a valid one, it decides in place of
    /// `Cache-Control` and `Expires`. It is passed on: it targets a class
    /// of caches, and another of the class may sit in front of this one.
    pub targeted_cache_control: Option<HeaderName>,
}

/// Where the freshness of an answer that states none comes from. Explicit
/// freshness (`s-maxage`, `max-age`, `Expires`, less the received `Age`)
/// is honoured either way, and the route's `ttl` bounds it either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// RFC 9111 §4.2: heuristic freshness (a tenth of the time since
    /// `Last-Modified`) for heuristically cacheable statuses, else the
    /// answer is not stored.
    Origin,
    /// The route's `ttl`: the operator's `cache` table is the explicit
    /// mark that the route's answers may be cached (§4.2.2).
    Route,
}

/// Statuses a cache may give heuristic freshness (RFC 9110 §15.1).
const HEURISTICALLY_CACHEABLE: &[u16] = &[200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501];

/// The share of the time since `Last-Modified` heuristic freshness takes
/// (RFC 9111 §4.2.2's typical setting).
const HEURISTIC_FRACTION: u32 = 10;

/// How long a stored response is fresh, then usable stale.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// Freshness left from the moment it is stored.
    pub ttl: Duration,
    /// Its age when received (RFC 9111 §4.2.3's corrected initial age):
    /// its `Age` goes on from there.
    pub initial_age: Duration,
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
    /// The request carried credentials to the backend on a public route and
    /// the answer did not say it may be shared (RFC 9111 §3.5).
    Credentialed,
    ZeroTtl,
    /// Nothing says how long it is fresh (`freshness = "origin"`).
    NoFreshness,
}

/// Decides whether a response may be stored under `policy`, and for how
/// long. Pure: depends on nothing but its arguments.
/// `forwarded` are the request headers that reach the origin besides the
/// rule's `vary`: an answer may vary on those (they join its key), on
/// nothing else. `now` is when the answer was received. `credentialed`:
/// the request took `Authorization` or `Cookie` to the backend on a public
/// route, whose answers are shared only where they say they may be.
pub fn storability(
    policy: &CachePolicy,
    forwarded: &[HeaderName],
    status: StatusCode,
    headers: &HeaderMap,
    now: SystemTime,
    credentialed: bool,
) -> Result<Lifetime, NotStorable> {
    if !policy.statuses.contains(&status.as_u16()) {
        return Err(NotStorable::Status);
    }
    if headers.contains_key(SET_COOKIE) {
        return Err(NotStorable::SetCookie);
    }
    let targeted = policy
        .targeted_cache_control
        .as_ref()
        .and_then(|name| CacheControl::parse_targeted(headers, name));
    let (cc, expires_counts) = match targeted {
        Some(cc) => (cc, false),
        None => (CacheControl::parse(headers), true),
    };
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
    if credentialed && !(cc.public || cc.must_revalidate || cc.s_maxage.is_some()) {
        return Err(NotStorable::Credentialed);
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
    let dates = Dates::read(headers, now);
    let initial_age = dates.initial_age();
    // A shared cache reads s-maxage first, then max-age, then Expires
    // (RFC 9111 §4.2.1).
    let explicit = cc
        .s_maxage
        .or(cc.max_age)
        .or_else(|| dates.expires_lifetime().filter(|_| expires_counts));
    let ttl = match (explicit, policy.freshness) {
        (Some(lifetime), _) => lifetime.saturating_sub(initial_age).min(policy.ttl),
        (None, Freshness::Route) => policy.ttl,
        (None, Freshness::Origin) => match dates.heuristic_lifetime(status) {
            Some(lifetime) => lifetime.saturating_sub(initial_age).min(policy.ttl),
            None => return Err(NotStorable::NoFreshness),
        },
    };
    if ttl < Duration::from_secs(1) {
        return Err(NotStorable::ZeroTtl);
    }
    // The age carried on counts within the lifetime granted, never beyond:
    // one a `route` rule's ttl did not spend is capped at that ttl, so it
    // cannot stretch how long the entry is kept for revalidation.
    let initial_age = match explicit {
        Some(lifetime) => initial_age.min(lifetime),
        None => initial_age.min(ttl),
    };
    // must-revalidate, proxy-revalidate and s-maxage (RFC 9111 §5.2.2.2,
    // §5.2.2.8, §5.2.2.10): never served stale by a shared cache.
    let no_stale = cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage.is_some();
    Ok(Lifetime {
        ttl,
        // Without explicit freshness on a `route` rule the route's TTL
        // counts from now; the answer's age is still reported in `Age`.
        initial_age,
        stale_while_revalidate: if no_stale {
            Duration::ZERO
        } else {
            cc.stale_while_revalidate
                .map_or(policy.stale_while_revalidate, |asked| {
                    asked.min(policy.max_origin_stale)
                })
        },
        stale_if_error: if no_stale {
            Duration::ZERO
        } else {
            cc.stale_if_error
                .map_or(policy.stale_if_error, |asked| asked.min(policy.max_origin_stale))
        },
    })
}

/// Whether stored `headers` forbid serving the entry stale to a shared
/// cache's clients (`must-revalidate`, `proxy-revalidate`, `s-maxage`).
pub fn must_revalidate(headers: &HeaderMap) -> bool {
    let cc = CacheControl::parse(headers);
    cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage.is_some()
}

/// The date-valued fields of an answer, read at `now`.
struct Dates {
    /// `Date`, or `now` when absent or invalid (RFC 9110 §6.6.1: a
    /// recipient without one assigns its own).
    date: SystemTime,
    /// The first `Expires`: `Some(None)` when present but invalid, which
    /// means already expired (RFC 9111 §5.3).
    expires: Option<Option<SystemTime>>,
    /// The first valid `Age`.
    age: Option<Duration>,
    last_modified: Option<SystemTime>,
}

impl Dates {
    fn read(headers: &HeaderMap, now: SystemTime) -> Dates {
        let date_of = |name| {
            headers
                .get(name)
                .and_then(|v: &http::HeaderValue| v.to_str().ok())
                .and_then(|v| httpdate::parse_http_date(v.trim()).ok())
        };
        Dates {
            date: date_of(DATE).unwrap_or(now),
            expires: headers.get(EXPIRES).map(|_| date_of(EXPIRES)),
            age: headers
                .get(AGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs),
            last_modified: date_of(LAST_MODIFIED),
        }
    }

    /// The age the origin, or a cache before us, reported (RFC 9111
    /// §4.2.3's `age_value`). The apparent age (now less `Date`) is left
    /// out, as Varnish leaves it out: a backend's clock a few seconds
    /// off would otherwise shorten, or cut, every lifetime.
    fn initial_age(&self) -> Duration {
        self.age.unwrap_or_default()
    }

    /// `Expires` less `Date` (RFC 9111 §4.2.1); zero when invalid.
    fn expires_lifetime(&self) -> Option<Duration> {
        let expires = self.expires?;
        Some(
            expires
                .and_then(|at| at.duration_since(self.date).ok())
                .unwrap_or_default(),
        )
    }

    /// A tenth of the time since `Last-Modified`, for statuses a cache may
    /// give heuristic freshness (RFC 9111 §4.2.2).
    fn heuristic_lifetime(&self, status: StatusCode) -> Option<Duration> {
        if !HEURISTICALLY_CACHEABLE.contains(&status.as_u16()) {
            return None;
        }
        let since = self.date.duration_since(self.last_modified?).ok()?;
        Some(since / HEURISTIC_FRACTION)
    }
}

/// The response `Cache-Control` directives storability depends on.
#[derive(Debug, Default, PartialEq, Eq)]
struct CacheControl {
    no_store: bool,
    no_cache: bool,
    private: bool,
    public: bool,
    must_revalidate: bool,
    proxy_revalidate: bool,
    max_age: Option<Duration>,
    s_maxage: Option<Duration>,
    stale_while_revalidate: Option<Duration>,
    stale_if_error: Option<Duration>,
}

impl CacheControl {
    /// A targeted field (RFC 9213): a Structured Fields dictionary; when
    /// absent or not a valid one, `None` (the field is ignored). Members
    /// whose values have the wrong type are ignored one by one.
    fn parse_targeted(headers: &HeaderMap, name: &HeaderName) -> Option<CacheControl> {
        let mut cc = CacheControl::default();
        let mut any = false;
        for value in headers.get_all(name) {
            any = true;
            for member in value.to_str().ok()?.split(',') {
                // Parameters (";a=b") say nothing to a cache.
                let member = member.split(';').next().unwrap_or("").trim();
                let (key, value) = match member.split_once('=') {
                    Some((key, value)) => (key, Some(value)),
                    None => (member, None),
                };
                if !is_sf_key(key) || value.is_some_and(|v| !is_sf_bare_item(v)) {
                    return None;
                }
                let integer = value.and_then(|v| v.parse::<u64>().ok()).map(Duration::from_secs);
                let flag = value.is_none_or(|v| v == "?1");
                match key {
                    "no-store" => cc.no_store |= flag,
                    "no-cache" => cc.no_cache |= flag,
                    "private" => cc.private |= flag,
                    "public" => cc.public |= flag,
                    "must-revalidate" => cc.must_revalidate |= flag,
                    "max-age" => {
                        if let Some(age) = integer {
                            cc.max_age.get_or_insert(age);
                        }
                    }
                    "s-maxage" => {
                        if let Some(age) = integer {
                            cc.s_maxage.get_or_insert(age);
                        }
                    }
                    "stale-while-revalidate" => cc.stale_while_revalidate = integer.or(cc.stale_while_revalidate),
                    "stale-if-error" => cc.stale_if_error = integer.or(cc.stale_if_error),
                    _ => {}
                }
            }
        }
        any.then_some(cc)
    }

    fn parse(headers: &HeaderMap) -> CacheControl {
        let mut cc = CacheControl::default();
        for value in headers.get_all(CACHE_CONTROL) {
            let Ok(value) = value.to_str() else {
                // Unreadable directives could say anything; assume the worst.
                cc.no_store = true;
                continue;
            };
            for (name, arg) in directives(value) {
                let seconds = || seconds(arg);
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => cc.no_store = true,
                    // `private="field"` and `no-cache="field"` restrict only some
                    // fields in theory; treating them as whole-response is safe.
                    "no-cache" => cc.no_cache = true,
                    "private" => cc.private = true,
                    "public" => cc.public = true,
                    "must-revalidate" => cc.must_revalidate = true,
                    "proxy-revalidate" => cc.proxy_revalidate = true,
                    // A malformed age is treated as 0: do not cache. A
                    // repeated one: the first counts (RFC 9111 §4.2.1).
                    "max-age" => {
                        cc.max_age.get_or_insert(seconds().unwrap_or(Duration::ZERO));
                    }
                    "s-maxage" => {
                        cc.s_maxage.get_or_insert(seconds().unwrap_or(Duration::ZERO));
                    }
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

/// The `name[=arg]` directives of one `Cache-Control` field value
/// (request or response), trimmed, quotes taken off the argument.
pub(super) fn directives(value: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    value.split(',').map(|directive| match directive.split_once('=') {
        Some((name, arg)) => (name.trim(), Some(arg.trim().trim_matches('"'))),
        None => (directive.trim(), None),
    })
}

/// A directive's argument as whole seconds, if it is one.
pub(super) fn seconds(arg: Option<&str>) -> Option<Duration> {
    arg.and_then(|a| a.parse::<u64>().ok()).map(Duration::from_secs)
}

/// A Structured Fields key (RFC 8941 §3.1.2): lower case.
fn is_sf_key(key: &str) -> bool {
    let mut bytes = key.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_lowercase() || b == b'*')
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.*".contains(&b))
}

/// A Structured Fields bare item as a cache directive's value: an
/// integer, a boolean, a quoted string or a token (RFC 8941 §3.3).
fn is_sf_bare_item(value: &str) -> bool {
    let digits = value.strip_prefix('-').unwrap_or(value);
    let integer = !digits.is_empty() && digits.len() <= 15 && digits.bytes().all(|b| b.is_ascii_digit());
    let string = value.len() >= 2 && value.starts_with('"') && value.ends_with('"');
    integer || string || value == "?0" || value == "?1" || is_sf_token(value)
}

/// `( ALPHA / "*" ) *( tchar / ":" / "/" )`.
fn is_sf_token(value: &str) -> bool {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&b);
    let mut bytes = value.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'*') && bytes.all(tchar)
}

/// Response headers worth storing: not the proxy's own, not `Age`, which
/// is recomputed on every hit, and not what describes the request that
/// fetched the entry: the request id a backend may echo (`request_id`,
/// and the usual name) and trace context (`traceresponse` included).
pub fn storable_headers(headers: &HeaderMap, request_id: &HeaderName) -> HeaderMap {
    let mut kept = headers.clone();
    kept.remove(X_CACHE);
    kept.remove(AGE);
    kept.remove(request_id);
    for per_request in [
        crate::trace::X_REQUEST_ID,
        crate::trace::TRACEPARENT,
        crate::trace::TRACESTATE,
        HeaderName::from_static("traceresponse"),
    ] {
        kept.remove(per_request);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn what_describes_the_fetching_request_is_not_stored() {
        let mut answer = HeaderMap::new();
        for (name, value) in [
            ("content-type", "application/json"),
            ("x-request-id", "first"),
            ("x-correlation-id", "first"),
            ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            (
                "traceresponse",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("age", "3"),
        ] {
            answer.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        let stored = storable_headers(&answer, &HeaderName::from_static("x-correlation-id"));
        let names: Vec<&str> = stored.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["content-type"]);
    }

    fn policy(scope: Scope) -> CachePolicy {
        CachePolicy {
            scope,
            ttl: Duration::from_secs(60),
            statuses: vec![200],
            vary: vec![HeaderName::from_static("accept-language")],
            tags: vec![],
            stale_while_revalidate: Duration::from_secs(30),
            stale_if_error: Duration::ZERO,
            freshness: Freshness::Route,
            honour_request_directives: false,
            targeted_cache_control: None,
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

    /// When the tests' answers are received.
    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn http_date(offset_secs: i64) -> String {
        httpdate::fmt_http_date(
            now() + Duration::from_secs(offset_secs.max(0) as u64) - Duration::from_secs((-offset_secs).max(0) as u64),
        )
    }

    fn lifetime(pairs: &[(&str, &str)]) -> Lifetime {
        storability(
            &policy(Scope::Shared),
            &[],
            StatusCode::OK,
            &headers(pairs),
            now(),
            false,
        )
        .unwrap()
    }

    fn verdict(scope: Scope, status: u16, pairs: &[(&str, &str)]) -> Result<Duration, NotStorable> {
        storability(
            &policy(scope),
            &[],
            StatusCode::from_u16(status).unwrap(),
            &headers(pairs),
            now(),
            false,
        )
        .map(|l| l.ttl)
    }

    fn origin_verdict(status: u16, pairs: &[(&str, &str)]) -> Result<Lifetime, NotStorable> {
        let policy = CachePolicy {
            freshness: Freshness::Origin,
            statuses: vec![200, 404],
            ..policy(Scope::Shared)
        };
        storability(
            &policy,
            &[],
            StatusCode::from_u16(status).unwrap(),
            &headers(pairs),
            now(),
            false,
        )
    }

    #[test]
    fn rfc9111_4_2_1_expires_less_date_is_the_lifetime_and_bounded_by_the_route() {
        let (date, soon, later) = (http_date(0), http_date(30), http_date(3600));
        assert_eq!(
            lifetime(&[("date", &date), ("expires", &soon)]).ttl,
            Duration::from_secs(30)
        );
        assert_eq!(
            lifetime(&[("date", &date), ("expires", &later)]).ttl,
            Duration::from_secs(60)
        );
        assert_eq!(
            lifetime(&[("date", &date), ("expires", &later), ("cache-control", "max-age=20")]).ttl,
            Duration::from_secs(20),
            "max-age wins over Expires"
        );
    }

    #[test]
    fn rfc9111_5_3_an_expires_in_the_past_or_invalid_is_stale() {
        let (date, past) = (http_date(0), http_date(-60));
        for expires in [past.as_str(), "0", "not a date"] {
            assert_eq!(
                verdict(Scope::Shared, 200, &[("date", &date), ("expires", expires)]),
                Err(NotStorable::ZeroTtl),
                "{expires}"
            );
        }
    }

    #[test]
    fn rfc9111_4_2_1_a_repeated_max_age_counts_once_the_first() {
        assert_eq!(
            lifetime(&[("cache-control", "max-age=5, max-age=1800")]).ttl,
            Duration::from_secs(5)
        );
    }

    #[test]
    fn rfc9111_4_2_3_the_received_age_is_spent_freshness() {
        let aged = lifetime(&[("cache-control", "max-age=50"), ("age", "30")]);
        assert_eq!(
            (aged.ttl, aged.initial_age),
            (Duration::from_secs(20), Duration::from_secs(30))
        );
        assert_eq!(
            verdict(
                Scope::Shared,
                200,
                &[("cache-control", "max-age=3600"), ("age", "7200")]
            ),
            Err(NotStorable::ZeroTtl)
        );
        // Without explicit freshness a route's own TTL is not shortened,
        // but the age is still carried.
        let routed = lifetime(&[("age", "30")]);
        assert_eq!(
            (routed.ttl, routed.initial_age),
            (Duration::from_secs(60), Duration::from_secs(30))
        );
    }

    #[test]
    fn rfc9213_a_valid_targeted_field_decides_in_place_of_cache_control_and_expires() {
        let policy = CachePolicy {
            targeted_cache_control: Some(HeaderName::from_static("cdn-cache-control")),
            freshness: Freshness::Origin,
            ..policy(Scope::Shared)
        };
        let judge = |pairs: &[(&str, &str)]| {
            storability(&policy, &[], StatusCode::OK, &headers(pairs), now(), false).map(|l| l.ttl)
        };
        let later = http_date(3600);
        assert_eq!(
            judge(&[("cdn-cache-control", "max-age=10"), ("cache-control", "max-age=3600")]),
            Ok(Duration::from_secs(10))
        );
        assert_eq!(
            judge(&[("cdn-cache-control", "max-age=30"), ("cache-control", "no-store")]),
            Ok(Duration::from_secs(30))
        );
        assert_eq!(
            judge(&[("cdn-cache-control", "no-store"), ("cache-control", "max-age=30")]),
            Err(NotStorable::NoStore)
        );
        assert_eq!(
            judge(&[("cdn-cache-control", "private"), ("cache-control", "max-age=30")]),
            Err(NotStorable::Private)
        );
        assert_eq!(
            judge(&[
                ("cdn-cache-control", "max-age=0"),
                ("expires", &later),
                ("date", &http_date(0))
            ]),
            Err(NotStorable::ZeroTtl),
            "Expires does not count beside a targeted field"
        );
        assert_eq!(
            judge(&[("cdn-cache-control", "max-age=3600"), ("age", "7200")]),
            Err(NotStorable::ZeroTtl)
        );
        for invalid in ["max-age=10000, &&&&&", "Max-Age=30"] {
            assert_eq!(
                judge(&[("cdn-cache-control", invalid)]),
                Err(NotStorable::NoFreshness),
                "{invalid}: ignored, and Cache-Control says nothing"
            );
        }
        assert_eq!(
            judge(&[("cdn-cache-control", "max-age=\"30\"")]),
            Err(NotStorable::NoFreshness),
            "a string max-age is no max-age"
        );
    }

    #[test]
    fn rfc9111_3_5_a_credentialed_request_is_answered_for_all_only_when_the_answer_says_so() {
        let judge = |cc: &str| {
            storability(
                &policy(Scope::Shared),
                &[],
                StatusCode::OK,
                &headers(&[("cache-control", cc)]),
                now(),
                true,
            )
            .map(|l| l.ttl)
        };
        assert_eq!(judge("max-age=30"), Err(NotStorable::Credentialed));
        for shareable in ["max-age=30, public", "max-age=30, must-revalidate", "s-maxage=30"] {
            assert_eq!(judge(shareable), Ok(Duration::from_secs(30)), "{shareable}");
        }
    }

    #[test]
    fn rfc9111_5_2_2_2_must_revalidate_and_s_maxage_answers_are_never_served_stale() {
        for cc in [
            "max-age=30, must-revalidate",
            "max-age=30, proxy-revalidate",
            "s-maxage=30",
        ] {
            let stored = lifetime(&[("cache-control", cc)]);
            assert_eq!(
                (stored.stale_while_revalidate, stored.stale_if_error),
                (Duration::ZERO, Duration::ZERO),
                "{cc}"
            );
            assert!(must_revalidate(&headers(&[("cache-control", cc)])));
        }
        assert_eq!(
            lifetime(&[("cache-control", "max-age=30")]).stale_while_revalidate,
            Duration::from_secs(30)
        );
    }

    #[test]
    fn an_age_counts_within_the_lifetime_granted() {
        let routed = lifetime(&[("age", "99999999999")]);
        assert_eq!(routed.initial_age, Duration::from_secs(60), "capped at the route's ttl");
    }

    #[test]
    fn rfc9111_4_2_2_origin_freshness_is_heuristic_or_nothing() {
        assert_eq!(origin_verdict(200, &[]), Err(NotStorable::NoFreshness));
        let (date, modified) = (http_date(0), http_date(-200));
        let heuristic = origin_verdict(200, &[("date", &date), ("last-modified", &modified)]).unwrap();
        assert_eq!(
            heuristic.ttl,
            Duration::from_secs(20),
            "a tenth of the time since Last-Modified"
        );
        let long_ago = http_date(-100_000);
        let capped = origin_verdict(404, &[("date", &date), ("last-modified", &long_ago)]).unwrap();
        assert_eq!(capped.ttl, Duration::from_secs(60), "the route's ttl bounds it");
        assert_eq!(
            origin_verdict(200, &[("cache-control", "max-age=10")]).unwrap().ttl,
            Duration::from_secs(10)
        );
    }

    #[test]
    fn an_answer_may_vary_on_forwarded_headers_but_not_on_others_or_star() {
        let vary = |on: &'static str, forwarded: &[HeaderName]| {
            storability(
                &policy(Scope::Shared),
                forwarded,
                StatusCode::OK,
                &headers(&[("vary", on)]),
                now(),
                false,
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
}
