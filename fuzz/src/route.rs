//! Request-target normalisation and rule matching.
//!
//! Input: one selector byte (the method), then the request target as
//! UTF-8 (`/path?query`). It is checked twice: as hyper hands it over (an
//! origin-form `http::Uri`, when it parses as one) and as `POST /purge`
//! hands paths over (any string, split at the first `?`).
//!
//! Invariants: the normal form normalises to itself (and routes an
//! admitted request to the same rule); a target and its
//! spelling with escapes for bytes a URI cannot carry literally (raw
//! UTF-8, which hyper accepts) have the same normal form; it has no empty, `.`
//! or `..` segments and only upper-case escapes of reserved bytes; a path
//! not flagged ambiguous decodes to no separator a back end could split on;
//! and the rule chosen really matches the path and method.

use std::sync::OnceLock;

use http::{Method, Uri};
use proxy::config::{Config, Overrides};
use proxy::route::{normalise, RouteError, RuleSet, Target};

const METHODS: [Method; 6] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::OPTIONS,
];

/// Rules beyond the shipped ones: a wildcard that allows encoded
/// separators, a parameter in the middle, a trailing slash and the root.
const EXTRA_ROUTES: &str = r#"
[[routes]]
name = "fuzz-files"
path = "/files/*"
methods = ["GET"]
access = "public"
allow_encoded_separators = true

[[routes]]
name = "fuzz-nested"
path = "/a/{x}/b/"
methods = ["GET", "POST"]
access = "public"

[[routes]]
name = "fuzz-root"
path = "/"
methods = ["GET"]
access = "public"
"#;

/// The shipped `config.toml`'s rules plus [`EXTRA_ROUTES`].
pub fn rules() -> &'static RuleSet {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    &CONFIG
        .get_or_init(|| {
            let text = format!("{}\n{EXTRA_ROUTES}", include_str!("../../config.toml"));
            let overrides = Overrides {
                jwt_secret: Some("fuzz-secret-of-at-least-32-bytes-for-hs256".into()),
                ..Overrides::default()
            };
            Config::load(&text, overrides, std::path::Path::new(".")).expect("the shipped config loads")
        })
        .runtime
        .routes
}

pub fn route(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let method = &METHODS[usize::from(selector) % METHODS.len()];
    if let Ok(uri) = text.parse::<Uri>() {
        if uri.scheme().is_none() && uri.authority().is_none() {
            check(method, uri.path(), uri.query());
        }
    }
    let (path, query) = match text.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (text, None),
    };
    check(method, path, query);
}

fn check(method: &Method, path: &str, query: Option<&str>) {
    let spelled = normalise(&escaped(path), query.map(escaped).as_deref());
    let Ok(target) = normalise(path, query) else {
        assert!(spelled.is_err(), "only one spelling of {path:?} is refused");
        return;
    };
    assert_eq!(
        spelled.as_ref(),
        Ok(&target),
        "{path:?} and its escaped spelling normalise differently"
    );
    let again = normalise(&target.path, target.query.as_deref()).expect("a normal form is a valid target");
    assert_eq!(
        (&again.path, &again.query),
        (&target.path, &target.query),
        "normalise is idempotent"
    );
    // The flag belongs to the request, not to its normal form: `/a%2F/../b`
    // is refused although `/b` is not, since a back end decoding `%2F` before
    // resolving `..` would serve `/a/b`. The normal form adds no flag.
    assert!(!again.has_ambiguous_chars || target.has_ambiguous_chars);
    check_shape(&target);
    check_match(method, &target);
    // A request that is admitted is admitted to the rule its normal form is.
    if let Ok(rule) = rules().match_rule(method, &target) {
        assert_eq!(rules().match_rule(method, &again).map(|r| r.name), Ok(rule.name));
    }
}

/// What every normal form looks like.
fn check_shape(target: &Target) {
    let path = &target.path;
    assert!(path.starts_with('/'), "{path:?}");
    let segments: Vec<&str> = path[1..].split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        assert!(last || !segment.is_empty(), "empty segment in {path:?}");
        assert!(*segment != "." && *segment != "..", "dot segment in {path:?}");
    }
    check_escapes(path);
    if let Some(query) = &target.query {
        check_escapes(query);
        assert!(
            !query.is_empty() && query.split('&').all(|p| !p.is_empty()),
            "{query:?}"
        );
    }
    if !target.has_ambiguous_chars {
        // What a back end that percent-decodes sees: the same segments,
        // none of which it could split further or climb out of.
        for segment in &segments {
            let decoded = percent_decode(segment.as_bytes());
            assert!(
                !decoded.iter().any(|b| matches!(b, b'/' | b'\\' | b';' | 0)),
                "{path:?} hides a separator"
            );
            assert!(decoded != b"." && decoded != b"..", "{path:?} hides a dot segment");
        }
    }
}

/// Escapes left in a normal form are upper-case and never of unreserved
/// characters (those are always decoded).
fn check_escapes(text: &str) {
    let bytes = text.as_bytes();
    for (i, _) in text.match_indices('%') {
        let hex = &bytes[i + 1..i + 3];
        assert!(
            hex.iter().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b)),
            "{text:?}"
        );
        let value = u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap();
        assert!(
            !(value.is_ascii_alphanumeric() || matches!(value, b'-' | b'.' | b'_' | b'~')),
            "{text:?} keeps an escaped unreserved character"
        );
    }
}

fn check_match(method: &Method, target: &Target) {
    let rules = rules();
    match rules.match_rule(method, target) {
        Ok(rule) => {
            assert!(rule.pattern.matches(&target.path));
            assert!(rule.methods.contains(method));
            assert!(!target.has_ambiguous_chars || rule.allow_encoded_separators);
        }
        Err(RouteError::NoRule) => {
            assert!(rules.iter().all(|r| !r.pattern.matches(&target.path)));
        }
        Err(RouteError::MethodNotAllowed(allow)) => {
            let allow = allow.to_str().expect("methods are ASCII");
            assert!(!allow.is_empty());
            assert!(!allow.split(", ").any(|m| m == method.as_str()), "{allow}");
        }
        Err(RouteError::BadPath(_)) => assert!(target.has_ambiguous_chars),
    }
}

/// `text` with every byte a URI may not carry literally (RFC 3986 §2:
/// non-ASCII, controls, space, `"<>^`{|}`) spelled as an escape, as a
/// careful client sends it. Back ends decode both spellings to the same
/// bytes, so both must normalise, route and key alike.
pub(crate) fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b >= 0x80 || b <= 0x20 || b == 0x7f || b"\"<>^`{|}".contains(&b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// Every `%XX` decoded, as a back end would; anything else kept.
pub(crate) fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}
