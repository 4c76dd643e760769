//! The in-process store: bounded by bytes, one process only.
//!
//! The default when no Redis is configured. Entries live in a moka cache
//! (a well-kept concurrent cache with size-aware eviction and per-entry
//! expiry); tag generations in a map beside it, and the purge index in
//! another. Each entry weighs what it holds on the heap: its encoded size,
//! its decoded form's and the map's overhead, and what it costs the index,
//! so `memory_max_bytes` bounds all of it. Never fails.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::notification::RemovalCause;
use moka::sync::{Cache, CacheBuilder};

use super::entry::now_ms;
use super::purge::{is_under, place_of_prefix, prefixes_of, softly_expired};
use super::{
    new_generation, CacheKey, CacheStore, Entry, Filed, Generations, IndexInfo, Invalidate, Leases, Lookup, StoreError,
    StoreHealth, StoreState,
};
use crate::guard::local::{LocalLimiter, LocalRevocations};
use crate::guard::revocation::Revocation;
use crate::guard::{GuardCheck, Guards, Verdict};

pub struct MemoryStore {
    entries: Cache<CacheKey, Stored>,
    generations: RwLock<HashMap<String, String>>,
    /// Never locked while calling into `entries`, whose eviction listener
    /// takes it.
    index: Arc<Mutex<Index>>,
    /// How long past expiry, at least, entries with validators are kept.
    revalidation: Duration,
    limiter: LocalLimiter,
    revocations: LocalRevocations,
}

/// Keys by path, by segment-aligned prefix and by tag. Built to cost
/// little per entry: each path's own place holds its one key inline until
/// a second variant comes, and an entry is filed under its ancestors only
/// (a purge by prefix reads the prefix's own path too; the root's is every
/// indexed key).
#[derive(Default)]
struct Index {
    /// Each indexed entry's path and tags, to unindex it when it goes.
    places: HashMap<CacheKey, Filing>,
    by_path: HashMap<Box<str>, Keys>,
    by_prefix: HashMap<Box<str>, Keys>,
    by_tag: HashMap<Box<str>, Keys>,
}

struct Filing {
    path: Box<str>,
    tags: Box<[Box<str>]>,
}

/// The keys filed at one place.
enum Keys {
    One(CacheKey),
    Many(HashSet<CacheKey>),
}

impl Keys {
    fn insert(&mut self, key: CacheKey) {
        match self {
            Keys::One(one) if *one == key => {}
            Keys::One(one) => *self = Keys::Many(HashSet::from([*one, key])),
            Keys::Many(keys) => {
                keys.insert(key);
            }
        }
    }

    /// Removes `key`; whether the place is left empty.
    fn remove(&mut self, key: &CacheKey) -> bool {
        match self {
            Keys::One(one) => one == key,
            Keys::Many(keys) => {
                keys.remove(key);
                keys.is_empty()
            }
        }
    }

    fn copied(&self) -> Vec<CacheKey> {
        match self {
            Keys::One(one) => vec![*one],
            Keys::Many(keys) => keys.iter().copied().collect(),
        }
    }
}

/// The places above `path` it is filed under: its ancestors to the depth
/// cap, not the root, not itself.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    prefixes_of(path).filter(move |place| *place != path && *place != "/")
}

impl Index {
    fn add(&mut self, key: CacheKey, index: &IndexInfo<'_>) {
        match self.places.get(&key) {
            Some(filing)
                if *filing.path == *index.path
                    && filing
                        .tags
                        .iter()
                        .map(|t| &**t)
                        .eq(index.tags.iter().map(String::as_str)) =>
            {
                return
            }
            // Filed differently (the origin now names other tags): refile.
            Some(_) => self.remove(&key),
            None => {}
        }
        let file = |map: &mut HashMap<Box<str>, Keys>, place: &str| match map.get_mut(place) {
            Some(keys) => keys.insert(key),
            None => {
                map.insert(place.into(), Keys::One(key));
            }
        };
        file(&mut self.by_path, index.path);
        for prefix in ancestors(index.path) {
            file(&mut self.by_prefix, prefix);
        }
        for tag in index.tags {
            file(&mut self.by_tag, tag);
        }
        let filing = Filing {
            path: index.path.into(),
            tags: index.tags.iter().map(|t| t.as_str().into()).collect(),
        };
        self.places.insert(key, filing);
    }

