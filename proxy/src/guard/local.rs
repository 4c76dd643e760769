//! The guard in process memory: the memory store's rate limits and
//! revocations, and every store's fallback limiter while Redis is away.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use moka::ops::compute::Op;
use moka::sync::Cache;
use moka::Expiry;

use super::gcra::{admit, Admitted, Cell, Decision};
use super::revocation::{now_secs, Revocation, Standing};
use crate::auth::Claims;

/// Most cells kept: an evicted cell only forgets a client's recent
/// requests, so a flood of distinct keys costs bounded memory.
const MAX_CELLS: u64 = 200_000;

/// Microseconds since the epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// GCRA cells in process memory.
pub struct LocalLimiter {
    /// Each cell's TAT (µs since the epoch), kept until it passes: a cell
    /// whose TAT is past is a full burst, the same as none.
    cells: Cache<String, u64>,
}

/// A cell lives until its TAT.
struct UntilTat;

impl Expiry<String, u64> for UntilTat {
    fn expire_after_create(&self, _key: &String, tat: &u64, _created: Instant) -> Option<Duration> {
        Some(Duration::from_micros(tat.saturating_sub(now_us())))
    }

    fn expire_after_update(
        &self,
        _key: &String,
        tat: &u64,
        _updated: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        Some(Duration::from_micros(tat.saturating_sub(now_us())))
    }
}

impl Default for LocalLimiter {
    fn default() -> Self {
        LocalLimiter {
            cells: Cache::builder().max_capacity(MAX_CELLS).expire_after(UntilTat).build(),
        }
    }
}

impl LocalLimiter {
    /// Counts one request in the cell `id`.
    pub fn decide(&self, id: &str, cell: Cell) -> Decision {
        let now = now_us();
        let mut outcome = Admitted {
            allowed: 0,
            tat_us: now,
            now_us: now,
        };
        self.cells.entry_by_ref(id).and_compute_with(|stored| {
            outcome = admit(cell, stored.map(|e| e.into_value()), now, 1);
            if outcome.allowed > 0 {
                Op::Put(outcome.tat_us)
            } else {
                Op::Nop
            }
        });
        Decision::of(cell, outcome, 0)
    }
}

/// Revocations in process memory (the memory store's).
#[derive(Default)]
pub struct LocalRevocations {
    /// `jti` → its token's `exp`.
    tokens: RwLock<HashMap<String, u64>>,
    /// Subject → tokens issued at or before this are revoked.
    subjects: RwLock<HashMap<String, u64>>,
}

impl LocalRevocations {
    pub fn revoke(&self, revocation: &Revocation) {
        match revocation {
            Revocation::Token { jti, expires_at } => {
                let mut tokens = self.tokens.write().expect("revocations lock");
                tokens.insert(jti.clone(), *expires_at);
                // Expired tokens are refused anyway: forget them as they go.
                let now = now_secs();
                if tokens.len().is_power_of_two() {
                    tokens.retain(|_, exp| *exp >= now);
                }
            }
            Revocation::Subject { subject, before } => {
                let mut subjects = self.subjects.write().expect("revocations lock");
                let kept = subjects.entry(subject.clone()).or_insert(*before);
                *kept = (*kept).max(*before);
            }
        }
    }

    pub fn standing(&self, claims: &Claims) -> Standing {
        let token_revoked = claims
            .jti
            .as_ref()
            .is_some_and(|jti| self.tokens.read().expect("revocations lock").contains_key(jti));
        let subject_revoked_before = self
            .subjects
            .read()
            .expect("revocations lock")
            .get(&claims.subject)
            .copied();
        Standing {
            token_revoked,
            subject_revoked_before,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_cell_allows_its_burst_then_refuses() {
        let limiter = LocalLimiter::default();
        let cell = Cell {
            interval_us: 3_600_000_000,
            burst: 3,
        };
        let allowed: Vec<bool> = (0..5).map(|_| limiter.decide("a", cell).allowed).collect();
        assert_eq!(allowed, [true, true, true, false, false]);
        assert!(limiter.decide("b", cell).allowed, "another key has its own cell");
    }

    #[test]
    fn local_revocations_keep_the_latest_subject_time() {
        let revocations = LocalRevocations::default();
        let claims = Claims {
            subject: "s".into(),
            roles: vec![],
            jti: Some("j".into()),
            issued_at: Some(10),
            expires_at: u64::MAX,
        };
        assert!(!revocations.standing(&claims).revokes(&claims));
        revocations.revoke(&Revocation::Subject {
            subject: "s".into(),
            before: 20,
        });
        revocations.revoke(&Revocation::Subject {
            subject: "s".into(),
            before: 5,
        });
        assert_eq!(revocations.standing(&claims).subject_revoked_before, Some(20));
        let other = Claims {
            subject: "t".into(),
            ..claims.clone()
        };
        assert!(!revocations.standing(&other).revokes(&other));
        revocations.revoke(&Revocation::Token {
            jti: "j".into(),
            expires_at: u64::MAX,
        });
        assert!(revocations.standing(&other).revokes(&other), "the jti");
    }
}
