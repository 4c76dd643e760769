//! The Redis store: shared by every proxy instance pointed at one Redis.
//!
//! Redis is an optimisation, never a dependency of serving: the connection
//! is made lazily (the proxy starts with Redis down), each operation has a
//! small time budget, and a circuit breaker makes an outage cost nothing
//! but cache hits. Callers treat every error as "serve from upstream".
//!
//! An invalidation is retried for up to `invalidation_wait` before the
//! write's response is released, so a short blip costs the writer a little
//! latency and nobody stale data. One that still fails is remembered and
//! applied before any other operation of this instance succeeds again, and
//! retried every [`PENDING_RETRY`] in the background. Other instances
//! sharing the Redis learn of it only when it is applied: between Redis
//! coming back and that retry (≤ `PENDING_RETRY`), or for good if this
//! process dies first, they may serve entries the write replaced. That
//! window is the price of letting writes pass while Redis is unreachable.
//!
//! Redis is one node, a Sentinel group's primary or a cluster, behind one
//! [`RedisHandle`]. On a cluster, everything of one entry lives in its
//! bucket's hash slot (see [`keys`]); the store then works per *group*
//! (one bucket each): each group has its own circuit breaker (a group
//! lives on one node, so a bad shard opens only its groups' breakers) and
//! its own pending invalidations, and a write is one pipeline per group,
//! sent concurrently. A batch of reads is one pipeline per node (its
//! lane, from the cluster's slot map), whatever buckets it reads. On one
//! node there is one group and one lane.
//!
//! Key names are built in [`keys`] (entries, leases, generations, the
//! purge index, the events channel). Generations have no TTL: a lost one
//! would read as a miss, but letting them expire would only cause needless
//! misses. An entry's value is a random 8-byte stamp followed by the
//! encoded [`Entry`]: the stamp names this one write of the entry.
//!
//! Lookups do not talk to Redis one by one: their reads are coalesced into
//! one pipeline per round trip (see [`batch`]), which is what keeps a hit
//! cheap under load.
//!
//! L1: decoded copies of entries this instance read or wrote, kept in
//! process memory. A copy is served only if, in the same single round trip
//! a plain hit takes, Redis still holds the value with the copy's stamp and
//! the copy's recorded generations are current: what an L1 hit serves is
//! exactly what a Redis hit would have. It saves moving and decoding the
//! body; it never saves the round trip, so it cannot outlive a write made
//! through another instance, and it is skipped whenever Redis is.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::future::join_all;
use moka::notification::RemovalCause;
use moka::sync::Cache;
use redis::RedisResult;

mod batch;
mod guard;
pub mod keys;
mod pending;

use self::batch::{Command, Read, ReadBatcher, ReadResult, Reply};
use self::keys::{Names, CLUSTER_BUCKETS};
use self::pending::Pending;
use super::breaker::{Breaker, Transition};
use super::entry::now_ms;
use super::memory::{bounded_entries, encoded_weight, usable};
use super::purge::{is_under, place_of_prefix, prefixes_of, records_paths, softly_expired, ALL_TAG};
use super::{
    new_generation, CacheKey, CacheStore, Entry, Filed, Generations, IndexInfo, Invalidate, Lease, Leases, Lookup,
    StoreError, StoreHealth, StoreState,
};
use crate::cache::settings::StoreSettings;
use crate::metrics::Metrics;
use crate::redis_layer::{slot_of, Lane, RedisHandle, RedisTarget};
/// How often remembered invalidations are retried, and how often a write's
/// invalidation is retried within `invalidation_wait`.
pub const PENDING_RETRY: Duration = Duration::from_millis(100);
/// Deletes a lease only if it still holds the caller's token.
static RELEASE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0"#,
    )
});

/// Stores an entry and files it in the purge index, atomically: KEYS[1]
/// is the entry, KEYS[2..] its index sets (sorted by expiry, so each is
/// trimmed to live entries as it is written); ARGV: value, time to live
/// (ms), now (ms since the epoch), then the member filed in each index set
/// (the entry key's hex; followed by its path in the sets at the prefix
/// depth cap, see [`super::purge`]).
static STORE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"local ttl, now = tonumber(ARGV[2]), tonumber(ARGV[3])
           redis.call("SET", KEYS[1], ARGV[1], "PX", ttl)
           for i = 2, #KEYS do
             redis.call("ZADD", KEYS[i], now + ttl, ARGV[i + 2])
             redis.call("ZREMRANGEBYSCORE", KEYS[i], "-inf", now)
             if redis.call("PTTL", KEYS[i]) < ttl then redis.call("PEXPIRE", KEYS[i], ttl) end
           end
           return 1"#,
    )
});

/// Replaces the entry KEYS[1] with ARGV[2] (for ARGV[3] ms; deletes it at
/// 0) only if it still carries the stamp ARGV[1]: a soft purge never
/// overwrites an entry stored since it read it.
static MARK_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"if redis.call("GETRANGE", KEYS[1], 0, 7) ~= ARGV[1] then return 0 end
           if tonumber(ARGV[3]) > 0 then redis.call("SET", KEYS[1], ARGV[2], "PX", ARGV[3])
           else redis.call("DEL", KEYS[1]) end
           return 1"#,
    )
});

/// Time budget of one step of a purge (reading an index, deleting what it
/// names): indexes can be large, and nobody's request waits on it.
const PURGE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes of the stamp in front of every stored entry.
const STAMP_LEN: usize = 8;

