//! Authentication: bearer-token extraction and JWT verification
//! (DESIGN.md step 2).
//!
//! Owns the accepted algorithm (pinned by config, never taken from the
//! token), the keys, and the claim checks: `exp` required, `nbf` checked,
//! `iss`/`aud` when configured, leeway, no `crit` extensions, and subject
//! and roles that reach the backend's identity headers intact. Produces
//! [`Claims`]; what they may do is `rbac`'s business.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::AUTHORIZATION;
use http::HeaderMap;
use jsonwebtoken::jwk::{JwkSet, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::secret::Secret;

/// The verified identity of a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The token's `sub`: keys `user`-scoped cache entries.
    pub subject: String,
    /// From the configured role claim (a string or an array of strings).
    pub roles: Vec<String>,
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
}

/// Where verification keys come from; resolved once at start-up.
pub enum KeySource {
    /// HMAC secret, from `JWT_SECRET_KEY`.
    Secret(Vec<u8>),
    /// A PEM public key (RSA, EC or Ed25519, by algorithm).
    Pem(Vec<u8>),
    /// A JWKS document; tokens select a key by `kid`.
    Jwks(Vec<u8>),
}

/// A key-loading problem, naming the config field at fault.
#[derive(Debug)]
pub struct KeyError {
    pub field: &'static str,
    pub message: String,
}

enum Keys {
    Single(DecodingKey),
    /// An HMAC secret being rotated: tokens signed with the previous one
    /// verify until they expire.
    Rotating {
        current: DecodingKey,
        previous: DecodingKey,
    },
    ByKid(HashMap<String, DecodingKey>),
}

/// Bytes of tokens remembered after a full verification (each weighed by
/// its length plus its claims), so a flood of distinct or huge tokens costs
/// at most this much memory.
const VERIFIED_CACHE_BYTES: u64 = 16 * 1024 * 1024;
/// Longest a remembered token skips signature checks, whatever its `exp`.
const VERIFIED_CACHE_TTL: Duration = Duration::from_secs(300);

/// A token that passed every check, and the time bounds to re-check on
/// each later use.
struct Verified {
    claims: Arc<Claims>,
    exp: u64,
    nbf: Option<u64>,
}

/// Verifies tokens against the configured algorithm and keys.
///
/// A token that passed full verification is remembered (by its exact
/// bytes) for a few minutes, so repeated requests with the same token skip
/// the signature check: 3 µs for HS256, 180 µs or more for RS256/ES256.
/// `exp` and `nbf` are still checked on every use; only tokens this
/// verifier accepted are ever remembered, so a cached answer is one a full
/// verification would give.
pub struct JwtVerifier {
    keys: Keys,
    validation: Validation,
    role_claim: String,
    verified: moka::sync::Cache<Arc<str>, Arc<Verified>>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.validation.algorithms)
            .field("role_claim", &self.role_claim)
            .finish_non_exhaustive()
    }
}

/// How tokens are verified, as configured. Key files are named, not read:
/// [`JwtVerifier::load`] reads them when the settings are put to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    pub algorithm: Algorithm,
    pub keys: KeySetting,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway: Duration,
    pub role_claim: String,
    /// `JWT_SECRET_KEY_PREVIOUS`: with an HMAC secret, tokens signed with
    /// this one are accepted too, so a secret rotates without logging
    /// everyone out.
    pub previous_secret: Option<Secret>,
}

/// Where the verification keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySetting {
    /// HMAC secret, from `JWT_SECRET_KEY`.
    Secret(Secret),
    /// `jwt.public_key_file`, resolved against the config file's folder.
    PemFile(PathBuf),
    /// `jwt.jwks_file`, likewise.
    JwksFile(PathBuf),
}

