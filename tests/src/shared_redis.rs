//! The Redis deployments the correctness tests run on: one node, a
//! Sentinel group and a Redis Cluster, one of each per test binary,
//! started on first use and killed with the test process like every other
//! server. Tests sharing one keep apart by key namespace: each runs its
//! own upstream, whose authority is the proxy's default `cache.namespace`.
//!
//! [`on_every_redis!`](crate::on_every_redis) turns one scenario into a
//! test per deployment. A test that pauses its deployment holds
//! [`Deployment::exclusive`] meanwhile, so the binary's other tests on it
//! are not caught in its outage.

use std::sync::OnceLock;

use tokio::sync::{Mutex, MutexGuard};

use crate::cluster::RedisCluster;
use crate::sentinel::SentinelGroup;
use crate::servers::{redis_cli_at, RedisServer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deployment {
    Standalone,
    Sentinel,
    Cluster,
}

static STANDALONE: OnceLock<RedisServer> = OnceLock::new();
static SENTINEL: OnceLock<SentinelGroup> = OnceLock::new();
static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
/// One per deployment, in the order of [`Deployment`]'s variants.
static EXCLUSIVE: [Mutex<()>; 3] = [Mutex::const_new(()), Mutex::const_new(()), Mutex::const_new(())];

impl Deployment {
    /// The proxy's `cache.redis_url` for this binary's deployment of this
    /// kind, started if it is not yet.
    pub fn url(self) -> String {
        match self {
            Deployment::Standalone => STANDALONE.get_or_init(RedisServer::start).url(),
            Deployment::Sentinel => SENTINEL.get_or_init(SentinelGroup::start).url(),
            Deployment::Cluster => CLUSTER.get_or_init(RedisCluster::start).url(),
        }
    }

    /// Waits until no other test of this binary pauses the deployment,
    /// and keeps them out while the guard lives.
    pub async fn exclusive(self) -> MutexGuard<'static, ()> {
        EXCLUSIVE[self as usize].lock().await
    }

    /// SIGSTOP on every process of the deployment (sentinels included):
    /// Redis is unreachable, and nothing fails over.
    pub fn pause(self) {
        match self {
            Deployment::Standalone => STANDALONE.get_or_init(RedisServer::start).pause(),
            Deployment::Sentinel => SENTINEL.get_or_init(SentinelGroup::start).pause(),
            Deployment::Cluster => CLUSTER.get_or_init(RedisCluster::start).pause(),
        }
    }

    /// Makes every data node refuse (`refuse = true`) or accept `SET`
    /// again: through ACL, so only writes fail (as under `noeviction` with
    /// memory full, or on a node demoted mid-failover) and, unlike a
    /// paused server, a refused command is never applied later.
    pub fn refuse_writes(self, refuse: bool) {
        let rule = if refuse { "-set" } else { "+set" };
        for port in self.data_ports() {
            let reply = redis_cli_at(port, &["acl", "setuser", "default", rule]);
            assert_eq!(reply.trim(), "OK", "ACL SETUSER on {port}: {reply}");
        }
    }

    fn data_ports(self) -> Vec<u16> {
        match self {
            Deployment::Standalone => vec![STANDALONE.get_or_init(RedisServer::start).addr().port()],
            Deployment::Sentinel => {
                let group = SENTINEL.get_or_init(SentinelGroup::start);
                vec![group.primary_port(), group.replica_port()]
            }
            Deployment::Cluster => CLUSTER.get_or_init(RedisCluster::start).ports().to_vec(),
        }
    }

    pub fn resume(self) {
        match self {
            Deployment::Standalone => STANDALONE.get_or_init(RedisServer::start).resume(),
            Deployment::Sentinel => SENTINEL.get_or_init(SentinelGroup::start).resume(),
            Deployment::Cluster => CLUSTER.get_or_init(RedisCluster::start).resume(),
        }
    }
}

/// `on_every_redis!(scenario)`: the async fn `scenario(Deployment)` as
/// three tests, `scenario::standalone`, `scenario::sentinel` and
/// `scenario::cluster`.
#[macro_export]
macro_rules! on_every_redis {
    ($($scenario:ident),+ $(,)?) => {
        $(
            mod $scenario {
                use $crate::shared_redis::Deployment;

                #[tokio::test]
                async fn standalone() {
                    super::$scenario(Deployment::Standalone).await
                }

                #[tokio::test]
                async fn sentinel() {
                    super::$scenario(Deployment::Sentinel).await
                }

                #[tokio::test]
                async fn cluster() {
                    super::$scenario(Deployment::Cluster).await
                }
            }
        )+
    };
}
