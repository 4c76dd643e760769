//! Authentication: bearer-token extraction and JWT verification
//! (DESIGN.md step 2).
//!
//! Owns the accepted algorithms (pinned by config and by each key, never
//! taken from the token), the keys, and the claim checks: `exp` required,
//! `nbf` checked, `iss`/`aud` when configured, leeway, no `crit`
//! extensions, and subject and roles that reach the backend's identity
//! headers intact. Produces [`Claims`]; what they may do is `rbac`'s
//! business.
//!
//! - `settings`: one issuer's settings; `keys`: secrets, PEM and JWKS keys;
//! - `verifier`: one issuer's [`JwtVerifier`] and its verified-token cache;
//! - `remote`: a JWKS fetched from a URL and kept fresh;
//! - `issuers`: several issuers, chosen by the token's `iss`.

mod issuers;
mod keys;
mod remote;
mod settings;
#[cfg(test)]
mod tests;
mod verifier;

use std::sync::Arc;

use http::header::AUTHORIZATION;
use http::HeaderMap;
use serde_json::{Map, Value};

pub use self::issuers::Issuers;
pub use self::keys::{check_secret, KeySource};
pub use self::settings::{JwtSettings, KeySetting, RemoteSettings};
pub use self::verifier::JwtVerifier;

/// The verified identity of a caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    /// The token's `sub`: keys `user`-scoped cache entries.
    pub subject: String,
    /// From the configured role claim (a string or an array of strings).
    pub roles: Vec<String>,
    /// The token's `jti`, when it has one: names the token in the access
    /// log without the token itself.
    pub jti: Option<String>,
    /// The token's `iat` (seconds), when it has one: a subject's
    /// revocation covers tokens issued at or before its time.
    pub issued_at: Option<u64>,
    /// The token's `exp` (seconds): how long a revocation of its `jti`
    /// must be kept.
    pub expires_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Two `Authorization` headers: which one a back end reads is anyone's
    /// guess, so the request is refused as malformed (400).
    #[error("more than one Authorization header")]
    MultipleAuthorization,
    #[error("malformed Authorization header")]
    MalformedHeader,
    /// Signature, algorithm, expiry, issuer, audience or shape was wrong.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// The token names a `kid` the key set lacks (401, like any invalid
    /// token, once a refetch did not bring it).
    #[error("invalid token: unknown kid")]
    UnknownKid,
    /// No key set can be trusted right now (never fetched, or past
    /// `jwks_max_stale`): the proxy's problem, not the token's (503).
    #[error("keys unavailable")]
    KeysUnavailable,
    /// The token was revoked (by its `jti`, or its subject's tokens issued
    /// until some time).
    #[error("token revoked")]
    Revoked,
}

/// The role claim named by `name`: a top-level claim of exactly that name
/// (Auth0's namespaced claims are URLs, dots and slashes included), else a
/// JSON pointer when `name` starts with `/` (RFC 6901), else a dotted path
/// (Keycloak's `realm_access.roles`).
fn role_claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(name) {
        return Some(value);
    }
    if let Some(pointer) = name.strip_prefix('/') {
        let (first, rest) = pointer.split_once('/').unwrap_or((pointer, ""));
        let top = claims.get(&first.replace("~1", "/").replace("~0", "~"))?;
        return if rest.is_empty() {
            Some(top)
        } else {
            top.pointer(&format!("/{rest}"))
        };
    }
    let mut parts = name.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.get(part)?;
    }
    Some(value)
}

/// Whether a claim reaches the backend, in an identity header, exactly as
/// it was verified: headers cannot carry control characters, and parsers
/// strip leading and trailing whitespace from values and list members
/// (RFC 9110 §5.5, §5.6.1), so `" admin"` would arrive as `admin`.
fn is_header_safe(value: &str) -> bool {
    !value.bytes().any(|b| b.is_ascii_control()) && value.trim_matches(' ') == value
}

/// Extracts and verifies the bearer token, if any. Only the
/// `Authorization: Bearer` header is read — never the query string, where
/// tokens leak into logs and caches.
pub fn authenticate(headers: &HeaderMap, verifier: &JwtVerifier) -> Result<Option<Arc<Claims>>, AuthError> {
    match bearer(headers)? {
        Some(token) => verifier.verify(token).map(Some),
        None => Ok(None),
    }
}

/// The bearer token of a request, if it sent one: the one parser for every
/// listener, so the request path and `POST /purge` agree on what a
/// credential is (two `Authorization` headers are refused by both).
pub fn bearer(headers: &HeaderMap) -> Result<Option<&str>, AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthError::MultipleAuthorization);
    }
    let value = value.to_str().map_err(|_| AuthError::MalformedHeader)?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
            Ok(Some(token.trim()))
        }
        _ => Err(AuthError::MalformedHeader),
    }
}
