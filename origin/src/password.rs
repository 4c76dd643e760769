//! bcrypt hashing and verification, off the async runtime and rationed.
//!
//! bcrypt at cost 12 takes ~250 ms of CPU; run on a Tokio worker it would
//! stall every other request on that worker, so both directions go through
//! `spawn_blocking`. That alone does not bound the CPU: the blocking pool
//! grows to hundreds of threads, so a burst of `/login` or `/register` would
//! still saturate every core. A semaphore caps how many run at once; a
//! request that cannot get a slot within the queue budget is turned away
//! with [`ApiError::Busy`] (503) instead of queueing without bound.
//!
//! A dummy hash of the same cost lets login spend the same time on an
//! unknown user as on a wrong password, so response time does not reveal
//! which accounts exist.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::error::ApiError;

/// Longest password bcrypt uses in full; longer input would be silently
/// truncated, so validation rejects it instead.
pub const MAX_PASSWORD_BYTES: usize = 72;
/// How long a request waits for a bcrypt slot by default: long enough to ride
/// out a short burst, short enough that a client is told to retry before it
/// gives up on its own.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(2);

/// How much bcrypt work may run at once, and how long a request may wait
/// for its turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BcryptLimits {
    /// Hashes and verifications running at the same time; at least 1.
    pub concurrency: usize,
    /// Wait for a slot before answering 503; zero means "only if one is free
    /// right now".
    pub queue_timeout: Duration,
}

impl Default for BcryptLimits {
    /// One bcrypt per CPU: more would only make each one slower.
    fn default() -> BcryptLimits {
        BcryptLimits {
            concurrency: default_concurrency(),
            queue_timeout: DEFAULT_QUEUE_TIMEOUT,
        }
    }
}

/// The number of CPUs this process may use, or 1 when that is unknown.
pub fn default_concurrency() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[derive(Clone)]
pub struct Passwords {
    cost: u32,
    dummy_hash: String,
    slots: Arc<Semaphore>,
    queue_timeout: Duration,
}

impl Passwords {
    /// A hasher with the default limits; computes the dummy hash once, at the
    /// given cost.
    pub async fn new(cost: u32) -> Result<Passwords, ApiError> {
        Passwords::with_limits(cost, BcryptLimits::default()).await
    }

    pub async fn with_limits(cost: u32, limits: BcryptLimits) -> Result<Passwords, ApiError> {
        let slots = Arc::new(Semaphore::new(limits.concurrency.max(1)));
        let mut passwords = Passwords {
            cost,
            dummy_hash: String::new(),
            slots,
            queue_timeout: limits.queue_timeout,
        };
        passwords.dummy_hash = passwords.hash("not a real password".into()).await?;
        Ok(passwords)
    }

    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        let cost = self.cost;
        self.run(move || bcrypt::hash(password, cost)).await
    }

    /// Checks `password` against `hash`, or against the dummy hash when there
    /// is no user, so both paths cost one bcrypt verification.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, ApiError> {
        let user_exists = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.clone());
        let matches = self.run(move || bcrypt::verify(password, &hash)).await?;
        Ok(matches && user_exists)
    }

    /// Runs one bcrypt operation on the blocking pool once a slot is free.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, bcrypt::BcryptError> + Send + 'static,
    ) -> Result<T, ApiError> {
        // `timeout` polls the acquisition before it looks at the clock, so a
        // zero budget still takes a slot that is free.
        let slot = match tokio::time::timeout(self.queue_timeout, self.slots.clone().acquire_owned()).await {
            Ok(Ok(slot)) => slot,
            Ok(Err(closed)) => return Err(ApiError::internal(closed)),
            Err(_) => return Err(ApiError::Busy),
        };
        tokio::task::spawn_blocking(move || {
            // The slot lives in the blocking task, not the request: a client
            // that hangs up drops its request future, but the hash it started
            // keeps burning CPU until it ends, and must keep its slot till then.
            let _slot = slot;
            work()
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
    }
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

    #[tokio::test]
    async fn work_beyond_the_limit_is_refused_once_the_queue_budget_is_spent() {
        let limits = BcryptLimits {
            concurrency: 1,
            queue_timeout: Duration::from_millis(20),
        };
        let passwords = Passwords::with_limits(4, limits).await.unwrap();
        // Hold the only slot, as a long-running hash would.
        let held = passwords.slots.clone().acquire_owned().await.unwrap();
        assert!(matches!(
            passwords.hash("correct horse".into()).await,
            Err(ApiError::Busy)
        ));
        assert!(matches!(passwords.verify("x".into(), None).await, Err(ApiError::Busy)));
        drop(held);
        assert!(passwords.hash("correct horse".into()).await.is_ok());
    }

    #[tokio::test]
    async fn a_zero_queue_budget_still_takes_a_free_slot() {
        let limits = BcryptLimits {
            concurrency: 1,
            queue_timeout: Duration::ZERO,
        };
        let passwords = Passwords::with_limits(4, limits).await.unwrap();
        assert!(passwords.hash("correct horse".into()).await.is_ok());
    }

    #[tokio::test]
    async fn a_waiting_request_gets_the_slot_when_it_frees_up() {
        let limits = BcryptLimits {
            concurrency: 1,
            queue_timeout: Duration::from_secs(30),
        };
        let passwords = Passwords::with_limits(4, limits).await.unwrap();
        let held = passwords.slots.clone().acquire_owned().await.unwrap();
        let waiting = tokio::spawn({
            let passwords = passwords.clone();
            async move { passwords.hash("correct horse".into()).await }
        });
        tokio::task::yield_now().await;
        drop(held);
        assert!(waiting.await.unwrap().is_ok());
    }
}
