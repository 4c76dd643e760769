//! A circuit breaker for the cache store.
//!
//! After `threshold` consecutive failures the breaker opens for `open_for`:
//! cache operations fail at once instead of each waiting out its time
//! budget, so an outage costs requests nothing. Once `open_for` has passed,
//! the breaker is half-open: exactly one operation is let through as a
//! probe (the others are refused as if it were still open, rather than all
//! piling onto a Redis that may still be failing); its success closes the
//! breaker, its failure reopens it.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Breaker {
    threshold: u32,
    open_for: Duration,
    epoch: Instant,
    consecutive_failures: AtomicU32,
    /// Nanoseconds since `epoch` until which the breaker is open.
    open_until: AtomicU64,
}

/// What a recorded outcome changed, so the caller can log transitions once
/// instead of every failure.
#[derive(Debug, PartialEq, Eq)]
pub enum Transition {
    None,
    Opened,
    Closed,
}

impl Breaker {
    pub fn new(threshold: u32, open_for: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            open_for,
            epoch: Instant::now(),
            consecutive_failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Whether the breaker is open right now. Claims nothing: for a cheap
    /// early refusal before work that will pass [`allows`](Self::allows).
    pub fn is_open(&self) -> bool {
        self.now() < self.open_until.load(Ordering::Acquire)
    }

    /// False while open: the caller should not even try. When half-open,
    /// true for one caller only: the probe.
    pub fn allows(&self) -> bool {
        let until = self.open_until.load(Ordering::Acquire);
        let now = self.now();
        if now < until {
            return false;
        }
        if self.consecutive_failures.load(Ordering::Acquire) < self.threshold {
            return true;
        }
        // Half-open: whoever moves the reopening time forward probes; the
        // others see it moved. The probe's outcome closes or reopens.
        let reopen = now + self.open_for.as_nanos() as u64;
        self.open_until
            .compare_exchange(until, reopen, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    pub fn record_success(&self) -> Transition {
        if self.consecutive_failures.swap(0, Ordering::AcqRel) >= self.threshold {
            self.open_until.store(0, Ordering::Release);
            Transition::Closed
        } else {
            Transition::None
        }
    }

    pub fn record_failure(&self) -> Transition {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        if failures >= self.threshold {
            self.open_until
                .store(self.now() + self.open_for.as_nanos() as u64, Ordering::Release);
            if failures == self.threshold {
                return Transition::Opened;
            }
        }
        Transition::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_failures_and_closes_on_success() {
        let b = Breaker::new(3, Duration::from_secs(3600));
        assert!(b.allows());
        assert_eq!(b.record_failure(), Transition::None);
        assert_eq!(b.record_failure(), Transition::None);
        assert!(b.allows());
        assert_eq!(b.record_failure(), Transition::Opened);
        assert!(!b.allows());
        assert_eq!(b.record_success(), Transition::Closed);
        assert_eq!(b.record_success(), Transition::None);
    }

    #[test]
    fn lets_a_probe_through_once_the_open_period_is_over() {
        let b = Breaker::new(1, Duration::ZERO);
        assert_eq!(b.record_failure(), Transition::Opened);
        assert!(b.allows(), "open_for elapsed");
        assert_eq!(
            b.record_failure(),
            Transition::None,
            "still failing: reopened, not re-announced"
        );
    }

    #[test]
    fn half_open_lets_exactly_one_probe_through_until_it_reports() {
        let b = Breaker::new(1, Duration::from_millis(30));
        assert_eq!(b.record_failure(), Transition::Opened);
        assert!(!b.allows());
        // What is tested is the end of the open period: wait it out.
        std::thread::sleep(Duration::from_millis(40));
        assert!(!b.is_open(), "half-open");
        assert!(!b.is_open(), "asking claims nothing");
        assert!(b.allows(), "the probe");
        assert!(b.is_open() && !b.allows(), "a second caller while the probe runs");
        assert!(!b.allows());
        assert_eq!(b.record_success(), Transition::Closed);
        assert!(b.allows() && b.allows(), "closed: everyone");
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = Breaker::new(2, Duration::from_secs(3600));
        b.record_failure();
        b.record_success();
        b.record_failure();
        assert!(b.allows());
    }
}
