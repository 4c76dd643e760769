//! The memory store's weights cover what its entries really hold on the
//! heap, so `memory_max_bytes` bounds memory rather than a fraction of it.
//! Counted by this binary's own allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use proxy::cache::memory::MemoryStore;
use proxy::cache::{CacheKey, CacheStore, Entry, IndexInfo, KeyParts, ScopeKey, StoreHealth};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// An answer as an API gives it: a 1 KB JSON body, a few headers.
fn answer(i: usize) -> Entry {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("etag", HeaderValue::from_str(&format!("\"v{i}\"")).unwrap());
    headers.insert("vary", HeaderValue::from_static("accept"));
    Entry {
        status: StatusCode::OK,
        headers,
        body: Bytes::from(vec![b'x'; 1024]),
        stored_at_ms: 0,
        expires_at_ms: u64::MAX / 2,
        stale_while_revalidate_ms: 0,
        stale_if_error_ms: 0,
        generations: vec![("users".into(), format!("{i:022}"))],
    }
}

#[tokio::test(flavor = "current_thread")]
async fn an_entry_weighs_at_least_what_it_holds_and_not_much_more() {
    const ENTRIES: usize = 5_000;
    let store = MemoryStore::new(1 << 30, Duration::from_secs(60));
    let tags = vec!["users".to_string()];
    let answers: Vec<(String, Entry)> = (0..ENTRIES).map(|i| (format!("/users/u{i}"), answer(i))).collect();
    let before = LIVE.load(Ordering::Relaxed);
    for (path, entry) in &answers {
        let index = IndexInfo { path, tags: &tags };
        let key = CacheKey::build(&KeyParts {
            rule: "users",
            path,
            query: None,
            vary: &[],
            scope: ScopeKey::Shared,
        });
        store.store(&key, entry, &index).await.unwrap();
    }
    let state = store.state();
    let held = (LIVE.load(Ordering::Relaxed) - before) as f64 / ENTRIES as f64;
    assert_eq!(state.local_entries, ENTRIES as u64, "entries were evicted");
    let weighed = state.local_bytes as f64 / ENTRIES as f64;
    assert!(weighed >= held, "an entry weighs {weighed:.0} B but holds {held:.0} B");
    assert!(
        weighed <= 1.3 * held,
        "an entry weighs {weighed:.0} B for the {held:.0} B it holds"
    );
}