/// What a lookup's read brought back.
struct EntryRead {
    /// The entry's value (or only its stamp).
    entry: Option<Bytes>,
    /// The current generation of each of its tags, in order.
    generations: Vec<Option<Bytes>>,
}

/// An entry as this instance last read or wrote it in Redis.
#[derive(Clone)]
struct LocalCopy {
    stamp: [u8; STAMP_LEN],
    entry: Arc<Entry>,
}

impl AsRef<Entry> for LocalCopy {
    fn as_ref(&self) -> &Entry {
        &self.entry
    }
}

pub struct RedisStore {
    redis: RedisHandle,
    /// The pub/sub channel invalidations are announced on.
    events: String,
    /// Lookups' reads, coalesced into one pipeline per group per round trip.
    reads: ReadBatcher,
    l1: Option<Cache<CacheKey, LocalCopy>>,
    names: Names,
    /// Each bucket's names of the revoked tokens and subjects, read by
    /// every authenticated request: built once.
    revocation_names: Vec<(Arc<str>, Arc<str>)>,
    /// Each bucket's hash slot, where buckets are groups.
    bucket_slots: Vec<u16>,
    operation_timeout: Duration,
    invalidation_wait: Duration,
    /// How long past expiry, at least, entries with validators are kept.
    revalidation_retention: Duration,
    /// How long a write waits for a replica to hold its new generations
    /// (`WAIT 1`), where a failover may promote one (Sentinel, cluster).
    replica_wait: Option<Duration>,
    /// One per group.
    breakers: Vec<Breaker>,
    /// How many of them are open, to log an outage once.
    open_groups: AtomicUsize,
    pending: Pending,
    metrics: Arc<Metrics>,
}

impl RedisStore {
    /// Creates the store without connecting, and starts the task that
    /// retries pending invalidations while nothing else would. `buckets`
    /// of 0 takes the default: [`CLUSTER_BUCKETS`] on a cluster, 1
    /// elsewhere.
    pub fn new(
        target: &RedisTarget,
        buckets: usize,
        l1_max_bytes: u64,
        settings: &StoreSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<RedisStore>, redis::RedisError> {
        let redis = RedisHandle::new(target)?;
        let buckets = match (buckets, redis.is_cluster()) {
            (0, true) => CLUSTER_BUCKETS,
            (0, false) => 1,
            (n, _) => n,
        };
        let l1 = (l1_max_bytes > 0).then(|| {
            let metrics = metrics.clone();
            bounded_entries(l1_max_bytes, encoded_weight, settings.revalidation_retention)
                .support_invalidation_closures()
                .eviction_listener(move |_key, _copy, cause| match cause {
                    RemovalCause::Size => metrics.l1_eviction("size"),
                    RemovalCause::Expired => metrics.l1_eviction("expired"),
                    RemovalCause::Explicit => metrics.l1_eviction("outdated"),
                    RemovalCause::Replaced => {}
                })
                .build()
        });
        let names = Names::new(&settings.key_prefix, &settings.namespace, buckets);
        let groups = if redis.is_cluster() { buckets } else { 1 };
        let events = names.events();
        let store = Arc::new_cyclic(|store: &Weak<RedisStore>| RedisStore {
            redis,
            events,
            reads: ReadBatcher::start(pipeline_runner(store.clone())),
            l1,
            bucket_slots: (0..buckets).map(|b| slot_of(&Names::hash_tag(b))).collect(),
            revocation_names: (0..buckets)
                .map(|b| (names.revoked_tokens(b).into(), names.revoked_subjects(b).into()))
                .collect(),
            names,
            operation_timeout: settings.operation_timeout,
            invalidation_wait: settings.invalidation_wait,
            revalidation_retention: settings.revalidation_retention,
            replica_wait: (!matches!(target, RedisTarget::Node(_))).then_some(settings.operation_timeout / 2),
            breakers: (0..groups)
                .map(|_| Breaker::new(settings.breaker_failures, settings.breaker_open_for))
                .collect(),
            open_groups: AtomicUsize::new(0),
            pending: Pending::default(),
            metrics,
        });
        tokio::spawn(retry_pending(Arc::downgrade(&store)));
        tokio::spawn(warn_about_settings(Arc::downgrade(&store)));
        if store.l1.is_some() {
            tokio::spawn(follow_invalidations(Arc::downgrade(&store)));
        }
        Ok(store)
    }

    /// Runs `op` on every group at once, and again on those it failed on
    /// every [`PENDING_RETRY`] until `invalidation_wait` runs out: how a
    /// write (an invalidation, a revocation) reaches Redis, not behind the
    /// breaker, since a write is worth a few tries even while reads skip
    /// the cache. Waits for a replica after each round that applied
    /// something. Giving up: the last error and the groups still failing.
    async fn on_every_group<F, Fut>(&self, op: F) -> Result<(), (StoreError, Vec<usize>)>
    where
        F: Fn(usize) -> Fut,
        Fut: Future<Output = Result<(), StoreError>>,
    {
        let give_up_at = tokio::time::Instant::now() + self.invalidation_wait;
        let mut left: Vec<usize> = self.groups().collect();
        loop {
            let attempts = std::mem::take(&mut left).into_iter().map(|group| {
                let attempt = op(group);
                async move { (group, attempt.await) }
            });
            let (mut last_error, mut any_applied) = (None, false);
            for (group, result) in join_all(attempts).await {
                match result {
                    Ok(()) => any_applied = true,
                    Err(err) => {
                        left.push(group);
                        last_error = Some(err);
                    }
                }
            }
            if any_applied {
                self.confirm_replicated().await;
            }
            let Some(err) = last_error else { return Ok(()) };
            if tokio::time::Instant::now() + PENDING_RETRY >= give_up_at {
                return Err((err, left));
            }
            tokio::time::sleep(PENDING_RETRY).await;
        }
    }

    /// Whether each bucket is a group of its own (a cluster: one pipeline
    /// may not cross hash slots) rather than all in one.
    fn per_bucket(&self) -> bool {
        self.redis.is_cluster()
    }

    /// The groups: pipelines that may be sent as one.
    fn groups(&self) -> Range<usize> {
        0..self.breakers.len()
    }

    fn group_of(&self, bucket: usize) -> usize {
        if self.per_bucket() {
            bucket
        } else {
            0
        }
    }

    fn buckets_of(&self, group: usize) -> Range<usize> {
        if self.per_bucket() {
            group..group + 1
        } else {
            0..self.names.buckets()
        }
    }

    /// The group and bucket of `key`'s entry.
    fn place_of(&self, key: &CacheKey) -> (usize, usize) {
        let bucket = self.names.bucket_of(key);
        (self.group_of(bucket), bucket)
    }

    /// Runs a purge step: outside the breaker (an admin action must not
    /// pause caching for everyone) and with [`PURGE_TIMEOUT`], since an
    /// index can be large.
    async fn purge_step<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(RedisHandle) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.within(PURGE_TIMEOUT, op(self.redis.clone())).await
    }

