//! Bearer tokens through [`JwtVerifier`], configured as the shipped
//! `config.toml` configures it (HS256, issuer `origin`, audience `api`,
//! 30 s leeway, role claim `role`) with the secret [`SECRET`].
//!
//! Input: a flags byte, then the token material.
//! - Flags bit 7 clear: the rest is a compact token (UTF-8), verified as
//!   is: this reaches header and base64 parsing but rarely a signature.
//! - Flags bit 7 set: the rest is `header-json \n claims-json` (bit 0 set:
//!   all of it is claims, under `{"alg":"HS256","typ":"JWT"}`), encoded and
//!   signed with [`SECRET`] (bit 4 set: with another secret), so inputs
//!   reach claim parsing and validation. When the claims are a JSON object,
//!   bits 1, 2 and 3 fill in a valid `exp`, `iss`+`aud`, and `sub` where
//!   missing, so the fuzzer spends its time on the other claims.
//!
//! Invariants: a token is accepted only if an independent reading of it
//! agrees (HS256, right key, `sub`, `exp`, `nbf`, `iss`, `aud`, roles); a
//! second verification (served from the verifier's memory of accepted
//! tokens) agrees with the first; `authenticate` agrees with `verify`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};
use jsonwebtoken::{Algorithm, EncodingKey};
use proxy::auth::{authenticate, Claims, JwtVerifier, KeySource};
use serde_json::{json, Map, Value};

/// HS256 wants at least 32 bytes (RFC 7518 §3.2); the verifier refuses less.
pub const SECRET: &[u8] = b"fuzz-secret-of-at-least-32-bytes-for-hs256";
const ISSUER: &str = "origin";
const AUDIENCE: &str = "api";
const LEEWAY: u64 = 30;
const DEFAULT_HEADER: &[u8] = br#"{"alg":"HS256","typ":"JWT"}"#;

const STRUCTURED: u8 = 0x80;
const DEFAULT_HEADER_FLAG: u8 = 0x01;
const FILL_EXP: u8 = 0x02;
const FILL_ISS_AUD: u8 = 0x04;
const FILL_SUB: u8 = 0x08;
const WRONG_KEY: u8 = 0x10;

/// A fresh verifier per input: its memory of accepted tokens must not
/// carry one input's answer into the next.
fn verifier() -> JwtVerifier {
    JwtVerifier::new(
        Algorithm::HS256,
        KeySource::Secret(SECRET.to_vec()),
        Some(ISSUER.into()),
        Some(AUDIENCE.into()),
        Duration::from_secs(LEEWAY),
        "role".into(),
    )
    .expect("a valid verifier")
}

pub fn jwt(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (token, wrong_key) = if flags & STRUCTURED == 0 {
        let Ok(token) = std::str::from_utf8(rest) else {
            return;
        };
        (token.to_owned(), false)
    } else {
        (signed(flags, rest), flags & WRONG_KEY != 0)
    };
    check(&token, wrong_key);
}

/// Encodes and signs header and claims as the input says.
fn signed(flags: u8, rest: &[u8]) -> String {
    let (header, claims) = if flags & DEFAULT_HEADER_FLAG != 0 {
        (DEFAULT_HEADER, rest)
    } else {
        match rest.iter().position(|&b| b == b'\n') {
            Some(at) => (&rest[..at], &rest[at + 1..]),
            None => (rest, &b""[..]),
        }
    };
    let claims = fill(flags, claims);
    let message = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(&claims));
    let secret: &[u8] = if flags & WRONG_KEY != 0 {
        b"not-the-secret"
    } else {
        SECRET
    };
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &EncodingKey::from_secret(secret), Algorithm::HS256)
        .expect("HMAC signs anything");
    format!("{message}.{signature}")
}

