//! bcrypt hashing and verification, off the async runtime.
//!
//! bcrypt at cost 12 takes ~250 ms of CPU; run on a Tokio worker it would
//! stall every other request on that worker, so both directions go through
//! `spawn_blocking`. A dummy hash of the same cost lets login spend the same
//! time on an unknown user as on a wrong password, so response time does not
//! reveal which accounts exist.

use crate::error::ApiError;

/// Longest password bcrypt uses in full; longer input would be silently
/// truncated, so validation rejects it instead.
pub const MAX_PASSWORD_BYTES: usize = 72;

#[derive(Clone)]
pub struct Passwords {
    cost: u32,
    dummy_hash: String,
}

impl Passwords {
    /// Prepares a hasher; computes the dummy hash once, at the given cost.
    pub async fn new(cost: u32) -> Result<Passwords, ApiError> {
        let dummy_hash = hash_blocking("not a real password".into(), cost).await?;
        Ok(Passwords { cost, dummy_hash })
    }

    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        hash_blocking(password, self.cost).await
    }

    /// Checks `password` against `hash`, or against the dummy hash when there
    /// is no user, so both paths cost one bcrypt verification.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, ApiError> {
        let user_exists = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.clone());
        let matches = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?;
        Ok(matches && user_exists)
    }
}

async fn hash_blocking(password: String, cost: u32) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || bcrypt::hash(password, cost))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verifies_its_own_hashes_and_rejects_others() {
        let passwords = Passwords::new(4).await.unwrap();
        let hash = passwords.hash("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$2b$04$"));
        assert!(passwords
            .verify("correct horse".into(), Some(hash.clone()))
            .await
            .unwrap());
        assert!(!passwords.verify("wrong".into(), Some(hash)).await.unwrap());
    }

    #[tokio::test]
    async fn a_missing_user_never_verifies_even_with_the_dummy_password() {
        let passwords = Passwords::new(4).await.unwrap();
        assert!(!passwords.verify("not a real password".into(), None).await.unwrap());
    }
}
