//! Invalidations Redis has not acknowledged yet, per group of buckets.
//!
//! A write replaces its tags' generations in every group (one node: one
//! group; a cluster: one per bucket). A group that did not acknowledge
//! keeps the tags here; this instance serves nothing from that group
//! until a later attempt lands them (the store applies them before any
//! other operation on the group), while the groups that did acknowledge
//! serve on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Default)]
pub struct Pending {
    /// Each (group, tag) with the sequence number of its latest failed
    /// attempt: settling removes a pair only if no newer failure was
    /// recorded while the retry ran.
    tags: Mutex<BTreeMap<(usize, String), u64>>,
    seq: AtomicU64,
    /// Whether anything is pending: the cheap check on every operation.
    any: AtomicBool,
}

/// What was pending in a group when a retry began.
pub struct Snapshot {
    group: usize,
    tags: Vec<(String, u64)>,
}

impl Snapshot {
    pub fn tags(&self) -> Vec<String> {
        self.tags.iter().map(|(t, _)| t.clone()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }
}

impl Pending {
    pub fn any(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    pub fn remember(&self, group: usize, tags: &[String]) {
        let seq = self.seq.fetch_add(1, Ordering::AcqRel);
        let mut pending = self.tags.lock().expect("pending lock");
        for tag in tags {
            pending.insert((group, tag.clone()), seq);
        }
        self.any.store(true, Ordering::Release);
    }

    /// What `group` has pending now.
    pub fn of(&self, group: usize) -> Snapshot {
        let pending = self.tags.lock().expect("pending lock");
        let tags = pending
            .range((group, String::new())..)
            .take_while(|((g, _), _)| *g == group)
            .map(|((_, tag), seq)| (tag.clone(), *seq))
            .collect();
        Snapshot { group, tags }
    }

    /// Forgets what `applied` held, unless it failed again since.
    pub fn settle(&self, applied: &Snapshot) {
        let mut pending = self.tags.lock().expect("pending lock");
        for (tag, seq) in &applied.tags {
            let key = (applied.group, tag.clone());
            if pending.get(&key) == Some(seq) {
                pending.remove(&key);
            }
        }
        self.any.store(!pending.is_empty(), Ordering::Release);
    }

    /// The groups with something pending.
    pub fn groups(&self) -> BTreeSet<usize> {
        self.tags
            .lock()
            .expect("pending lock")
            .keys()
            .map(|(g, _)| *g)
            .collect()
    }

    /// Every pending tag, for the exit log.
    pub fn all_tags(&self) -> BTreeSet<String> {
        self.tags
            .lock()
            .expect("pending lock")
            .keys()
            .map(|(_, t)| t.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn each_group_keeps_its_own_tags_and_settles_alone() {
        let pending = Pending::default();
        pending.remember(1, &tags(&["a", "b"]));
        pending.remember(3, &tags(&["a"]));
        assert_eq!(pending.of(1).tags(), tags(&["a", "b"]));
        assert!(pending.of(2).is_empty());
        pending.settle(&pending.of(1));
        assert!(pending.of(1).is_empty());
        assert_eq!(pending.of(3).tags(), tags(&["a"]));
        assert!(pending.any());
        pending.settle(&pending.of(3));
        assert!(!pending.any());
    }

    #[test]
    fn a_failure_recorded_during_a_retry_stays_pending() {
        let pending = Pending::default();
        pending.remember(0, &tags(&["a"]));
        let retry = pending.of(0);
        pending.remember(0, &tags(&["a"]));
        pending.settle(&retry);
        assert_eq!(pending.of(0).tags(), tags(&["a"]));
    }
}