    /// Runs one purge pipeline per group, concurrently, each built by
    /// `build` from the group's buckets; the replies of every group.
    async fn purge_pipelines<T: redis::FromRedisValue>(
        &self,
        build: impl Fn(Range<usize>, &mut redis::Pipeline),
    ) -> Result<Vec<T>, StoreError> {
        let steps = self.groups().map(|group| {
            let mut pipeline = redis::pipe();
            build(self.buckets_of(group), &mut pipeline);
            self.purge_step(|mut conn| async move { pipeline.query_async::<Vec<T>>(&mut conn).await })
        });
        let mut all = Vec::new();
        for replies in join_all(steps).await {
            all.extend(replies?);
        }
        Ok(all)
    }

    /// Runs `operation` within `budget`, counting its failures.
    async fn within<T>(
        &self,
        budget: Duration,
        operation: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(budget, operation).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                self.metrics.redis_error("error");
                Err(StoreError::Backend(e.to_string()))
            }
            Err(_) => {
                self.metrics.redis_error("timeout");
                Err(StoreError::Timeout)
            }
        }
    }

    /// `bucket`'s index set filing `place`.
    fn index_set(&self, bucket: usize, place: Filed<'_>) -> String {
        match place {
            Filed::Path(path) => self.names.path_set(bucket, path),
            Filed::Prefix(prefix) => self.names.subtree_set(bucket, prefix),
            Filed::Tag(tag) => self.names.tag_set(bucket, tag),
        }
    }

    /// Runs `op` on `group` behind its breaker: refused at once while it
    /// is open.
    async fn guarded<T, F, Fut>(&self, group: usize, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(RedisHandle) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if !self.breakers[group].allows() {
            return Err(StoreError::Unavailable);
        }
        self.attempt(group, op).await
    }

    /// Runs `op` on `group` within the time budget, applying the group's
    /// pending invalidations first, and records the outcome in its
    /// breaker.
    async fn attempt<T, F, Fut>(&self, group: usize, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(RedisHandle) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.attempt_on(&[group], op).await
    }

    /// Sends one pipeline of reads (by `send`, on this store's handle),
    /// counted as a round trip and under the breakers of `groups`.
    async fn send_reads<Fut>(
        &self,
        lane: &Lane,
        groups: Vec<usize>,
        send: impl FnOnce(RedisHandle) -> Fut,
    ) -> ReadResult
    where
        Fut: Future<Output = RedisResult<Vec<Option<Bytes>>>>,
    {
        self.metrics.read_round_trip();
        // On one node the pipeline is the breaker's half-open probe
        // (`guarded`); on a cluster, reads were refused up front while
        // their group's breaker was open, and a half-open group is probed
        // by the lane's one pipeline.
        if *lane == Lane::Single && !self.breakers[0].allows() {
            return Err(StoreError::Unavailable);
        }
        self.attempt_on(&groups, send).await
    }

    /// [`attempt`](Self::attempt) for an operation touching the buckets of
    /// several groups (a lane's pipeline of reads): each group's pending
    /// invalidations first, the outcome in each group's breaker.
    async fn attempt_on<T, F, Fut>(&self, groups: &[usize], op: F) -> Result<T, StoreError>
    where
        F: FnOnce(RedisHandle) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let attempt = async {
            if self.pending.any() {
                for &group in groups {
                    self.flush_pending(group).await?;
                }
            }
            op(self.redis.clone()).await
        };
        let result = self.within(self.operation_timeout, attempt).await;
        if result.is_err() {
            self.redis.recover();
        }
        for &group in groups {
            let breaker = &self.breakers[group];
            let transition = match &result {
                Ok(_) => breaker.record_success(),
                Err(_) => breaker.record_failure(),
            };
            self.log_transition(group, transition, result.as_ref().err());
        }
        result
    }

    /// Says when the first group's breaker opens and when the last one
    /// closes: a failed shard opens the breakers of all its buckets, which
    /// is one event to an operator, not dozens.
    fn log_transition(&self, group: usize, transition: Transition, error: Option<&StoreError>) {
        let bucket = self.per_bucket().then_some(group);
        match transition {
            Transition::Opened => {
                if self.open_groups.fetch_add(1, Ordering::AcqRel) == 0 {
                    let error = error.map(ToString::to_string).unwrap_or_default();
                    tracing::warn!(%error, ?bucket, "redis unavailable; serving from upstream until it recovers");
                } else {
                    tracing::debug!(?bucket, "redis unavailable for one more bucket");
                }
            }
            Transition::Closed => {
                if self.open_groups.fetch_sub(1, Ordering::AcqRel) == 1 {
                    tracing::info!("redis available again; caching resumed");
                } else {
                    tracing::debug!(?bucket, "redis available again for a bucket");
                }
            }
            Transition::None => {}
        }
    }

    /// Applies the invalidations `group` has pending.
    async fn flush_pending(&self, group: usize) -> RedisResult<()> {
        let pending = self.pending.of(group);
        if pending.is_empty() {
            return Ok(());
        }
        let tags = pending.tags();
        // Not waiting for a replica here, inside another operation's
        // budget: the caller that retries pending work (the retry task, a
        // write) waits once for all it applied.
        self.bump(self.redis.clone(), group, &tags).await?;
        self.pending.settle(&pending);
        tracing::info!(tags = ?tags, "applied invalidations recorded while redis was unreachable");
        Ok(())
    }

    /// Gives `tags` fresh generations in `group`'s buckets. When Redis is out of memory under `noeviction` it refuses every
    /// write but still deletes: the generations are then deleted instead,
    /// which fails closed on every instance (a missing generation is a
    /// miss, and creating it again is refused while memory is full), so
    /// the write still hides what it replaced.
    async fn bump(&self, mut conn: RedisHandle, group: usize, tags: &[String]) -> RedisResult<()> {
        let buckets = self.buckets_of(group);
        let announce = buckets.contains(&0);
        let mut pipe = redis::pipe();
        for bucket in buckets.clone() {
            for tag in tags {
                pipe.cmd("SET")
                    .arg(self.names.generation(bucket, tag))
                    .arg(new_generation())
                    .ignore();
            }
        }
        // Tells every instance to drop its L1 copies of these tags now,
        // rather than on their next lookup.
        if announce {
            self.redis.announce(&mut pipe, &self.events, &tags.join(" "));
        }
        match pipe.query_async::<()>(&mut conn).await {
            Err(err) if is_out_of_memory(&err) => {
                tracing::warn!(?tags, "redis is out of memory; deleting the generations of these tags instead of replacing them (every instance misses on them until memory frees)");
                let mut pipe = redis::pipe();
                for bucket in buckets {
                    for tag in tags {
                        pipe.cmd("DEL").arg(self.names.generation(bucket, tag)).ignore();
                    }
                }
                if announce {
                    self.redis.announce(&mut pipe, &self.events, &tags.join(" "));
                }
                pipe.query_async::<()>(&mut conn).await
            }
            other => other,
        }
    }

    /// Where a failover may promote a replica (Sentinel, cluster): waits
    /// until a replica of every primary holds the writes sent so far
    /// (`WAIT 1`, which the cluster client sends to each primary on the
    /// connection the writes took, and answers with the fewest replicas
    /// any primary reached). A write is answered anyway after the wait:
    /// the primaries hold its generations, and refusing writes while a
    /// replica is away would stop caching for nothing a failover has not
    /// already cost. Such writes are counted; the README says what a
    /// failover at that moment can bring back.
    async fn confirm_replicated(&self) {
        let Some(wait) = self.replica_wait else { return };
        let waited = tokio::time::timeout(
            self.operation_timeout,
            redis::cmd("WAIT")
                .arg(1)
                .arg(wait.as_millis() as u64)
                .query_async::<i64>(&mut self.redis.clone()),
        )
        .await;
        if !matches!(waited, Ok(Ok(replicas)) if replicas >= 1) {
            self.metrics.unreplicated_invalidation();
        }
    }

    /// Problems with Redis's own settings that weaken a guarantee: an
    /// `allkeys-*` eviction policy may evict tag generations, which carry
    /// no TTL precisely so that `volatile-*` policies never touch them.
    async fn setting_warnings(&self) -> Result<Vec<String>, StoreError> {
        let policy: Vec<String> = self
            .within(self.operation_timeout, async {
                redis::cmd("CONFIG")
                    .arg("GET")
                    .arg("maxmemory-policy")
                    .query_async(&mut self.redis.clone())
                    .await
            })
            .await?;
        Ok(match policy.get(1) {
            Some(policy) if policy.starts_with("allkeys-") => vec![format!(
                "redis maxmemory-policy is {policy}: it may evict tag generations, which costs misses and, for an entry stored by a read that raced a write, could serve it; use volatile-lru or noeviction"
            )],
            _ => Vec::new(),
        })
    }

    /// Drops the L1 copies recorded under any of `tags`.
    fn evict_tagged(&self, tags: Vec<String>) {
        let Some(l1) = &self.l1 else { return };
        let evict_all = tags.iter().any(|t| t == ALL_TAG);
        let registered = l1.invalidate_entries_if(move |_, copy| {
            evict_all || copy.entry.generations.iter().any(|(tag, _)| tags.contains(tag))
        });
        if registered.is_ok() {
            l1.run_pending_tasks();
        }
    }

    /// Sends `commands`, each in the bucket it names, in the next batch:
    /// one read per lane and group, so on one node (and on a cluster,
    /// wherever the buckets share a node) they ride one pipeline. Each
    /// command's reply, in order: on a cluster, a read that fails (its
    /// node down, its bucket's breaker open) fails only its own commands,
    /// so a lookup does not fail with a rate limit counted elsewhere.
    async fn read(&self, commands: Vec<(usize, Command)>) -> Vec<Result<Reply, StoreError>> {
        let count = commands.len();
        if !self.per_bucket() {
            // One node: one group, one lane, one read.
            // Not `allows`: the batch's pipeline passes the breaker (and is
            // the half-open probe); claiming it here too would refuse that
            // probe.
            if self.breakers[0].is_open() {
                return vec![Err(StoreError::Unavailable); count];
            }
            let read = Read {
                lane: Lane::Single,
                group: 0,
                commands: commands.into_iter().map(|(_, command)| command).collect(),
            };
            // Nothing to batch it with: sent from this task, on a
            // connection it writes and reads itself, where there is one.
            let alone = match self.reads.is_idle().then(|| self.redis.direct_lease()).flatten() {
                Some(lease) => {
                    let send = |lane, groups, pipeline| async move {
                        self.send_reads(&lane, groups, |conn| conn.send_on(lease, pipeline))
                            .await
                    };
                    self.reads.read_alone(&read, send).await
                }
                None => None,
            };
            let answer = match alone {
                Some(answer) => answer,
                None => self.reads.read(read).await,
            };
            return match answer {
                Ok(replies) => replies.into_iter().map(Ok).collect(),
                Err(err) => vec![Err(err); count],
            };
        }
        let mut ordered: Vec<Result<Reply, StoreError>> = vec![Err(StoreError::Unavailable); count];
        let mut reads: Vec<(Read, Vec<usize>)> = Vec::with_capacity(1);
        for (i, (bucket, command)) in commands.into_iter().enumerate() {
            let group = self.group_of(bucket);
            if self.breakers[group].is_open() {
                continue;
            }
            let lane = self.redis.lane(self.bucket_slots[bucket]);
            match reads.iter_mut().find(|(r, _)| r.lane == lane && r.group == group) {
                Some((read, places)) => {
                    read.commands.push(command);
                    places.push(i);
                }
                None => reads.push((
                    Read {
                        lane,
                        group,
                        commands: vec![command],
                    },
                    vec![i],
                )),
            }
        }
        let sent = join_all(
            reads
                .into_iter()
                .map(|(read, places)| async move { (places, self.reads.read(read).await) }),
        )
        .await;
        for (places, answer) in sent {
            match answer {
                Ok(replies) => {
                    for (place, reply) in places.into_iter().zip(replies) {
                        ordered[place] = Ok(reply);
                    }
                }
                Err(err) => {
                    for place in places {
                        ordered[place] = Err(err.clone());
                    }
                }
            }
        }
        ordered
    }

    /// Reads the entry under `key` (only its stamp, with `stamp_only`) and
    /// its bucket's generations of `tags`, with `extra` commands riding the
    /// same batch: the entry's part, or why it failed, and each extra
    /// command's reply.
    async fn read_entry(
        &self,
        stamp_only: bool,
        key: &CacheKey,
        tags: &[String],
        extra: Vec<(usize, Command)>,
    ) -> (Result<EntryRead, StoreError>, Vec<Result<Reply, StoreError>>) {
        let bucket = self.place_of(key).1;
        let entry_key = self.names.entry(key);
        let entry = match stamp_only {
            true => Command::Stamp(entry_key),
            false => Command::Get(entry_key),
        };
        let mut commands = Vec::with_capacity(1 + tags.len() + extra.len());
        commands.push((bucket, entry));
        commands.extend(
            tags.iter()
                .map(|t| (bucket, Command::Get(self.names.generation(bucket, t)))),
        );
        commands.extend(extra);
        let mut replies = self.read(commands).await.into_iter();
        let own: Result<Vec<Reply>, StoreError> = replies.by_ref().take(1 + tags.len()).collect();
        let read = own.map(|own| {
            let mut own = own.into_iter();
            let entry = own.next().and_then(|r| r.value);
            EntryRead {
                entry,
                generations: own.map(|r| r.value).collect(),
            }
        });
        (read, replies.collect())
    }

    /// The lookup of `key` once its first read is in: settled by an L1
    /// copy, or by the entry read (reading it whole if the first read
    /// only confirmed a copy that turned out outdated).
    async fn settle_lookup(
        &self,
        key: &CacheKey,
        tags: &[String],
        copy: Option<LocalCopy>,
        first: EntryRead,
    ) -> Result<Lookup, StoreError> {
        let (raw_entry, current) = match (copy, &self.l1) {
            (Some(copy), Some(l1)) => {
                if let Some(found) = self.check_copy(l1, key, copy, first.entry, first.generations, tags) {
                    return Ok(found);
                }
                let whole = self.read_entry(false, key, tags, Vec::new()).await.0?;
                (whole.entry, whole.generations)
            }
            _ => (first.entry, first.generations),
        };
        if current.iter().any(Option::is_none) {
            // A missing generation is a miss, whatever the entry says.
            return Ok(miss(tags, self.create_generations(key, tags).await?));
        }
        if let Some(copy) = raw_entry.and_then(decode_stamped) {
            // Compared in place: the owned generation list is only built
            // for a miss, which needs it to record in the new entry.
            if recorded_under(&copy.entry.generations, tags, &current) {
                if let Some(found) = usable(copy.entry.clone(), now_ms(), self.revalidation_retention) {
                    if let Some(l1) = &self.l1 {
                        l1.insert(*key, copy);
                    }
                    return Ok(found);
                }
            }
        }
        Ok(miss(tags, current))
    }

    /// This instance's copy of `key`'s entry, if it keeps one.
    fn l1_copy(&self, key: &CacheKey) -> Option<LocalCopy> {
        self.l1.as_ref()?.get(key)
    }

    /// Creates `key`'s bucket's generations of `tags` that do not exist
    /// yet (first use, or lost with Redis's data) and reads back whichever
    /// token won.
    async fn create_generations(&self, key: &CacheKey, tags: &[String]) -> Result<Vec<Option<Bytes>>, StoreError> {
        let (group, bucket) = self.place_of(key);
        let keys: Vec<String> = tags.iter().map(|t| self.names.generation(bucket, t)).collect();
        self.guarded(group, |mut conn| async move {
            let mut pipe = redis::pipe();
            for k in &keys {
                pipe.cmd("SET").arg(k).arg(new_generation()).arg("NX").ignore();
                pipe.cmd("GET").arg(k);
            }
            pipe.query_async(&mut conn).await
        })
        .await
    }

    /// Decides on an L1 copy from the stamp Redis holds for its key and the
    /// current generations of `tags`. Returns the answer if that settles
    /// it, `None` if Redis holds another value (or none) and the entry must
    /// be read.
    fn check_copy(
        &self,
        l1: &Cache<CacheKey, LocalCopy>,
        key: &CacheKey,
        copy: LocalCopy,
        stored_stamp: Option<Bytes>,
        current: Vec<Option<Bytes>>,
        tags: &[String],
    ) -> Option<Lookup> {
        let same_value = stored_stamp.as_deref() == Some(&copy.stamp[..]);
        if same_value && recorded_under(&copy.entry.generations, tags, &current) {
            if let Some(found) = usable(copy.entry, now_ms(), self.revalidation_retention) {
                self.metrics.l1_lookup("hit");
                return Some(found);
            }
        }
        self.metrics.l1_lookup("outdated");
        l1.invalidate(key);
        // Redis holds this very entry and it is no longer current: reading
        // it would tell nothing more. Missing generations are left to the
        // full read, which creates them.
        (same_value && current.iter().all(Option::is_some)).then(|| miss(tags, current))
    }
}