/// The claims with the claims the flags ask for filled in, if they are a
/// JSON object; otherwise (or with no such flag) as they came.
fn fill(flags: u8, claims: &[u8]) -> Vec<u8> {
    if flags & (FILL_EXP | FILL_ISS_AUD | FILL_SUB) == 0 {
        return claims.to_vec();
    }
    let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(claims) else {
        return claims.to_vec();
    };
    let mut set = |name: &str, value: Value| {
        map.entry(name).or_insert(value);
    };
    if flags & FILL_EXP != 0 {
        set("exp", json!(now() + 600));
    }
    if flags & FILL_ISS_AUD != 0 {
        set("iss", json!(ISSUER));
        set("aud", json!(AUDIENCE));
    }
    if flags & FILL_SUB != 0 {
        set("sub", json!("fuzz-user"));
    }
    serde_json::to_vec(&map).expect("a map serialises")
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn check(token: &str, wrong_key: bool) {
    let verifier = verifier();
    let before = now();
    let first = verifier.verify(token);
    let second = verifier.verify(token);
    let after = now();
    if let Ok(claims) = &first {
        assert!(!wrong_key, "a token signed with another key was accepted");
        let expected = independent_reading(token, before, after)
            .unwrap_or_else(|why| panic!("accepted a token that {why}: {token}"));
        assert_eq!(**claims, expected);
    }
    // Across a change of second, an expiry may fall between the two.
    if before == after {
        assert_eq!(
            first.as_ref().map(|c| &**c).ok(),
            second.as_ref().map(|c| &**c).ok(),
            "a remembered token is judged differently: {token}"
        );
    }

    let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) else {
        return;
    };
    if token.trim() != token || token.is_empty() {
        return;
    }
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, value);
    let through_header = authenticate(&headers, &verifier).map(|c| c.map(|c| (*c).clone()));
    if before == now() {
        assert_eq!(through_header.ok().flatten(), first.ok().map(|c| (*c).clone()));
    }
}

/// The claims an accepted token must carry, read without the verifier;
/// `Err` says why the token should not have been accepted.
fn independent_reading(token: &str, before: u64, after: u64) -> Result<Claims, String> {
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, _signature] = parts[..] else {
        return Err("is not three parts".into());
    };
    let decode = |part: &str| -> Result<Map<String, Value>, String> {
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|e| format!("is not base64url: {e}"))?;
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err("has a part that is no JSON object".into()),
        }
    };
    let header = decode(header)?;
    if header.get("alg") != Some(&json!("HS256")) {
        return Err("is not HS256".into());
    }
    let claims = decode(payload)?;
    let seconds = |name: &str| claims.get(name).and_then(Value::as_f64);
    let exp = seconds("exp").ok_or("has no numeric exp")?;
    if exp + (LEEWAY as f64) < before as f64 - 1.0 {
        return Err("expired".into());
    }
    if seconds("nbf").is_some_and(|nbf| nbf > (after + LEEWAY) as f64 + 1.0) {
        return Err("is not valid yet".into());
    }
    if claims.get("iss") != Some(&json!(ISSUER)) {
        return Err("has another issuer".into());
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => aud == AUDIENCE,
        Some(Value::Array(auds)) => auds.iter().any(|a| a == AUDIENCE),
        _ => false,
    };
    if !audience_ok {
        return Err("is for another audience".into());
    }
    let subject = match claims.get("sub") {
        Some(Value::String(sub)) if !sub.is_empty() => sub.clone(),
        _ => return Err("has no subject".into()),
    };
    let roles = match claims.get("role") {
        Some(Value::String(role)) => vec![role.clone()],
        Some(Value::Array(items)) => items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    };
    // Kept for the access log only when short and free of control
    // characters and edge spaces.
    let jti = match claims.get("jti") {
        Some(Value::String(jti))
            if jti.len() <= 128 && !jti.bytes().any(|b| b.is_ascii_control()) && jti.trim_matches(' ') == jti =>
        {
            Some(jti.clone())
        }
        _ => None,
    };
    // exp rounded as the verifier (and jsonwebtoken) round it; iat down.
    Ok(Claims {
        subject,
        roles,
        jti,
        issued_at: seconds("iat").map(|f| f.floor() as u64),
        expires_at: exp.round() as u64,
    })
}