impl JwtVerifier {
    /// Reads the key files `settings` name and builds the verifier; a key
    /// that cannot be read or used is named by its config field.
    pub async fn load(settings: &JwtSettings) -> Result<JwtVerifier, KeyError> {
        let read = |field: &'static str, path: &PathBuf| {
            let path = path.clone();
            async move {
                tokio::fs::read(&path).await.map_err(|e| KeyError {
                    field,
                    message: format!("cannot read {}: {e}", path.display()),
                })
            }
        };
        let source = match &settings.keys {
            KeySetting::Secret(secret) => KeySource::Secret(secret.0.as_bytes().to_vec()),
            KeySetting::PemFile(path) => KeySource::Pem(read("jwt.public_key_file", path).await?),
            KeySetting::JwksFile(path) => KeySource::Jwks(read("jwt.jwks_file", path).await?),
        };
        let verifier = JwtVerifier::new(
            settings.algorithm,
            source,
            settings.issuer.clone(),
            settings.audience.clone(),
            settings.leeway,
            settings.role_claim.clone(),
        )?;
        match &settings.previous_secret {
            Some(previous) => verifier.with_previous_secret(previous.0.as_bytes()),
            None => Ok(verifier),
        }
    }

    /// Also accepts tokens signed with `previous`, the HMAC secret before
    /// the current one.
    pub fn with_previous_secret(mut self, previous: &[u8]) -> Result<JwtVerifier, KeyError> {
        let algorithm = self.validation.algorithms[0];
        let field = "JWT_SECRET_KEY_PREVIOUS";
        check_secret(algorithm, previous.len()).map_err(|e| KeyError { field, ..e })?;
        self.keys = match self.keys {
            Keys::Single(current) => Keys::Rotating {
                current,
                previous: DecodingKey::from_secret(previous),
            },
            _ => {
                return Err(KeyError {
                    field,
                    message: "only an HMAC secret (JWT_SECRET_KEY) can have a previous one".into(),
                })
            }
        };
        Ok(self)
    }

    pub fn new(
        algorithm: Algorithm,
        source: KeySource,
        issuer: Option<String>,
        audience: Option<String>,
        leeway: Duration,
        role_claim: String,
    ) -> Result<JwtVerifier, KeyError> {
        let keys = match source {
            KeySource::Secret(secret) => {
                check_secret(algorithm, secret.len())?;
                Keys::Single(DecodingKey::from_secret(&secret))
            }
            KeySource::Pem(pem) => Keys::Single(pem_key(algorithm, &pem).map_err(|message| KeyError {
                field: "jwt.public_key_file",
                message,
            })?),
            KeySource::Jwks(json) => Keys::ByKid(jwks_keys(algorithm, &json).map_err(|message| KeyError {
                field: "jwt.jwks_file",
                message,
            })?),
        };
        let mut validation = Validation::new(algorithm);
        let mut required = vec!["exp", "sub"];
        validation.validate_nbf = true;
        validation.leeway = leeway.as_secs();
        if let Some(iss) = &issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        match &audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        let verified = moka::sync::Cache::builder()
            .max_capacity(VERIFIED_CACHE_BYTES)
            .weigher(|token: &Arc<str>, v: &Arc<Verified>| {
                let claims = v.claims.subject.len() + v.claims.roles.iter().map(String::len).sum::<usize>();
                u32::try_from(token.len() + claims + 128).unwrap_or(u32::MAX)
            })
            .time_to_live(VERIFIED_CACHE_TTL)
            .build();
        Ok(JwtVerifier {
            keys,
            validation,
            role_claim,
            verified,
        })
    }

    /// Verifies a compact JWT and extracts subject and roles.
    pub fn verify(&self, token: &str) -> Result<Arc<Claims>, AuthError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let leeway = self.validation.leeway;
        if let Some(known) = self.verified.get(token) {
            let expired = now > known.exp.saturating_add(leeway);
            let early = known.nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway));
            if expired || early {
                let why = if expired {
                    "ExpiredSignature"
                } else {
                    "ImmatureSignature"
                };
                return Err(AuthError::InvalidToken(why.into()));
            }
            return Ok(known.claims.clone());
        }
        let verified = self.verify_fully(token)?;
        let claims = verified.claims.clone();
        self.verified.insert(Arc::from(token), Arc::new(verified));
        Ok(claims)
    }

    fn verify_fully(&self, token: &str) -> Result<Verified, AuthError> {
        let invalid = |e: jsonwebtoken::errors::Error| AuthError::InvalidToken(e.to_string());
        let decode = |key: &DecodingKey| jsonwebtoken::decode::<Map<String, Value>>(token, key, &self.validation);
        let data = match &self.keys {
            Keys::Single(key) => decode(key),
            // Only a wrong signature tries the previous secret: any other
            // verdict (expired, wrong audience) is the token's own.
            Keys::Rotating { current, previous } => match decode(current) {
                Err(e) if *e.kind() == jsonwebtoken::errors::ErrorKind::InvalidSignature => decode(previous),
                other => other,
            },
            Keys::ByKid(keys) => {
                let header = jsonwebtoken::decode_header(token).map_err(invalid)?;
                let kid = header
                    .kid
                    .ok_or_else(|| AuthError::InvalidToken("token has no kid".into()))?;
                decode(
                    keys.get(&kid)
                        .ok_or_else(|| AuthError::InvalidToken("unknown kid".into()))?,
                )
            }
        }
        .map_err(invalid)?;
        // RFC 7515 §4.1.11: a recipient that does not understand every
        // extension listed in `crit` must reject the token. We understand
        // none. (jsonwebtoken parses `crit` but does not act on it.)
        if data.header.crit.is_some() {
            return Err(AuthError::InvalidToken(
                "crit header extensions are not supported".into(),
            ));
        }
        let mut claims = data.claims;
        let subject = match claims.remove("sub") {
            Some(Value::String(s)) if !s.is_empty() => s,
            _ => return Err(AuthError::InvalidToken("sub must be a non-empty string".into())),
        };
        if !is_header_safe(&subject) {
            return Err(AuthError::InvalidToken("sub cannot be forwarded as a header".into()));
        }
        let roles = match role_claim(&claims, &self.role_claim) {
            Some(Value::String(role)) => vec![role.clone()],
            Some(Value::Array(items)) => items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
            _ => Vec::new(),
        };
        // Roles travel upstream joined by `,` in one header, so a role
        // containing `,` would reach the backend as two: `["user,admin"]`
        // must not become `user` and `admin` there while the proxy itself
        // saw neither. Refused rather than escaped: no backend would know
        // the escaping.
        if roles.iter().any(|r| r.contains(',') || !is_header_safe(r)) {
            return Err(AuthError::InvalidToken(
                "a role contains ',' or cannot be forwarded as a header".into(),
            ));
        }
        // `exp` is required and was validated as a number; `nbf` is optional.
        // Either may be a float (RFC 7519 NumericDate); rounded as
        // jsonwebtoken rounds them, so cached and full checks agree.
        let seconds = |name: &str| claims.get(name).and_then(Value::as_f64).map(|f| f.round() as u64);
        let exp = seconds("exp").unwrap_or(0);
        let nbf = seconds("nbf");
        Ok(Verified {
            claims: Arc::new(Claims { subject, roles }),
            exp,
            nbf,
        })
    }
}

