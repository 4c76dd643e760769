//! One issuer's verifier: its keys, the claim checks, and the cache of
//! tokens it has already verified.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::keys::{check_secret, jwks_keys, pem_key, secret_key, Key, KeySet, KeySource};
use super::remote::RemoteKeys;
use super::settings::{JwtSettings, KeySetting};
use super::{is_header_safe, role_claim, AuthError, Claims};
use crate::metrics::Metrics;
use crate::problem::Problem;

/// Bytes of tokens remembered after a full verification (each weighed by
/// its length plus its claims), so a flood of distinct or huge tokens costs
/// at most this much memory.
const VERIFIED_CACHE_BYTES: u64 = 16 * 1024 * 1024;
/// Longest a remembered token skips signature checks, whatever its `exp`.
const VERIFIED_CACHE_TTL: Duration = Duration::from_secs(300);

enum Keys {
    Single(Key),
    /// An HMAC secret being rotated: tokens signed with the previous one
    /// verify until they expire.
    Rotating {
        current: Key,
        previous: Key,
    },
    ByKid(KeySet),
    /// A JWKS fetched from a URL and kept fresh.
    Remote(Arc<RemoteKeys>),
}

/// A token that passed every check, and the time bounds to re-check on
/// each later use.
pub(super) struct Verified {
    pub(super) claims: Arc<Claims>,
    pub(super) exp: u64,
    pub(super) nbf: Option<u64>,
    /// The remote key set's [`RemoteKeys::losses`] when it was verified:
    /// once a key has left the set, tokens it verified are verified again.
    pub(super) losses: u64,
}

/// Verifies tokens against the configured algorithms and keys.
///
/// A token that passed full verification is remembered (by its exact
/// bytes) for a few minutes, so repeated requests with the same token skip
/// the signature check: 3 µs for HS256, 180 µs or more for RS256/ES256.
/// `exp` and `nbf` are still checked on every use; only tokens this
/// verifier accepted are ever remembered, so a cached answer is one a full
/// verification would give. A verifier is built per snapshot, so a reload
/// (a changed secret, key file or issuer) starts with none remembered.
pub struct JwtVerifier {
    keys: Keys,
    /// One per algorithm: jsonwebtoken requires every algorithm of a
    /// `Validation` to be of the key's family.
    validations: HashMap<Algorithm, Validation>,
    pub(super) leeway: u64,
    issuer: Option<String>,
    role_claim: String,
    pub(super) verified: moka::sync::Cache<Arc<str>, Arc<Verified>>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("issuer", &self.issuer)
            .field("role_claim", &self.role_claim)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// Reads the keys `settings` name (files, or a JWKS URL) and builds the
    /// verifier; a key that cannot be read or used is named by its config
    /// field. A JWKS URL that cannot be fetched is not an error: the
    /// verifier answers "keys unavailable" until a fetch succeeds.
    /// `previous`: this issuer's verifier before a reload, whose fetched key
    /// set carries over when its URL is unchanged.
    pub async fn load(
        settings: &JwtSettings,
        previous: Option<&JwtVerifier>,
        metrics: &Arc<Metrics>,
    ) -> Result<JwtVerifier, Problem> {
        let algorithms = &settings.algorithms;
        let keys = match &settings.keys {
            KeySetting::Secret(secret) => {
                let keys = keys_from(algorithms, KeySource::Secret(secret.0.as_bytes().to_vec()))?;
                match &settings.previous_secret {
                    Some(previous) => rotating(keys, previous.0.as_bytes())?,
                    None => keys,
                }
            }
            KeySetting::SecretFile { file, previous } => {
                let current = secret_file("jwt.secret_file", file, algorithms).await?;
                match previous {
                    Some(previous) => Keys::Rotating {
                        current,
                        previous: secret_file("jwt.previous_secret_file", previous, algorithms).await?,
                    },
                    None => Keys::Single(current),
                }
            }
            KeySetting::PemFile(path) => {
                keys_from(algorithms, KeySource::Pem(read("jwt.public_key_file", path).await?))?
            }
            KeySetting::JwksFile(path) => keys_from(algorithms, KeySource::Jwks(read("jwt.jwks_file", path).await?))?,
            KeySetting::JwksUrl(remote) => {
                let reused = previous.and_then(|p| match &p.keys {
                    Keys::Remote(keys) if keys.serves(remote, algorithms) => Some(keys.clone()),
                    _ => None,
                });
                match reused {
                    Some(keys) => Keys::Remote(keys),
                    None => Keys::Remote(RemoteKeys::start(remote.clone(), algorithms.clone(), metrics.clone()).await?),
                }
            }
        };
        Ok(JwtVerifier::with_keys(keys, settings))
    }

