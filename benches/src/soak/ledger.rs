//! What every user's committed version is known to be, and what makes a
//! read stale. Pure: no I/O, no clock of its own, so every rule is unit
//! tested below.
//!
//! Each write sets a user's username to `u<index>-v<version>`, versions
//! counting up from 0 (the registration). Two rules keep the knowledge
//! sound:
//!
//! - A user has at most one write in flight ([`Ledger::try_begin_write`]),
//!   and its version is higher than every version sent before it. So the
//!   origin's versions for a user only ever go up — except if a write whose
//!   outcome was unknown, and which the resolver gave up on as lost,
//!   commits later after all; that version is remembered ([`Verdict::LateCommit`]).
//! - A read is judged against the *floor* it was given when it started:
//!   the highest version whose PUT was acknowledged (2xx) before, or which
//!   the resolver learned from the origin directly after an unknown outcome.
//!   A version below the floor is stale: the write replacing it had been
//!   answered before the read was sent.

/// How a user's floor became known.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    /// Version 0, from the registration.
    #[default]
    Registered,
    /// A PUT answered 2xx with this version.
    Acknowledged,
    /// A write with an unknown outcome (dropped by the client, 5xx,
    /// transport error) that the origin, read directly, showed committed.
    Learned,
}

/// The judgement of one user as seen by one read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// At or above the floor.
    Fresh,
    /// Below the floor: a write answered before the read started was not
    /// visible to it.
    Stale,
    /// Below the floor, but a version the resolver had given up on as lost:
    /// the origin itself went back to it, so it says nothing about the proxy.
    LateCommit,
    /// Above any version ever sent: the answer is corrupt.
    Phantom,
}

#[derive(Clone, Debug)]
struct UserVersions {
    /// Highest version sent (or being sent).
    issued: u64,
    /// The floor: highest version known committed and answered.
    acked: u64,
    acked_via: Via,
    /// What raised it, for findings: the answer or the dropped-write
    /// variant behind a learned version.
    acked_cause: &'static str,
    /// Seconds into the soak when `acked` was last raised.
    acked_at_s: f64,
    /// A write is in flight or its outcome is being resolved.
    writing: bool,
    /// Versions whose outcome was resolved as "not committed".
    lost: Vec<u64>,
}

/// Per-user versions: what was sent, what is known committed.
#[derive(Clone, Debug)]
pub struct Ledger {
    users: Vec<UserVersions>,
}

/// What a floor was when a read started, for findings.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Floor {
    pub version: u64,
    pub via: Via,
    /// What made it known: `2xx`, or for a learned version why its outcome
    /// was unknown (`after-send`, `5xx-answer`, `error:timeout`, ...).
    pub cause: &'static str,
    /// Seconds into the soak when it became the floor.
    pub since_s: f64,
}