/// RFC 7518 §3.2: an HMAC key must be at least as long as the hash
/// output. Anyone holding one token can test guesses of a shorter secret
/// offline, at no cost to us and invisible to us.
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

/// An HMAC secret shorter than the hash is refused: tokens could be forged
/// by guessing it offline.
pub fn check_secret(algorithm: Algorithm, len: usize) -> Result<(), KeyError> {
    let min = min_secret_bytes(algorithm);
    if len < min {
        return Err(KeyError {
            field: "JWT_SECRET_KEY",
            message: format!(
                "is {len} bytes; {algorithm:?} needs at least {min} (RFC 7518 §3.2), \
                 or tokens can be forged by guessing the secret offline"
            ),
        });
    }
    Ok(())
}

fn min_secret_bytes(algorithm: Algorithm) -> usize {
    match algorithm {
        Algorithm::HS384 => 48,
        Algorithm::HS512 => 64,
        _ => 32,
    }
}

/// Whether a claim reaches the backend, in an identity header, exactly as
/// it was verified: headers cannot carry control characters, and parsers
/// strip leading and trailing whitespace from values and list members
/// (RFC 9110 §5.5, §5.6.1), so `" admin"` would arrive as `admin`.
fn is_header_safe(value: &str) -> bool {
    !value.bytes().any(|b| b.is_ascii_control()) && value.trim_matches(' ') == value
}

fn pem_key(algorithm: Algorithm, pem: &[u8]) -> Result<DecodingKey, String> {
    use Algorithm::*;
    let key = match algorithm {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => DecodingKey::from_rsa_pem(pem),
        ES256 | ES384 => DecodingKey::from_ec_pem(pem),
        EdDSA => DecodingKey::from_ed_pem(pem),
        HS256 | HS384 | HS512 => return Err("HMAC algorithms take JWT_SECRET_KEY, not a key file".into()),
    };
    key.map_err(|e| format!("not a {algorithm:?} public key in PEM form: {e}"))
}