    /// A verifier for one algorithm and key source, without files or
    /// URLs: for tests, fuzzing and benches.
    pub fn new(
        algorithm: Algorithm,
        source: KeySource,
        issuer: Option<String>,
        audience: Option<String>,
        leeway: Duration,
        role_claim: String,
    ) -> Result<JwtVerifier, Problem> {
        let algorithms = [algorithm];
        let keys = keys_from(&algorithms, source)?;
        let settings = JwtSettings {
            algorithms: algorithms.to_vec(),
            keys: KeySetting::Secret(crate::secret::Secret(String::new())),
            issuer,
            audience,
            leeway,
            role_claim,
            previous_secret: None,
        };
        Ok(JwtVerifier::with_keys(keys, &settings))
    }

    /// Also accepts tokens signed with `previous`, the HMAC secret before
    /// the current one.
    pub fn with_previous_secret(mut self, previous: &[u8]) -> Result<JwtVerifier, Problem> {
        self.keys = rotating(self.keys, previous)?;
        Ok(self)
    }

    fn with_keys(keys: Keys, settings: &JwtSettings) -> JwtVerifier {
        let mut required = vec!["exp", "sub"];
        if settings.issuer.is_some() {
            required.push("iss");
        }
        if settings.audience.is_some() {
            required.push("aud");
        }
        let validation = |algorithm| {
            let mut validation = Validation::new(algorithm);
            validation.validate_nbf = true;
            validation.leeway = settings.leeway.as_secs();
            if let Some(iss) = &settings.issuer {
                validation.set_issuer(&[iss]);
            }
            match &settings.audience {
                Some(aud) => validation.set_audience(&[aud]),
                None => validation.validate_aud = false,
            }
            validation.set_required_spec_claims(&required);
            validation
        };
        let validations = settings.algorithms.iter().map(|&a| (a, validation(a))).collect();
        let verified = moka::sync::Cache::builder()
            .max_capacity(VERIFIED_CACHE_BYTES)
            .weigher(|token: &Arc<str>, v: &Arc<Verified>| {
                let claims = v.claims.subject.len()
                    + v.claims.roles.iter().map(String::len).sum::<usize>()
                    + v.claims.jti.as_ref().map_or(0, String::len);
                u32::try_from(token.len() + claims + 128).unwrap_or(u32::MAX)
            })
            .time_to_live(VERIFIED_CACHE_TTL)
            .build();
        JwtVerifier {
            keys,
            validations,
            leeway: settings.leeway.as_secs(),
            issuer: settings.issuer.clone(),
            role_claim: settings.role_claim.clone(),
            verified,
        }
    }

    /// The `iss` this verifier requires, if any.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// The JWKS URL's state when its keys cannot be used; `None` when they
    /// can (or the keys are not fetched).
    pub fn keys_unavailable(&self) -> Option<String> {
        match &self.keys {
            Keys::Remote(remote) => remote.unavailable(),
            _ => None,
        }
    }

    /// Verifies a token; with a JWKS URL, a token naming a `kid` the set
    /// lacks (or any token while no set is at hand) refetches the set
    /// once (shared by every request asking at the same time, and at most
    /// once per `jwks_refetch_interval`) and tries again.
    pub async fn verify_fetching(&self, token: &str) -> Result<Arc<Claims>, AuthError> {
        let Keys::Remote(remote) = &self.keys else {
            return self.verify(token);
        };
        let attempts = remote.attempts();
        match self.verify(token) {
            Err(AuthError::UnknownKid | AuthError::KeysUnavailable) => {
                // Boxed: the fetch's future (an HTTP client request) is
                // large, and would otherwise be part of every request's
                // future, moved and zeroed on the common path too.
                Box::pin(remote.refetch(attempts)).await;
                self.verify(token)
            }
            other => other,
        }
    }

    /// Verifies a compact JWT and extracts subject and roles, with the
    /// keys at hand.
    pub fn verify(&self, token: &str) -> Result<Arc<Claims>, AuthError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let leeway = self.leeway;
        let losses = match &self.keys {
            Keys::Remote(remote) => remote.losses(),
            _ => 0,
        };
        if let Some(known) = self.verified.get(token).filter(|known| known.losses == losses) {
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
        let verified = self.verify_fully(token, losses)?;
        let claims = verified.claims.clone();
        self.verified.insert(Arc::from(token), Arc::new(verified));
        Ok(claims)
    }

