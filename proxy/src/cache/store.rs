//! The store interface: entries and the purge index ([`CacheStore`]), tag
//! generations ([`Invalidate`]), leases ([`Leases`]) and health
//! ([`StoreHealth`]); [`Store`] is all four. Implemented by the memory and
//! Redis stores.

use std::time::Duration;

use async_trait::async_trait;

use super::purge::{self, Filed, IndexInfo, PurgeRequest, Purged};
use super::{CacheKey, Entry, Generations};
use crate::guard::Guards;

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    /// A fresh entry whose every tag generation is current. Shared, so the
    /// memory store hands out its own copy without cloning headers.
    Hit(std::sync::Arc<Entry>),
    /// An expired entry still within a stale window, its every tag
    /// generation current (so its `generations` are the current ones): an
    /// invalidated entry is never returned, stale or not.
    Stale(std::sync::Arc<Entry>),
    /// Nothing servable. Carries the current generations of the rule's
    /// tags (created when missing), to be recorded in the entry stored for
    /// this miss.
    Miss(Generations),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The circuit breaker is open, or invalidations recorded during an
    /// outage have not been applied yet: caching is paused.
    #[error("cache store unavailable")]
    Unavailable,
    #[error("cache operation timed out")]
    Timeout,
    #[error("cache store error: {0}")]
    Backend(String),
}

/// Where entries live: the data operations of the request path and the
/// purge index. Implementations must make a completed
/// [`Invalidate::invalidate`] visible to every later
/// [`lookup`](CacheStore::lookup).
#[async_trait]
pub trait CacheStore: Send + Sync + 'static {
    /// Finds a servable entry for `key`, checking its generations against
    /// the current ones of `tags` in the same round trip.
    async fn lookup(&self, key: &CacheKey, tags: &[String]) -> Result<Lookup, StoreError>;

    /// Stores `entry` for as long as it may be used (fresh or stale),
    /// indexed for purging as `index` says.
    async fn store(&self, key: &CacheKey, entry: &Entry, index: &IndexInfo<'_>) -> Result<(), StoreError>;

    /// The keys of the entries filed under `place` in the purge index.
    async fn filed(&self, place: Filed<'_>) -> Result<Vec<CacheKey>, StoreError>;

    /// Removes, or with `soft` marks expired, the entries under `keys`;
    /// returns how many there were.
    async fn remove(&self, keys: Vec<CacheKey>, soft: bool) -> Result<u64, StoreError>;
}

/// Tag generations: how a write makes every instance stop serving what it
/// replaced.
#[async_trait]
pub trait Invalidate: Send + Sync + 'static {
    /// Gives each tag a fresh generation, so no entry recorded under the
    /// old one is served again. Returns only once the change is durable in
    /// the store (for Redis: acknowledged).
    async fn invalidate(&self, tags: &[String]) -> Result<(), StoreError>;
}

/// Who fetches a missing entry when several instances miss it at once.
#[async_trait]
pub trait Leases: Send + Sync + 'static {
    /// Claims, for at most `ttl`, the fetch of the missing entry `key` on
    /// behalf of every instance sharing this store. A store no other
    /// instance shares always grants it, without a token.
    async fn lease(&self, _key: &CacheKey, _ttl: Duration) -> Result<Lease, StoreError> {
        Ok(Lease::Granted(None))
    }

    /// Gives back a lease granted with `token`, unless it already expired
    /// (and may belong to someone else by now).
    async fn release(&self, _key: &CacheKey, _token: &str) {}

    /// Whether another instance still holds the lease on `key`.
    async fn leased(&self, _key: &CacheKey) -> Result<bool, StoreError> {
        Ok(false)
    }
}

/// The store as the operator sees it: readiness, warnings, shutdown.
#[async_trait]
pub trait StoreHealth: Send + Sync + 'static {
    /// Whether the store can serve right now (`/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// What in the store's own settings weakens a guarantee (`/readyz`).
    async fn warnings(&self) -> Vec<String> {
        Vec::new()
    }

    /// Last chance, at shutdown, to apply invalidations still pending.
    async fn close(&self) {}

    /// `"redis"` or `"memory"`, for logs and metrics.
    fn kind(&self) -> &'static str;

    /// What the store holds and how it is doing, without asking Redis: the
    /// status page and the gauges read it every second.
    fn state(&self) -> StoreState;
}

/// See [`StoreHealth::state`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreState {
    /// Entries held in process memory: the memory store's, or Redis's L1
    /// copies.
    pub local_entries: u64,
    /// Their weighted size in bytes.
    pub local_bytes: u64,
    /// Circuit breakers open, of `breakers` (one per Redis group; none for
    /// the memory store).
    pub breakers_open: u64,
    pub breakers: u64,
    /// Tags whose invalidation Redis has not acknowledged yet.
    pub pending_invalidations: u64,
}

/// Everything the proxy asks of its store, as one object.
#[async_trait]
pub trait Store: CacheStore + Invalidate + Leases + StoreHealth + Guards {
    /// Purges what `request` names (see [`purge::run`]).
    async fn purge(&self, request: &PurgeRequest) -> Result<Purged, StoreError> {
        purge::run(self, request).await
    }
}

impl<T: CacheStore + Invalidate + Leases + StoreHealth + Guards> Store for T {}

/// The answer to a lease request.
#[derive(Debug, PartialEq, Eq)]
pub enum Lease {
    /// Fetch; give it back with the token (if any) once stored.
    Granted(Option<String>),
    /// Another instance is fetching: wait for its entry.
    HeldElsewhere,
}

/// A new random generation token: 128 bits, hex.
pub fn new_generation() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_are_random_and_distinct() {
        let (a, b) = (new_generation(), new_generation());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