/// Whether `recorded` holds exactly `current`, the generations just read
/// for `tags` (in order). A missing current generation never matches.
fn recorded_under(recorded: &Generations, tags: &[String], current: &[Option<Bytes>]) -> bool {
    recorded.len() == tags.len()
        && recorded
            .iter()
            .zip(tags)
            .zip(current)
            .all(|(((tag, generation), wanted), now)| tag == wanted && now.as_deref() == Some(generation.as_bytes()))
}

/// Sends a lane's pipeline: on one node, behind its breaker; on a
/// cluster, to the node of the lane, counted in each group's breaker.
fn pipeline_runner(
    store: Weak<RedisStore>,
) -> impl Fn(Lane, Vec<usize>, redis::Pipeline) -> Pin<Box<dyn Future<Output = ReadResult> + Send>> {
    move |lane, groups, pipeline| {
        let store = store.clone();
        Box::pin(async move {
            let store = store.upgrade().ok_or(StoreError::Unavailable)?;
            store.send_reads(&lane, groups, |conn| conn.send(&lane, pipeline)).await
        })
    }
}

/// A new random stamp and `entry` encoded behind it, as stored.
fn stamped(entry: &Entry) -> ([u8; STAMP_LEN], Bytes) {
    let stamp: [u8; STAMP_LEN] = rand::random();
    let mut value = BytesMut::with_capacity(STAMP_LEN + entry.encoded_len());
    value.put_slice(&stamp);
    entry.encode_into(&mut value);
    (stamp, value.freeze())
}

