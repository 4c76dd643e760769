//! The Redis deployments the correctness tests run on: one node, a
//! Sentinel group and a Redis Cluster, one of each per test binary,
//! started on first use and killed with the test process like every other
//! server. Tests sharing one keep apart by key namespace: each runs its
//! own upstream, whose authority is the proxy's default `cache.namespace`.
//!
//! [`on_every_redis!`](crate::on_every_redis) turns one scenario into a
//! test per deployment.

use std::sync::OnceLock;

use crate::cluster::RedisCluster;
use crate::sentinel::SentinelGroup;
use crate::servers::RedisServer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deployment {
    Standalone,
    Sentinel,
    Cluster,
}

static STANDALONE: OnceLock<RedisServer> = OnceLock::new();
static SENTINEL: OnceLock<SentinelGroup> = OnceLock::new();
static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();

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
