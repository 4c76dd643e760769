//! Stale serving (RFC 5861): an expired entry is served while one
//! background request refreshes it, or when the upstream fails; never once
//! a write has invalidated it.

use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use e2e::wait::eventually;
use e2e::{
    json_reply, proxy_config, spawn_origin, spawn_proxy, ApiClient, MongoServer, ProxyHandle, RedisServer,
    ScriptedUpstream, SHIPPED_CONFIG,
};
use http::Method;
use serde_json::json;

const REFRESHED: &str = r#"proxy_stale_total{outcome="refreshed"}"#;
const REFRESH_FAILED: &str = r#"proxy_stale_total{outcome="refresh_failed"}"#;
const LIMIT: Duration = Duration::from_secs(20);

/// GETs `path` until `X-Cache` is `wanted`; every answer on the way must
/// be a 200 with an `X-Cache` in `allowed`.
async fn until_x_cache(api: &ApiClient, path: &str, token: Option<&str>, wanted: &str, allowed: &[&str]) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let r = api.get(path, token).await;
        let x_cache = r.header("x-cache").unwrap_or_default().to_owned();
        assert_eq!(r.status, 200, "{x_cache}: {:?}", r.body);
        if x_cache == wanted {
            return;
        }
        assert!(
            allowed.contains(&x_cache.as_str()),
            "unexpected {x_cache} before {wanted}"
        );
        assert!(tokio::time::Instant::now() < deadline, "never saw {wanted}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn origin_stopped_means_stale_answers_then_one_refresh_once_it_is_back() {
    let redis = RedisServer::start();
    let mongo = MongoServer::start();
    let origin = spawn_origin(&mongo).await;
    let config = SHIPPED_CONFIG.replacen(
        r#"cache = { scope = "shared", tags = ["users"] }"#,
        r#"cache = { scope = "shared", tags = ["users"], stale_while_revalidate = "1h", stale_if_error = "1h" }"#,
        1,
    );
    let proxy = spawn_proxy(proxy_config(&config, origin.addr, Some(redis.url()), Some(2))).await;
    let api = ApiClient::new(proxy.base_url());
    let (_, token) = api.register_and_login("stale-reader").await;
    let first = api.get("/users", Some(&token)).await;
    assert_eq!(first.header("x-cache"), Some("MISS"));

    let stopped = origin.stop().await;
    // Fresh for 2 s, then stale: served, and a background refresh fails.
    until_x_cache(&api, "/users", Some(&token), "STALE", &["HIT"]).await;
    for _ in 0..20 {
        let r = api.get("/users", Some(&token)).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.header("x-cache"), Some("STALE"));
        assert_eq!(r.body, first.body, "the stale entry is the stored answer");
        assert!(r
            .header("cache-status")
            .unwrap()
            .contains("detail=stale-while-revalidate"));
        assert!(r.header("age").is_some());
    }
    assert!(proxy.metric(REFRESH_FAILED).await >= 1);
    assert_eq!(proxy.metric(REFRESHED).await, 0);

    let _origin = stopped.restart().await;
    until_x_cache(&api, "/users", Some(&token), "HIT", &["STALE"]).await;
    assert_eq!(
        proxy.metric(REFRESHED).await,
        1,
        "one background refresh made the entry fresh"
    );
}

const ITEMS: &str = r#"
[[routes]]
name = "items"
path = "/items"
methods = ["GET"]
access = "public"
cache = { tags = ["items"], ttl = "1s", stale_if_error = "1h" }

[[routes]]
name = "items-write"
path = "/items"
methods = ["POST"]
access = "public"
invalidates = ["items"]

[[routes]]
name = "origin-windows"
path = "/windows"
methods = ["GET"]
access = "public"
cache = { tags = ["windows"] }
"#;

/// An upstream answering `{"version": v}` with the status it is told to
/// use; POST bumps the version. `/windows` carries RFC 5861 windows.
struct Backend {
    upstream: ScriptedUpstream,
    version: Arc<AtomicU64>,
    status: Arc<AtomicU16>,
}

async fn backend() -> Backend {
    let (version, status) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU16::new(200)));
    let (v, st) = (version.clone(), status.clone());
    let upstream = ScriptedUpstream::start(move |req| {
        if req.method() == Method::POST {
            v.fetch_add(1, Ordering::SeqCst);
        }
        let body = json!({ "version": v.load(Ordering::SeqCst) }).to_string();
        // Writes always succeed; reads answer with the status set.
        let status = if req.method() == Method::POST {
            200
        } else {
            st.load(Ordering::SeqCst)
        };
        let headers: &[(&str, &str)] = if req.uri().path() == "/windows" {
            &[("cache-control", "max-age=1, stale-while-revalidate=3600")]
        } else {
            &[]
        };
        async move { json_reply(status, &body, headers) }
    })
    .await;
    Backend {
        upstream,
        version,
        status,
    }
}

async fn read(api: &ApiClient, path: &str) -> (u16, String, Option<u64>) {
    let r = api.get(path, None).await;
    (
        r.status.as_u16(),
        r.header("x-cache").unwrap_or_default().to_owned(),
        r.body["version"].as_u64(),
    )
}