/// A miss under `current`, the generations just read for `tags`.
fn miss(tags: &[String], current: Vec<Option<Bytes>>) -> Lookup {
    let generations: Generations = tags
        .iter()
        .zip(current)
        .map(|(tag, g)| {
            (
                tag.clone(),
                String::from_utf8_lossy(g.as_deref().unwrap_or_default()).into_owned(),
            )
        })
        .collect();
    Lookup::Miss(generations)
}

/// Splits a stored value into its stamp and entry; `None` (a miss) for a
/// value this version cannot read.
fn decode_stamped(raw: Bytes) -> Option<LocalCopy> {
    let Some(stamp) = raw.get(..STAMP_LEN).and_then(|s| s.try_into().ok()) else {
        tracing::warn!("ignoring a cache entry too short to hold its stamp");
        return None;
    };
    match Entry::decode(raw.slice(STAMP_LEN..)) {
        Ok(entry) => Some(LocalCopy {
            stamp,
            entry: Arc::new(entry),
        }),
        Err(e) => {
            tracing::warn!(error = %e, "ignoring undecodable cache entry");
            None
        }
    }
}

/// Evicts L1 copies as invalidations are announced, following the channel
/// again after [`PENDING_RETRY`] whenever the subscription drops. Only an
/// early eviction: an L1 copy is never served without Redis confirming its
/// generations, whether or not a message arrived.
async fn follow_invalidations(store: Weak<RedisStore>) {
    let Some((redis, channel)) = store.upgrade().map(|s| (s.redis.clone(), s.events.clone())) else {
        return;
    };
    let alive = || store.strong_count() > 0;
    let evict = |tags: String| {
        if let Some(store) = store.upgrade() {
            store.evict_tagged(tags.split(' ').map(str::to_owned).collect());
        }
    };
    redis.follow(&channel, PENDING_RETRY, alive, evict).await;
}