    fn remove(&mut self, key: &CacheKey) {
        let Some(filing) = self.places.remove(key) else {
            return;
        };
        let unlink = |map: &mut HashMap<Box<str>, Keys>, place: &str| {
            if map.get_mut(place).is_some_and(|keys| keys.remove(key)) {
                map.remove(place);
            }
        };
        unlink(&mut self.by_path, &filing.path);
        for prefix in ancestors(&filing.path) {
            unlink(&mut self.by_prefix, prefix);
        }
        for tag in &filing.tags {
            unlink(&mut self.by_tag, tag);
        }
    }

    fn keys(map: &HashMap<Box<str>, Keys>, name: &str) -> Vec<CacheKey> {
        map.get(name).map(Keys::copied).unwrap_or_default()
    }
}

/// An entry and what filing it in the index costs, which its weight
/// includes.
#[derive(Clone)]
struct Stored {
    entry: Arc<Entry>,
    index_bytes: u32,
}

impl AsRef<Entry> for Stored {
    fn as_ref(&self) -> &Entry {
        &self.entry
    }
}

impl Stored {
    fn weight(&self) -> u32 {
        encoded_weight(self).saturating_add(self.index_bytes)
    }
}

/// An entry's weight in a bounded map: what holding it costs the heap.
/// Its encoded size, plus what the decoded form adds to it (each header's
/// slot in its `HeaderMap`, the shared buffers' headers, the `Entry` and
/// its `Arc`) and the map's own node for it (moka's entry, deques and
/// timer wheel), so `memory_max_bytes` bounds what entries really take.
/// The figures are measured: tests/entry_weight.rs counts what 1 KB
/// entries hold and fails if their weight falls short of it (or passes
/// it by more than 30 %). The allocator's own overhead comes on top.
pub(super) fn encoded_weight<V: AsRef<Entry>>(value: &V) -> u32 {
    const PER_HEADER: usize = 104;
    const PER_ENTRY: usize = 600;
    let entry = value.as_ref();
    let weight = entry.encoded_len() + entry.headers.len() * PER_HEADER + PER_ENTRY;
    u32::try_from(weight).unwrap_or(u32::MAX)
}

/// Bytes filing an entry at `index` adds to the in-memory index: each
/// place's name (shared places are counted for every entry: an upper
/// bound), the entry's own record of its places, and the maps' slots.
fn index_cost(index: &IndexInfo<'_>) -> u32 {
    const PER_PLACE: usize = 80;
    // Its record, its path's place, its ancestors' and its tags'.
    let places = 2 + ancestors(index.path).count() + index.tags.len();
    let names: usize = 2 * index.path.len()
        + ancestors(index.path).map(str::len).sum::<usize>()
        + 2 * index.tags.iter().map(String::len).sum::<usize>();
    u32::try_from(names + places * PER_PLACE).unwrap_or(u32::MAX)
}

/// Drops each value once its entry is of no use, fresh or stale; an entry
/// with validators is kept at least `revalidation` past expiry.
struct EntryExpiry {
    revalidation: Duration,
}

impl<V: AsRef<Entry>> moka::Expiry<CacheKey, V> for EntryExpiry {
    fn expire_after_create(&self, _key: &CacheKey, value: &V, _now: Instant) -> Option<Duration> {
        Some(value.as_ref().retention_left(now_ms(), self.revalidation))
    }

    /// A replaced value lives as long as the new entry needs, not the old.
    fn expire_after_update(
        &self,
        _key: &CacheKey,
        value: &V,
        _now: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.as_ref().retention_left(now_ms(), self.revalidation))
    }
}

/// A concurrent map of entries bounded by `weigh`, each expiring with its
/// entry; the memory store and the Redis store's L1 both use it.
pub(super) fn bounded_entries<V>(
    max_bytes: u64,
    weigh: fn(&V) -> u32,
    revalidation: Duration,
) -> CacheBuilder<CacheKey, V, Cache<CacheKey, V>>
where
    V: AsRef<Entry> + Clone + Send + Sync + 'static,
{
    Cache::builder()
        .max_capacity(max_bytes)
        .weigher(move |_key, value: &V| weigh(value))
        .expire_after(EntryExpiry { revalidation })
}

