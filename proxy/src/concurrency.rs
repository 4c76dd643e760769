//! How many requests may be at the backend at once: in total
//! (`upstream.max_concurrent_requests`) and per rule
//! (`routes[].max_concurrent_requests`).
//!
//! A backend that slows down otherwise collects every client's request
//! until it falls over; past the limit the proxy answers 503 at once
//! (nothing reaches the backend, so nothing is invalidated), and a cached
//! read may still be served stale. A slot is held until the backend's
//! response headers arrive: that is where a backend does its work.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::route::Rule;

pub struct UpstreamSlots {
    global: Option<Arc<Semaphore>>,
    per_rule: HashMap<&'static str, Arc<Semaphore>>,
}

/// Slots held while a request is at the backend.
pub struct Held {
    _global: Option<OwnedSemaphorePermit>,
    _rule: Option<OwnedSemaphorePermit>,
}

/// Which limit was full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    Global,
    Rule,
}

impl UpstreamSlots {
    /// `global` 0 means no global limit.
    pub fn new<'a>(global: usize, rules: impl IntoIterator<Item = &'a Rule>) -> UpstreamSlots {
        UpstreamSlots {
            global: (global > 0).then(|| Arc::new(Semaphore::new(global))),
            per_rule: rules
                .into_iter()
                .filter_map(|rule| Some((rule.name, Arc::new(Semaphore::new(rule.max_concurrent_requests?)))))
                .collect(),
        }
    }

    /// Slots for one request through `rule`, or which limit is full.
    pub fn try_hold(&self, rule: &str) -> Result<Held, Full> {
        let take = |semaphore: &Arc<Semaphore>| semaphore.clone().try_acquire_owned().ok();
        let rule = match self.per_rule.get(rule) {
            Some(semaphore) => Some(take(semaphore).ok_or(Full::Rule)?),
            None => None,
        };
        let global = match &self.global {
            Some(semaphore) => Some(take(semaphore).ok_or(Full::Global)?),
            None => None,
        };
        Ok(Held {
            _global: global,
            _rule: rule,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_rule_or_a_full_backend_refuses_and_slots_come_back() {
        let slots = UpstreamSlots {
            global: Some(Arc::new(Semaphore::new(2))),
            per_rule: HashMap::from([("slow", Arc::new(Semaphore::new(1)))]),
        };
        let first = slots.try_hold("slow").unwrap();
        assert_eq!(slots.try_hold("slow").err(), Some(Full::Rule));
        let other = slots.try_hold("fast").unwrap();
        assert_eq!(slots.try_hold("fast").err(), Some(Full::Global));
        drop((first, other));
        assert!(slots.try_hold("slow").is_ok());
    }
}