/// Whether Redis refused a command, or any command of a pipeline, for
/// lack of memory.
fn is_out_of_memory(err: &redis::RedisError) -> bool {
    err.clone()
        .into_server_errors()
        .is_some_and(|errors| errors.iter().any(|(_, e)| e.code() == "OOM"))
}

/// Says once, when Redis is first reachable, what in its settings weakens
/// a guarantee.
async fn warn_about_settings(store: Weak<RedisStore>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let Some(store) = store.upgrade() else { return };
        if let Ok(warnings) = store.setting_warnings().await {
            for warning in warnings {
                tracing::warn!("{warning}");
            }
            return;
        }
    }
}

/// Retries pending invalidations in the background, ignoring the breaker,
/// so they reach Redis (and other instances) soon after it recovers even if
/// no request comes.
async fn retry_pending(store: Weak<RedisStore>) {
    let mut tick = tokio::time::interval(PENDING_RETRY);
    loop {
        tick.tick().await;
        let Some(store) = store.upgrade() else { return };
        let mut applied = false;
        for group in store.pending.groups() {
            applied |= store.attempt(group, |_| async { Ok(()) }).await.is_ok();
        }
        if applied {
            store.confirm_replicated().await;
        }
    }
}

#[async_trait]
impl CacheStore for RedisStore {
    async fn lookup(&self, key: &CacheKey, tags: &[String]) -> Result<Lookup, StoreError> {
        // One round trip: the entry (or an L1 copy's stamp) and its tags'
        // generations.
        let copy = self.l1_copy(key);
        let first = self.read_entry(copy.is_some(), key, tags, Vec::new()).await.0?;
        self.settle_lookup(key, tags, copy, first).await
    }

