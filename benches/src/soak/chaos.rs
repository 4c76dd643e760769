//! The chaos loop: every `min..max` seconds one fault, in shuffled rounds so
//! each kind recurs evenly, each logged with a timestamp as it happens.
//!
//! - `redis-kill`: kill -9 Redis and start an empty one on the same port.
//! - `redis-pause`: SIGSTOP Redis for 1–3 s, then SIGCONT.
//! - `origin-restart`: kill -9 the origin, leave its port refusing for
//!   0.5–2 s (as a real restart would), start it again and wait until it
//!   is healthy. That window is recorded: 502/504s inside it are the
//!   origin's doing.
//!
//! Dropped client connections are not events of this loop: the workload
//! drops a share of its writes continuously (see `workload`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::Rng;
use tokio::sync::watch;

use super::stack::Stack;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChaosKind {
    RedisKill,
    RedisPause,
    OriginRestart,
}

impl ChaosKind {
    pub const ALL: [ChaosKind; 3] = [ChaosKind::RedisKill, ChaosKind::RedisPause, ChaosKind::OriginRestart];

    pub fn name(self) -> &'static str {
        match self {
            ChaosKind::RedisKill => "redis-kill",
            ChaosKind::RedisPause => "redis-pause",
            ChaosKind::OriginRestart => "origin-restart",
        }
    }
}

/// One fault, from its first action to the system being whole again.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ChaosEvent {
    pub kind: ChaosKind,
    /// Seconds into the soak.
    pub start_s: f64,
    pub end_s: f64,
    /// Wall-clock time of the start, RFC 3339.
    pub at: String,
    pub detail: String,
    /// The fault could not be undone (e.g. a restart failed).
    pub failed: bool,
}

/// What the loop did, shared with the workload and the report.
#[derive(Default)]
pub struct Timeline {
    pub events: Vec<ChaosEvent>,
    /// Seconds into the soak when the origin was killed, and when it was
    /// healthy again (`None` while it is down).
    pub origin_down: Vec<(f64, Option<f64>)>,
}

/// How long after the origin is healthy again a 502/504 still counts as
/// its doing: a request may have been sent on a connection to the dead
/// process, or the restarted one may answer its first requests slowly.
pub const ORIGIN_DOWN_TAIL: f64 = 1.0;

impl Timeline {
    /// True when `[start_s, end_s]` overlaps a window in which the origin was
    /// down or restarting (extended by [`ORIGIN_DOWN_TAIL`]).
    pub fn origin_was_down(&self, start_s: f64, end_s: f64) -> bool {
        self.origin_down.iter().any(|&(down, up)| {
            let up = up.map_or(f64::INFINITY, |u| u + ORIGIN_DOWN_TAIL);
            start_s <= up && end_s >= down
        })
    }

    /// The most recent event that started before `at_s`, with the seconds
    /// between its end and `at_s` (negative while it was still going on).
    pub fn last_before(&self, at_s: f64) -> Option<(ChaosKind, f64)> {
        self.events
            .iter()
            .filter(|e| e.start_s <= at_s)
            .max_by(|a, b| a.start_s.total_cmp(&b.start_s))
            .map(|e| (e.kind, at_s - e.end_s))
    }
}

/// The gap between faults.
#[derive(Clone, Copy, Debug)]
pub struct ChaosSchedule {
    pub min: Duration,
    pub max: Duration,
}

/// Runs faults until `stop` turns true. Returns an error only when a
/// restart failed for good (the soak cannot go on without Redis or the
/// origin).
pub async fn run(
    stack: Arc<Stack>,
    timeline: Arc<Mutex<Timeline>>,
    schedule: ChaosSchedule,
    t0: Instant,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut round: Vec<ChaosKind> = Vec::new();
    loop {
        let gap = {
            let (min, max) = (
                schedule.min.as_secs_f64(),
                schedule.max.as_secs_f64().max(schedule.min.as_secs_f64()),
            );
            Duration::from_secs_f64(rand::rng().random_range(min..=max))
        };
        tokio::select! {
            () = tokio::time::sleep(gap) => {}
            _ = stop.wait_for(|stop| *stop) => return Ok(()),
        }
        if round.is_empty() {
            round = ChaosKind::ALL.to_vec();
            round.shuffle(&mut rand::rng());
        }
        let kind = round.pop().expect("refilled above");
        let start = Instant::now();
        let start_s = (start - t0).as_secs_f64();
        let at = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let outcome = match kind {
            ChaosKind::RedisKill => redis_kill(&stack).await,
            ChaosKind::RedisPause => redis_pause(&stack).await,
            ChaosKind::OriginRestart => origin_restart(&stack, &timeline, t0).await,
        };
        let end_s = t0.elapsed().as_secs_f64();
        let (detail, failed) = match &outcome {
            Ok(detail) => (detail.clone(), false),
            Err(err) => (format!("{err:#}"), true),
        };
        eprintln!(
            "[{start_s:7.1}s] chaos {:<14} {detail} ({:.2}s)",
            kind.name(),
            end_s - start_s
        );
        timeline.lock().expect("timeline lock").events.push(ChaosEvent {
            kind,
            start_s,
            end_s,
            at,
            detail,
            failed,
        });
        outcome?;
    }
}

async fn redis_kill(stack: &Stack) -> anyhow::Result<String> {
    let mut redis = stack.redis.lock().await;
    let (old, new) = redis.kill_and_restart().await?;
    Ok(format!(
        "killed pid {old} (-9), empty redis pid {new} on port {}",
        redis.port
    ))
}

async fn redis_pause(stack: &Stack) -> anyhow::Result<String> {
    let pause = Duration::from_secs_f64(rand::rng().random_range(1.0..=3.0));
    let redis = stack.redis.lock().await;
    redis.pause();
    // Not cancellable: Redis is always resumed.
    tokio::time::sleep(pause).await;
    redis.resume();
    Ok(format!(
        "SIGSTOP pid {} for {:.1}s, then SIGCONT",
        redis.pid().unwrap_or_default(),
        pause.as_secs_f64()
    ))
}

async fn origin_restart(stack: &Stack, timeline: &Mutex<Timeline>, t0: Instant) -> anyhow::Result<String> {
    let downtime = Duration::from_secs_f64(rand::rng().random_range(0.5..=2.0));
    let mut origin = stack.origin.lock().await;
    let window = {
        let mut timeline = timeline.lock().expect("timeline lock");
        timeline.origin_down.push((t0.elapsed().as_secs_f64(), None));
        timeline.origin_down.len() - 1
    };
    let old = origin.kill().unwrap_or_default();
    tokio::time::sleep(downtime).await;
    let new = origin.start_again().await?;
    timeline.lock().expect("timeline lock").origin_down[window].1 = Some(t0.elapsed().as_secs_f64());
    Ok(format!(
        "killed pid {old} (-9), down {:.1}s, pid {new} healthy on {}",
        downtime.as_secs_f64(),
        origin.addr
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_overlapping_the_down_window_or_its_tail_is_the_origins() {
        let timeline = Timeline {
            events: Vec::new(),
            origin_down: vec![(10.0, Some(12.0)), (30.0, None)],
        };
        assert!(timeline.origin_was_down(9.5, 10.1), "in flight when it was killed");
        assert!(timeline.origin_was_down(11.0, 11.2));
        assert!(timeline.origin_was_down(12.5, 12.6), "within the tail");
        assert!(!timeline.origin_was_down(13.5, 13.6), "after the tail");
        assert!(!timeline.origin_was_down(9.0, 9.9), "before it");
        assert!(timeline.origin_was_down(40.0, 40.1), "still down");
    }
}
