//! Verification keys: an HMAC secret, a PEM public key, or a JWKS
//! document, each with the algorithms it may verify.
//!
//! The algorithm a token may use is decided by its key, never by the
//! token: a PEM key verifies the configured algorithms of its family; a
//! JWKS key verifies its own `alg` if it names one (and it is configured),
//! else the configured algorithms of its key type.

use std::collections::{HashMap, HashSet};

use jsonwebtoken::jwk::{JwkSet, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::problem::Problem;

/// Where verification keys come from, as bytes.
pub enum KeySource {
    /// HMAC secret, from `JWT_SECRET_KEY`.
    Secret(Vec<u8>),
    /// A PEM public key (RSA, EC or Ed25519, by algorithm).
    Pem(Vec<u8>),
    /// A JWKS document; tokens select a key by `kid`.
    Jwks(Vec<u8>),
}

/// One key and the algorithms it may verify.
pub struct Key {
    pub decoding: DecodingKey,
    pub algorithms: Vec<Algorithm>,
}

/// Keys by `kid`, and each one's JWK as published (to notice a key that
/// changed under the same `kid`).
#[derive(Default)]
pub struct KeySet {
    pub keys: HashMap<String, Key>,
    pub published: HashMap<String, String>,
}

impl KeySet {
    /// Whether some key of `self` is gone, or changed, in `next`: tokens
    /// verified with it must be verified again.
    pub fn loses_keys_in(&self, next: &KeySet) -> bool {
        self.published
            .iter()
            .any(|(kid, jwk)| next.published.get(kid) != Some(jwk))
    }
}

pub fn secret_key(algorithms: &[Algorithm], secret: &[u8]) -> Key {
    Key {
        decoding: DecodingKey::from_secret(secret),
        algorithms: algorithms.to_vec(),
    }
}

pub fn pem_key(algorithms: &[Algorithm], pem: &[u8]) -> Result<Key, String> {
    use Algorithm::*;
    let algorithm = algorithms[0];
    let key = match algorithm {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => DecodingKey::from_rsa_pem(pem),
        ES256 | ES384 => DecodingKey::from_ec_pem(pem),
        EdDSA => DecodingKey::from_ed_pem(pem),
        HS256 | HS384 | HS512 => return Err("HMAC algorithms take JWT_SECRET_KEY, not a key file".into()),
    };
    let decoding = key.map_err(|e| format!("not a {algorithm:?} public key in PEM form: {e}"))?;
    Ok(Key {
        decoding,
        algorithms: algorithms.to_vec(),
    })
}

/// The usable keys of a JWKS document. Keys not meant for verifying
/// signatures, or for none of `algorithms`, are left out; a document
/// with two keys under one `kid`, or none usable, is refused.
pub fn jwks_keys(algorithms: &[Algorithm], json: &[u8]) -> Result<KeySet, String> {
    let set: JwkSet = serde_json::from_slice(json).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut out = KeySet::default();
    let mut seen = HashSet::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let kid = jwk
            .common
            .key_id
            .clone()
            .ok_or_else(|| format!("keys[{i}] has no kid"))?;
        // Tokens pick their key by `kid` alone; two keys under one `kid`
        // leave the choice to document order, which nobody reviewing the
        // set would guess (RFC 7517 §4.5 asks for distinct values).
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
        let Ok(decoding) = DecodingKey::from_jwk(jwk) else {
            // A key type this build cannot use (or a malformed one) is
            // skipped like one for another algorithm: an IdP publishing
            // an extra key must not take the others down.
            continue;
        };
        let usable: Vec<Algorithm> = match jwk.common.key_algorithm.map(|a| a.to_string()) {
            // A key meant for one algorithm verifies that one only.
            Some(named) => algorithms
                .iter()
                .copied()
                .filter(|a| format!("{a:?}") == named)
                .collect(),
            None => algorithms
                .iter()
                .copied()
                .filter(|a| a.family() == decoding.family())
                .collect(),
        };
        if usable.is_empty() {
            continue;
        }
        let published = serde_json::to_string(jwk).unwrap_or_default();
        out.published.insert(kid.clone(), published);
        out.keys.insert(
            kid,
            Key {
                decoding,
                algorithms: usable,
            },
        );
    }
    if out.keys.is_empty() {
        let names: Vec<String> = algorithms.iter().map(|a| format!("{a:?}")).collect();
        return Err(format!("no key usable with {}", names.join(", ")));
    }
    Ok(out)
}

/// RFC 7518 §3.2: an HMAC key must be at least as long as the hash
/// output. Anyone holding one token can test guesses of a shorter secret
/// offline, at no cost to us and invisible to us.
pub fn check_secret(algorithm: Algorithm, len: usize) -> Result<(), Problem> {
    let min = match algorithm {
        Algorithm::HS384 => 48,
        Algorithm::HS512 => 64,
        _ => 32,
    };
    if len < min {
        return Err(Problem {
            field: "JWT_SECRET_KEY".into(),
            message: format!(
                "is {len} bytes; {algorithm:?} needs at least {min} (RFC 7518 §3.2), \
                 or tokens can be forged by guessing the secret offline"
            ),
        });
    }
    Ok(())
}