    async fn store(&self, key: &CacheKey, entry: &Entry, index: &IndexInfo<'_>) -> Result<(), StoreError> {
        let ttl_ms = entry.retention_left(now_ms(), self.revalidation_retention).as_millis() as u64;
        if ttl_ms == 0 {
            return Ok(());
        }
        let (stamp, value) = stamped(entry);
        let (group, bucket) = self.place_of(key);
        let entry_key = self.names.entry(key);
        let hex = key.to_hex();
        let with_path = format!("{hex} {}", index.path);
        let mut sets = vec![(self.names.path_set(bucket, index.path), &hex)];
        sets.extend(prefixes_of(index.path).map(|p| {
            let member = if records_paths(p) { &with_path } else { &hex };
            (self.names.subtree_set(bucket, p), member)
        }));
        sets.extend(
            index
                .tags
                .iter()
                .filter(|t| *t != ALL_TAG)
                .map(|t| (self.names.tag_set(bucket, t), &hex)),
        );
        let (sets, members): (Vec<String>, Vec<String>) = sets.into_iter().map(|(set, m)| (set, m.clone())).unzip();
        let now = now_ms();
        self.guarded(group, |mut conn| async move {
            STORE_SCRIPT
                .key(entry_key)
                .key(sets)
                .arg(value.as_ref())
                .arg(ttl_ms)
                .arg(now)
                .arg(members)
                .invoke_async::<i64>(&mut conn)
                .await
                .map(drop)
        })
        .await?;
        if let Some(l1) = &self.l1 {
            let entry = Arc::new(entry.detached());
            l1.insert(*key, LocalCopy { stamp, entry });
        }
        Ok(())
    }

    async fn filed(&self, place: Filed<'_>) -> Result<Vec<CacheKey>, StoreError> {
        // A prefix deeper than the index's cap is read from its ancestor at
        // the cap, whose members carry their path.
        let (place, under) = match place {
            Filed::Prefix(prefix) => match place_of_prefix(prefix) {
                (ancestor, true) => (Filed::Prefix(ancestor), Some(prefix)),
                (own, false) => (Filed::Prefix(own), None),
            },
            other => (other, None),
        };
        let now = now_ms();
        // Every bucket's index set of the place: one pipeline per group.
        let members: Vec<Vec<String>> = self
            .purge_pipelines(|buckets, pipeline| {
                for bucket in buckets {
                    pipeline
                        .cmd("ZRANGEBYSCORE")
                        .arg(self.index_set(bucket, place))
                        .arg(now)
                        .arg("+inf");
                }
            })
            .await?;
        let members: Vec<String> = members.into_iter().flatten().collect();
        Ok(members
            .iter()
            .filter_map(|member| {
                let (hex, path) = member
                    .split_once(' ')
                    .map_or((member.as_str(), None), |(h, p)| (h, Some(p)));
                // A member without its path (filed by an older version) is
                // kept: purging too much costs a miss, too little stale data.
                let wanted = match (under, path) {
                    (Some(prefix), Some(path)) => is_under(path, prefix),
                    _ => true,
                };
                wanted.then(|| CacheKey::from_hex(hex)).flatten()
            })
            .collect())
    }

