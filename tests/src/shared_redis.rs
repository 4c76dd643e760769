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
    /// This binary's deployment of this kind, started if it is not yet.
    fn started(self) -> &'static dyn Shared {
        match self {
            Deployment::Standalone => STANDALONE.get_or_init(RedisServer::start),
            Deployment::Sentinel => SENTINEL.get_or_init(SentinelGroup::start),
            Deployment::Cluster => CLUSTER.get_or_init(RedisCluster::start),
        }
    }

    /// The proxy's `cache.redis_url` for it.
    pub fn url(self) -> String {
        self.started().url()
    }

    /// Waits until no other test of this binary pauses the deployment,
    /// and keeps them out while the guard lives.
    pub async fn exclusive(self) -> MutexGuard<'static, ()> {
        EXCLUSIVE[self as usize].lock().await
    }

    /// SIGSTOP on every process of the deployment (sentinels included):
    /// Redis is unreachable, and nothing fails over.
    pub fn pause(self) {
        self.started().pause();
    }

    pub fn resume(self) {
        self.started().resume();
    }

    /// Makes every data node refuse (`refuse = true`) or accept `SET`
    /// again: through ACL, so only writes fail (as under `noeviction` with
    /// memory full, or on a node demoted mid-failover) and, unlike a
    /// paused server, a refused command is never applied later.
    pub fn refuse_writes(self, refuse: bool) {
        let rule = if refuse { "-set" } else { "+set" };
        for port in self.started().data_ports() {
            let reply = redis_cli_at(port, &["acl", "setuser", "default", rule]);
            assert_eq!(reply.trim(), "OK", "ACL SETUSER on {port}: {reply}");
        }
    }
}

/// What the scenarios do to a deployment, whichever it is.
trait Shared: Sync {
    fn url(&self) -> String;
    fn pause(&self);
    fn resume(&self);
    /// The ports of its data nodes (not the sentinels).
    fn data_ports(&self) -> Vec<u16>;
}

impl Shared for RedisServer {
    fn url(&self) -> String {
        RedisServer::url(self)
    }
    fn pause(&self) {
        RedisServer::pause(self)
    }
    fn resume(&self) {
        RedisServer::resume(self)
    }
    fn data_ports(&self) -> Vec<u16> {
        vec![self.addr().port()]
    }
}

impl Shared for SentinelGroup {
    fn url(&self) -> String {
        SentinelGroup::url(self)
    }
    fn pause(&self) {
        SentinelGroup::pause(self)
    }
    fn resume(&self) {
        SentinelGroup::resume(self)
    }
    fn data_ports(&self) -> Vec<u16> {
        vec![self.primary_port(), self.replica_port()]
    }
}

impl Shared for RedisCluster {
    fn url(&self) -> String {
        RedisCluster::url(self)
    }
    fn pause(&self) {
        RedisCluster::pause(self)
    }
    fn resume(&self) {
        RedisCluster::resume(self)
    }
    fn data_ports(&self) -> Vec<u16> {
        self.ports().to_vec()
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
