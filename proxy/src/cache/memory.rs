//! The in-process store: bounded by bytes, one process only.
//!
//! The default when no Redis is configured. Entries live in a moka cache
//! (a well-kept concurrent cache with size-aware eviction and per-entry
//! expiry); tag generations in a map beside it. Never fails.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::sync::{Cache, CacheBuilder};

use super::entry::now_ms;
use super::{new_generation, CacheKey, CacheStore, Entry, Generations, Lookup, StoreError};

pub struct MemoryStore {
    entries: Cache<CacheKey, Arc<Entry>>,
    generations: RwLock<HashMap<String, String>>,
}

/// Drops each value once its entry is of no use, fresh or stale.
struct EntryExpiry;

impl<V: AsRef<Entry>> moka::Expiry<CacheKey, V> for EntryExpiry {
    fn expire_after_create(&self, _key: &CacheKey, value: &V, _now: Instant) -> Option<Duration> {
        Some(value.as_ref().retention_left(now_ms()))
    }
}

/// A concurrent map of entries bounded by their encoded size, each expiring
/// with its entry; the memory store and the Redis store's L1 both use it.
pub(super) fn bounded_entries<V>(max_bytes: u64) -> CacheBuilder<CacheKey, V, Cache<CacheKey, V>>
where
    V: AsRef<Entry> + Clone + Send + Sync + 'static,
{
    Cache::builder()
        .max_capacity(max_bytes)
        .weigher(|_key, value: &V| u32::try_from(value.as_ref().encoded_len()).unwrap_or(u32::MAX))
        .expire_after(EntryExpiry)
}

impl MemoryStore {
    pub fn new(max_bytes: u64) -> MemoryStore {
        MemoryStore {
            entries: bounded_entries(max_bytes).build(),
            generations: RwLock::new(HashMap::new()),
        }
    }

    /// Whether `recorded` holds exactly the current generation of each of
    /// `tags`, in order. Allocates nothing: this runs on every hit.
    fn is_current(&self, recorded: &Generations, tags: &[String]) -> bool {
        let map = self.generations.read().expect("generations lock");
        recorded.len() == tags.len()
            && recorded
                .iter()
                .zip(tags)
                .all(|((tag, generation), wanted)| tag == wanted && map.get(tag) == Some(generation))
    }

    /// Current generations of `tags`, creating any that do not exist yet.
    fn current_generations(&self, tags: &[String]) -> Generations {
        {
            let map = self.generations.read().expect("generations lock");
            if let Some(found) = tags
                .iter()
                .map(|t| map.get(t).map(|g| (t.clone(), g.clone())))
                .collect()
            {
                return found;
            }
        }
        let mut map = self.generations.write().expect("generations lock");
        tags.iter()
            .map(|t| (t.clone(), map.entry(t.clone()).or_insert_with(new_generation).clone()))
            .collect()
    }
}

/// A hit or a stale hit for an entry whose generations are current;
/// `None` once it is of no use at all.
pub(super) fn usable(entry: Arc<Entry>, now_ms: u64) -> Option<Lookup> {
    if entry.is_fresh(now_ms) {
        Some(Lookup::Hit(entry))
    } else if !entry.retention_left(now_ms).is_zero() {
        Some(Lookup::Stale(entry))
    } else {
        None
    }
}

#[async_trait]
impl CacheStore for MemoryStore {
    async fn lookup(&self, key: &CacheKey, tags: &[String]) -> Result<Lookup, StoreError> {
        if let Some(entry) = self.entries.get(key) {
            if self.is_current(&entry.generations, tags) {
                return Ok(usable(entry, now_ms()).unwrap_or_else(|| Lookup::Miss(self.current_generations(tags))));
            }
        }
        Ok(Lookup::Miss(self.current_generations(tags)))
    }

    async fn store(&self, key: &CacheKey, entry: &Entry) -> Result<(), StoreError> {
        self.entries.insert(*key, Arc::new(entry.clone()));
        Ok(())
    }

    async fn invalidate(&self, tags: &[String]) -> Result<(), StoreError> {
        let mut map = self.generations.write().expect("generations lock");
        for tag in tags {
            map.insert(tag.clone(), new_generation());
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};

    fn entry(generations: Generations, ttl_ms: u64) -> Entry {
        let now = now_ms();
        Entry {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from_static(b"{}"),
            stored_at_ms: now,
            expires_at_ms: now + ttl_ms,
            stale_while_revalidate_ms: 0,
            stale_if_error_ms: 0,
            generations,
        }
    }

    fn tags() -> Vec<String> {
        vec!["users".to_string()]
    }

    #[tokio::test]
    async fn stores_then_hits_under_current_generations() {
        let store = MemoryStore::new(1 << 20);
        let Lookup::Miss(gens) = store.lookup(&CacheKey::for_test("/a"), &tags()).await.unwrap() else {
            panic!("cold store hit")
        };
        store
            .store(&CacheKey::for_test("/a"), &entry(gens, 60_000))
            .await
            .unwrap();
        assert!(matches!(
            store.lookup(&CacheKey::for_test("/a"), &tags()).await.unwrap(),
            Lookup::Hit(_)
        ));
        assert!(matches!(
            store.lookup(&CacheKey::for_test("/b"), &tags()).await.unwrap(),
            Lookup::Miss(_)
        ));
    }

    #[tokio::test]
    async fn invalidation_hides_entries_recorded_under_old_generations() {
        let store = MemoryStore::new(1 << 20);
        let Lookup::Miss(before) = store.lookup(&CacheKey::for_test("/a"), &tags()).await.unwrap() else {
            panic!()
        };
        store.invalidate(&tags()).await.unwrap();
        // A read that fetched generations before the write stores late:
        store
            .store(&CacheKey::for_test("/a"), &entry(before, 60_000))
            .await
            .unwrap();
        assert!(matches!(
            store.lookup(&CacheKey::for_test("/a"), &tags()).await.unwrap(),
            Lookup::Miss(_)
        ));
    }

    #[tokio::test]
    async fn expired_entries_are_not_served() {
        let store = MemoryStore::new(1 << 20);
        let Lookup::Miss(gens) = store.lookup(&CacheKey::for_test("/a"), &tags()).await.unwrap() else {
            panic!()
        };
        store.store(&CacheKey::for_test("/a"), &entry(gens, 0)).await.unwrap();
        assert!(matches!(
            store.lookup(&CacheKey::for_test("/a"), &tags()).await.unwrap(),
            Lookup::Miss(_)
        ));
    }
}
