//! HS256 tokens shaped like the origin's, for tests that need a token
//! without a login (or a deliberately wrong one) and for the benches.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::origin::TEST_JWT_SECRET;

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The origin's claims for `sub` with `role`, valid for `ttl_secs` from now.
pub fn claims(sub: &str, role: &str, ttl_secs: u64) -> Value {
    json!({"sub": sub, "role": role, "iat": now(), "exp": now() + ttl_secs, "jti": "e2e", "iss": "origin", "aud": "api"})
}

/// Signs `claims` with HS256 and `secret`.
pub fn sign(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("signing with an HMAC key cannot fail")
}

/// A token the harness proxy and origin accept, valid for ten minutes.
pub fn mint(sub: &str, role: &str) -> String {
    sign(&claims(sub, role, 600), TEST_JWT_SECRET.as_bytes())
}
