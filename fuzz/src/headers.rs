//! Response headers an origin controls: `Cache-Control` (storability and
//! lifetimes), `Vary` (storability and learned variance), surrogate keys,
//! and the validators conditional requests use.
//!
//! Input: a knobs byte, then `name: value` lines (any bytes; a line
//! starting with `>` is a request header instead). The knobs pick the
//! rule's scope (bits 0-1), TTL (bits 2-4) and stale windows (bits 5-7),
//! from values a config can hold, the extremes included.
//!
//! Invariants: a stored lifetime is between 1 s and the rule's TTL; no
//! stored answer is `private` outside `user` scope or varies on an unkeyed
//! header; the entry built from it has exactly the lifetime (saturated,
//! never wrapped) and round-trips through its encoding; surrogate keys are
//! valid, bounded, distinct tags the header really named.

use std::time::Duration;

use bytes::Bytes;
use http::header::VARY;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use proxy::cache::purge::{is_valid_tag, surrogate_keys, ALL_TAG};
use proxy::cache::{storability, CachePolicy, Entry, Freshness, Scope};
use proxy::vary::LearnedVary;

const TTLS: [u64; 8] = [60, 1, 2, 3600, 365 * 86_400, u64::MAX / 1000, u64::MAX / 2, u64::MAX];
const WINDOWS: [u64; 8] = [0, 30, 1, 600, 86_400, u64::MAX / 1000, u64::MAX / 1000 + 1, u64::MAX];
/// When the entry is stored: a fixed, realistic clock keeps runs repeatable.
const NOW_MS: u64 = 1_700_000_000_000;

pub fn headers(data: &[u8]) {
    let Some((&knobs, rest)) = data.split_first() else {
        return;
    };
    let policy = CachePolicy {
        scope: [Scope::User, Scope::Role, Scope::Shared, Scope::Shared][usize::from(knobs & 3)],
        ttl: Duration::from_secs(TTLS[usize::from(knobs >> 2 & 7)]),
        statuses: vec![200],
        vary: vec![HeaderName::from_static("accept-language")],
        tags: vec!["users".into(), ALL_TAG.into()],
        stale_while_revalidate: Duration::from_secs(WINDOWS[usize::from(knobs >> 5)]),
        stale_if_error: Duration::from_secs(WINDOWS[usize::from(knobs >> 5) ^ 1]),
        max_origin_stale: Duration::from_secs(3600),
        // Both readings of an answer without explicit freshness, by input.
        freshness: if rest.len() % 2 == 0 {
            Freshness::Route
        } else {
            Freshness::Origin
        },
        honour_request_directives: false,
        targeted_cache_control: None,
    };
    let (request, response) = parse(rest);
    check_storability(&policy, &response);
    check_surrogate_keys(&response);
    check_vary(&policy, &response);
    check_validators(&request, &response);
}

/// Request and response headers from `name: value` lines.
fn parse(text: &[u8]) -> (HeaderMap, HeaderMap) {
    let (mut request, mut response) = (HeaderMap::new(), HeaderMap::new());
    for line in text.split(|&b| b == b'\n') {
        let (map, line) = match line.strip_prefix(b">") {
            Some(line) => (&mut request, line),
            None => (&mut response, line),
        };
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let value = line[colon + 1..].strip_prefix(b" ").unwrap_or(&line[colon + 1..]);
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(&line[..colon]), HeaderValue::from_bytes(value)) {
            map.append(name, value);
        }
    }
    (request, response)
}