    fn verify_fully(&self, token: &str, losses: u64) -> Result<Verified, AuthError> {
        let invalid = |e: jsonwebtoken::errors::Error| AuthError::InvalidToken(e.to_string());
        let header = jsonwebtoken::decode_header(token).map_err(invalid)?;
        let decode = |key: &Key| {
            // The key decides which algorithms it verifies, never the token.
            if !key.algorithms.contains(&header.alg) {
                return Err(jsonwebtoken::errors::ErrorKind::InvalidAlgorithm.into());
            }
            let validation = &self.validations[&header.alg];
            jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, validation)
        };
        let by_kid = |set: &KeySet| {
            let kid = header
                .kid
                .as_ref()
                .ok_or_else(|| AuthError::InvalidToken("token has no kid".into()))?;
            set.keys.get(kid).map(decode).ok_or(AuthError::UnknownKid)
        };
        let data = match &self.keys {
            Keys::Single(key) => decode(key),
            // Only a wrong signature tries the previous secret: any other
            // verdict (expired, wrong audience) is the token's own.
            Keys::Rotating { current, previous } => match decode(current) {
                Err(e) if *e.kind() == jsonwebtoken::errors::ErrorKind::InvalidSignature => decode(previous),
                other => other,
            },
            Keys::ByKid(set) => by_kid(set)?,
            Keys::Remote(remote) => {
                let set = remote.current().ok_or(AuthError::KeysUnavailable)?;
                by_kid(&set.keys)?
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
        // Logged, so only a sane one: anything else is left out rather
        // than escaped.
        let jti = match claims.remove("jti") {
            Some(Value::String(jti)) if jti.len() <= 128 && is_header_safe(&jti) => Some(jti),
            _ => None,
        };
        // `exp` is required and was validated as a number; `nbf` is optional.
        // Either may be a float (RFC 7519 NumericDate); rounded as
        // jsonwebtoken rounds them, so cached and full checks agree.
        let seconds = |name: &str| claims.get(name).and_then(Value::as_f64).map(|f| f.round() as u64);
        let exp = seconds("exp").unwrap_or(0);
        let nbf = seconds("nbf");
        // Down, unlike exp: a subject's revocation covers tokens issued at
        // or before its second, and 1000.5 was issued in second 1000.
        let issued_at = claims.get("iat").and_then(Value::as_f64).map(|f| f.floor() as u64);
        Ok(Verified {
            claims: Arc::new(Claims {
                subject,
                roles,
                jti,
                issued_at,
                expires_at: exp,
            }),
            exp,
            nbf,
            losses,
        })
    }
}

/// The keys of one source, each error named by the field the source comes
/// from.
fn keys_from(algorithms: &[Algorithm], source: KeySource) -> Result<Keys, Problem> {
    let named = |field: &str| {
        let field = field.to_owned();
        move |message| Problem { field, message }
    };
    match source {
        KeySource::Secret(secret) => {
            check_secret(algorithms[0], secret.len())?;
            Ok(Keys::Single(secret_key(algorithms, &secret)))
        }
        KeySource::Pem(pem) => pem_key(algorithms, &pem)
            .map(Keys::Single)
            .map_err(named("jwt.public_key_file")),
        KeySource::Jwks(json) => jwks_keys(algorithms, &json)
            .map(Keys::ByKid)
            .map_err(named("jwt.jwks_file")),
    }
}

/// An HMAC secret's keys, also accepting tokens signed with `previous`
/// (`JWT_SECRET_KEY_PREVIOUS`).
fn rotating(keys: Keys, previous: &[u8]) -> Result<Keys, Problem> {
    let field = "JWT_SECRET_KEY_PREVIOUS";
    match keys {
        Keys::Single(current) if current.decoding.family() == jsonwebtoken::AlgorithmFamily::Hmac => {
            check_secret(current.algorithms[0], previous.len()).map_err(|e| Problem {
                field: field.into(),
                ..e
            })?;
            let previous = secret_key(&current.algorithms, previous);
            Ok(Keys::Rotating { current, previous })
        }
        _ => Err(Problem {
            field: field.into(),
            message: "only an HMAC secret (JWT_SECRET_KEY) can have a previous one".into(),
        }),
    }
}

/// An HMAC secret from a file, without the line end editors and
/// `echo` leave.
async fn secret_file(field: &str, path: &Path, algorithms: &[Algorithm]) -> Result<Key, Problem> {
    let bytes = read(field, path).await?;
    let secret = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let secret = secret.strip_suffix(b"\r").unwrap_or(secret);
    check_secret(algorithms[0], secret.len()).map_err(|e| Problem {
        field: field.into(),
        ..e
    })?;
    Ok(secret_key(algorithms, secret))
}

async fn read(field: &str, path: &Path) -> Result<Vec<u8>, Problem> {
    tokio::fs::read(path).await.map_err(|e| Problem {
        field: field.into(),
        message: format!("cannot read {}: {e}", path.display()),
    })
}
