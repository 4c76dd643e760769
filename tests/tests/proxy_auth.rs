//! JWT negatives through the proxy: each is a 401 (two Authorization
//! headers a 400) and never a cache hit, even with a warm shared entry.

use base64::Engine;
use e2e::origin::TEST_JWT_SECRET;
use e2e::token::{self, now, sign};
use e2e::{json_reply, proxy_config, spawn_proxy, ScriptedUpstream, Stack};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn claims(sub: &str) -> Value {
    token::claims(sub, "user", 600)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Replaces a token's payload, keeping its header and signature.
fn with_payload(token: &str, payload: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    format!("{}.{}.{}", parts[0], b64(payload.to_string().as_bytes()), parts[2])
}

#[tokio::test]
async fn every_bad_token_is_401_and_never_a_cache_hit() {
    let s = Stack::start().await;
    let (id, token) = s.api.register_and_login("ada").await;
    // Warm the shared entry a bad token might otherwise be served.
    s.api.get("/users", Some(&token)).await;
    assert_eq!(s.api.get("/users", Some(&token)).await.header("x-cache"), Some("HIT"));

    let secret = TEST_JWT_SECRET.as_bytes();
    let good = claims(&id);
    // Change a character well inside the signature (the last one carries
    // padding bits that may not count).
    let mut sig_flipped = token.clone().into_bytes();
    let at = sig_flipped.len() - 10;
    sig_flipped[at] = if sig_flipped[at] == b'A' { b'B' } else { b'A' };
    let sig_flipped = String::from_utf8(sig_flipped).unwrap();
    let alg_none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(good.to_string().as_bytes())
    );
    let mut admin_claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    admin_claims["role"] = json!("admin");
    let tampered_role = with_payload(&token, &admin_claims);
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut c = good.clone();
        f(&mut c);
        sign(&c, secret)
    };
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("malformed", Some("Bearer not.a.jwt".into())),
        ("not bearer", Some(format!("Basic {token}"))),
        ("bad signature", Some(format!("Bearer {sig_flipped}"))),
        (
            "wrong secret",
            Some(format!("Bearer {}", sign(&good, b"another-secret-entirely-32-bytes!!"))),
        ),
        ("alg none", Some(format!("Bearer {alg_none}"))),
        (
            "expired beyond leeway",
            Some(format!("Bearer {}", edit(&|c| c["exp"] = json!(now() - 120)))),
        ),
        (
            "not yet valid",
            Some(format!("Bearer {}", edit(&|c| c["nbf"] = json!(now() + 300)))),
        ),
        (
            "wrong iss",
            Some(format!("Bearer {}", edit(&|c| c["iss"] = json!("elsewhere")))),
        ),
        (
            "wrong aud",
            Some(format!("Bearer {}", edit(&|c| c["aud"] = json!("other-api")))),
        ),
        ("role claim tampered", Some(format!("Bearer {tampered_role}"))),
        (
            "no exp",
            Some(format!(
                "Bearer {}",
                edit(&|c| {
                    c.as_object_mut().unwrap().remove("exp");
                })
            )),
        ),
    ];
    let client = reqwest::Client::new();
    for (label, authorization) in cases {
        for path in ["/users", "/me", "/admin"] {
            let mut request = client.get(s.api.url(path));
            if let Some(value) = &authorization {
                request = request.header("authorization", value);
            }
            let resp = request.send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{label} on {path}");
            assert_ne!(resp.headers()["x-cache"], "HIT", "{label} on {path}");
            let www = resp.headers()["www-authenticate"].to_str().unwrap().to_owned();
            assert!(www.starts_with("Bearer"), "{label}: {www}");
            let body: Value = resp.json().await.unwrap();
            assert!(body["error"].is_string(), "{label}: {body}");
        }
    }
    // The tampered role never reaches the admin route either way.
    let admin = client
        .get(s.api.url("/admin"))
        .bearer_auth(&tampered_role)
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_token_in_the_query_string_only_is_401() {
    let s = Stack::start().await;
    let (_, token) = s.api.register_and_login("ben").await;
    s.api.get("/users", Some(&token)).await;
    for query in ["access_token", "token", "jwt"] {
        let resp = s.api.get(&format!("/users?{query}={token}"), None).await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{query}");
        assert_ne!(resp.header("x-cache"), Some("HIT"));
    }
}

#[tokio::test]
async fn two_authorization_headers_are_400() {
    let s = Stack::start().await;
    let (_, token) = s.api.register_and_login("cat").await;
    let resp = reqwest::Client::new()
        .get(s.api.url("/users"))
        .header("authorization", format!("Bearer {token}"))
        .header("authorization", "Bearer other")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(resp.headers()["x-cache"], "BYPASS");
}

#[tokio::test]
async fn a_token_on_a_public_route_is_ignored() {
    let s = Stack::start().await;
    s.api.register("dan", "dan@example.com", "dan-password").await;
    let resp = reqwest::Client::new()
        .post(s.api.url("/login"))
        .bearer_auth("expired-or-garbage")
        .json(&json!({"email": "dan@example.com", "password": "dan-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

const RS256_CONFIG: &str = r#"
[jwt]
algorithm = "RS256"
public_key_file = "tests/keys/rsa-public.pem"
issuer = "origin"
audience = "api"

[[routes]]
name = "data"
path = "/data"
methods = ["GET"]
cache = { scope = "shared" }
"#;

#[tokio::test]
async fn rs256_accepts_its_tokens_and_refuses_hs256_signed_with_the_public_key() {
    let upstream = ScriptedUpstream::start(|_req| async { json_reply(200, r#"{"data":1}"#, &[]) }).await;
    let proxy = spawn_proxy(proxy_config(RS256_CONFIG, upstream.addr, None, None)).await;
    let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/keys");
    let private = std::fs::read(format!("{keys}/rsa-private.pem")).unwrap();
    let public = std::fs::read(format!("{keys}/rsa-public.pem")).unwrap();
    let client = reqwest::Client::new();
    let url = format!("{}/data", proxy.base_url());

    let valid = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims("u1"),
        &EncodingKey::from_rsa_pem(&private).unwrap(),
    )
    .unwrap();
    let ok = client.get(&url).bearer_auth(&valid).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(
        client.get(&url).bearer_auth(&valid).send().await.unwrap().headers()["x-cache"],
        "HIT"
    );

    let switched = sign(&claims("u1"), &public);
    let forged = client.get(&url).bearer_auth(&switched).send().await.unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    assert_ne!(forged.headers()["x-cache"], "HIT");
    assert_eq!(upstream.hits(), 1, "only the first valid request reached the upstream");
}
