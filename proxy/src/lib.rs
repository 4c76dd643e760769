//! A JWT-aware caching reverse proxy for HTTP JSON APIs.
//!
//! It verifies bearer tokens, enforces per-route role rules, caches GET/HEAD
//! responses in Redis (or process memory) keyed by route, path, query,
//! vary headers and identity scope, and invalidates cached entries when
//! writes pass through it. It works in front of any backend: everything it
//! knows about the backend is in `config.toml`.
//!
//! # Layout
//! - [`config`]: `config.toml` + `.env` + environment + CLI, validated;
//!   imported only by this assembly and `main.rs`.
//! - [`boot`]: settings fixed for the process's life; [`runtime`]: the
//!   rules requests run under, swapped whole on reload.
//! - [`server`]: accept loop, connection limits, graceful shutdown.
//! - [`handler`]: the request pipeline, step by step.
//! - [`route`]: path normalisation and rule matching.
//! - [`auth`]: bearer extraction and JWT verification.
//! - [`rbac`]: rule access against claims.
//! - [`guard`]: rate limits and token revocation, checked in the round
//!   trip of the cache lookup; [`client_ip`]: the client behind trusted
//!   proxies.
//! - [`cache`]: what the request path decides (key, storability policy,
//!   status headers), the store traits and the Redis and memory stores.
//! - [`coalesce`]: concurrent misses for one key fetch once, here and
//!   (with leases) across instances; `coalesce::plan` is the one question
//!   the request path asks about a miss.
//! - [`concurrency`]: how many requests may be at the backend at once.
//! - [`conditional`]: validators, 304s and revalidation.
//! - [`upstream`]: request shaping, the pooled client and the backend's
//!   endpoints (balancing, passive health, the one retry).
//! - [`vary`]: headers the origin varies on, learned per rule.
//! - [`invalidate`]: which write outcomes invalidate.
//! - [`admin`]: health, readiness, metrics, reload and config listener;
//!   [`purge`]: `POST /purge`; [`revoke`]: `POST /revoke`; [`operator`]:
//!   who may use them.
//! - [`tls`]: certificates and rustls configurations, both sides.
//! - [`metrics`], [`error`], [`error_chain`], [`problem`], [`body`], [`secret`]: support.

pub mod access_log;
pub mod admin;
pub mod auth;
pub mod body;
pub mod boot;
pub mod cache;
pub mod client_ip;
pub mod coalesce;
pub mod concurrency;
pub mod conditional;
pub mod config;
pub mod error;
pub mod error_chain;
pub mod guard;
pub mod handler;
pub mod invalidate;
pub mod log_writer;
pub mod metrics;
pub mod operator;
pub mod problem;
pub mod purge;
pub mod range;
pub mod rbac;
pub mod redis_layer;
pub mod revoke;
pub mod route;
pub mod runtime;
pub mod secret;
pub mod server;
pub mod status;
pub mod tls;
pub mod trace;
pub mod upstream;
pub mod vary;

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::net::TcpListener;

use crate::access_log::AccessOutput;
use crate::boot::BootSettings;
use crate::cache::memory::MemoryStore;
use crate::cache::redis::RedisStore;
use crate::cache::settings::{Backend, StoreSettings};
use crate::cache::Store;
use crate::concurrency::UpstreamSlots;
use crate::config::{Config, ConfigErrors, ConfigFile, FileSource};
use crate::handler::Proxy;
use crate::metrics::Metrics;
use crate::runtime::{Runtime, SettingsSource, Snapshot};
use crate::upstream::Upstream;

/// Validated settings with their runtime half put to use (key files read,
/// verifier built): what [`run`] serves with.
pub struct Prepared {
    pub boot: BootSettings,
    pub snapshot: Snapshot,
    /// Made here: putting settings to use (fetching a JWKS) counts too.
    pub metrics: Arc<Metrics>,
    /// Where access lines go; formatted and dropped unless the caller
    /// (the binary: stdout) says otherwise.
    pub access: AccessOutput,
}