impl MemoryStore {
    /// A store of at most `max_bytes`, keeping entries with validators at
    /// least `revalidation` past expiry.
    pub fn new(max_bytes: u64, revalidation: Duration) -> MemoryStore {
        let index = Arc::new(Mutex::new(Index::default()));
        let unindex = index.clone();
        let entries = bounded_entries(max_bytes, Stored::weight, revalidation)
            .eviction_listener(move |key: Arc<CacheKey>, _, cause| {
                if cause != RemovalCause::Replaced {
                    unindex.lock().expect("index lock").remove(&key);
                }
            })
            .build();
        MemoryStore {
            entries,
            generations: RwLock::new(HashMap::new()),
            index,
            revalidation,
            limiter: LocalLimiter::default(),
            revocations: LocalRevocations::default(),
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
pub(super) fn usable(entry: Arc<Entry>, now_ms: u64, revalidation: Duration) -> Option<Lookup> {
    if entry.is_fresh(now_ms) {
        Some(Lookup::Hit(entry))
    } else if !entry.retention_left(now_ms, revalidation).is_zero() {
        Some(Lookup::Stale(entry))
    } else {
        None
    }
}

#[async_trait]
impl CacheStore for MemoryStore {
    async fn lookup(&self, key: &CacheKey, tags: &[String]) -> Result<Lookup, StoreError> {
        Ok(self.lookup_now(key, tags))
    }

    async fn store(&self, key: &CacheKey, entry: &Entry, index: &IndexInfo<'_>) -> Result<(), StoreError> {
        // Indexed first: an insert may evict at once, and the eviction
        // listener then unindexes it.
        self.index.lock().expect("index lock").add(*key, index);
        let stored = Stored {
            entry: Arc::new(entry.detached()),
            index_bytes: index_cost(index),
        };
        self.entries.insert(*key, stored);
        Ok(())
    }

    async fn filed(&self, place: Filed<'_>) -> Result<Vec<CacheKey>, StoreError> {
        let index = self.index.lock().expect("index lock");
        Ok(match place {
            Filed::Path(path) => Index::keys(&index.by_path, path),
            Filed::Prefix("/") => index.places.keys().copied().collect(),
            Filed::Prefix(prefix) => {
                let (place, filter) = place_of_prefix(prefix);
                // Entries below the place; then its own, or, past the
                // depth cap, those below the prefix itself.
                let mut keys = Index::keys(&index.by_prefix, place);
                if filter {
                    keys.retain(|key| index.places.get(key).is_some_and(|f| is_under(&f.path, prefix)));
                } else {
                    keys.extend(Index::keys(&index.by_path, prefix));
                }
                keys
            }
            Filed::Tag(tag) => Index::keys(&index.by_tag, tag),
        })
    }

    async fn remove(&self, keys: Vec<CacheKey>, soft: bool) -> Result<u64, StoreError> {
        let now = now_ms();
        let mut removed = 0;
        for key in keys {
            let Some(stored) = self.entries.get(&key) else { continue };
            removed += 1;
            if soft {
                let expired = Stored {
                    entry: Arc::new(softly_expired(&stored.entry, now)),
                    ..stored
                };
                self.entries.insert(key, expired);
            } else {
                self.entries.invalidate(&key);
            }
        }
        Ok(removed)
    }
}

#[async_trait]
impl Invalidate for MemoryStore {
    async fn invalidate(&self, tags: &[String]) -> Result<(), StoreError> {
        let mut map = self.generations.write().expect("generations lock");
        for tag in tags {
            map.insert(tag.clone(), new_generation());
        }
        Ok(())
    }
}

/// Nothing to share: every lease is granted, without a token.
impl Leases for MemoryStore {}

/// Rate limits and revocations in this process: the memory store serves
/// one instance, so its limits are this instance's.
#[async_trait]
impl Guards for MemoryStore {
    async fn check(&self, check: &GuardCheck) -> Result<Verdict, StoreError> {
        Ok(self.check_now(check))
    }

    // Both at once, without the futures the trait's default awaits: a hit
    // of this store does no I/O.
    async fn lookup_checked(
        &self,
        key: &CacheKey,
        tags: &[String],
        check: &GuardCheck,
    ) -> (Result<Lookup, StoreError>, Result<Verdict, StoreError>) {
        (Ok(self.lookup_now(key, tags)), Ok(self.check_now(check)))
    }

    async fn revoke(&self, revocation: &Revocation) -> Result<(), StoreError> {
        self.revocations.revoke(revocation);
        Ok(())
    }
}

impl MemoryStore {
    fn lookup_now(&self, key: &CacheKey, tags: &[String]) -> Lookup {
        if let Some(Stored { entry, .. }) = self.entries.get(key) {
            if self.is_current(&entry.generations, tags) {
                return usable(entry, now_ms(), self.revalidation)
                    .unwrap_or_else(|| Lookup::Miss(self.current_generations(tags)));
            }
        }
        Lookup::Miss(self.current_generations(tags))
    }

    fn check_now(&self, check: &GuardCheck) -> Verdict {
        Verdict {
            decisions: check
                .cells
                .iter()
                .map(|cell| self.limiter.decide(&cell.id, cell.cell))
                .collect(),
            standing: check
                .token
                .as_ref()
                .map(|claims| self.revocations.standing(claims))
                .unwrap_or_default(),
        }
    }
}

#[async_trait]
impl StoreHealth for MemoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }

    fn state(&self) -> StoreState {
        // Counts are kept up to date by moka's maintenance, which otherwise
        // waits for the next write; once a second is cheap.
        self.entries.run_pending_tasks();
        StoreState {
            local_entries: self.entries.entry_count(),
            local_bytes: self.entries.weighted_size(),
            ..StoreState::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::purge::INDEXED_PREFIX_DEPTH;
    use crate::cache::{PurgeRequest, Store};
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

    const INDEX: IndexInfo<'static> = IndexInfo { path: "/a", tags: &[] };

    /// Stores a fresh entry for each path, tagged with its first segment.
    async fn filled(paths: &[&str]) -> MemoryStore {
        let store = MemoryStore::new(1 << 20, Duration::ZERO);
        for path in paths {
            let tag = vec![path.split('/').nth(1).unwrap().to_owned()];
            let Lookup::Miss(gens) = store.lookup(&CacheKey::for_test(path), &tag).await.unwrap() else {
                panic!("cold store hit")
            };
            let mut e = entry(gens, 60_000);
            e.stale_while_revalidate_ms = 60_000;
            let index = IndexInfo { path, tags: &tag };
            store.store(&CacheKey::for_test(path), &e, &index).await.unwrap();
        }
        store
    }

    async fn state(store: &MemoryStore, path: &str) -> &'static str {
        let tag = vec![path.split('/').nth(1).unwrap().to_owned()];
        match store.lookup(&CacheKey::for_test(path), &tag).await.unwrap() {
            Lookup::Hit(_) => "hit",
            Lookup::Stale(_) => "stale",
            Lookup::Miss(_) => "miss",
        }
    }

    #[tokio::test]
    async fn a_replaced_entry_lives_as_long_as_it_needs_and_is_refiled_under_its_new_tags() {
        let store = MemoryStore::new(1 << 20, Duration::ZERO);
        let key = CacheKey::for_test("/a");
        let Lookup::Miss(gens) = store.lookup(&key, &tags()).await.unwrap() else {
            panic!("cold store hit")
        };
        let old_tags = vec!["author:7".to_owned()];
        let new_tags = vec!["author:8".to_owned()];
        let filed = |tags| IndexInfo { path: "/a", tags };
        store
            .store(&key, &entry(gens.clone(), 50), &filed(&old_tags))
            .await
            .unwrap();
        store
            .store(&key, &entry(gens, 60_000), &filed(&new_tags))
            .await
            .unwrap();
        // Expiry is what is tested: wait out the old entry's 50 ms.
        std::thread::sleep(Duration::from_millis(120));
        store.entries.run_pending_tasks();
        assert!(
            store.entries.contains_key(&key),
            "evicted at the replaced entry's deadline"
        );
        let by = |tag: &str| PurgeRequest {
            tags: vec![tag.to_owned()],
            soft: true,
            ..Default::default()
        };
        store.purge(&by("author:7")).await.unwrap();
        assert!(matches!(store.lookup(&key, &tags()).await.unwrap(), Lookup::Hit(_)));
        store.purge(&by("author:8")).await.unwrap();
        // Marked expired, with no stale window to be served in.
        assert!(matches!(store.lookup(&key, &tags()).await.unwrap(), Lookup::Miss(_)));
    }

    #[tokio::test]
    async fn purges_by_path_prefix_and_tag_empty_exactly_what_they_name() {
        let paths = ["/users", "/users/1", "/users/1/posts", "/usersx", "/posts/1"];
        let purge = |request: PurgeRequest| async move {
            let store = filled(&paths).await;
            let purged = store.purge(&request).await.unwrap();
            let mut states = Vec::new();
            for path in paths {
                states.push(state(&store, path).await);
            }
            (purged, states)
        };
        let by_path = purge(PurgeRequest {
            paths: vec!["/users/1".into()],
            ..Default::default()
        })
        .await;
        assert_eq!(by_path.0.paths, 1);
        assert_eq!(by_path.1, ["hit", "miss", "hit", "hit", "hit"]);
        let by_prefix = purge(PurgeRequest {
            prefixes: vec!["/users/".into()],
            ..Default::default()
        })
        .await;
        assert_eq!(by_prefix.0.prefixes, 3);
        assert_eq!(by_prefix.1, ["miss", "miss", "miss", "hit", "hit"]);
        let by_tag = purge(PurgeRequest {
            tags: vec!["posts".into()],
            ..Default::default()
        })
        .await;
        assert_eq!(by_tag.0.tags, 1);
        assert_eq!(by_tag.1, ["hit", "hit", "hit", "hit", "miss"]);
        let everything = purge(PurgeRequest {
            prefixes: vec!["/".into()],
            ..Default::default()
        })
        .await;
        assert_eq!(everything.1, ["miss"; 5]);
        let soft = purge(PurgeRequest {
            prefixes: vec!["/users".into()],
            soft: true,
            ..Default::default()
        })
        .await;
        assert_eq!(soft.1, ["stale", "stale", "stale", "hit", "hit"]);
        let soft_tag = purge(PurgeRequest {
            tags: vec!["posts".into()],
            soft: true,
            ..Default::default()
        })
        .await;
        assert_eq!(soft_tag.1, ["hit", "hit", "hit", "hit", "stale"]);
    }

    #[tokio::test]
    async fn huge_paths_count_their_index_against_the_bound_and_file_few_places() {
        const BOUND: u64 = 256 * 1024;
        let store = MemoryStore::new(BOUND, Duration::ZERO);
        for i in 0..64 {
            let path = format!("/p{i}{}", "/a".repeat(8_000));
            let key = CacheKey::for_test(&path);
            let Lookup::Miss(gens) = store.lookup(&key, &tags()).await.unwrap() else {
                panic!("cold store hit")
            };
            let index = IndexInfo {
                path: &path,
                tags: &tags(),
            };
            store.store(&key, &entry(gens, 60_000), &index).await.unwrap();
            let weight = store.entries.get(&key).map(|s| s.weight());
            assert!(weight.is_none_or(|w| w as usize > 2 * path.len()), "index not weighed");
        }
        store.entries.run_pending_tasks();
        assert!(store.entries.weighted_size() <= BOUND);
        let index = store.index.lock().unwrap();
        let entries = store.entries.entry_count() as usize;
        assert_eq!(index.places.len(), entries, "evicted entries left in the index");
        // `/` is shared; each entry adds its depth-capped prefixes.
        assert!(index.by_prefix.len() <= 1 + entries * INDEXED_PREFIX_DEPTH);
    }

    #[tokio::test]
    async fn stores_then_hits_under_current_generations() {
        let store = MemoryStore::new(1 << 20, Duration::ZERO);
        let Lookup::Miss(gens) = store.lookup(&CacheKey::for_test("/a"), &tags()).await.unwrap() else {
            panic!("cold store hit")
        };
        store
            .store(&CacheKey::for_test("/a"), &entry(gens, 60_000), &INDEX)
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
        let store = MemoryStore::new(1 << 20, Duration::ZERO);
        let Lookup::Miss(before) = store.lookup(&CacheKey::for_test("/a"), &tags()).await.unwrap() else {
            panic!()
        };
        store.invalidate(&tags()).await.unwrap();
        // A read that fetched generations before the write stores late:
        store
            .store(&CacheKey::for_test("/a"), &entry(before, 60_000), &INDEX)
            .await
            .unwrap();
        assert!(matches!(
            store.lookup(&CacheKey::for_test("/a"), &tags()).await.unwrap(),
            Lookup::Miss(_)
        ));
    }

    #[tokio::test]
    async fn expired_entries_are_not_served() {
        let store = MemoryStore::new(1 << 20, Duration::ZERO);
        let Lookup::Miss(gens) = store.lookup(&CacheKey::for_test("/a"), &tags()).await.unwrap() else {
            panic!()
        };
        store
            .store(&CacheKey::for_test("/a"), &entry(gens, 0), &INDEX)
            .await
            .unwrap();
        assert!(matches!(
            store.lookup(&CacheKey::for_test("/a"), &tags()).await.unwrap(),
            Lookup::Miss(_)
        ));
    }
}
