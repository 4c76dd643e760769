//! Request coalescing within one instance: concurrent misses for one cache
//! key send one upstream request.
//!
//! The first miss for a key becomes its leader and fetches; misses arriving
//! while it does wait for its outcome. The leader hands over only an entry
//! it could store: a waiter then serves it exactly as it would serve a hit
//! right after the leader stored it, after checking that the entry was
//! fetched under the generations the waiter's own lookup read (so a write
//! completed before the waiter arrived is never undone). An uncacheable
//! answer (`private`, `Set-Cookie`, an error, too large) is never handed
//! over: each waiter fetches its own. When the upstream failed, waiters
//! holding a stale entry they may serve on error serve it rather than ask
//! the failing upstream again. Keys include the scope, so `user` scoped
//! misses coalesce only within one subject.
//!
//! [`plan`] puts this and the store's leases (coalescing across
//! instances) behind one question the request path asks.

pub mod plan;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::cache::{CacheKey, Entry, Generations};

/// What a leader hands its waiters.
#[derive(Clone)]
pub enum Outcome {
    /// A storable answer, as stored.
    Entry(Arc<Entry>),
    /// Nothing to share: each waiter fetches its own.
    Uncacheable,
    /// The upstream failed (an error or a 5xx): a waiter holding a stale
    /// entry it may serve on error serves it instead of asking again.
    UpstreamFailed,
}

/// What a waiter learns from its leader.
pub enum Handed {
    /// An entry it may serve as a hit.
    Entry(Arc<Entry>),
    UpstreamFailed,
    /// Nothing usable: fetch your own.
    Nothing,
}

type Slot = watch::Receiver<Option<Outcome>>;

#[derive(Default)]
pub struct Flights {
    in_flight: Mutex<HashMap<CacheKey, Slot>>,
}

/// A miss's part in its key's flight.
pub enum Role {
    Leader(Leader),
    Waiter(Waiter),
}

impl Flights {
    pub fn join(self: &Arc<Self>, key: CacheKey) -> Role {
        let mut in_flight = self.in_flight.lock().expect("flights lock");
        if let Some(slot) = in_flight.get(&key) {
            return Role::Waiter(Waiter { slot: slot.clone() });
        }
        let (outcome, slot) = watch::channel(None);
        in_flight.insert(key, slot);
        Role::Leader(Leader {
            flights: self.clone(),
            key,
            outcome,
        })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.in_flight.lock().expect("flights lock").len()
    }
}

/// The one miss that fetches. Dropping it without [`finish`](Self::finish)
/// (the client went away, the fetch failed) releases the waiters to fetch
/// their own.
pub struct Leader {
    flights: Arc<Flights>,
    key: CacheKey,
    outcome: watch::Sender<Option<Outcome>>,
}

impl Leader {
    pub fn finish(self, outcome: Outcome) {
        self.outcome.send_replace(Some(outcome));
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        // No other leader for this key can exist until this one is gone.
        self.flights.in_flight.lock().expect("flights lock").remove(&self.key);
    }
}

pub struct Waiter {
    slot: Slot,
}

impl Waiter {
    /// The leader's entry if it may be served to a miss that read
    /// `generations`, or news that the upstream failed; `Nothing` (fetch
    /// your own) if the answer was not storable, was fetched under other
    /// generations, or did not come within `limit`.
    pub async fn outcome(mut self, generations: &Generations, limit: Duration) -> Handed {
        let Ok(Ok(outcome)) = tokio::time::timeout(limit, self.slot.wait_for(Option::is_some)).await else {
            return Handed::Nothing;
        };
        match outcome.clone() {
            Some(Outcome::Entry(entry)) if &entry.generations == generations => Handed::Entry(entry),
            Some(Outcome::UpstreamFailed) => Handed::UpstreamFailed,
            _ => Handed::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::entry::now_ms;
    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};

    const LIMIT: Duration = Duration::from_secs(5);

    fn generations(g: &str) -> Generations {
        vec![("users".into(), g.into())]
    }

    fn entry(g: &str) -> Arc<Entry> {
        Arc::new(Entry {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from_static(b"{}"),
            stored_at_ms: now_ms(),
            expires_at_ms: now_ms() + 60_000,
            stale_while_revalidate_ms: 0,
            stale_if_error_ms: 0,
            generations: generations(g),
        })
    }

    fn leader(role: Role) -> Leader {
        match role {
            Role::Leader(l) => l,
            Role::Waiter(_) => panic!("expected to lead"),
        }
    }

    fn waiter(role: Role) -> Waiter {
        match role {
            Role::Waiter(w) => w,
            Role::Leader(_) => panic!("expected to wait"),
        }
    }

    #[tokio::test]
    async fn the_first_miss_leads_and_the_others_get_its_entry() {
        let flights = Arc::new(Flights::default());
        let lead = leader(flights.join(CacheKey::for_test("/a")));
        let waiters: Vec<Waiter> = (0..3).map(|_| waiter(flights.join(CacheKey::for_test("/a")))).collect();
        let other = leader(flights.join(CacheKey::for_test("/b")));
        lead.finish(Outcome::Entry(entry("g1")));
        for w in waiters {
            assert!(matches!(w.outcome(&generations("g1"), LIMIT).await, Handed::Entry(_)));
        }
        assert_eq!(flights.len(), 1, "a finished flight is gone; /b's remains");
        drop(other);
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn waiters_fetch_their_own_when_there_is_nothing_they_may_serve() {
        let flights = Arc::new(Flights::default());
        // Uncacheable answer.
        let lead = leader(flights.join(CacheKey::for_test("/a")));
        let w = waiter(flights.join(CacheKey::for_test("/a")));
        lead.finish(Outcome::Uncacheable);
        assert!(matches!(w.outcome(&generations("g1"), LIMIT).await, Handed::Nothing));
        // Fetched under generations a write has since replaced.
        let lead = leader(flights.join(CacheKey::for_test("/a")));
        let w = waiter(flights.join(CacheKey::for_test("/a")));
        lead.finish(Outcome::Entry(entry("before-write")));
        assert!(matches!(
            w.outcome(&generations("after-write"), LIMIT).await,
            Handed::Nothing
        ));
        // The leader went away.
        let lead = leader(flights.join(CacheKey::for_test("/a")));
        let w = waiter(flights.join(CacheKey::for_test("/a")));
        drop(lead);
        assert!(matches!(w.outcome(&generations("g1"), LIMIT).await, Handed::Nothing));
        // The leader took too long.
        let _lead = leader(flights.join(CacheKey::for_test("/b")));
        let w = waiter(flights.join(CacheKey::for_test("/b")));
        assert!(matches!(
            w.outcome(&generations("g1"), Duration::from_millis(1)).await,
            Handed::Nothing
        ));
        // The upstream failed: waiters are told so.
        let lead = leader(flights.join(CacheKey::for_test("/c")));
        let w = waiter(flights.join(CacheKey::for_test("/c")));
        lead.finish(Outcome::UpstreamFailed);
        assert!(matches!(
            w.outcome(&generations("g1"), LIMIT).await,
            Handed::UpstreamFailed
        ));
    }
}
