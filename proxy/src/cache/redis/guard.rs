//! Rate limits and revocations in Redis, riding the lookups' batches.
//!
//! A request's cells are one [`Command::Limit`] each (the batch counts all
//! of a cell's requests in one script call); its token's standing is a
//! `ZSCORE` of its `jti` and an `HGET` of its subject, in the bucket of
//! the entry it looks up, so on a cluster they go to that entry's node in
//! its pipeline. Revocations are written to every bucket for that reason
//! (rare writes, like a tag's generations), without a TTL, so a
//! `volatile-*` eviction policy never drops one; revoked `jti`s are
//! trimmed as their tokens expire.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::batch::{Command, Reply};
use super::RedisStore;
use crate::cache::{CacheKey, Lookup, StoreError};
use crate::guard::gcra::{Admitted, Decision};
use crate::guard::revocation::{now_secs, Revocation, Standing};
use crate::guard::{CellId, GuardCheck, Guards, Verdict};

/// How long past its `exp` a revoked `jti` is kept: more than any leeway
/// a verifier grants on `exp`.
const KEPT_PAST_EXPIRY: Duration = Duration::from_secs(86_400);

/// Raises a subject's revocation time, never lowers it: KEYS[1] the hash,
/// ARGV the subject and the time.
const SUBJECT_SCRIPT: &str = r#"local kept = tonumber(redis.call("HGET", KEYS[1], ARGV[1]) or "-1")
if tonumber(ARGV[2]) > kept then redis.call("HSET", KEYS[1], ARGV[1], ARGV[2]) end
return 1"#;

impl RedisStore {
    /// The bucket a limit cell lives in (spread by its id, a hash).
    fn cell_bucket(&self, id: &CellId) -> usize {
        u32::from_le_bytes([id[0], id[1], id[2], id[3]]) as usize % self.names.buckets()
    }

    /// `check`'s commands; its revocation reads in `bucket`.
    fn guard_commands(&self, check: &GuardCheck, bucket: usize) -> Vec<(usize, Command)> {
        let mut commands = Vec::with_capacity(check.cells.len() + 2);
        for cell in &check.cells {
            let at = self.cell_bucket(&cell.id);
            commands.push((
                at,
                Command::Limit {
                    key: self.names.limit(at, &hex::encode(cell.id)),
                    cell: cell.cell,
                },
            ));
        }
        if let Some(claims) = &check.token {
            let (tokens, subjects) = &self.revocation_names[bucket];
            if let Some(jti) = &claims.jti {
                commands.push((bucket, Command::Score(tokens.clone(), jti.clone())));
            }
            commands.push((bucket, Command::Field(subjects.clone(), claims.subject.clone())));
        }
        commands
    }

    /// Writes `revocation` to each bucket of `group`.
    fn revocation_pipeline(&self, group: usize, revocation: &Revocation) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        for bucket in self.buckets_of(group) {
            match revocation {
                Revocation::Token { jti, expires_at } => {
                    let set = self.names.revoked_tokens(bucket);
                    // GT: a revocation asked again with an earlier exp
                    // never shortens the one kept.
                    pipe.cmd("ZADD").arg(&set).arg("GT").arg(*expires_at).arg(jti).ignore();
                    let forgotten = now_secs().saturating_sub(KEPT_PAST_EXPIRY.as_secs());
                    pipe.cmd("ZREMRANGEBYSCORE")
                        .arg(&set)
                        .arg("-inf")
                        .arg(format!("({forgotten}"))
                        .ignore();
                }
                Revocation::Subject { subject, before } => {
                    pipe.cmd("EVAL")
                        .arg(SUBJECT_SCRIPT)
                        .arg(1)
                        .arg(self.names.revoked_subjects(bucket))
                        .arg(subject)
                        .arg(*before)
                        .ignore();
                }
            }
        }
        pipe
    }

    /// A bucket for revocation reads that ride no entry's: the subject's.
    fn subject_bucket(&self, check: &GuardCheck) -> usize {
        let subject = check.token.as_ref().map_or("", |c| c.subject.as_str());
        // FNV-1a: any stable spread will do.
        let hash = subject.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        (hash % self.names.buckets() as u64) as usize
    }
}

/// The verdict in the replies to [`RedisStore::guard_commands`].
fn verdict(check: &GuardCheck, replies: Vec<Result<Reply, StoreError>>) -> Result<Verdict, StoreError> {
    let garbled = || StoreError::Backend("unexpected rate limit or revocation reply".into());
    let replies: Vec<Reply> = replies.into_iter().collect::<Result<_, _>>()?;
    let mut replies = replies.iter();
    let mut decisions = Vec::with_capacity(check.cells.len());
    for cell in &check.cells {
        let reply = replies.next().ok_or_else(garbled)?;
        let text = reply
            .value
            .as_deref()
            .and_then(|v| std::str::from_utf8(v).ok())
            .ok_or_else(garbled)?;
        let mut numbers = text.split(' ').map(|n| n.parse::<u64>().ok());
        let (Some(Some(allowed)), Some(Some(tat_us)), Some(Some(now_us))) =
            (numbers.next(), numbers.next(), numbers.next())
        else {
            return Err(garbled());
        };
        let admitted = Admitted {
            allowed: allowed as u32,
            tat_us,
            now_us,
        };
        decisions.push(Decision::of(cell.cell, admitted, reply.ordinal));
    }
    let mut standing = Standing::default();
    if let Some(claims) = &check.token {
        if claims.jti.is_some() {
            standing.token_revoked = replies.next().ok_or_else(garbled)?.value.is_some();
        }
        let before: Option<&Bytes> = replies.next().ok_or_else(garbled)?.value.as_ref();
        standing.subject_revoked_before = before
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|b| b.parse().ok());
    }
    Ok(Verdict { decisions, standing })
}

#[async_trait]
impl Guards for RedisStore {
    async fn check(&self, check: &GuardCheck) -> Result<Verdict, StoreError> {
        let commands = self.guard_commands(check, self.subject_bucket(check));
        verdict(check, self.read(commands).await)
    }

    async fn lookup_checked(
        &self,
        key: &CacheKey,
        tags: &[String],
        check: &GuardCheck,
    ) -> (Result<Lookup, StoreError>, Result<Verdict, StoreError>) {
        let copy = self.l1_copy(key);
        let extra = self.guard_commands(check, self.place_of(key).1);
        let (first, guard_replies) = self.read_entry(copy.is_some(), key, tags, extra).await;
        let verdict = verdict(check, guard_replies);
        let lookup = match first {
            Ok(first) => self.settle_lookup(key, tags, copy, first).await,
            Err(err) => Err(err),
        };
        (lookup, verdict)
    }

    async fn revoke(&self, revocation: &Revocation) -> Result<(), StoreError> {
        // Like an invalidation: in every group's buckets.
        self.on_every_group(|group| {
            let pipe = self.revocation_pipeline(group, revocation);
            self.attempt(group, |mut conn| async move { pipe.query_async::<()>(&mut conn).await })
        })
        .await
        .map_err(|(err, _)| err)
    }
}
