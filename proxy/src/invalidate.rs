//! Invalidation on writes (DESIGN.md step 7): when a write through a rule
//! that lists tags should bump them.
//!
//! A 4xx means the backend refused the write, and a request that never
//! reached the backend changed nothing; every other outcome — success, 5xx,
//! a timeout or a connection lost after sending — may have committed, so it
//! invalidates. Invalidating too often costs a miss; too rarely, stale data.
//!
//! A write that may have reached the backend always finishes its
//! invalidation, whatever its client does: the forward and the
//! invalidation run in a task of their own (the handler only awaits it), so
//! a client that hangs up or resets its stream cannot cancel them.
//! [`WritesInFlight`] knows which writes are still running, so shutdown can
//! wait for them and invalidate what they would have.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use tokio::sync::Notify;

use crate::upstream::UpstreamError;

/// Decides from the upstream outcome whether the write's tags are bumped.
pub fn should_invalidate(outcome: Result<StatusCode, &UpstreamError>) -> bool {
    match outcome {
        Ok(status) => !status.is_client_error(),
        Err(err) => err.may_have_reached_upstream(),
    }
}

/// The writes forwarded and not yet invalidated, with the tags each will
/// invalidate.
#[derive(Default)]
pub struct WritesInFlight {
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Vec<String>>>,
    /// Woken whenever a write finishes.
    finished: Notify,
}

impl WritesInFlight {
    /// Records a write that will invalidate `tags`, until the guard drops.
    pub fn register(self: &Arc<Self>, tags: &[String]) -> WriteInFlight {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.open.lock().expect("writes lock").insert(id, tags.to_vec());
        WriteInFlight {
            writes: self.clone(),
            id,
        }
    }

    /// Waits up to `wait` for every write in flight to finish; returns the
    /// tags of those still running then (each once), for the caller to
    /// invalidate itself.
    pub async fn settle(&self, wait: Duration) -> Vec<String> {
        let all_done = async {
            loop {
                let finished = self.finished.notified();
                if self.open.lock().expect("writes lock").is_empty() {
                    return;
                }
                finished.await;
            }
        };
        let _ = tokio::time::timeout(wait, all_done).await;
        let mut tags: Vec<String> = self
            .open
            .lock()
            .expect("writes lock")
            .values()
            .flatten()
            .cloned()
            .collect();
        tags.sort();
        tags.dedup();
        tags
    }
}

/// One write in flight; dropping it (finished, or its task gone) removes it.
pub struct WriteInFlight {
    writes: Arc<WritesInFlight>,
    id: u64,
}

impl Drop for WriteInFlight {
    fn drop(&mut self) {
        self.writes.open.lock().expect("writes lock").remove(&self.id);
        self.writes.finished.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn shutdown_waits_for_writes_and_names_the_tags_of_those_still_running() {
        let writes = Arc::new(WritesInFlight::default());
        let tags = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let quick = writes.register(&tags(&["users"]));
        let slow = writes.register(&tags(&["users", "posts"]));
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            drop(quick);
        });
        assert_eq!(writes.settle(Duration::from_secs(1)).await, ["posts", "users"]);
        drop(slow);
        assert!(writes.settle(Duration::from_secs(1)).await.is_empty());
    }

    #[test]
    fn every_outcome_but_a_4xx_or_an_unsent_request_invalidates() {
        for status in [200, 201, 204, 302, 500, 502, 503] {
            assert!(should_invalidate(Ok(StatusCode::from_u16(status).unwrap())), "{status}");
        }
        for status in [400, 401, 403, 404, 409, 413, 422] {
            assert!(
                !should_invalidate(Ok(StatusCode::from_u16(status).unwrap())),
                "{status}"
            );
        }
        assert!(should_invalidate(Err(&UpstreamError::Timeout)));
        assert!(should_invalidate(Err(&UpstreamError::Failed("reset".into()))));
        assert!(!should_invalidate(Err(&UpstreamError::Connect("refused".into()))));
        assert!(!should_invalidate(Err(&UpstreamError::ConnectTimeout)));
        assert!(!should_invalidate(Err(&UpstreamError::Busy)));
    }
}