async fn items_proxy(backend: &Backend, redis: &RedisServer) -> (ProxyHandle, ApiClient) {
    let proxy = spawn_proxy(proxy_config(ITEMS, backend.upstream.addr, Some(redis.url()), None)).await;
    let api = ApiClient::new(proxy.base_url());
    (proxy, api)
}

/// Fails the upstream's reads and GETs `/items` until the expired entry is
/// served stale; every answer on the way is the stored `version`.
async fn fail_until_stale(b: &Backend, api: &ApiClient, version: u64) {
    b.status.store(503, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let (status, x_cache, seen) = read(api, "/items").await;
        assert_eq!(status, 200, "a 5xx reached the client");
        assert_eq!(seen, Some(version));
        if x_cache == "STALE" {
            return;
        }
        assert_eq!(x_cache, "HIT");
        assert!(tokio::time::Instant::now() < deadline, "never served stale");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_upstream_5xx_serves_the_stale_entry_and_recovery_serves_fresh_data() {
    let (b, redis) = (backend().await, RedisServer::start());
    let (_proxy, api) = items_proxy(&b, &redis).await;
    assert_eq!(read(&api, "/items").await, (200, "MISS".into(), Some(0)));
    b.version.store(7, Ordering::SeqCst);
    // Expired after 1 s; no stale-while-revalidate, so each request asks
    // the upstream, and each 503 is answered from the stale entry.
    fail_until_stale(&b, &api, 0).await;
    b.status.store(200, Ordering::SeqCst);
    assert_eq!(read(&api, "/items").await, (200, "MISS".into(), Some(7)));
    assert_eq!(read(&api, "/items").await, (200, "HIT".into(), Some(7)));
}

#[tokio::test]
async fn an_invalidated_entry_is_never_served_stale() {
    let (b, redis) = (backend().await, RedisServer::start());
    let (_proxy, api) = items_proxy(&b, &redis).await;
    assert_eq!(read(&api, "/items").await, (200, "MISS".into(), Some(0)));
    fail_until_stale(&b, &api, 0).await;
    let write = api.send(Method::POST, "/items", None, None).await;
    assert_eq!(write.status, 200);
    // The upstream still fails, and the only stored answer predates the write.
    let (status, x_cache, _) = read(&api, "/items").await;
    assert_eq!((status, x_cache.as_str()), (503, "MISS"));
}

#[tokio::test]
async fn the_origins_own_stale_while_revalidate_is_honoured() {
    let (b, redis) = (backend().await, RedisServer::start());
    let (proxy, api) = items_proxy(&b, &redis).await;
    assert_eq!(read(&api, "/windows").await, (200, "MISS".into(), Some(0)));
    b.version.store(1, Ordering::SeqCst);
    // max-age=1, stale-while-revalidate=3600: once expired, the old answer
    // is served at once and refreshed in the background.
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let (status, x_cache, version) = read(&api, "/windows").await;
        assert_eq!(status, 200);
        if x_cache == "STALE" {
            assert_eq!(version, Some(0));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never served stale");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = tokio::time::Instant::now() + LIMIT;
    while proxy.metric(REFRESHED).await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never refreshed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(read(&api, "/windows").await, (200, "HIT".into(), Some(1)));
}

#[tokio::test]
async fn coalesced_waiters_serve_the_stale_entry_when_their_leader_finds_the_upstream_failing() {
    use tokio::sync::watch;
    let (open, gate) = watch::channel(true);
    let failing = Arc::new(AtomicU16::new(200));
    let status = failing.clone();
    let upstream = ScriptedUpstream::start(move |_| {
        let (mut gate, status) = (gate.clone(), status.load(Ordering::SeqCst));
        async move {
            let _ = gate.wait_for(|open| *open).await;
            json_reply(status, &json!({ "version": 0 }).to_string(), &[])
        }
    })
    .await;
    let redis = RedisServer::start();
    let proxy = spawn_proxy(proxy_config(ITEMS, upstream.addr, Some(redis.url()), None)).await;
    let api = ApiClient::new(proxy.base_url());
    assert_eq!(read(&api, "/items").await, (200, "MISS".into(), Some(0)));
    failing.store(503, Ordering::SeqCst);
    eventually("the expired entry is served stale", || async {
        read(&api, "/items").await.1 == "STALE"
    })
    .await;

    // Twenty concurrent requests; the leader's upstream request is held
    // until every other one has joined it.
    let (before, joined) = (upstream.hits(), r#"proxy_coalesced_total{outcome="joined"}"#);
    let joined_before = proxy.metric(joined).await;
    open.send_replace(false);
    let requests: Vec<_> = (0..20)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move { read(&api, "/items").await })
        })
        .collect();
    eventually("19 requests join the leader", || async {
        proxy.metric(joined).await >= joined_before + 19
    })
    .await;
    open.send_replace(true);
    for request in requests {
        assert_eq!(request.await.unwrap(), (200, "STALE".into(), Some(0)));
    }
    assert_eq!(
        upstream.hits(),
        before + 1,
        "the waiters asked the failing upstream again"
    );
}
