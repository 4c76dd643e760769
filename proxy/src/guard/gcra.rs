//! GCRA, the generic cell rate algorithm: the rate limiter's arithmetic.
//!
//! Chosen over a sliding window because its whole state is one number per
//! key (the theoretical arrival time, TAT), updated in one step, so the
//! shared version is one short Redis script and the in-process one a
//! single map entry; it spaces requests evenly rather than letting a
//! window's whole quota through at its start, and it says exactly when the
//! next request will be allowed (Retry-After) and how many may come now
//! (RateLimit). A limit of `rate` per `period` with `burst` allows
//! `burst` requests at once and then one every `period / rate`.
//!
//! [`admit`] is the one step; the Redis script in `cache::redis` is the
//! same step in Lua (with Redis's clock, so instances with skewed clocks
//! still agree), and [`Decision::of`] turns its outcome into each
//! request's answer. Times are microseconds.

/// One limit's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cell {
    /// Microseconds between two requests at the sustained rate.
    pub interval_us: u64,
    /// Requests allowed at once.
    pub burst: u32,
}

/// The outcome of asking for `asked` requests at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// How many of them are allowed (the first ones asked).
    pub allowed: u32,
    /// The TAT after them.
    pub tat_us: u64,
    /// The clock they were decided at.
    pub now_us: u64,
}

/// Allows as many of `asked` requests as `cell` permits at `now_us`, given
/// the stored TAT (none: never used, or long enough ago to have expired).
pub fn admit(cell: Cell, stored_tat_us: Option<u64>, now_us: u64, asked: u32) -> Admitted {
    let interval = cell.interval_us.max(1);
    let tat = stored_tat_us.unwrap_or(now_us).max(now_us);
    let horizon = now_us + u64::from(cell.burst) * interval;
    let room = horizon.saturating_sub(tat) / interval;
    let allowed = room.min(u64::from(asked)) as u32;
    Admitted {
        allowed,
        tat_us: tat + u64::from(allowed) * interval,
        now_us,
    }
}

/// One request's answer from a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests that may still come at once after this one.
    pub remaining: u32,
    /// Microseconds until the limit is back to its full burst.
    pub reset_us: u64,
    /// When refused: microseconds until a request would be allowed.
    pub retry_after_us: u64,
}

impl Decision {
    /// The answer of the `ordinal`-th request (from 0) of those `admitted`
    /// asked for together.
    pub fn of(cell: Cell, admitted: Admitted, ordinal: u32) -> Decision {
        let interval = cell.interval_us.max(1);
        let burst_span = u64::from(cell.burst) * interval;
        let Admitted {
            allowed,
            tat_us,
            now_us,
        } = admitted;
        if ordinal < allowed {
            // This request's own TAT: the later ones came after it.
            let own_tat = tat_us - u64::from(allowed - 1 - ordinal) * interval;
            let room = (now_us + burst_span).saturating_sub(own_tat) / interval;
            Decision {
                allowed: true,
                remaining: room.min(u64::from(cell.burst)) as u32,
                reset_us: own_tat.saturating_sub(now_us),
                retry_after_us: 0,
            }
        } else {
            Decision {
                allowed: false,
                remaining: 0,
                reset_us: tat_us.saturating_sub(now_us),
                retry_after_us: (tat_us + interval).saturating_sub(now_us + burst_span).max(1),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN_PER_SECOND_BURST_5: Cell = Cell {
        interval_us: 100_000,
        burst: 5,
    };

    #[test]
    fn a_burst_is_allowed_at_once_and_then_one_per_interval() {
        let cell = TEN_PER_SECOND_BURST_5;
        let mut tat = None;
        let now = 1_000_000_000;
        for i in 0..5 {
            let a = admit(cell, tat, now, 1);
            assert_eq!(a.allowed, 1, "request {i} of the burst");
            assert_eq!(Decision::of(cell, a, 0).remaining, 4 - i);
            tat = Some(a.tat_us);
        }
        let refused = admit(cell, tat, now, 1);
        assert_eq!(refused.allowed, 0);
        let decision = Decision::of(cell, refused, 0);
        assert!(!decision.allowed);
        assert_eq!(decision.retry_after_us, 100_000);
        assert_eq!(decision.reset_us, 500_000);
        // One interval later, exactly one more.
        let later = admit(cell, tat, now + 100_000, 2);
        assert_eq!(later.allowed, 1);
    }

    #[test]
    fn asking_for_several_at_once_equals_asking_one_by_one() {
        let cell = TEN_PER_SECOND_BURST_5;
        let now = 7_000_000;
        let together = admit(cell, Some(now + 200_000), now, 6);
        let mut tat = Some(now + 200_000);
        let mut decisions = Vec::new();
        for _ in 0..6 {
            let a = admit(cell, tat, now, 1);
            decisions.push(Decision::of(cell, a, 0));
            tat = Some(a.tat_us);
        }
        assert_eq!(together.allowed, 3);
        assert_eq!(Some(together.tat_us), tat);
        for (ordinal, one_by_one) in decisions.iter().enumerate() {
            let batched = Decision::of(cell, together, ordinal as u32);
            assert_eq!(batched.allowed, one_by_one.allowed, "request {ordinal}");
            if batched.allowed {
                assert_eq!(batched, *one_by_one, "request {ordinal}");
            }
        }
    }

    #[test]
    fn an_old_tat_counts_as_a_full_burst() {
        let cell = TEN_PER_SECOND_BURST_5;
        let a = admit(cell, Some(1), 10_000_000, 10);
        assert_eq!(a.allowed, 5);
    }
}