fn check_storability(policy: &CachePolicy, response: &HeaderMap) {
    let forwarded = [HeaderName::from_static("accept")];
    let received = std::time::UNIX_EPOCH + Duration::from_millis(NOW_MS);
    let Ok(lifetime) = storability(policy, &forwarded, StatusCode::OK, response, received, false) else {
        return;
    };
    assert!(lifetime.ttl >= Duration::from_secs(1) && lifetime.ttl <= policy.ttl);
    // What the origin asks for is capped; the rule's own windows are not.
    for (window, rule) in [
        (lifetime.stale_while_revalidate, policy.stale_while_revalidate),
        (lifetime.stale_if_error, policy.stale_if_error),
    ] {
        assert!(window <= rule.max(policy.max_origin_stale), "an uncapped stale window");
    }
    assert!(!response.contains_key(http::header::SET_COOKIE));
    if policy.scope != Scope::User {
        let private = response
            .get_all(http::header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|d| d.trim().eq_ignore_ascii_case("private"));
        assert!(!private, "a private answer is stored in {:?} scope", policy.scope);
    }

    let entry = Entry::new(
        StatusCode::OK,
        response.clone(),
        Bytes::from_static(b"{}"),
        NOW_MS,
        &lifetime,
        vec![("users".into(), "0123456789abcdef".into())],
    );
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    // An answer that arrives with an `Age` was stored that long before now
    // (RFC 9111 §4.2.3), so its age keeps counting from there.
    assert_eq!(
        entry.stored_at_ms,
        NOW_MS.saturating_sub(ms(lifetime.initial_age)),
        "the entry's age is not the one it arrived with"
    );
    assert_eq!(
        entry.expires_at_ms,
        NOW_MS.saturating_add(ms(lifetime.ttl)),
        "the entry's expiry is not the lifetime's"
    );
    assert_eq!(entry.stale_while_revalidate_ms, ms(lifetime.stale_while_revalidate));
    assert_eq!(entry.stale_if_error_ms, ms(lifetime.stale_if_error));
    assert!(entry.is_fresh(NOW_MS));
    let _ = entry.retention_left(NOW_MS, Duration::from_secs(60));
    assert_eq!(Entry::decode(entry.encode()).as_ref(), Ok(&entry));
}

fn check_surrogate_keys(response: &HeaderMap) {
    let name = HeaderName::from_static("surrogate-key");
    let keys = surrogate_keys(response, &name);
    assert!(keys.len() <= 64);
    let named: Vec<&str> = response
        .get_all(&name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(str::split_ascii_whitespace)
        .collect();
    for (i, key) in keys.iter().enumerate() {
        assert!(is_valid_tag(key) && key.len() <= 256 && key != ALL_TAG, "{key:?}");
        assert!(!keys[..i].contains(key), "{key:?} twice");
        assert!(named.contains(&key.as_str()), "{key:?} was never named");
    }
}

fn check_vary(policy: &CachePolicy, response: &HeaderMap) {
    let learned = LearnedVary::default();
    if let Some(names) = learned.learn("fuzz", "/users", None, &policy.vary, response) {
        assert!(names.starts_with(&policy.vary));
        assert_eq!(learned.names("fuzz", "/users", None).as_deref(), Some(&names[..]));
        assert!(
            learned.names("fuzz", "/other", None).is_none(),
            "learned for one URL only"
        );
        assert!(names.len() > policy.vary.len());
        for (i, name) in names.iter().enumerate() {
            assert!(!names[..i].contains(name), "{name} twice");
        }
        assert!(response.contains_key(VARY));
    }
}

fn check_validators(request: &HeaderMap, response: &HeaderMap) {
    let _ = proxy::conditional::client_has_it(request, response);
    let _ = proxy::conditional::has_origin_validator(response);
    let mut revalidation = HeaderMap::new();
    proxy::conditional::add_validators(&mut revalidation, response);
    let mut stored = response.clone();
    let etag = proxy::conditional::ensure_etag(&mut stored, &Bytes::from_static(b"{}"));
    assert!(etag.as_bytes().starts_with(b"\"") || etag.as_bytes().starts_with(b"W/\""));
    assert!(proxy::conditional::client_has_it(
        &HeaderMap::from_iter([(http::header::IF_NONE_MATCH, etag)]),
        &stored
    ));
}
