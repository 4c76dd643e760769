//! One Redis layer: a handle over a standalone node, a primary found
//! through Sentinel, or a Redis Cluster, that the cache (and what later
//! shares Redis: rate limits, revocation) talks through.
//!
//! The handle is a [`redis::aio::ConnectionLike`], so commands, pipelines
//! and scripts are written once for every deployment. What differs is
//! said by the handle: [`RedisHandle::is_cluster`] (a pipeline or a script
//! must then stay within one hash slot; the cluster client routes it to the
//! slot's primary and follows `MOVED`/`ASK`), and how invalidation
//! announcements travel ([`RedisHandle::announce`],
//! [`RedisHandle::follow`]: plain pub/sub on one primary, sharded pub/sub
//! on a cluster).
//!
//! Nothing connects at construction: the proxy starts, and serves, with
//! Redis down. Time budgets and circuit breakers stay with the caller,
//! which knows what an operation is worth.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Client, Cmd, Pipeline, RedisFuture, RedisResult, Value};
use tokio::sync::mpsc;

mod cluster;
mod direct;
mod lanes;
mod sentinel;
pub mod target;

use self::cluster::ClusterLink;
use self::direct::{DirectPool, Lease};
pub use self::lanes::{slot_of, Lane};
use self::sentinel::SentinelLink;
pub use self::target::{RedisTarget, SentinelTarget};

/// How long a background (re)connection attempt may take; requests never
/// wait for it longer than their own operation budget.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A cloneable handle on the deployment; clones share connections.
#[derive(Clone)]
pub struct RedisHandle {
    link: Link,
}

#[derive(Clone)]
enum Link {
    /// The node's connection, its client for subscriptions, and the
    /// connections reads are written and read on by the task sending them
    /// ([`direct`]; where the node has them).
    Node(ConnectionManager, Arc<redis::Client>, Option<Arc<DirectPool>>),
    Sentinel(Arc<SentinelLink>),
    Cluster(Arc<ClusterLink>),
}

impl RedisHandle {
    /// A handle on `target`, connecting on first use.
    pub fn new(target: &RedisTarget) -> RedisResult<RedisHandle> {
        let link = match target {
            RedisTarget::Node(url) => {
                let client = redis::Client::open(url.0.as_str())?;
                let direct = DirectPool::new(client.get_connection_info());
                Link::Node(
                    ConnectionManager::new_lazy_with_config(client.clone(), manager_config())?,
                    Arc::new(client),
                    direct,
                )
            }
            RedisTarget::Sentinel(sentinel) => Link::Sentinel(SentinelLink::start(sentinel)?),
            RedisTarget::Cluster(seeds) => Link::Cluster(ClusterLink::start(seeds)?),
        };
        Ok(RedisHandle { link })
    }

    /// Called after an operation failed: on a cluster, makes the
    /// connection anew (at most once a second) so a failover's new primary
    /// is found even when no error reached the cluster client.
    pub fn recover(&self) {
        if let Link::Cluster(link) = &self.link {
            link.renew();
        }
    }

    /// The lane of reads of hash slot `slot`: on a cluster, its primary's
    /// (as the slot map last said), so that reads of every slot a node
    /// serves share one pipeline; one lane elsewhere.
    pub fn lane(&self, slot: u16) -> Lane {
        match &self.link {
            Link::Cluster(link) => match link.owners.load().as_deref() {
                Some(owners) => owners.lane_of(slot),
                None => Lane::Slot(slot),
            },
            Link::Node(..) | Link::Sentinel(_) => Lane::Single,
        }
    }

    /// Sends `pipeline` down `lane` (on this handle, a clone of the
    /// caller's); its replies, a server error in any of them failing the
    /// whole.
    pub async fn send<T: redis::FromRedisValue>(mut self, lane: &Lane, pipeline: Pipeline) -> RedisResult<T> {
        match (lane, &self.link) {
            (Lane::Node(host, port), Link::Cluster(link)) => {
                let routing = SingleNodeRoutingInfo::ByAddress {
                    host: host.to_string(),
                    port: *port,
                };
                let count = pipeline.len();
                let replies = link.current().route_pipeline(pipeline, 0, count, routing).await?;
                let replies = Value::Array(replies).extract_error()?;
                Ok(redis::from_redis_value(replies)?)
            }
            (Lane::Single, Link::Node(_, _, Some(direct))) => match direct.take() {
                Some(lease) => self.send_on(lease, pipeline).await,
                None => pipeline.query_async(&mut self).await,
            },
            _ => pipeline.query_async(&mut self).await,
        }
    }

    /// A connection to the node that the caller writes and reads in its
    /// own task ([`direct`]); `None` where there is none idle, or none at
    /// all (a Sentinel group, a cluster, TLS).
    pub fn direct_lease(&self) -> Option<Lease> {
        match &self.link {
            Link::Node(_, _, Some(direct)) => direct.take(),
            _ => None,
        }
    }

    /// Sends `pipeline` on `lease`'s connection; its replies, a server
    /// error in any of them failing the whole.
    pub async fn send_on<T: redis::FromRedisValue>(self, lease: Lease, pipeline: Pipeline) -> RedisResult<T> {
        let replies = lease.send(&pipeline.get_packed_pipeline(), pipeline.len()).await?;
        let replies = Value::Array(replies).extract_error()?;
        Ok(redis::from_redis_value(replies)?)
    }