fn jwks_keys(algorithm: Algorithm, json: &[u8]) -> Result<HashMap<String, DecodingKey>, String> {
    let set: JwkSet = serde_json::from_slice(json).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = HashMap::new();
    let mut seen = HashSet::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let kid = jwk
            .common
            .key_id
            .clone()
            .ok_or_else(|| format!("keys[{i}] has no kid"))?;
        // Tokens pick their key by `kid` alone; two keys under one `kid`
        // leave the choice to file order, which nobody reviewing the file
        // would guess (RFC 7517 §4.5 asks for distinct values).
        if !seen.insert(kid.clone()) {
            return Err(format!("keys[{i}]: kid {kid:?} appears more than once"));
        }
        // RFC 7517 §4.2, §4.3: a key published for encryption, or whose
        // permitted operations exclude verifying, must not verify tokens.
        let for_signatures = jwk
            .common
            .public_key_use
            .as_ref()
            .is_none_or(|u| *u == PublicKeyUse::Signature);
        let may_verify = jwk
            .common
            .key_operations
            .as_ref()
            .is_none_or(|ops| ops.contains(&KeyOperations::Verify));
        if !for_signatures || !may_verify {
            continue;
        }
        if let Some(alg) = jwk.common.key_algorithm {
            if alg.to_string() != format!("{algorithm:?}") {
                // A key meant for another algorithm must never verify ours.
                continue;
            }
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("keys[{i}] ({kid}): {e}"))?;
        keys.insert(kid, key);
    }
    if keys.is_empty() {
        return Err(format!("no key usable with {algorithm:?}"));
    }
    Ok(keys)
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

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const SECRET: &[u8] = b"unit-test-secret-of-at-least-32-bytes";

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn verifier() -> JwtVerifier {
        JwtVerifier::new(
            Algorithm::HS256,
            KeySource::Secret(SECRET.to_vec()),
            Some("origin".into()),
            Some("api".into()),
            Duration::from_secs(30),
            "role".into(),
        )
        .unwrap()
    }

    fn sign(claims: Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    fn good_claims() -> Value {
        json!({"sub": "u1", "role": "user", "exp": now() + 600, "iss": "origin", "aud": "api"})
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_valid_token_yields_subject_and_roles() {
        let token = sign(good_claims());
        let claims = authenticate(&headers(&[&format!("Bearer {token}")]), &verifier())
            .unwrap()
            .unwrap();
        assert_eq!(
            *claims,
            Claims {
                subject: "u1".into(),
                roles: vec!["user".into()]
            }
        );
    }

    #[test]
    fn role_claims_may_be_arrays() {
        let mut c = good_claims();
        c["role"] = json!(["user", "admin", 7]);
        assert_eq!(verifier().verify(&sign(c)).unwrap().roles, ["user", "admin"]);
    }

    #[test]
    fn the_role_claim_may_be_a_namespaced_name_a_dotted_path_or_a_json_pointer() {
        let roles_with = |claim: &str| {
            let verifier = JwtVerifier::new(
                Algorithm::HS256,
                KeySource::Secret(SECRET.to_vec()),
                Some("origin".into()),
                Some("api".into()),
                Duration::from_secs(30),
                claim.into(),
            )
            .unwrap();
            let mut c = good_claims();
            c["realm_access"] = json!({"roles": ["keycloak-role"]});
            c["https://example.com/roles"] = json!(["auth0-role"]);
            c["a.b"] = json!("dotted-name");
            verifier.verify(&sign(c)).unwrap().roles.clone()
        };
        assert_eq!(roles_with("realm_access.roles"), ["keycloak-role"]);
        assert_eq!(roles_with("/realm_access/roles"), ["keycloak-role"]);
        assert_eq!(roles_with("https://example.com/roles"), ["auth0-role"]);
        assert_eq!(roles_with("/https:~1~1example.com~1roles"), ["auth0-role"]);
        assert_eq!(roles_with("a.b"), ["dotted-name"], "an exact name wins over a path");
        assert!(roles_with("realm_access.missing").is_empty());
        assert!(roles_with("/realm_access").is_empty(), "an object is no role");
    }

    #[test]
    fn no_header_is_no_claims_and_two_headers_are_refused() {
        assert_eq!(authenticate(&HeaderMap::new(), &verifier()), Ok(None));
        let token = sign(good_claims());
        let two = headers(&[&format!("Bearer {token}"), &format!("Bearer {token}")]);
        assert_eq!(authenticate(&two, &verifier()), Err(AuthError::MultipleAuthorization));
    }

    #[test]
    fn other_schemes_and_empty_tokens_are_malformed() {
        for value in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "token"] {
            assert_eq!(
                authenticate(&headers(&[value]), &verifier()),
                Err(AuthError::MalformedHeader),
                "{value}"
            );
        }
    }

    #[test]
    fn bad_claims_are_rejected() {
        let v = verifier();
        let with = |f: &dyn Fn(&mut Value)| {
            let mut c = good_claims();
            f(&mut c);
            v.verify(&sign(c))
        };
        assert!(
            with(&|c| c["exp"] = json!(now() - 120)).is_err(),
            "expired beyond leeway"
        );
        assert!(with(&|c| c["exp"] = json!(now() - 10)).is_ok(), "expired within leeway");
        assert!(with(&|c| c["nbf"] = json!(now() + 120)).is_err(), "not yet valid");
        assert!(with(&|c| c["iss"] = json!("elsewhere")).is_err(), "issuer");
        assert!(with(&|c| c["aud"] = json!("other")).is_err(), "audience");
        assert!(
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            })
            .is_err(),
            "exp required"
        );
        assert!(
            with(&|c| {
                c.as_object_mut().unwrap().remove("sub");
            })
            .is_err(),
            "sub required"
        );
        assert!(with(&|c| c["sub"] = json!(5)).is_err(), "sub must be a string");
    }

    #[test]
    fn unsigned_and_wrongly_signed_tokens_are_rejected() {
        let v = verifier();
        let token = sign(good_claims());
        let (head_payload, _) = token.rsplit_once('.').unwrap();
        assert!(v.verify(&format!("{head_payload}.")).is_err(), "stripped signature");
        let none_header = base64_url(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = head_payload.split_once('.').unwrap().1;
        assert!(v.verify(&format!("{none_header}.{payload}.")).is_err(), "alg none");
        let other = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &good_claims(),
            &EncodingKey::from_secret(b"another-unit-test-secret-32-bytes"),
        )
        .unwrap();
        assert!(v.verify(&other).is_err(), "wrong secret");
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &good_claims(),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(v.verify(&hs512).is_err(), "algorithm is pinned");
    }

    #[test]
    fn tokens_with_critical_header_extensions_are_rejected() {
        let mut header = Header::new(Algorithm::HS256);
        header.crit = Some(vec!["exp".into()]);
        let token = jsonwebtoken::encode(&header, &good_claims(), &EncodingKey::from_secret(SECRET)).unwrap();
        let v = verifier();
        assert!(matches!(v.verify(&token), Err(AuthError::InvalidToken(_))));
        assert!(v.verified.get(token.as_str()).is_none(), "never remembered");
    }

    #[test]
    fn roles_and_subjects_that_would_change_in_a_header_are_rejected() {
        let v = verifier();
        let with = |f: &dyn Fn(&mut Value)| {
            let mut c = good_claims();
            f(&mut c);
            v.verify(&sign(c))
        };
        for (label, edit) in [
            (
                "comma in a role",
                &(|c: &mut Value| c["role"] = json!("user,admin")) as &dyn Fn(&mut Value),
            ),
            ("comma in an array role", &|c| c["role"] = json!(["user,admin"])),
            ("comma after a good role", &|c| c["role"] = json!(["user", "x,admin"])),
            ("leading space", &|c| c["role"] = json!(["user", " admin"])),
            ("trailing space", &|c| c["role"] = json!("admin ")),
            ("control character", &|c| c["role"] = json!("ad\nmin")),
            ("tab", &|c| c["role"] = json!("ad\tmin")),
            ("subject with a newline", &|c| {
                c["sub"] = json!("u1\r\nx-auth-role: admin")
            }),
            ("subject with a trailing space", &|c| c["sub"] = json!("admin ")),
        ] {
            assert!(matches!(with(edit), Err(AuthError::InvalidToken(_))), "{label}");
        }
        assert_eq!(
            with(&|c| c["role"] = json!(["power user", "résumé-editor"]))
                .unwrap()
                .roles,
            ["power user", "résumé-editor"],
            "inner spaces and non-ASCII survive a header intact"
        );
    }

    #[test]
    fn hmac_secrets_shorter_than_the_hash_are_a_config_error() {
        let build = |alg, len: usize| {
            JwtVerifier::new(
                alg,
                KeySource::Secret(vec![b'k'; len]),
                None,
                None,
                Duration::ZERO,
                "role".into(),
            )
        };
        let err = build(Algorithm::HS256, 31).unwrap_err();
        assert_eq!(err.field, "JWT_SECRET_KEY");
        assert!(err.message.contains("at least 32"), "{}", err.message);
        assert!(build(Algorithm::HS256, 0).is_err());
        assert!(build(Algorithm::HS256, 32).is_ok());
        assert!(build(Algorithm::HS384, 47).is_err());
        assert!(build(Algorithm::HS384, 48).is_ok());
        assert!(build(Algorithm::HS512, 63).is_err());
        assert!(build(Algorithm::HS512, 64).is_ok());
    }

    #[test]
    fn the_bearer_parser_takes_one_bearer_header_only() {
        assert_eq!(bearer(&HeaderMap::new()), Ok(None));
        assert_eq!(bearer(&headers(&["bearer  abc "])), Ok(Some("abc")));
        assert_eq!(bearer(&headers(&["Basic abc"])), Err(AuthError::MalformedHeader));
        assert_eq!(
            bearer(&headers(&["Bearer a", "Bearer b"])),
            Err(AuthError::MultipleAuthorization)
        );
    }

    #[test]
    fn audience_is_only_checked_when_configured() {
        let v = JwtVerifier::new(
            Algorithm::HS256,
            KeySource::Secret(SECRET.to_vec()),
            None,
            None,
            Duration::ZERO,
            "role".into(),
        )
        .unwrap();
        let mut c = good_claims();
        c["aud"] = json!("anything");
        c["iss"] = json!("anyone");
        assert!(v.verify(&sign(c)).is_ok());
    }

    #[test]
    fn a_remembered_token_still_expires() {
        let v = verifier();
        let mut c = good_claims();
        // Valid now (within leeway), expired 31 s from now.
        c["exp"] = json!(now() - 29);
        let token = sign(c);
        assert!(v.verify(&token).is_ok());
        assert!(v.verify(&token).is_ok(), "served from the cache");
        let known = v.verified.get(token.as_str()).expect("remembered");
        assert!(known.exp + v.validation.leeway >= now());
        // Rewind the remembered bound to simulate the passing of time.
        v.verified.insert(
            Arc::from(token.as_str()),
            Arc::new(Verified {
                claims: known.claims.clone(),
                exp: now() - 31,
                nbf: None,
            }),
        );
        assert!(v.verify(&token).is_err());
    }

    #[test]
    fn a_rejected_token_is_never_remembered() {
        let v = verifier();
        let mut c = good_claims();
        c["iss"] = json!("elsewhere");
        let token = sign(c);
        assert!(v.verify(&token).is_err());
        assert!(v.verified.get(token.as_str()).is_none());
        assert!(v.verify(&token).is_err());
    }

    fn base64_url(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    fn key(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/../tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    fn pem_verifier(alg: Algorithm, public: &str) -> JwtVerifier {
        JwtVerifier::new(
            alg,
            KeySource::Pem(key(public)),
            None,
            None,
            Duration::ZERO,
            "role".into(),
        )
        .unwrap()
    }

    fn sign_with(alg: Algorithm, key: EncodingKey, kid: Option<&str>) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, &good_claims(), &key).unwrap()
    }

    #[test]
    fn asymmetric_algorithms_verify_with_pem_public_keys() {
        let rsa = || EncodingKey::from_rsa_pem(&key("rsa-private.pem")).unwrap();
        for alg in [
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS512,
        ] {
            assert!(
                pem_verifier(alg, "rsa-public.pem")
                    .verify(&sign_with(alg, rsa(), None))
                    .is_ok(),
                "{alg:?}"
            );
        }
        let es256 = EncodingKey::from_ec_pem(&key("ec256-private.pem")).unwrap();
        assert!(pem_verifier(Algorithm::ES256, "ec256-public.pem")
            .verify(&sign_with(Algorithm::ES256, es256, None))
            .is_ok());
        let es384 = EncodingKey::from_ec_pem(&key("ec384-private.pem")).unwrap();
        assert!(pem_verifier(Algorithm::ES384, "ec384-public.pem")
            .verify(&sign_with(Algorithm::ES384, es384, None))
            .is_ok());
        let ed = EncodingKey::from_ed_pem(&key("ed25519-private.pem")).unwrap();
        assert!(pem_verifier(Algorithm::EdDSA, "ed25519-public.pem")
            .verify(&sign_with(Algorithm::EdDSA, ed, None))
            .is_ok());
    }

    #[test]
    fn an_hs256_token_signed_with_the_public_key_is_rejected_when_rs256_is_configured() {
        let forged = sign_with(Algorithm::HS256, EncodingKey::from_secret(&key("rsa-public.pem")), None);
        assert!(pem_verifier(Algorithm::RS256, "rsa-public.pem")
            .verify(&forged)
            .is_err());
    }

    #[test]
    fn a_key_of_the_wrong_family_is_a_config_error() {
        let err = JwtVerifier::new(
            Algorithm::ES256,
            KeySource::Pem(key("rsa-public.pem")),
            None,
            None,
            Duration::ZERO,
            "role".into(),
        )
        .unwrap_err();
        assert_eq!(err.field, "jwt.public_key_file");
    }

    #[test]
    fn jwks_selects_the_key_by_kid() {
        let v = JwtVerifier::new(
            Algorithm::RS256,
            KeySource::Jwks(key("jwks.json")),
            None,
            None,
            Duration::ZERO,
            "role".into(),
        )
        .unwrap();
        let rsa = || EncodingKey::from_rsa_pem(&key("rsa-private.pem")).unwrap();
        assert!(v.verify(&sign_with(Algorithm::RS256, rsa(), Some("test-key"))).is_ok());
        assert!(
            v.verify(&sign_with(Algorithm::RS256, rsa(), Some("other-key")))
                .is_err(),
            "wrong key for this kid"
        );
        assert!(v.verify(&sign_with(Algorithm::RS256, rsa(), Some("unknown"))).is_err());
        assert!(v.verify(&sign_with(Algorithm::RS256, rsa(), None)).is_err(), "no kid");
    }

    /// The test JWKS with `test-key` (the one `rsa-private.pem` signs for)
    /// edited by `f`.
    fn jwks_with(f: impl Fn(&mut Value)) -> Result<JwtVerifier, KeyError> {
        let mut set: Value = serde_json::from_slice(&key("jwks.json")).unwrap();
        let test_key = set["keys"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|k| k["kid"] == "test-key")
            .unwrap();
        f(test_key);
        JwtVerifier::new(
            Algorithm::RS256,
            KeySource::Jwks(serde_json::to_vec(&set).unwrap()),
            None,
            None,
            Duration::ZERO,
            "role".into(),
        )
    }

    #[test]
    fn jwks_keys_not_meant_for_verifying_signatures_are_ignored() {
        let token = sign_with(
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(&key("rsa-private.pem")).unwrap(),
            Some("test-key"),
        );
        let verifies = |f: &dyn Fn(&mut Value)| jwks_with(f).unwrap().verify(&token).is_ok();
        assert!(verifies(&|_| {}));
        assert!(verifies(&|k| k["key_ops"] = json!(["verify"])));
        assert!(verifies(&|k| {
            k.as_object_mut().unwrap().remove("use");
        }));
        assert!(!verifies(&|k| k["use"] = json!("enc")), "use: enc");
        assert!(
            !verifies(&|k| k["key_ops"] = json!(["encrypt", "wrapKey"])),
            "key_ops without verify"
        );
    }

    #[test]
    fn a_jwks_with_duplicate_kids_is_a_config_error() {
        let err = jwks_with(|k| k["kid"] = json!("other-key")).unwrap_err();
        assert_eq!(err.field, "jwt.jwks_file");
        assert!(err.message.contains("other-key"), "{}", err.message);
    }
}