impl Ledger {
    /// `users` users, all at version 0.
    pub fn new(users: usize) -> Ledger {
        Ledger {
            users: vec![UserVersions::default(); users],
        }
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Every user's floor, taken when a read starts.
    pub fn floors(&self) -> Vec<Floor> {
        self.users
            .iter()
            .map(|u| Floor {
                version: u.acked,
                via: u.acked_via,
                cause: u.acked_cause,
                since_s: u.acked_at_s,
            })
            .collect()
    }

    /// The floor of one user.
    pub fn floor(&self, user: usize) -> u64 {
        self.users[user].acked
    }

    /// True while a write of `user` is in flight or being resolved.
    pub fn is_writing(&self, user: usize) -> bool {
        self.users[user].writing
    }

    /// Reserves the next version of `user` for a write, or `None` while
    /// another write of the same user is unresolved: with one write in
    /// flight per user, the origin commits a user's versions in order.
    pub fn try_begin_write(&mut self, user: usize) -> Option<u64> {
        let u = &mut self.users[user];
        if u.writing {
            return None;
        }
        u.writing = true;
        u.issued += 1;
        Some(u.issued)
    }

    /// The write of `version` was answered 2xx: reads sent from now on must
    /// see it.
    pub fn acknowledge(&mut self, user: usize, version: u64, now_s: f64) {
        let u = &mut self.users[user];
        debug_assert!(u.writing && version == u.issued, "acknowledging a write not in flight");
        u.raise(version, Via::Acknowledged, "2xx", now_s);
        u.writing = false;
    }

    /// A write of `attempted` with an unknown outcome (`cause`) is
    /// resolved: the origin, read directly, holds `observed`. Below
    /// `attempted`, the write is taken as lost (the resolver waits long
    /// enough that it cannot commit any more — and if it does,
    /// [`Verdict::LateCommit`] says so).
    pub fn resolve(&mut self, user: usize, attempted: u64, observed: u64, cause: &'static str, now_s: f64) {
        let u = &mut self.users[user];
        if observed >= attempted {
            u.raise(observed, Via::Learned, cause, now_s);
        } else {
            u.lost.push(attempted);
        }
        u.writing = false;
    }

    /// Judges `seen`, the version of `user` in an answer to a read that
    /// started with floor `floor`.
    pub fn judge(&self, user: usize, seen: u64, floor: u64) -> Verdict {
        let u = &self.users[user];
        if seen > u.issued {
            Verdict::Phantom
        } else if seen >= floor {
            Verdict::Fresh
        } else if u.lost.contains(&seen) {
            Verdict::LateCommit
        } else {
            Verdict::Stale
        }
    }
}

impl Default for UserVersions {
    fn default() -> UserVersions {
        UserVersions {
            issued: 0,
            acked: 0,
            acked_via: Via::Registered,
            acked_cause: "register",
            acked_at_s: 0.0,
            writing: false,
            lost: Vec::new(),
        }
    }
}

impl UserVersions {
    fn raise(&mut self, version: u64, via: Via, cause: &'static str, now_s: f64) {
        if version > self.acked {
            self.acked = version;
            self.acked_via = via;
            self.acked_cause = cause;
            self.acked_at_s = now_s;
        }
    }
}

/// The username carrying `version` of user `index`: the origin allows
/// letters, digits, `_`, `.` and `-`, 3 to 32 characters.
pub fn username(index: usize, version: u64) -> String {
    format!("u{index}-v{version}")
}

/// `(index, version)` from a username made by [`username`].
pub fn parse_username(name: &str) -> Option<(usize, u64)> {
    let (index, version) = name.strip_prefix('u')?.split_once("-v")?;
    Some((index.parse().ok()?, version.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_round_trip_and_fit_the_origin_rules() {
        let name = username(49, 123_456);
        assert_eq!(parse_username(&name), Some((49, 123_456)));
        assert!(name.len() <= 32 && name.len() >= 3);
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        assert_eq!(parse_username("admin"), None);
        assert_eq!(parse_username("u1-vx"), None);
    }

    #[test]
    fn one_write_per_user_in_flight_with_rising_versions() {
        let mut ledger = Ledger::new(2);
        assert_eq!(ledger.try_begin_write(0), Some(1));
        assert_eq!(
            ledger.try_begin_write(0),
            None,
            "second write while the first is in flight"
        );
        assert_eq!(ledger.try_begin_write(1), Some(1), "other users are independent");
        ledger.acknowledge(0, 1, 1.0);
        assert_eq!(ledger.try_begin_write(0), Some(2));
        ledger.resolve(0, 2, 1, "after-send", 2.0);
        assert_eq!(ledger.try_begin_write(0), Some(3), "a lost version is never reused");
    }

    #[test]
    fn a_read_is_judged_by_the_floor_it_started_with() {
        let mut ledger = Ledger::new(1);
        let before = ledger.floor(0);
        let v = ledger.try_begin_write(0).unwrap();
        ledger.acknowledge(0, v, 1.0);
        // Started before the acknowledgement: the old version is fine.
        assert_eq!(ledger.judge(0, 0, before), Verdict::Fresh);
        // Started after it: the old version is stale, the new one fresh.
        let after = ledger.floor(0);
        assert_eq!(ledger.judge(0, 0, after), Verdict::Stale);
        assert_eq!(ledger.judge(0, 1, after), Verdict::Fresh);
    }

    #[test]
    fn a_version_in_flight_is_fresh_but_one_never_sent_is_phantom() {
        let mut ledger = Ledger::new(1);
        let floor = ledger.floor(0);
        ledger.try_begin_write(0).unwrap();
        assert_eq!(ledger.judge(0, 1, floor), Verdict::Fresh, "committed, not yet answered");
        assert_eq!(ledger.judge(0, 2, floor), Verdict::Phantom);
    }

    #[test]
    fn unknown_outcomes_raise_the_floor_only_when_committed() {
        let mut ledger = Ledger::new(1);
        let v1 = ledger.try_begin_write(0).unwrap();
        ledger.resolve(0, v1, v1, "after-send", 3.0);
        let floors = ledger.floors();
        assert_eq!(
            floors[0],
            Floor {
                version: 1,
                via: Via::Learned,
                cause: "after-send",
                since_s: 3.0
            }
        );
        let v2 = ledger.try_begin_write(0).unwrap();
        ledger.resolve(0, v2, v1, "5xx-answer", 4.0);
        assert_eq!(ledger.floor(0), 1, "a lost write leaves the floor alone");
        assert_eq!(ledger.floors()[0].since_s, 3.0);
    }

    #[test]
    fn a_lost_write_committing_late_is_not_blamed_on_the_proxy() {
        let mut ledger = Ledger::new(1);
        let v1 = ledger.try_begin_write(0).unwrap();
        ledger.acknowledge(0, v1, 1.0);
        let v2 = ledger.try_begin_write(0).unwrap();
        ledger.resolve(0, v2, v1, "mid-body", 2.0);
        let v3 = ledger.try_begin_write(0).unwrap();
        ledger.acknowledge(0, v3, 3.0);
        let floor = ledger.floor(0);
        assert_eq!(ledger.judge(0, v2, floor), Verdict::LateCommit);
        assert_eq!(ledger.judge(0, v1, floor), Verdict::Stale);
    }
}