    /// Whether pipelines and scripts must keep to one hash slot.
    pub fn is_cluster(&self) -> bool {
        matches!(self.link, Link::Cluster(_))
    }

    /// The command announcing `message` on `channel` to every instance
    /// following it: `SPUBLISH` on a cluster (delivered by the one shard
    /// owning the channel's slot, not broadcast over the whole cluster
    /// bus), `PUBLISH` elsewhere.
    pub fn announce(&self, pipeline: &mut Pipeline, channel: &str, message: &str) {
        let command = if self.is_cluster() { "SPUBLISH" } else { "PUBLISH" };
        pipeline.cmd(command).arg(channel).arg(message).ignore();
    }

    /// Follows `channel` until `keep_going` says stop, handing each message
    /// to `on_message`; reconnects (after `retry`) whenever the
    /// subscription drops, including across a failover. Returns when
    /// `keep_going` is false.
    pub async fn follow(
        &self,
        channel: &str,
        retry: Duration,
        keep_going: impl Fn() -> bool,
        on_message: impl Fn(String),
    ) {
        // Doubling up to 32 × `retry` while Redis stays away: only early
        // L1 eviction waits on it, so no need to knock every 100 ms.
        let mut delay = retry;
        while keep_going() {
            let followed = match &self.link {
                Link::Cluster(link) => follow_sharded(link, channel, &keep_going, &on_message).await,
                Link::Node(_, client, _) => {
                    follow_plain(Client::clone(client), channel, &keep_going, &on_message).await
                }
                Link::Sentinel(link) => match link.primary_client().await {
                    Ok(client) => follow_plain(client, channel, &keep_going, &on_message).await,
                    Err(e) => Err(e),
                },
            };
            if !keep_going() {
                return;
            }
            delay = if followed.is_ok() {
                retry
            } else {
                (delay * 2).min(retry * 32)
            };
            tokio::time::sleep(delay).await;
        }
    }

    /// Whether Redis answers: on a cluster, any one node (a replica down
    /// does not make the cache unusable, and each bucket's own breaker
    /// tells the rest).
    pub async fn ping(&self) -> RedisResult<()> {
        match &self.link {
            Link::Cluster(link) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
                link.current()
                    .route_command(redis::cmd("PING"), routing)
                    .await
                    .map(drop)
            }
            _ => redis::cmd("PING").query_async(&mut self.clone()).await,
        }
    }
}

/// Plain pub/sub on one node (or a Sentinel group's primary).
async fn follow_plain(
    client: redis::Client,
    channel: &str,
    keep_going: &impl Fn() -> bool,
    on_message: &impl Fn(String),
) -> RedisResult<()> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    let mut messages = pubsub.into_on_message();
    while let Some(message) = messages.next().await {
        if !keep_going() {
            return Ok(());
        }
        if let Ok(text) = message.get_payload::<String>() {
            on_message(text);
        }
    }
    Ok(())
}

/// Sharded pub/sub over a cluster connection of its own (RESP3, which
/// carries the messages as pushes); the cluster client subscribes again on
/// the channel's new primary after a failover.
async fn follow_sharded(
    link: &ClusterLink,
    channel: &str,
    keep_going: &impl Fn() -> bool,
    on_message: &impl Fn(String),
) -> RedisResult<()> {
    let (pushes, mut received) = mpsc::unbounded_channel();
    let mut conn = link.push_connection(pushes).await?;
    conn.ssubscribe(channel).await?;
    while let Some(push) = received.recv().await {
        if !keep_going() {
            return Ok(());
        }
        if push.kind == redis::PushKind::SMessage {
            if let Some(Value::BulkString(text)) = push.data.get(1) {
                on_message(String::from_utf8_lossy(text).into_owned());
            }
        }
    }
    Ok(())
}

impl ConnectionLike for RedisHandle {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.link {
            Link::Node(conn, ..) => conn.req_packed_command(cmd),
            Link::Cluster(link) => {
                let mut conn = link.current();
                Box::pin(async move { conn.req_packed_command(cmd).await })
            }
            Link::Sentinel(link) => {
                let link = link.clone();
                Box::pin(async move {
                    link.run(|mut conn| async move { conn.req_packed_command(cmd).await })
                        .await
                })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.link {
            Link::Node(conn, ..) => conn.req_packed_commands(cmd, offset, count),
            Link::Cluster(link) => {
                let mut conn = link.current();
                Box::pin(async move { conn.req_packed_commands(cmd, offset, count).await })
            }
            Link::Sentinel(link) => {
                let link = link.clone();
                Box::pin(async move {
                    link.run(|mut conn| async move { conn.req_packed_commands(cmd, offset, count).await })
                        .await
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match &self.link {
            Link::Node(conn, ..) => conn.get_db(),
            Link::Cluster(link) => link.current().get_db(),
            Link::Sentinel(link) => link.db(),
        }
    }
}

/// One node's connection: reconnects in the background, and gives up on
/// a command quickly rather than queueing it behind a reconnection.
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(200))
}
