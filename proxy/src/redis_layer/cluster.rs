//! A Redis Cluster connection that can be made anew, and the slot map
//! reads share pipelines by.

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::RedisResult;

use super::lanes::SlotOwners;
use super::CONNECT_TIMEOUT;
use crate::secret::Secret;

/// A cluster connection that can be made anew. The cluster client learns
/// a new topology from `MOVED` answers and lost connections, but a request
/// to a dead primary waits on that node's reconnection, and callers give
/// up (their time budget) before any error reaches the client: after a
/// failover it would keep routing the dead node's slots to it. So after a
/// failure the store asks for a new connection, which reads the slot map
/// from the seeds; at most once per [`RENEW_EVERY`].
pub struct ClusterLink {
    seeds: Vec<Secret>,
    conn: ArcSwap<ClusterConnection>,
    renewed_at: Mutex<Instant>,
    /// Which primary serves which slot, for reads sharing a pipeline per
    /// node; read at start, every [`OWNERS_EVERY`] and after a failure.
    pub owners: ArcSwapOption<SlotOwners>,
}

/// The least time between two renewals of a cluster connection.
const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How often the slot map is read again without a failure asking for it.
const OWNERS_EVERY: Duration = Duration::from_secs(10);

impl ClusterLink {
    /// The link, and the task keeping its slot map (which ends with it).
    pub fn start(seeds: &[Secret]) -> RedisResult<Arc<ClusterLink>> {
        let link = Arc::new(ClusterLink {
            seeds: seeds.to_vec(),
            conn: ArcSwap::from_pointee(ClusterLink::connect(seeds)?),
            renewed_at: Mutex::new(Instant::now()),
            owners: ArcSwapOption::empty(),
        });
        tokio::spawn(keep_owners(Arc::downgrade(&link)));
        Ok(link)
    }

    /// Reads the slot map (`CLUSTER SLOTS`, from any node).
    async fn read_owners(&self) {
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
        let reply = self
            .current()
            .route_command(redis::cmd("CLUSTER").arg("SLOTS").clone(), routing)
            .await;
        match reply.ok().as_ref().and_then(SlotOwners::from_reply) {
            Some(owners) => self.owners.store(Some(Arc::new(owners))),
            // Without a map, reads go in one lane per slot: slower, right.
            None => self.owners.store(None),
        }
    }

    fn connect(seeds: &[Secret]) -> RedisResult<ClusterConnection> {
        Ok(cluster_builder(seeds)
            .build()?
            .get_pending_async_connection_with_config(cluster_config()))
    }

    /// A connection of its own that hands pushes (pub/sub messages) to
    /// `pushes`.
    pub async fn push_connection(&self, pushes: impl redis::aio::AsyncPushSender) -> RedisResult<ClusterConnection> {
        cluster_builder(&self.seeds)
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(pushes)
            .build()?
            .get_async_connection_with_config(cluster_config())
            .await
    }

    pub fn current(&self) -> ClusterConnection {
        ClusterConnection::clone(&self.conn.load())
    }

    pub fn renew(&self) {
        {
            let mut renewed_at = self.renewed_at.lock().unwrap_or_else(PoisonError::into_inner);
            if renewed_at.elapsed() < RENEW_EVERY {
                return;
            }
            *renewed_at = Instant::now();
        }
        // The slot map too may be what was wrong: read it again first.
        self.owners.store(None);
        match ClusterLink::connect(&self.seeds) {
            Ok(conn) => {
                self.conn.store(Arc::new(conn));
                tracing::debug!("reconnected to the redis cluster to learn its topology anew");
            }
            Err(e) => tracing::debug!(error = %e, "could not reconnect to the redis cluster"),
        }
    }
}

/// Reads the slot map now, every [`OWNERS_EVERY`], and within a second of
/// a renewal forgetting it, while the link lives.
async fn keep_owners(link: Weak<ClusterLink>) {
    let mut last = None::<Instant>;
    loop {
        let Some(strong) = link.upgrade() else { return };
        // Without a map (at start, after a renewal, or while the cluster is
        // away) asked again every second; with one, every OWNERS_EVERY.
        let again_after = if strong.owners.load().is_none() {
            RENEW_EVERY
        } else {
            OWNERS_EVERY
        };
        let due = last.is_none_or(|at| at.elapsed() >= again_after);
        if due {
            let _ = tokio::time::timeout(CONNECT_TIMEOUT, strong.read_owners()).await;
            last = Some(Instant::now());
        }
        drop(strong);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn cluster_builder(seeds: &[Secret]) -> ClusterClientBuilder {
    // Few, short retries: a redirection (`MOVED`/`ASK`) or a topology
    // refresh is followed at once; a slot with no reachable primary is
    // the caller's to bypass, within its own budget, not the client's to
    // wait out.
    ClusterClientBuilder::new(seeds.iter().map(|s| s.0.clone()))
        .retries(2)
        .min_retry_wait(10)
        .max_retry_wait(100)
}

/// Bounds each reply as well as each connection: the client refreshes its
/// slot map over its connections while holding every request, so one reply
/// that never comes (a node lost mid-failover) would otherwise hold the
/// whole cluster's traffic.
fn cluster_config() -> redis::cluster::ClusterConfig {
    redis::cluster::ClusterConfig::new()
        .set_connection_timeout(CONNECT_TIMEOUT)
        .set_response_timeout(CONNECT_TIMEOUT)
}
