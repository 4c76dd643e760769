//! A JWT-aware caching reverse proxy for HTTP JSON APIs.
//!
//! It verifies bearer tokens, enforces per-route role rules, caches GET/HEAD
//! responses in Redis (or process memory) keyed by route, path, query,
//! vary headers and identity scope, and invalidates cached entries when
//! writes pass through it. It works in front of any backend: everything it
//! knows about the backend is in `config.toml`.
//!
//! # Layout
//! - [`config`]: `config.toml` + environment + CLI, validated once.
//! - [`server`]: accept loop, connection limit, graceful shutdown.
//! - [`handler`]: the request pipeline, step by step.
//! - [`route`]: path normalisation and rule matching.
//! - [`auth`]: bearer extraction and JWT verification.
//! - [`rbac`]: rule access against claims.
//! - [`cache`]: key, entry, storability, and the Redis and memory stores.
//! - [`coalesce`]: concurrent misses for one key fetch once.
//! - [`concurrency`]: how many requests may be at the backend at once.
//! - [`conditional`]: validators, 304s and revalidation.
//! - [`upstream`]: request shaping and the pooled client.
//! - [`vary`]: headers the origin varies on, learned per rule.
//! - [`invalidate`]: which write outcomes invalidate.
//! - [`admin`]: health, readiness, metrics listener; [`purge`]: `POST /purge`.
//! - [`metrics`], [`error`], [`body`]: support.

pub mod admin;
pub mod auth;
pub mod body;
pub mod cache;
pub mod coalesce;
pub mod concurrency;
pub mod conditional;
pub mod config;
pub mod error;
pub mod handler;
pub mod invalidate;
pub mod metrics;
pub mod purge;
pub mod rbac;
pub mod route;
pub mod server;
pub mod upstream;
pub mod vary;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::cache::memory::MemoryStore;
use crate::cache::redis::RedisStore;
use crate::cache::CacheStore;
use crate::concurrency::UpstreamSlots;
use crate::config::{Config, StoreSettings};
use crate::handler::Proxy;
use crate::metrics::Metrics;
use crate::upstream::Upstream;

/// Builds the store the config names. Redis is not contacted here: the
/// proxy starts, and serves, with Redis down.
pub fn build_store(config: &Config, metrics: Arc<Metrics>) -> anyhow::Result<Arc<dyn CacheStore>> {
    Ok(match &config.cache.store {
        StoreSettings::Memory { max_bytes } => Arc::new(MemoryStore::new(*max_bytes)),
        StoreSettings::Redis { url, l1_max_bytes } => RedisStore::new(&url.0, *l1_max_bytes, &config.cache, metrics)?,
    })
}

/// Builds everything a request needs.
pub fn build_proxy(config: Arc<Config>) -> anyhow::Result<Arc<Proxy>> {
    let metrics = Arc::new(Metrics::new());
    let store = build_store(&config, metrics.clone())?;
    Ok(Arc::new_cyclic(|me| Proxy {
        store,
        flights: Arc::default(),
        learned_vary: Default::default(),
        me: me.clone(),
        upstream: Upstream::new(&config.upstream),
        metrics,
        writes: Arc::default(),
        upstream_slots: UpstreamSlots::new(config.upstream.max_concurrent_requests, config.routes.iter()),
        config,
    }))
}

/// Serves clients on `listener` and the admin endpoints on `admin`
/// until `shutdown` resolves, then drains both.
pub async fn run(
    listener: TcpListener,
    admin: TcpListener,
    config: Arc<Config>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let proxy = build_proxy(config.clone())?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    tracing::info!(
        listen = %listener.local_addr()?,
        admin = %admin.local_addr()?,
        upstream = %config.upstream.base,
        store = proxy.store.kind(),
        namespace = %config.cache.namespace,
        routes = config.routes.iter().count(),
        "proxy listening"
    );
    let admin_proxy = proxy.clone();
    let admin_task = tokio::spawn(server::serve(
        admin,
        config.server.clone(),
        proxy.metrics.clone(),
        move |req, _peer| admin::handle(admin_proxy.clone(), req),
        stopped(stop_rx.clone()),
    ));
    let client_proxy = proxy.clone();
    server::serve(
        listener,
        config.server.clone(),
        proxy.metrics.clone(),
        move |req, peer| {
            let proxy = client_proxy.clone();
            async move { proxy.handle(req, peer).await }
        },
        stopped(stop_rx),
    )
    .await;
    admin_task.await?;
    // Writes already forwarded finish their invalidation even though their
    // clients are gone; past the wait, their tags are invalidated here, as
    // the write may yet commit.
    let unsettled = proxy.writes.settle(config.cache.invalidation_wait).await;
    if !unsettled.is_empty() {
        tracing::warn!(tags = ?unsettled, "writes still in flight at exit; invalidating their tags now");
        if let Err(err) = proxy.store.invalidate(&unsettled).await {
            tracing::error!(tags = ?unsettled, error = %err, "could not invalidate the tags of writes still in flight at exit");
        }
    }
    proxy.store.close().await;
    Ok(())
}
