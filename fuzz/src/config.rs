//! `config.toml` text through parsing and validation.
//!
//! Input: TOML text (UTF-8). It is parsed with [`RawConfig::parse`] and
//! validated with [`Config::build`], with `JWT_SECRET_KEY` set and key
//! files resolved against `tests/keys`. Key file paths that do not name
//! one of those files are pointed at a missing file first, so no input
//! makes the target read `/dev/zero` or anything else on the machine.
//!
//! Invariants: every error names a field; an accepted config keeps the
//! promises the rest of the proxy relies on (unique non-empty route names,
//! admin listener apart from the client one, cached routes read-only and
//! tagged with `*`, positive timeouts), and every accepted route pattern
//! can be reached by some request.

use std::path::PathBuf;

use http::{Method, Uri};
use proxy::cache::purge::ALL_TAG;
use proxy::config::{Config, Overrides, RawConfig};
use proxy::route::normalise;

/// Files under `tests/keys` a config may name.
const KEY_FILES: [&str; 5] = [
    "rsa-public.pem",
    "ec256-public.pem",
    "ec384-public.pem",
    "ed25519-public.pem",
    "jwks.json",
];

pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut raw) = RawConfig::parse(text) else {
        return;
    };
    let paths: Vec<Option<String>> = raw.routes.iter().map(|r| r.path.clone()).collect();
    confine_keys(&mut raw.jwt);
    raw.jwt.issuers.iter_mut().for_each(confine_keys);
    let overrides = Overrides {
        jwt_secret: Some("fuzz-secret-of-at-least-32-bytes-for-hs256".into()),
        ..Overrides::default()
    };
    match Config::build(raw, overrides, &crate::keys_dir()) {
        Err(errors) => {
            assert!(!errors.0.is_empty());
            for e in &errors.0 {
                assert!(!e.field.is_empty() && !e.message.is_empty(), "{e:?}");
            }
            let _ = errors.to_string();
        }
        Ok(config) => check(&config, &paths),
    }
}

fn confine_keys(jwt: &mut proxy::config::RawJwt) {
    confine(&mut jwt.public_key_file);
    confine(&mut jwt.jwks_file);
    // No network while fuzzing: a JWKS URL's fetching is tested against a
    // real server in tests/proxy_jwks.rs.
    jwt.jwks_url = None;
}

fn confine(path: &mut Option<PathBuf>) {
    if let Some(p) = path {
        if !KEY_FILES.iter().any(|k| p.as_os_str() == *k) {
            *p = PathBuf::from("missing.pem");
        }
    }
}

fn check(config: &Config, paths: &[Option<String>]) {
    let boot = &config.boot;
    assert!(boot.listen != boot.admin_listen || boot.listen.port() == 0);
    assert!(!boot.server.header_read_timeout.is_zero());
    assert!(boot.server.max_connections > 0);
    assert!(!boot.store.operation_timeout.is_zero());
    assert!(boot.store.breaker_failures > 0);
    for jwt in &config.runtime.jwt {
        // Key files are read when the settings are put to use: a bad one
        // is named by its field, never a panic.
        let metrics = std::sync::Arc::new(proxy::metrics::Metrics::new());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        if let Err(e) = runtime.block_on(proxy::auth::JwtVerifier::load(jwt, None, &metrics)) {
            assert!(e.field.starts_with("jwt.") || e.field == "JWT_SECRET_KEY", "{e:?}");
        }
    }
    let mut names = std::collections::HashSet::new();
    let rules: Vec<_> = config.runtime.routes.iter().collect();
    assert_eq!(rules.len(), paths.len());
    for (rule, path) in rules.iter().zip(paths) {
        assert!(!rule.name.is_empty() && names.insert(rule.name), "{}", rule.name);
        assert!(!rule.methods.is_empty());
        if !rule.access.is_public() {
            assert!(
                !config.runtime.jwt.is_empty(),
                "a route needs tokens but nothing verifies them"
            );
        }
        if let Some(policy) = &rule.cache {
            assert!(rule.methods.iter().all(|m| *m == Method::GET || *m == Method::HEAD));
            assert!(policy.tags.iter().any(|t| t == ALL_TAG));
            assert!(!policy.ttl.is_zero());
        }
        check_reachable(rule, path.as_deref().expect("an accepted route has a path"));
    }
}

/// Some request reaches `rule`'s pattern: the pattern with each `{param}`
/// replaced by a word and a final `*` dropped, sent as a request target,
/// normalises to a path the pattern matches. A pattern no request can
/// match (say a literal no URI can carry) is a rule that silently never
/// applies, and the requests meant for it fall to whatever rule is next.
fn check_reachable(rule: &proxy::route::Rule, pattern: &str) {
    let example: Vec<&str> = pattern
        .split('/')
        .map(|s| if s.starts_with('{') && s.ends_with('}') { "x" } else { s })
        .collect();
    let example = example.join("/");
    let example = crate::route::escaped(example.strip_suffix('*').unwrap_or(&example));
    let reached = example
        .parse::<Uri>()
        .ok()
        .filter(|uri| uri.path() == example)
        .and_then(|uri| normalise(uri.path(), None).ok())
        .is_some_and(|target| rule.pattern.matches(&target.path));
    assert!(reached, "no request reaches route {:?} ({pattern:?})", rule.name);
}
