//! JWT issuance and verification (HS256).
//!
//! The origin verifies its own tokens on protected routes so that it is safe
//! to expose without the proxy. Verification checks signature, `exp`, `nbf`,
//! `iss` and `aud`; what a caller may do is decided from the role stored in
//! MongoDB, not from the token's `role` claim, which may be stale.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::JwtSettings;
use crate::error::ApiError;

/// Clock skew tolerated between the machines that issue and check tokens.
const LEEWAY: Duration = Duration::from_secs(30);

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub role: String,
    pub iat: u64,
    pub exp: u64,
    pub jti: String,
    pub iss: String,
    pub aud: String,
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> Result<u64, ApiError> {
    Ok(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(ApiError::internal)?
        .as_secs())
}

/// Signs and checks tokens; keys are derived once from the settings.
#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl: Duration,
}

impl Tokens {
    pub fn new(settings: &JwtSettings) -> Tokens {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY.as_secs();
        Tokens {
            encoding: EncodingKey::from_secret(&settings.secret),
            decoding: DecodingKey::from_secret(&settings.secret),
            validation,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            ttl: settings.ttl,
        }
    }

    /// Lifetime of issued tokens, reported to clients as `expires_in`.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn issue(&self, user_id: &str, role: &str) -> Result<String, ApiError> {
        self.issue_after(user_id, role, None)
    }

    /// A token whose `iat` is after `revoked_before` (the user's tokens
    /// issued until that second were revoked, in whole seconds): a login in
    /// the second of a password change must not get a token born revoked.
    pub fn issue_after(&self, user_id: &str, role: &str, revoked_before: Option<u64>) -> Result<String, ApiError> {
        let now = now_secs()?;
        let claims = Claims {
            sub: user_id.to_owned(),
            role: role.to_owned(),
            iat: revoked_before.map_or(now, |before| now.max(before + 1)),
            exp: now + self.ttl.as_secs(),
            jti: uuid::Uuid::new_v4().to_string(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(ApiError::internal)
    }

    /// Verifies a compact JWT; every failure is the same 401 to the client.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|err| {
                tracing::debug!(error = %err, "token rejected");
                ApiError::Unauthorized("invalid or expired token")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(secret: &str) -> JwtSettings {
        JwtSettings {
            secret: secret.as_bytes().to_vec(),
            issuer: "origin".into(),
            audience: "api".into(),
            ttl: Duration::from_secs(900),
        }
    }

    #[test]
    fn issued_tokens_verify_and_carry_every_claim() {
        let tokens = Tokens::new(&settings("secret"));
        let claims = tokens.verify(&tokens.issue("abc", "user").unwrap()).unwrap();
        assert_eq!((claims.sub.as_str(), claims.role.as_str()), ("abc", "user"));
        assert_eq!((claims.iss.as_str(), claims.aud.as_str()), ("origin", "api"));
        assert_eq!(claims.exp - claims.iat, 900);
        let later = tokens
            .verify(&tokens.issue_after("abc", "user", Some(claims.iat + 5)).unwrap())
            .unwrap();
        assert_eq!(later.iat, claims.iat + 6, "issued after the revocation's second");
        assert!(!claims.jti.is_empty());
    }

    #[test]
    fn tokens_signed_with_another_secret_are_rejected() {
        let token = Tokens::new(&settings("other")).issue("abc", "user").unwrap();
        assert!(Tokens::new(&settings("secret")).verify(&token).is_err());
    }

    #[test]
    fn wrong_issuer_or_audience_is_rejected() {
        let mut foreign = settings("secret");
        foreign.issuer = "elsewhere".into();
        let token = Tokens::new(&foreign).issue("abc", "user").unwrap();
        assert!(Tokens::new(&settings("secret")).verify(&token).is_err());

        let mut foreign = settings("secret");
        foreign.audience = "other-api".into();
        let token = Tokens::new(&foreign).issue("abc", "user").unwrap();
        assert!(Tokens::new(&settings("secret")).verify(&token).is_err());
    }

    #[test]
    fn expired_tokens_are_rejected() {
        let tokens = Tokens::new(&settings("secret"));
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let claims = Claims {
            sub: "abc".into(),
            role: "user".into(),
            iat: now - 3600,
            exp: now - 120,
            jti: "j".into(),
            iss: "origin".into(),
            aud: "api".into(),
        };
        let token = jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(b"secret")).unwrap();
        assert!(tokens.verify(&token).is_err());
    }
}
