//! The primary of a Sentinel-monitored group, asked of the sentinels and
//! asked again when it stops behaving as one.
//!
//! A node's connection manager reconnects to the address it was given; after
//! a failover that address is dead, or a replica refusing writes
//! (`READONLY`). Either error (or a dropped or refused connection)
//! forgets the primary, and the next command asks the sentinels, which
//! check the node they name calls itself primary (`ROLE`), for the new
//! one. One caller asks at a time; the others reuse what it found.

use std::future::Future;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use redis::aio::ConnectionManager;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{RedisConnectionInfo, RedisError, RedisResult, TlsMode};
use tokio::sync::Mutex;

use super::target::SentinelTarget;

pub struct SentinelLink {
    sentinels: Mutex<SentinelClient>,
    primary: ArcSwapOption<Primary>,
    db: i64,
}

struct Primary {
    conn: ConnectionManager,
}

impl SentinelLink {
    pub fn new(target: &SentinelTarget) -> RedisResult<SentinelLink> {
        let mut redis = RedisConnectionInfo::default().set_db(target.db);
        if let Some(user) = &target.username {
            redis = redis.set_username(user);
        }
        if let Some(password) = &target.password {
            redis = redis.set_password(&password.0);
        }
        let mut node = SentinelNodeConnectionInfo::default().set_redis_connection_info(redis);
        if target.tls {
            node = node.set_tls_mode(TlsMode::Secure);
        }
        let sentinels = SentinelClient::build(
            target.sentinels.clone(),
            target.service.clone(),
            Some(node),
            SentinelServerType::Master,
        )?;
        Ok(SentinelLink {
            sentinels: Mutex::new(sentinels),
            primary: ArcSwapOption::empty(),
            db: target.db,
        })
    }

    pub fn db(&self) -> i64 {
        self.db
    }

    /// A client for the current primary, asked of the sentinels now.
    pub async fn primary_client(&self) -> RedisResult<redis::Client> {
        self.sentinels.lock().await.async_get_client().await
    }

    /// Runs `op` on the primary; forgets it if the error says it is gone
    /// or no longer primary.
    pub async fn run<T, F, Fut>(&self, op: F) -> RedisResult<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let primary = self.primary().await?;
        let result = op(primary.conn.clone()).await;
        if let Err(err) = &result {
            if primary_moved(err) {
                let previous = self.primary.compare_and_swap(&primary, None);
                if previous.as_ref().is_some_and(|p| Arc::ptr_eq(p, &primary)) {
                    tracing::info!(error = %err, "redis primary unreachable or demoted; asking the sentinels again");
                }
            }
        }
        result
    }

    async fn primary(&self) -> RedisResult<Arc<Primary>> {
        if let Some(primary) = self.primary.load_full() {
            return Ok(primary);
        }
        let mut sentinels = self.sentinels.lock().await;
        if let Some(primary) = self.primary.load_full() {
            return Ok(primary);
        }
        let client = sentinels.async_get_client().await?;
        let conn = ConnectionManager::new_lazy_with_config(client, super::manager_config())?;
        let primary = Arc::new(Primary { conn });
        self.primary.store(Some(primary.clone()));
        Ok(primary)
    }
}

/// Whether `err` means the node is no longer the primary to talk to.
fn primary_moved(err: &RedisError) -> bool {
    err.is_io_error()
        || err.is_connection_refusal()
        || err.is_connection_dropped()
        || err.is_unrecoverable_error()
        || matches!(err.code(), Some("READONLY" | "MASTERDOWN" | "LOADING"))
}
