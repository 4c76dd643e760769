//! The response cache: policy, storability, status reporting and stores.
//!
//! This module decides *what* may be cached and how it is reported; the
//! [`CacheStore`] implementations decide *where* (Redis or process memory).
//!
//! Correctness rests on tag generations. Every cacheable rule lists tags;
//! each tag has a current generation, a random token. Before a miss is
//! forwarded, the current generations of the rule's tags are read, and the
//! stored entry records them. A write through the proxy replaces the
//! generations of the tags it invalidates with fresh random tokens before
//! its response is released. A lookup serves an entry only if every
//! recorded generation is still current, so:
//! - an entry cached before a write is never served after it;
//! - a read that raced a write (read generations, write committed and
//!   bumped, read stored) recorded the old generation and is never served;
//! - a generation lost to a Redis restart or eviction reads as missing,
//!   which is a miss, and the fresh random token that replaces it matches
//!   no entry recorded before (a counter restarting at 0 could).

pub mod breaker;
pub mod entry;
pub mod key;
pub mod memory;
pub mod policy;
pub mod purge;
pub mod redis;
mod request;
pub mod settings;
pub mod status;
pub mod store;

pub use self::entry::{Entry, Generations};
pub use self::key::{CacheKey, KeyParts, RequestKey, ScopeKey};
pub use self::policy::{
    must_revalidate, storability, storable_headers, CachePolicy, Freshness, Lifetime, NotStorable, Scope,
};
pub use self::purge::{Filed, IndexInfo, PurgeRequest, Purged};
pub use self::request::RequestDirectives;
pub use self::status::{Bypass, CacheStatus, StaleReason, CACHE_STATUS, X_CACHE};
pub use self::store::{
    new_generation, CacheStore, Invalidate, Lease, Leases, Lookup, Store, StoreError, StoreHealth, StoreState,
};
