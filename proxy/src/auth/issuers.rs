//! Several issuers (`[[jwt.issuers]]`), or the one `[jwt]` table: the
//! token's `iss` picks the issuer before any key is tried, so a token
//! from issuer A is never verified with issuer B's keys.

use std::sync::Arc;

use http::HeaderMap;
use serde_json::Value;

use super::settings::JwtSettings;
use super::verifier::JwtVerifier;
use super::{bearer, AuthError, Claims};
use crate::metrics::Metrics;
use crate::problem::Problem;

#[derive(Debug)]
pub struct Issuers {
    /// One, or several each with its own `issuer`.
    verifiers: Vec<JwtVerifier>,
}

impl Issuers {
    /// Builds each issuer's verifier; `previous` lends each issuer's
    /// fetched key set to its successor after a reload.
    pub async fn load(
        settings: &[JwtSettings],
        previous: Option<&Issuers>,
        metrics: &Arc<Metrics>,
    ) -> Result<Issuers, Problem> {
        let mut verifiers = Vec::with_capacity(settings.len());
        for (i, issuer) in settings.iter().enumerate() {
            let before = previous.and_then(|p| p.verifiers.iter().find(|v| v.issuer() == issuer.issuer.as_deref()));
            let verifier = JwtVerifier::load(issuer, before, metrics)
                .await
                .map_err(|e| match settings.len() {
                    // Name the issuer's own field, not `[jwt]`'s.
                    1 => e,
                    _ => Problem {
                        field: e.field.replacen("jwt.", &format!("jwt.issuers[{i}]."), 1),
                        ..e
                    },
                })?;
            verifiers.push(verifier);
        }
        Ok(Issuers { verifiers })
    }

    /// The verifier for `token`'s issuer.
    fn pick(&self, token: &str) -> Result<&JwtVerifier, AuthError> {
        if let [only] = self.verifiers.as_slice() {
            return Ok(only);
        }
        let iss = unverified_issuer(token).ok_or_else(|| AuthError::InvalidToken("token has no iss".into()))?;
        self.verifiers
            .iter()
            .find(|v| v.issuer() == Some(iss.as_str()))
            .ok_or_else(|| AuthError::InvalidToken("unknown issuer".into()))
    }

    /// Verifies the request's bearer token, if any, with its issuer's keys.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Option<Arc<Claims>>, AuthError> {
        match bearer(headers)? {
            Some(token) => self.verify(token).await.map(Some),
            None => Ok(None),
        }
    }

    pub async fn verify(&self, token: &str) -> Result<Arc<Claims>, AuthError> {
        self.pick(token)?.verify_fetching(token).await
    }

    /// Why some issuer's keys cannot be used now, one line each.
    pub fn keys_unavailable(&self) -> Vec<String> {
        self.verifiers
            .iter()
            .filter_map(JwtVerifier::keys_unavailable)
            .collect()
    }
}

/// The `iss` claim, read before any verification: it only chooses which
/// keys may verify the token, and the chosen verifier checks it again.
fn unverified_issuer(token: &str) -> Option<String> {
    let data = jsonwebtoken::dangerous::insecure_decode::<Value>(token).ok()?;
    data.claims.get("iss")?.as_str().map(str::to_owned)
}
