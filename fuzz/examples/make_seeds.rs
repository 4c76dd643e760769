//! Writes the seeds that are easier made by the real code than by hand:
//! signed tokens (`corpus/jwt/`) and encoded entries (`corpus/entry/`).
//! Run `cargo run -p fuzz-targets --example make_seeds` after changing
//! either format; the other seeds are plain files edited by hand.

use std::path::Path;

use bytes::{BufMut, Bytes, BytesMut};
use fuzz_targets::jwt::SECRET;
use http::{HeaderMap, HeaderValue, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use proxy::cache::{Entry, Lifetime};
use serde_json::json;

/// 2100-01-01: the seeds stay valid tokens for a long while.
const FAR_FUTURE: u64 = 4_102_444_800;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("corpus folder");
    std::fs::write(dir.join(name), bytes).expect("seed written");
}

fn token(alg: Algorithm, claims: serde_json::Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(&Header::new(alg), &claims, &EncodingKey::from_secret(secret)).expect("signed")
}

fn jwt_seeds() {
    let good = json!({"sub": "u1", "role": "user", "exp": FAR_FUTURE, "iat": 1_700_000_000u64,
                      "iss": "origin", "aud": "api", "jti": "3c1f"});
    let raw = |name: &str, token: String| write("jwt", name, format!("\x00{token}").as_bytes());
    raw("raw-valid", token(Algorithm::HS256, good.clone(), SECRET));
    raw(
        "raw-admin-roles",
        token(
            Algorithm::HS256,
            json!({"sub": "a", "role": ["user", "admin"], "exp": FAR_FUTURE, "iss": "origin", "aud": ["api", "x"]}),
            SECRET,
        ),
    );
    raw(
        "raw-expired",
        token(
            Algorithm::HS256,
            json!({"sub": "u1", "exp": 1, "iss": "origin", "aud": "api"}),
            SECRET,
        ),
    );
    raw("raw-hs512", token(Algorithm::HS512, good.clone(), SECRET));
    raw("raw-wrong-secret", token(Algorithm::HS256, good.clone(), b"other"));
    raw(
        "raw-alg-none",
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1MSJ9.".into(),
    );

    let structured = |name: &str, flags: u8, body: &str| {
        let mut bytes = vec![flags];
        bytes.extend_from_slice(body.as_bytes());
        write("jwt", name, &bytes);
    };
    structured("signed-claims", 0x81, &good.to_string());
    structured(
        "signed-float-times",
        0x81,
        r#"{"sub":"u1","exp":4102444800.4,"nbf":1.5,"iss":"origin","aud":"api","role":7}"#,
    );
    structured("signed-filled", 0x8f, r#"{"role":["admin",null,"user"]}"#);
    structured(
        "signed-header-kid",
        0x80,
        &format!("{}\n{}", r#"{"alg":"HS256","kid":"k1","typ":"JWT"}"#, good),
    );
    structured("signed-wrong-key", 0x9f, "{}");
}

fn sample_entry() -> Entry {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("etag", HeaderValue::from_static("\"v1\""));
    headers.append("vary", HeaderValue::from_static("accept"));
    headers.append("surrogate-key", HeaderValue::from_static("users user:42"));
    let lifetime = Lifetime {
        ttl: std::time::Duration::from_secs(60),
        initial_age: std::time::Duration::ZERO,
        stale_while_revalidate: std::time::Duration::from_secs(30),
        stale_if_error: std::time::Duration::from_secs(300),
    };
    Entry::new(
        StatusCode::OK,
        headers,
        Bytes::from_static(br#"{"users":[],"page":1,"per_page":20,"total":0}"#),
        1_700_000_000_000,
        &lifetime,
        vec![
            ("users".into(), "0f1e2d3c4b5a69788796a5b4c3d2e1f0".into()),
            ("*".into(), "00ff".into()),
        ],
    )
}

fn entry_seeds() {
    let decode = |name: &str, encoded: &[u8]| {
        let mut bytes = vec![0u8];
        bytes.extend_from_slice(encoded);
        write("entry", name, &bytes);
    };
    decode("v2-users", &sample_entry().encode());
    let mut empty = sample_entry();
    empty.headers.clear();
    empty.generations.clear();
    empty.body = Bytes::new();
    empty.status = StatusCode::NO_CONTENT;
    decode("v2-empty", &empty.encode());

    let mut v1 = BytesMut::new();
    v1.put_slice(b"CG\x01");
    v1.put_u16(200);
    v1.put_u64(1_700_000_000_000);
    v1.put_u64(1_700_000_060_000);
    v1.put_u16(1);
    v1.put_u16(5);
    v1.put_slice(b"users");
    v1.put_u16(4);
    v1.put_slice(b"0a1b");
    v1.put_u16(1);
    v1.put_u16(12);
    v1.put_slice(b"content-type");
    v1.put_u32(16);
    v1.put_slice(b"application/json");
    v1.put_u32(2);
    v1.put_slice(b"{}");
    decode("v1-users", &v1);

    // Mode 1: an entry described field by field (see fuzz_targets::entry).
    let mut described = vec![1u8];
    described.extend_from_slice(&200u16.to_be_bytes());
    described.push(1);
    described.push(12);
    described.extend_from_slice(b"content-type");
    described.push(16);
    described.extend_from_slice(b"application/json");
    described.push(1);
    described.push(5);
    described.extend_from_slice(b"users");
    described.push(4);
    described.extend_from_slice(b"0a1b");
    for t in [1_700_000_000_000u64, 1_700_000_060_000, 30_000, 300_000] {
        described.extend_from_slice(&t.to_be_bytes());
    }
    described.extend_from_slice(b"{\"ok\":true}");
    write("entry", "described", &described);
}

fn main() {
    jwt_seeds();
    entry_seeds();
}