/// Puts the settings to use; a key, certificate or CA file that cannot be
/// read or used is reported like any invalid field.
pub async fn prepare(config: Config) -> Result<Prepared, ConfigErrors> {
    let metrics = Arc::new(Metrics::new());
    let snapshot = Snapshot::build(config.runtime, config.version, None, &metrics)
        .await
        .map_err(|problem| ConfigErrors(vec![problem]))?;
    Ok(Prepared {
        boot: config.boot,
        snapshot,
        metrics,
        access: AccessOutput::discard(),
    })
}

/// Builds the store the settings name. Redis is not contacted here: the
/// proxy starts, and serves, with Redis down.
pub fn build_store(store: &StoreSettings, metrics: Arc<Metrics>) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match &store.backend {
        Backend::Memory { max_bytes } => Arc::new(MemoryStore::new(*max_bytes, store.revalidation_retention)),
        Backend::Redis {
            target,
            buckets,
            l1_max_bytes,
        } => RedisStore::new(target, *buckets, *l1_max_bytes, store, metrics)?,
    })
}

/// Builds everything a request needs. With `reload_from`, the runtime
/// half can be read anew from that file.
pub fn build_proxy(prepared: Prepared, reload_from: Option<ConfigFile>) -> anyhow::Result<Arc<Proxy>> {
    let Prepared {
        boot,
        snapshot,
        metrics,
        access,
    } = prepared;
    // The backend's TLS asks the snapshots' shared material at each
    // handshake, so a reload renews it.
    let upstream_tls = snapshot.backend_tls.as_ref().map(|backend| backend.client_config());
    let store = build_store(&boot.store, metrics.clone())?;
    let source = reload_from.map(|file| {
        Box::new(FileSource {
            file,
            running: boot.clone(),
        }) as Box<dyn SettingsSource>
    });
    let status = status::Status::new(store.clone(), metrics.clone(), access.sink.clone());
    Ok(Arc::new_cyclic(|me| Proxy {
        store,
        flights: Arc::default(),
        learned_vary: Default::default(),
        me: me.clone(),
        upstream: Upstream::new(&boot.upstream, upstream_tls, &metrics),
        upstream_slots: UpstreamSlots::new(boot.upstream.max_concurrent_requests),
        guard: guard::Guard::new(metrics.clone()),
        runtime: Runtime::new(snapshot, source, metrics.clone()),
        metrics,
        writes: Arc::default(),
        access_output: access,
        status,
        boot,
    }))
}

/// Writes the revocations the store would not take to it once it answers
/// (every 100 ms, as pending invalidations are), until the proxy stops.
async fn retry_unrecorded_revocations(proxy: Weak<Proxy>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        tick.tick().await;
        let Some(proxy) = proxy.upgrade() else { return };
        proxy.guard.retry_unrecorded(proxy.store.as_ref()).await;
    }
}

/// Where a running proxy reloads its settings from, and when.
pub struct ReloadFrom {
    pub file: ConfigFile,
    /// Also reload when the file or `.env` changes, looked at this often
    /// (`--watch`); SIGHUP and `POST /reload` always work.
    pub watch: Option<Duration>,
}

