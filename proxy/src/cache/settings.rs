//! The cache's settings, in two halves: where entries live (boot: the
//! store is built from it once) and how the request path treats them
//! (runtime: swapped on reload with the rules).

use std::time::Duration;

use http::HeaderName;

use crate::redis_layer::RedisTarget;

/// Where entries live and how the store talks to it. A change needs a
/// restart: a reload that changes any of it is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    pub backend: Backend,
    pub operation_timeout: Duration,
    /// How long a write waits for its invalidation to be acknowledged.
    pub invalidation_wait: Duration,
    /// How long past expiry, at least, an entry with the origin's
    /// validators is kept to be revalidated rather than fetched whole.
    pub revalidation_retention: Duration,
    pub breaker_failures: u32,
    pub breaker_open_for: Duration,
    pub key_prefix: String,
    /// Separates deployments sharing one Redis: folded into every key,
    /// generation and channel name. Defaults to the upstream's authority,
    /// so proxies in front of different backends never share entries,
    /// generations or purges.
    pub namespace: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// Bounded in-process store; the default without Redis.
    Memory { max_bytes: u64 },
    Redis {
        target: RedisTarget,
        /// Buckets entries are spread over (`cache.redis_buckets`); 0 takes
        /// the deployment's default (64 on a cluster, 1 elsewhere).
        buckets: usize,
        /// Bound of the in-process copies kept in front of Redis; 0 turns
        /// that tier off.
        l1_max_bytes: u64,
    },
}

impl Backend {
    pub fn kind(&self) -> &'static str {
        match self {
            Backend::Memory { .. } => "memory",
            Backend::Redis { .. } => "redis",
        }
    }
}

/// How the request path uses the cache; may change on reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheLimits {
    pub max_entry_bytes: u64,
    /// Requests whose key material (path, query, `vary` values) is larger
    /// are served without the cache: no lookup, nothing stored or indexed.
    pub max_key_bytes: u64,
    /// How long a miss's leader holds its lease; waiters give up after it.
    pub lease_ttl: Duration,
    /// Response header naming an answer's extra tags; stripped before
    /// clients see it. `None`: off.
    pub surrogate_key_header: Option<HeaderName>,
}
