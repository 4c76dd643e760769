//! The one question the cached read path asks about a miss — what now? —
//! answered by coalescing within this instance ([`Flights`]) and leases
//! across the instances sharing a store.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Flights, Handed, Leader, Outcome, Role};
use crate::cache::entry::now_ms;
use crate::cache::{CacheKey, Entry, Generations, Lease, Lookup, Store};
use crate::metrics::Metrics;

/// How often an instance waiting on another's lease checks for the entry.
const LEASE_POLL: Duration = Duration::from_millis(10);

/// What to do about a miss.
pub enum MissPlan {
    /// Another request fetched it (here, or on another instance) under the
    /// generations this miss read: serve it as a hit.
    Serve(Arc<Entry>),
    /// Another request here just found the upstream failing: serve the
    /// miss's stale entry, which may still be served on error, instead of
    /// asking again.
    ServeStale,
    /// Fetch, and hand the outcome to the misses that join meanwhile; the
    /// lease (if the store granted one with a token) goes back when dropped.
    Lead(Leader, Option<LeaseGuard>),
    /// Fetch for yourself.
    FetchOwn,
}

/// Answers [`MissPlan`]s for one proxy.
pub struct Coalescer<'a> {
    pub flights: &'a Arc<Flights>,
    pub store: &'a Arc<dyn Store>,
    pub metrics: &'a Metrics,
}

/// What a miss brings to the question.
pub struct Miss<'a> {
    pub key: CacheKey,
    /// The generations its lookup read: what proves an entry fetched by
    /// another request may be served to this one.
    pub generations: &'a Generations,
    pub tags: &'a [String],
    /// The expired entry it holds, if any: served when the upstream fails
    /// and its `stale-if-error` window allows, at that moment.
    pub stale: Option<&'a Entry>,
    /// How long to wait for a leader here.
    pub wait_limit: Duration,
    pub lease_ttl: Duration,
}

impl Coalescer<'_> {
    pub async fn plan(&self, miss: Miss<'_>) -> MissPlan {
        match self.flights.join(miss.key) {
            Role::Waiter(waiter) => {
                self.metrics.coalesced("joined");
                match waiter.outcome(miss.generations, miss.wait_limit).await {
                    Handed::Entry(entry) => {
                        self.metrics.coalesced("shared");
                        MissPlan::Serve(entry)
                    }
                    Handed::UpstreamFailed if miss.stale.is_some_and(|e| e.may_serve_on_error(now_ms())) => {
                        MissPlan::ServeStale
                    }
                    Handed::UpstreamFailed | Handed::Nothing => MissPlan::FetchOwn,
                }
            }
            Role::Leader(leader) => match self.store.lease(&miss.key, miss.lease_ttl).await {
                Ok(Lease::Granted(token)) => {
                    MissPlan::Lead(leader, token.map(|token| LeaseGuard::new(self.store, miss.key, token)))
                }
                Ok(Lease::HeldElsewhere) => match self.entry_from_elsewhere(&miss).await {
                    Some(entry) => {
                        leader.finish(Outcome::Entry(entry.clone()));
                        MissPlan::Serve(entry)
                    }
                    None => MissPlan::Lead(leader, None),
                },
                Err(_) => MissPlan::Lead(leader, None),
            },
        }
    }

    /// Leads a background refresh of `key`, unless this instance is already
    /// fetching it or another instance holds its lease.
    pub async fn lead_refresh(&self, key: CacheKey, lease_ttl: Duration) -> Option<(Leader, Option<LeaseGuard>)> {
        let Role::Leader(leader) = self.flights.join(key) else {
            return None;
        };
        match self.store.lease(&key, lease_ttl).await {
            Ok(Lease::Granted(token)) => Some((leader, token.map(|token| LeaseGuard::new(self.store, key, token)))),
            Ok(Lease::HeldElsewhere) => None,
            Err(_) => Some((leader, None)),
        }
    }

    /// Another instance holds the lease on the key: waits for the entry it
    /// is fetching, until the lease is given back or expires (at most
    /// `lease_ttl`). `None`: fetch it yourself.
    async fn entry_from_elsewhere(&self, miss: &Miss<'_>) -> Option<Arc<Entry>> {
        self.metrics.lease("held_elsewhere");
        let give_up_at = Instant::now() + miss.lease_ttl;
        while Instant::now() < give_up_at {
            tokio::time::sleep(LEASE_POLL).await;
            let still_leased = matches!(self.store.leased(&miss.key).await, Ok(true));
            // Looked up after the lease check: a holder stores before it
            // gives the lease back, so a lease found gone means the entry
            // is there now or will not be.
            match self.store.lookup(&miss.key, miss.tags).await {
                Ok(Lookup::Hit(entry)) => {
                    self.metrics.lease("entry_from_elsewhere");
                    return Some(entry);
                }
                Ok(Lookup::Miss(_)) if still_leased => {}
                _ => break,
            }
        }
        self.metrics.lease("fetched_anyway");
        None
    }
}

/// A lease held while this instance fetches; given back when dropped.
pub struct LeaseGuard {
    store: Arc<dyn Store>,
    key: CacheKey,
    token: String,
}

impl LeaseGuard {
    fn new(store: &Arc<dyn Store>, key: CacheKey, token: String) -> LeaseGuard {
        LeaseGuard {
            store: store.clone(),
            key,
            token,
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        let (store, key, token) = (self.store.clone(), self.key, std::mem::take(&mut self.token));
        // Off the request path: the answer need not wait for it.
        tokio::spawn(async move { store.release(&key, &token).await });
    }
}
