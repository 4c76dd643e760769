//! The primary of a Sentinel-monitored group, asked of the sentinels and
//! asked again when it stops behaving as one.
//!
//! A node's connection manager reconnects to the address it was given;
//! after a failover that address is dead, or a replica refusing writes
//! (`READONLY`). Two things move the link to the new primary: an error that
//! says so (a dropped or refused connection, `READONLY`) forgets the
//! primary, so the next command asks the sentinels; and a watcher asks the
//! sentinels every [`CHECK_EVERY`] which node is primary, since a caller's
//! time budget often runs out before a dead node's error surfaces. The
//! sentinels' answer is checked against the node itself (`ROLE`) before it
//! is used. One caller asks at a time; the others reuse what it found.

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::ConnectionManager;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{ConnectionAddr, RedisConnectionInfo, RedisError, RedisResult, TlsMode};
use tokio::sync::Mutex;

use super::target::SentinelTarget;

/// How often the watcher asks the sentinels which node is primary.
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// How long one such question may take.
const CHECK_LIMIT: Duration = Duration::from_secs(2);

pub struct SentinelLink {
    sentinels: Mutex<SentinelClient>,
    primary: ArcSwapOption<Primary>,
    db: i64,
}

struct Primary {
    addr: ConnectionAddr,
    conn: ConnectionManager,
}

impl SentinelLink {
    /// The link, and its watcher (which ends when the link is dropped).
    pub fn start(target: &SentinelTarget) -> RedisResult<Arc<SentinelLink>> {
        let link = Arc::new(SentinelLink::new(target)?);
        tokio::spawn(watch(Arc::downgrade(&link)));
        Ok(link)
    }

    fn new(target: &SentinelTarget) -> RedisResult<SentinelLink> {
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
        self.adopt(client)
    }

    /// Makes `client`'s node the primary commands go to.
    fn adopt(&self, client: redis::Client) -> RedisResult<Arc<Primary>> {
        let addr = client.get_connection_info().addr().clone();
        let conn = ConnectionManager::new_lazy_with_config(client, super::manager_config())?;
        let primary = Arc::new(Primary { addr, conn });
        self.primary.store(Some(primary.clone()));
        Ok(primary)
    }

    /// Asks the sentinels for the primary and moves to it if it changed.
    async fn check(&self) {
        let mut sentinels = self.sentinels.lock().await;
        let Ok(client) = sentinels.async_get_client().await else {
            // No sentinel answered, or the node they name is not primary
            // (yet): keep what we have; errors will say if it is gone.
            return;
        };
        let current = self.primary.load();
        if current
            .as_ref()
            .is_some_and(|p| &p.addr == client.get_connection_info().addr())
        {
            return;
        }
        if self.adopt(client).is_ok() && current.is_some() {
            tracing::info!("the sentinels name a new redis primary; moved to it");
        }
    }
}

/// Asks the sentinels for the primary every [`CHECK_EVERY`] while the
/// link lives.
async fn watch(link: Weak<SentinelLink>) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(link) = link.upgrade() else { return };
        // A sentinel that accepts and never answers (a partition without
        // resets) must not stop the watch.
        let _ = tokio::time::timeout(CHECK_LIMIT, link.check()).await;
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
