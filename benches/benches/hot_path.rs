//! Criterion micro-benchmarks for each step of the proxy's hit path:
//! normalisation, rule matching, JWT verification (HS256, RS256, ES256),
//! cache-key building, and entry encode/decode.
//!
//! Run with `cargo bench -p benches --bench hot_path`.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use proxy::auth::{JwtVerifier, KeySource};
use proxy::cache::{CacheKey, Entry, KeyParts, ScopeKey};
use proxy::config::{Config, Overrides};
use std::hint::black_box;

fn keys_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/keys")
}

fn claims() -> serde_json::Value {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    serde_json::json!({"sub": "6b08b61b37e4dcf6714b2d92", "role": "user", "iat": now, "exp": now + 3600,
        "jti": "0b6c1f0e-2b1e-4f7e-9a59-2a0c7f0d3e11", "iss": "origin", "aud": "api"})
}

fn normalise(c: &mut Criterion) {
    c.bench_function("normalise/plain", |b| {
        b.iter(|| proxy::route::normalise(black_box("/users/6b08b61b37e4dcf6714b2d92"), None))
    });
    c.bench_function("normalise/dots_and_query", |b| {
        b.iter(|| {
            proxy::route::normalise(
                black_box("/a/./b/../users//%61dmin"),
                Some(black_box("per_page=5&page=2&a=1")),
            )
        })
    });
}

fn route_match(c: &mut Criterion) {
    let overrides = Overrides {
        jwt_secret: Some("hot-path-bench-secret-of-32-bytes+".into()),
        upstream: Some("http://127.0.0.1:5000".into()),
        ..Overrides::default()
    };
    let config = Config::load(include_str!("../../config.toml"), overrides, Path::new("..")).unwrap();
    let target = proxy::route::normalise("/users/6b08b61b37e4dcf6714b2d92", None).unwrap();
    c.bench_function("route/match_item", |b| {
        b.iter(|| {
            config
                .runtime
                .routes
                .match_rule(black_box(&Method::GET), black_box(&target))
                .is_ok()
        })
    });
}

fn jwt(c: &mut Criterion) {
    let leeway = Duration::from_secs(30);
    let hs = JwtVerifier::new(
        Algorithm::HS256,
        KeySource::Secret(b"bench-secret-bench-secret-bench-secret".to_vec()),
        Some("origin".into()),
        Some("api".into()),
        leeway,
        "role".into(),
    )
    .unwrap();
    let hs_token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(b"bench-secret-bench-secret-bench-secret"),
    )
    .unwrap();
    c.bench_function("jwt/hs256", |b| b.iter(|| hs.verify(black_box(&hs_token)).unwrap()));

    let read = |name: &str| std::fs::read(keys_dir().join(name)).unwrap();
    let rs = JwtVerifier::new(
        Algorithm::RS256,
        KeySource::Pem(read("rsa-public.pem")),
        Some("origin".into()),
        Some("api".into()),
        leeway,
        "role".into(),
    )
    .unwrap();
    let rs_token = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims(),
        &EncodingKey::from_rsa_pem(&read("rsa-private.pem")).unwrap(),
    )
    .unwrap();
    c.bench_function("jwt/rs256", |b| b.iter(|| rs.verify(black_box(&rs_token)).unwrap()));

    let es = JwtVerifier::new(
        Algorithm::ES256,
        KeySource::Pem(read("ec256-public.pem")),
        Some("origin".into()),
        Some("api".into()),
        leeway,
        "role".into(),
    )
    .unwrap();
    let es_token = jsonwebtoken::encode(
        &Header::new(Algorithm::ES256),
        &claims(),
        &EncodingKey::from_ec_pem(&read("ec256-private.pem")).unwrap(),
    )
    .unwrap();
    c.bench_function("jwt/es256", |b| b.iter(|| es.verify(black_box(&es_token)).unwrap()));
}

fn key_build(c: &mut Criterion) {
    let roles = vec!["user".to_string()];
    c.bench_function("key/shared", |b| {
        b.iter(|| {
            CacheKey::build(black_box(&KeyParts {
                rule: "users-list",
                path: "/users",
                query: Some("page=1&per_page=20"),
                vary: &[],
                scope: ScopeKey::Shared,
            }))
        })
    });
    c.bench_function("key/role_with_vary", |b| {
        b.iter(|| {
            CacheKey::build(black_box(&KeyParts {
                rule: "team",
                path: "/team",
                query: None,
                vary: &[("accept-language", b"fr-FR")],
                scope: ScopeKey::Role(&roles),
            }))
        })
    });
}

fn entry_codec(c: &mut Criterion) {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("content-length", HeaderValue::from_static("2048"));
    headers.insert("date", HeaderValue::from_static("Thu, 26 Nov 2026 22:43:40 GMT"));
    let entry = Entry {
        status: StatusCode::OK,
        headers,
        body: Bytes::from(vec![b'x'; 2048]),
        stored_at_ms: 1,
        expires_at_ms: 2,
        stale_while_revalidate_ms: 0,
        stale_if_error_ms: 0,
        generations: vec![("users".into(), "0123456789abcdef0123456789abcdef".into())],
    };
    let encoded = entry.encode();
    c.bench_function("entry/encode_2k", |b| b.iter(|| black_box(&entry).encode()));
    c.bench_function("entry/decode_2k", |b| {
        b.iter(|| Entry::decode(black_box(encoded.clone())).unwrap())
    });
}

criterion_group!(benches, normalise, route_match, jwt, key_build, entry_codec);
criterion_main!(benches);
