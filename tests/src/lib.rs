//! Integration harness shared by every end-to-end test and by the benches.
//!
//! Starts real servers (Redis, FerretDB) as child processes on free ports
//! and the project's own binaries in-process on pre-bound listeners, so each
//! test gets its own isolated stack and can run in parallel with the others.
//!
//! # Layout
//! - [`process`]: children that die with the test binary, free ports, waits.
//! - [`servers`]: [`RedisServer`] and [`MongoServer`] (FerretDB).
//! - [`cluster`]: [`cluster::RedisCluster`], a real local Redis Cluster;
//!   [`sentinel`]: [`sentinel::SentinelGroup`], a primary, a replica and
//!   three sentinels.
//! - [`shared_redis`]: one node, one Sentinel group and one cluster per
//!   test binary, and [`on_every_redis!`] to run a scenario on each.
//! - [`origin`]: [`spawn_origin`], the real origin in-process.
//! - [`proxy`]: [`spawn_proxy`], the real proxy in-process, and its config.
//! - [`upstream`]: [`ScriptedUpstream`], an origin that misbehaves on purpose.
//! - [`stack`]: [`Stack`], all of the above wired together.
//! - [`task`]: [`task::ServerTask`], what both in-process server handles share.
//! - [`tls`]: certificates made per test and a TLS client.
//! - [`token`]: HS256 tokens signed like the origin's, for tests and benches.
//! - [`wait`]: polling for a condition with a deadline.
//! - [`client`]: a small JSON client for the origin's API.

pub mod client;
pub mod cluster;
pub mod origin;
pub mod previous;
pub mod process;
pub mod proxy;
pub mod sentinel;
pub mod servers;
pub mod shared_redis;
pub mod stack;
pub mod task;
pub mod tls;
pub mod token;
pub mod upstream;
pub mod wait;

pub use crate::client::{client_from, raw_http, ApiClient, RawResponse};
pub use crate::origin::{spawn_origin, spawn_origin_with, OriginHandle, StoppedOrigin};
pub use crate::proxy::{
    endpoints_proxy_config, proxy_config, proxy_config_file, proxy_config_with, redis_prefix, shared_key,
    spawn_logging_proxy, spawn_proxy, spawn_reloadable_proxy, AccessLines, ProxyHandle, ITEMS_CONFIG, SHIPPED_CONFIG,
};
pub use crate::servers::{MongoServer, RedisServer};
pub use crate::stack::Stack;
pub use crate::upstream::{json_reply, ScriptedUpstream};

/// Sends the servers' logs to the test's captured output; `LOG=debug` shows
/// more. Safe to call from every test.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
