//! Property tests of the proxy's pure steps, over generated inputs:
//! - normalisation is idempotent, and a normal form routes like its own
//!   normalisation (a request may only be refused where its normal form is
//!   not: a separator hidden by a dot segment);
//! - two requests that differ in any keyed part (rule, path, query, vary
//!   header values, scope and its subject or roles) never share a cache key,
//!   and requests that agree on all of them always do;
//! - a cache entry survives its encoding: `decode(encode(e)) == e`.
//!
//! The fuzz targets in `fuzz/` explore the same code coverage-guided; these
//! run on every `cargo test`, kept to 256 cases each so they stay fast.

use std::path::Path;
use std::sync::OnceLock;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use proptest::prelude::*;
use proxy::cache::{CacheKey, Entry, KeyParts, ScopeKey};
use proxy::config::{Config, Overrides};
use proxy::route::{normalise, RouteError, RuleSet, Target};

fn rules() -> &'static RuleSet {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    &CONFIG
        .get_or_init(|| {
            let text = include_str!("../../config.toml");
            let overrides = Overrides {
                jwt_secret: Some("property-secret-of-at-least-32-bytes".into()),
                ..Overrides::default()
            };
            Config::load(text, overrides, Path::new(".")).expect("the shipped config loads")
        })
        .runtime
        .routes
}

/// Path segments that exercise every branch of the normaliser: dot
/// segments in all spellings, encoded separators, escapes of reserved and
/// unreserved characters, malformed escapes, non-ASCII.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "", ".", "..", "%2e", "%2E%2e", ".%2e", "users", "admin", "me", "42", "%34%32", "%61dmin", "%2f", "%2F",
            "%5c", "%00", ";", "\\", "%20", "%c3%a9", "é", "~", "%7E", "%", "%4", "%zz", "a;b", "%25", "%252e",
        ])
        .prop_map(str::to_owned),
        "[a-zA-Z0-9._~%-]{1,6}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 0..6).prop_map(|segments| format!("/{}", segments.join("/")))
}

fn query() -> impl Strategy<Value = Option<String>> {
    let pair = prop_oneof![
        prop::sample::select(vec![
            "a=1",
            "a=2",
            "b",
            "",
            "page=2",
            "per_page=%31%30",
            "%61=x",
            "a+b=1",
            "a%20b=2"
        ])
        .prop_map(str::to_owned),
        "[a-c%0-9]{0,3}=[a-z0-9%]{0,3}",
    ];
    prop::option::of(prop::collection::vec(pair, 0..5).prop_map(|pairs| pairs.join("&")))
}

fn method() -> impl Strategy<Value = Method> {
    prop::sample::select(vec![
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
    ])
}

/// Which rule (by name) a target routes to, or why none.
fn routed(method: &Method, target: &Target) -> Result<&'static str, RouteError> {
    rules().match_rule(method, target).map(|rule| rule.name)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn normalisation_is_idempotent_and_routes_like_its_normal_form(
        path in path(), query in query(), method in method()
    ) {
        if let Ok(once) = normalise(&path, query.as_deref()) {
            let twice = normalise(&once.path, once.query.as_deref()).expect("a normal form normalises");
            prop_assert_eq!((&twice.path, &twice.query), (&once.path, &once.query));
            // The one allowed difference: `/a%2F/../admin` is refused (a back
            // end decoding `%2F` before `..` would serve `/a/admin`), while
            // its normal form `/admin` is not. An admitted request always
            // routes like its normal form.
            prop_assert!(!twice.has_ambiguous_chars || once.has_ambiguous_chars);
            if once.has_ambiguous_chars == twice.has_ambiguous_chars || routed(&method, &once).is_ok() {
                prop_assert_eq!(routed(&method, &once), routed(&method, &twice));
            } else {
                prop_assert!(matches!(routed(&method, &once), Err(RouteError::BadPath(_))));
            }
        }
    }
}

// === Cache keys ===

