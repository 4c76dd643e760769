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

/// The backend's limit, all rules together: a boot setting.
pub struct UpstreamSlots {
    global: Option<Arc<Semaphore>>,
}

/// Each rule's own limit: runtime settings, rebuilt on reload.
#[derive(Debug, Default)]
pub struct RuleSlots {
    /// `(limit, slots)` by rule name.
    per_rule: HashMap<&'static str, (usize, Arc<Semaphore>)>,
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
    pub fn new(global: usize) -> UpstreamSlots {
        UpstreamSlots {
            global: (global > 0).then(|| Arc::new(Semaphore::new(global))),
        }
    }

    /// Slots for one request through `rule`, or which limit is full.
    pub fn try_hold(&self, rules: &RuleSlots, rule: &str) -> Result<Held, Full> {
        let take = |semaphore: &Arc<Semaphore>| semaphore.clone().try_acquire_owned().ok();
        let rule = match rules.per_rule.get(rule) {
            Some((_, semaphore)) => Some(take(semaphore).ok_or(Full::Rule)?),
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

impl RuleSlots {
    /// Slots for the rules that have a limit. A rule whose name and limit
    /// a reload kept keeps its slots, so requests still at the backend
    /// under the previous rules count against the new ones too.
    pub fn new<'a>(rules: impl IntoIterator<Item = &'a Rule>, previous: Option<&RuleSlots>) -> RuleSlots {
        let per_rule = rules
            .into_iter()
            .filter_map(|rule| {
                let limit = rule.max_concurrent_requests?;
                let kept = previous
                    .and_then(|p| p.per_rule.get(rule.name))
                    .filter(|(old, _)| *old == limit)
                    .map(|(_, slots)| slots.clone());
                Some((
                    rule.name,
                    (limit, kept.unwrap_or_else(|| Arc::new(Semaphore::new(limit)))),
                ))
            })
            .collect();
        RuleSlots { per_rule }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_rule_or_a_full_backend_refuses_and_slots_come_back() {
        let slots = UpstreamSlots::new(2);
        let rules = RuleSlots {
            per_rule: HashMap::from([("slow", (1, Arc::new(Semaphore::new(1))))]),
        };
        let first = slots.try_hold(&rules, "slow").unwrap();
        assert_eq!(slots.try_hold(&rules, "slow").err(), Some(Full::Rule));
        let other = slots.try_hold(&rules, "fast").unwrap();
        assert_eq!(slots.try_hold(&rules, "fast").err(), Some(Full::Global));
        drop((first, other));
        assert!(slots.try_hold(&rules, "slow").is_ok());
    }
}
