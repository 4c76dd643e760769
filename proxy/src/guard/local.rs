//! The guard in process memory: the memory store's rate limits and
//! revocations, and every store's fallback limiter while Redis is away.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use super::gcra::{admit, Cell, Decision};
use super::revocation::{now_secs, Revocation, Standing};
use super::CellId;
use crate::auth::Claims;

/// Most cells kept: past it, a shard forgets its cells whose TAT has
/// passed (each a full burst anyway), and if every one is still live, all
/// of them: a flood of distinct keys costs bounded memory, and forgetting
/// only lets those clients burst again.
const MAX_CELLS: usize = 200_000;
/// Locks the cells are spread over, so requests on both cores rarely wait
/// for one another.
const SHARDS: usize = 64;

/// Microseconds since the epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// GCRA cells in process memory: each cell's TAT (µs since the epoch).
///
/// A sharded map rather than a cache crate: a cell is one number updated
/// on every request, and a cache's bookkeeping per write (moka's) cost more
/// than the arithmetic (a fifth of a memory-store hit).
pub struct LocalLimiter {
    shards: Vec<Mutex<HashMap<CellId, u64, BuildHasherDefault<DigestHasher>>>>,
}

/// Hashes a cell id by its first eight bytes: it is a SHA-256 digest
/// already, so hashing it again (SipHash) would only cost time.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for (i, byte) in bytes.iter().take(8).enumerate() {
            self.0 ^= u64::from(*byte) << (8 * i);
        }
    }

    // The array's length, written before its bytes: the same for every id.
    fn write_usize(&mut self, _: usize) {}
}

impl Default for LocalLimiter {
    fn default() -> Self {
        LocalLimiter {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::default())).collect(),
        }
    }
}

impl LocalLimiter {
    /// Counts one request in the cell `id`.
    pub fn decide(&self, id: &CellId, cell: Cell) -> Decision {
        let now = now_us();
        let mut shard = self.shards[usize::from(id[0]) % SHARDS].lock().expect("limiter shard");
        let outcome = admit(cell, shard.get(id).copied(), now, 1);
        if outcome.allowed > 0 {
            if shard.len() >= MAX_CELLS / SHARDS && !shard.contains_key(id) {
                shard.retain(|_, tat| *tat > now);
                if shard.len() >= MAX_CELLS / SHARDS {
                    shard.clear();
                }
            }
            shard.insert(*id, outcome.tat_us);
        }
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
    /// Whether any revocation was ever kept: until then a check takes no
    /// lock.
    any: AtomicBool,
}

impl LocalRevocations {
    pub fn revoke(&self, revocation: &Revocation) {
        self.any.store(true, Ordering::Release);
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
        if !self.any.load(Ordering::Acquire) {
            return Standing::default();
        }
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
        let allowed: Vec<bool> = (0..5).map(|_| limiter.decide(&[1; 16], cell).allowed).collect();
        assert_eq!(allowed, [true, true, true, false, false]);
        assert!(limiter.decide(&[2; 16], cell).allowed, "another key has its own cell");
    }

    #[test]
    fn a_flood_of_keys_stays_bounded() {
        let limiter = LocalLimiter::default();
        let cell = Cell {
            interval_us: 3_600_000_000,
            burst: 1,
        };
        for i in 0..(MAX_CELLS as u32 * 2) {
            let mut id = [0; 16];
            id[..4].copy_from_slice(&i.to_le_bytes());
            limiter.decide(&id, cell);
        }
        let kept: usize = limiter.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(kept <= MAX_CELLS, "{kept} cells kept");
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