    async fn remove(&self, keys: Vec<CacheKey>, soft: bool) -> Result<u64, StoreError> {
        if keys.is_empty() {
            return Ok(0);
        }
        if !soft {
            // One DEL per group: a command may not cross hash slots.
            let mut by_group: Vec<Vec<String>> = vec![Vec::new(); self.breakers.len()];
            for key in &keys {
                by_group[self.place_of(key).0].push(self.names.entry(key));
            }
            let deletes = by_group.into_iter().filter(|keys| !keys.is_empty()).map(|keys| {
                self.purge_step(
                    |mut conn| async move { redis::cmd("DEL").arg(&keys).query_async::<u64>(&mut conn).await },
                )
            });
            let mut removed = 0;
            for deleted in join_all(deletes).await {
                removed += deleted?;
            }
            return Ok(removed);
        }
        let mut marked = 0;
        for key in keys.iter().map(|k| self.names.entry(k)) {
            let raw: Option<Bytes> = self
                .purge_step(|mut conn| {
                    let key = key.clone();
                    async move { redis::cmd("GET").arg(key).query_async(&mut conn).await }
                })
                .await?;
            let Some(copy) = raw.and_then(decode_stamped) else {
                continue;
            };
            let now = now_ms();
            let expired = softly_expired(&copy.entry, now);
            let ttl_ms = expired.retention_left(now, self.revalidation_retention).as_millis() as u64;
            let value = stamped(&expired).1;
            let changed: i64 = self
                .purge_step(|mut conn| async move {
                    MARK_SCRIPT
                        .key(key)
                        .arg(&copy.stamp[..])
                        .arg(value.as_ref())
                        .arg(ttl_ms)
                        .invoke_async(&mut conn)
                        .await
                })
                .await?;
            marked += changed as u64;
        }
        Ok(marked)
    }
}

#[async_trait]
impl Invalidate for RedisStore {
    async fn invalidate(&self, tags: &[String]) -> Result<(), StoreError> {
        if tags.is_empty() {
            return Ok(());
        }
        let bumped = self
            .on_every_group(|group| self.attempt(group, move |conn| async move { self.bump(conn, group, tags).await }))
            .await;
        bumped.map_err(|(err, left)| {
            // Whether or not Redis applied them, assume not: this instance
            // serves nothing from these groups until a bump of these tags
            // there is acknowledged.
            for group in left {
                self.pending.remember(group, tags);
            }
            err
        })
    }
}

#[async_trait]
impl Leases for RedisStore {
    async fn lease(&self, key: &CacheKey, ttl: Duration) -> Result<Lease, StoreError> {
        let (lease_key, token) = (self.names.lease(key), new_generation());
        let granted: Option<String> = self
            .guarded(self.place_of(key).0, |mut conn| {
                let token = token.clone();
                async move {
                    redis::cmd("SET")
                        .arg(lease_key)
                        .arg(token)
                        .arg("NX")
                        .arg("PX")
                        .arg(ttl.as_millis() as u64)
                        .query_async(&mut conn)
                        .await
                }
            })
            .await?;
        Ok(match granted {
            Some(_) => Lease::Granted(Some(token)),
            None => Lease::HeldElsewhere,
        })
    }

    async fn release(&self, key: &CacheKey, token: &str) {
        let lease_key = self.names.lease(key);
        // Deleted only if still ours: an expired lease may have been
        // granted to another instance since.
        let released = self
            .guarded(self.place_of(key).0, |mut conn| async move {
                RELEASE_SCRIPT
                    .key(lease_key)
                    .arg(token)
                    .invoke_async::<i64>(&mut conn)
                    .await
            })
            .await;
        if let Err(e) = released {
            tracing::debug!(error = %e, "lease not released; it expires on its own");
        }
    }

    async fn leased(&self, key: &CacheKey) -> Result<bool, StoreError> {
        let lease_key = self.names.lease(key);
        self.guarded(self.place_of(key).0, |mut conn| async move {
            redis::cmd("EXISTS").arg(lease_key).query_async(&mut conn).await
        })
        .await
    }
}

#[async_trait]
impl StoreHealth for RedisStore {
    async fn ping(&self) -> Result<(), StoreError> {
        if self.per_bucket() {
            // Not through a bucket's breaker: each bucket keeps its own
            // verdict, and any node answering says the cluster is there.
            return self.within(self.operation_timeout, self.redis.ping()).await;
        }
        self.guarded(0, |conn| async move { conn.ping().await }).await
    }

    async fn warnings(&self) -> Vec<String> {
        // Managed Redis often disables CONFIG: nothing to say then.
        self.setting_warnings().await.unwrap_or_default()
    }

    async fn close(&self) {
        let mut unapplied = false;
        for group in self.pending.groups() {
            unapplied |= self.attempt(group, |_| async { Ok(()) }).await.is_err();
        }
        if unapplied {
            let lost = self.pending.all_tags();
            tracing::error!(tags = ?lost, "exiting with invalidations redis never acknowledged; other instances may serve entries these writes replaced until they expire");
        }
    }

    fn kind(&self) -> &'static str {
        "redis"
    }

    fn state(&self) -> StoreState {
        let (local_entries, local_bytes) = self.l1.as_ref().map_or((0, 0), |l1| {
            l1.run_pending_tasks();
            (l1.entry_count(), l1.weighted_size())
        });
        StoreState {
            local_entries,
            local_bytes,
            breakers_open: self.breakers.iter().filter(|b| b.is_open()).count() as u64,
            breakers: self.breakers.len() as u64,
            pending_invalidations: self.pending.all_tags().len() as u64,
        }
    }
}