/// Serves clients on `listener` and the admin endpoints on `admin`
/// until `shutdown` resolves, then drains both. With `reload_from`, SIGHUP
/// and `POST /reload` read that file anew.
pub async fn run(
    listener: TcpListener,
    admin: TcpListener,
    prepared: Prepared,
    reload_from: Option<ReloadFrom>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let watch = reload_from.as_ref().and_then(|r| Some((r.file.clone(), r.watch?)));
    let reloadable = reload_from.is_some();
    let proxy = build_proxy(prepared, reload_from.map(|r| r.file))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    if reloadable {
        tokio::spawn(reload_on_sighup(Arc::downgrade(&proxy)));
    }
    tokio::spawn(status::observe(Arc::downgrade(&proxy.status)));
    tokio::spawn(retry_unrecorded_revocations(Arc::downgrade(&proxy)));
    if let Some((file, every)) = watch {
        tokio::spawn(reload_on_change(Arc::downgrade(&proxy), file, every));
    }

    let snapshot = proxy.runtime.load();
    tracing::info!(
        listen = %listener.local_addr()?,
        admin = %admin.local_addr()?,
        upstream = %upstream_list(&proxy.boot.upstream),
        store = proxy.store.kind(),
        namespace = %proxy.boot.store.namespace,
        routes = snapshot.settings.routes.iter().count(),
        version = %snapshot.version,
        "proxy listening"
    );
    drop(snapshot);
    let admin_proxy = proxy.clone();
    let admin_task = tokio::spawn(server::serve(
        admin,
        proxy.boot.server.clone(),
        proxy.metrics.clone(),
        listener_tls(&proxy, |tls| tls.admin.as_ref()),
        move |req, _client| admin::handle(admin_proxy.clone(), req),
        stopped(stop_rx.clone()),
    ));
    let client_proxy = proxy.clone();
    server::serve(
        listener,
        proxy.boot.server.clone(),
        proxy.metrics.clone(),
        listener_tls(&proxy, |tls| tls.clients.as_ref()),
        move |req, client| {
            let proxy = client_proxy.clone();
            async move { proxy.handle(req, client).await }
        },
        stopped(stop_rx),
    )
    .await;
    admin_task.await?;
    // Writes already forwarded finish their invalidation even though their
    // clients are gone; past the wait, their tags are invalidated here, as
    // the write may yet commit.
    let unsettled = proxy.writes.settle(proxy.boot.store.invalidation_wait).await;
    if !unsettled.is_empty() {
        tracing::warn!(tags = ?unsettled, "writes still in flight at exit; invalidating their tags now");
        if let Err(err) = proxy.store.invalidate(&unsettled).await {
            tracing::error!(tags = ?unsettled, error = %err, "could not invalidate the tags of writes still in flight at exit");
        }
    }
    proxy.store.close().await;
    Ok(())
}

/// The backend's endpoints for the log: `http://a:1, http://b:2`.
fn upstream_list(upstream: &upstream::UpstreamSettings) -> String {
    let urls: Vec<String> = upstream.endpoints.iter().map(ToString::to_string).collect();
    urls.join(", ")
}

/// Where a listener finds the TLS configuration for its next handshake:
/// in the snapshot of the moment, so a reload's certificates apply to the
/// next connection and open ones keep theirs.
fn listener_tls(
    proxy: &Arc<Proxy>,
    pick: fn(&runtime::ServingTls) -> Option<&tls::server::ServerTls>,
) -> server::TlsSource {
    let proxy = proxy.clone();
    Arc::new(move || {
        let snapshot = proxy.runtime.load();
        pick(&snapshot.tls).map(|tls| tls.config.clone())
    })
}

/// Resolves on Ctrl-C or SIGTERM: how the binary, and the bench drivers
/// that run it, are told to stop.
pub async fn termination_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// SIGHUP reloads, as for nginx and HAProxy. Outcomes are logged and
/// counted by the reload itself.
async fn reload_on_sighup(proxy: std::sync::Weak<Proxy>) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload with POST /reload");
        return;
    };
    while hangups.recv().await.is_some() {
        let Some(proxy) = proxy.upgrade() else { return };
        tracing::info!("SIGHUP: reloading the configuration");
        let _ = proxy.runtime.reload().await;
    }
}

/// `--watch`: reloads when the content of the config file, `.env` or a
/// file the settings name (certificates, keys, CAs) changes: a renewed
/// certificate is picked up without a signal.
/// Polls rather than using inotify: an editor's save-by-rename, a
/// Kubernetes ConfigMap's symlink swap and a network file system all show
/// up as changed content, where a file watch can miss them. A file caught
/// half-written is refused like any invalid one, and the next look loads
/// the whole file.
async fn reload_on_change(proxy: std::sync::Weak<Proxy>, file: ConfigFile, every: Duration) {
    let digest = |proxy: &Proxy| file.contents_digest(&proxy.runtime.load().settings.files());
    let Some(first) = proxy.upgrade() else { return };
    let mut seen = digest(&first);
    drop(first);
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(proxy) = proxy.upgrade() else { return };
        let now = digest(&proxy);
        if now != seen {
            seen = now;
            tracing::info!(path = %file.path.display(), "config file changed: reloading");
            let _ = proxy.runtime.reload().await;
        }
    }
}