/// A request's keyed parts, owned.
#[derive(Debug, Clone)]
struct Keyed {
    rule: &'static str,
    path: String,
    query: Option<String>,
    vary: Vec<(&'static str, Vec<u8>)>,
    scope: Scope,
}

#[derive(Debug, Clone)]
enum Scope {
    User(String),
    Role(Vec<String>),
    Shared,
}

impl Keyed {
    fn key(&self) -> CacheKey {
        let vary: Vec<(&str, &[u8])> = self.vary.iter().map(|(n, v)| (*n, v.as_slice())).collect();
        CacheKey::build(&KeyParts {
            rule: self.rule,
            path: &self.path,
            query: self.query.as_deref(),
            vary: &vary,
            scope: match &self.scope {
                Scope::User(subject) => ScopeKey::User(subject),
                Scope::Role(roles) => ScopeKey::Role(roles),
                Scope::Shared => ScopeKey::Shared,
            },
        })
    }

    /// What the key must distinguish: everything, except the order and
    /// repetition of roles (a role set is a set).
    fn identity(&self) -> impl PartialEq + std::fmt::Debug {
        let scope = match &self.scope {
            Scope::User(subject) => (0, vec![subject.clone()]),
            Scope::Role(roles) => {
                let mut roles = roles.clone();
                roles.sort();
                roles.dedup();
                (1, roles)
            }
            Scope::Shared => (2, vec![]),
        };
        (
            self.rule,
            self.path.clone(),
            self.query.clone(),
            self.vary.clone(),
            scope,
        )
    }
}

fn keyed() -> impl Strategy<Value = Keyed> {
    let target = (path(), query()).prop_filter_map("a valid target", |(p, q)| normalise(&p, q.as_deref()).ok());
    let value = prop::collection::vec(prop::sample::select(vec![b'a', b'b', b',', b' ', 0, 0xff]), 0..4);
    let vary = prop::collection::vec((prop::sample::select(vec!["accept", "accept-language"]), value), 0..3);
    let word = || prop::sample::select(vec!["", "u1", "u2", "admin", "user", "a\0b", "a", "b"]).prop_map(str::to_owned);
    let scope = prop_oneof![
        word().prop_map(Scope::User),
        prop::collection::vec(word(), 0..3).prop_map(Scope::Role),
        Just(Scope::Shared),
    ];
    (
        prop::sample::select(vec!["users-list", "user", "me", "users"]),
        target,
        vary,
        scope,
    )
        .prop_map(|(rule, target, vary, scope)| Keyed {
            rule,
            path: target.path,
            query: target.query,
            vary,
            scope,
        })
}

/// `a` and a copy of it with one part replaced by `b`'s: near misses,
/// which independent pairs would rarely produce.
fn near(a: Keyed, b: Keyed, part: usize) -> Keyed {
    let mut c = a;
    match part {
        0 => c.rule = b.rule,
        1 => c.path = b.path,
        2 => c.query = b.query,
        3 => c.vary = b.vary,
        _ => c.scope = b.scope,
    }
    c
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn requests_share_a_key_exactly_when_every_keyed_part_agrees(
        a in keyed(), b in keyed(), part in 0..6usize
    ) {
        let b = if part < 5 { near(a.clone(), b, part) } else { b };
        prop_assert_eq!(a.key() == b.key(), a.identity() == b.identity(), "{:?} vs {:?}", a, b);
    }
}

// === Entries ===

fn entry() -> impl Strategy<Value = Entry> {
    let header = (
        "[a-z][a-z0-9-]{0,15}",
        prop::collection::vec(prop_oneof![0x20u8..0x7f, 0x80u8..=0xff, Just(b'\t')], 0..24),
    );
    let generation = (".{0,12}", "[0-9a-f]{0,32}");
    (
        100u16..1000,
        prop::collection::vec(header, 0..6),
        prop::collection::vec(any::<u8>(), 0..64),
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
        prop::collection::vec(generation, 0..4),
    )
        .prop_map(|(status, headers, body, times, generations)| {
            let mut map = HeaderMap::new();
            for (name, value) in headers {
                let name = HeaderName::from_bytes(name.as_bytes()).expect("a token");
                map.append(name, HeaderValue::from_bytes(&value).expect("visible bytes"));
            }
            Entry {
                status: StatusCode::from_u16(status).expect("three digits"),
                headers: map,
                body: Bytes::from(body),
                stored_at_ms: times.0,
                expires_at_ms: times.1,
                stale_while_revalidate_ms: times.2,
                stale_if_error_ms: times.3,
                generations,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn an_entry_survives_its_encoding(entry in entry()) {
        let encoded = entry.encode();
        prop_assert_eq!(encoded.len(), entry.encoded_len());
        prop_assert_eq!(Entry::decode(encoded), Ok(entry));
    }
}
