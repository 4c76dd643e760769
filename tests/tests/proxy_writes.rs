//! Writes and their invalidations against clients that misbehave (issue 9,
//! findings 2 and 4): a client that hangs up after its write reached the
//! backend, a leader of a coalesced miss that hangs up, a body with broken
//! framing, a body that stops arriving.
//!
//! Each test fails on 11a5e57: there the forward and the invalidation ran
//! inside the request's future, which hyper drops when its client goes
//! away, and client bodies were streamed to the backend as they came.
//! Synchronisation is on conditions (the upstream's own state, the proxy's
//! metrics), never on sleeps.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use e2e::shared_redis::Deployment;
use e2e::wait::eventually;
use e2e::{
    json_reply, on_every_redis, proxy_config, raw_http, spawn_proxy, ProxyHandle, RedisServer, ScriptedUpstream,
    ITEMS_CONFIG,
};
use http::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

const HANG_GUARD: Duration = Duration::from_secs(10);

const LIMITS: &str = r#"
[server]
body_read_timeout = "500ms"

[cache]
invalidation_wait = "200ms"
"#;

/// A PUT beside ITEMS_CONFIG's POST: the issue's case is a client closing a PUT.
const PUT_ROUTE: &str = r#"
[[routes]]
name = "items-put"
path = "/items"
methods = ["PUT"]
access = "public"
invalidates = ["items"]
"#;

/// The items routes with the limits above.
fn config() -> String {
    format!("{LIMITS}{ITEMS_CONFIG}{PUT_ROUTE}")
}

const APPLIED: &str = r#"proxy_invalidations_total{operation="applied"}"#;
const DEFERRED: &str = r#"proxy_invalidations_total{operation="deferred"}"#;

/// Runs `CONFIG SET name value` on `redis`.
async fn config_set(redis: &RedisServer, name: &str, value: &str) {
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
}
const JOINED: &str = r#"proxy_coalesced_total{outcome="joined"}"#;

/// The backend: GET answers the current version; a write commits the next
/// version at once, then holds its answer until `release` opens (when
/// `hold_writes`); GETs wait for `release` too when `hold_reads`.
struct Backend {
    upstream: ScriptedUpstream,
    version: Arc<AtomicU64>,
    writes_seen: Arc<AtomicU64>,
    release: watch::Sender<bool>,
}

async fn backend(hold_writes: bool, hold_reads: bool) -> Backend {
    let version = Arc::new(AtomicU64::new(0));
    let writes_seen = Arc::new(AtomicU64::new(0));
    let (release, gate) = watch::channel(false);
    let (v, seen) = (version.clone(), writes_seen.clone());
    let upstream = ScriptedUpstream::start(move |req| {
        let (v, seen, mut gate) = (v.clone(), seen.clone(), gate.clone());
        async move {
            let is_write = req.method() != Method::GET;
            if is_write {
                seen.fetch_add(1, Ordering::SeqCst);
                v.fetch_add(1, Ordering::SeqCst);
            }
            if (is_write && hold_writes) || (!is_write && hold_reads) {
                let _ = gate.wait_for(|open| *open).await;
            }
            json_reply(200, &json!({ "version": v.load(Ordering::SeqCst) }).to_string(), &[])
        }
    })
    .await;
    Backend {
        upstream,
        version,
        writes_seen,
        release,
    }
}

async fn get(proxy: &ProxyHandle) -> (String, u64) {
    let response = tokio::time::timeout(HANG_GUARD, reqwest::get(format!("{}/items", proxy.base_url())))
        .await
        .expect("proxy hung")
        .unwrap();
    let x_cache = response.headers()["x-cache"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    (x_cache, body["version"].as_u64().unwrap())
}

async fn until_metric(proxy: &ProxyHandle, series: &str, at_least: u64) {
    eventually(&format!("{series} >= {at_least}"), || async move {
        proxy.metric(series).await >= at_least
    })
    .await;
}

/// Sends a PUT and hangs up once the backend has committed it, before
/// its answer comes.
async fn put_and_hang_up(proxy: &ProxyHandle, backend: &Backend) {
    let mut socket = TcpStream::connect(proxy.addr).await.unwrap();
    socket
        .write_all(b"PUT /items HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        .await
        .unwrap();
    eventually("the backend committed the write", || async {
        backend.version.load(Ordering::SeqCst) == 1
    })
    .await;
    drop(socket);
}

async fn hang_up_after_commit_still_invalidates(redis: Option<&RedisServer>) {
    let backend = backend(true, false).await;
    let proxy = spawn_proxy(proxy_config(
        &config(),
        backend.upstream.addr,
        redis.map(|r| r.url()),
        None,
    ))
    .await;
    assert_eq!(get(&proxy).await, ("MISS".into(), 0));
    assert_eq!(get(&proxy).await, ("HIT".into(), 0));

    put_and_hang_up(&proxy, &backend).await;
    backend.release.send_replace(true);
    until_metric(&proxy, APPLIED, 1).await;
    assert_eq!(get(&proxy).await, ("MISS".into(), 1));
}

#[tokio::test]
async fn a_client_hanging_up_after_its_write_committed_still_invalidates_in_memory() {
    hang_up_after_commit_still_invalidates(None).await;
}

#[tokio::test]
async fn a_client_hanging_up_after_its_write_committed_still_invalidates_in_redis() {
    let redis = RedisServer::start();
    hang_up_after_commit_still_invalidates(Some(&redis)).await;
}

#[tokio::test]
async fn a_hung_up_write_whose_invalidation_redis_refuses_is_recorded_and_applied() {
    let redis = RedisServer::start();
    let backend = backend(true, false).await;
    let proxy = spawn_proxy(proxy_config(&config(), backend.upstream.addr, Some(redis.url()), None)).await;
    assert_eq!(get(&proxy).await, ("MISS".into(), 0));
    assert_eq!(get(&proxy).await, ("HIT".into(), 0));

    // Demoted to a replica (of a primary that is not there), as in a
    // failover: Redis still answers reads but refuses every write, deletes
    // included (READONLY).
    let mut admin = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let replica_of = |host: &'static str, port: &'static str| redis::cmd("REPLICAOF").arg(host).arg(port).clone();
    replica_of("127.0.0.1", "1")
        .query_async::<()>(&mut admin)
        .await
        .unwrap();

    put_and_hang_up(&proxy, &backend).await;
    backend.release.send_replace(true);
    until_metric(&proxy, DEFERRED, 1).await;
    // Recorded: this instance serves nothing from the cache until it is
    // applied, so never the pre-write answer.
    let (_, version) = get(&proxy).await;
    assert_eq!(version, 1);

    replica_of("NO", "ONE").query_async::<()>(&mut admin).await.unwrap();
    applied_without_serving_the_pre_write_answer(&proxy).await;
}

/// Reads until caching resumed (the recorded invalidation was applied);
/// none may see the version before the write.
async fn applied_without_serving_the_pre_write_answer(proxy: &ProxyHandle) {
    let seen = std::sync::Mutex::new(Vec::new());
    eventually("the recorded invalidation was applied and caching resumed", || async {
        let answer = get(proxy).await;
        seen.lock().unwrap().push(answer.clone());
        answer.0 == "HIT"
    })
    .await;
    let seen = seen.into_inner().unwrap();
    assert!(
        seen.iter().all(|(_, v)| *v == 1),
        "a pre-write answer was served: {seen:?}"
    );
}

// A write whose invalidation the deployment refuses, on one node, a
// Sentinel group and a cluster (where every bucket's group records it).
on_every_redis!(a_write_whose_invalidation_redis_refuses_is_recorded_and_applied);

async fn a_write_whose_invalidation_redis_refuses_is_recorded_and_applied(redis: Deployment) {
    let _alone = redis.exclusive().await;
    let backend = backend(false, false).await;
    let proxy = spawn_proxy(proxy_config(&config(), backend.upstream.addr, Some(redis.url()), None)).await;
    assert_eq!(get(&proxy).await, ("MISS".into(), 0));
    assert_eq!(get(&proxy).await, ("HIT".into(), 0));

    redis.refuse_writes(true);
    let put = reqwest::Client::new()
        .put(format!("{}/items", proxy.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200, "the write passes");
    until_metric(&proxy, DEFERRED, 1).await;
    // Recorded: this instance serves nothing from the cache until it is
    // applied, so never the pre-write answer Redis still holds.
    assert_eq!(get(&proxy).await.1, 1);

    redis.refuse_writes(false);
    applied_without_serving_the_pre_write_answer(&proxy).await;
}

#[tokio::test]
async fn a_coalesced_leader_that_hangs_up_still_serves_its_waiters_with_one_fetch() {
    let backend = backend(false, true).await;
    let proxy = spawn_proxy(proxy_config(&config(), backend.upstream.addr, None, None)).await;
    let mut leader = TcpStream::connect(proxy.addr).await.unwrap();
    leader
        .write_all(b"GET /items HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    eventually("the leader's fetch reached the backend", || async {
        backend.upstream.hits() == 1
    })
    .await;
    let client = reqwest::Client::new();
    let url = format!("{}/items", proxy.base_url());
    let waiters: Vec<_> = (0..2).map(|_| tokio::spawn(client.get(&url).send())).collect();
    until_metric(&proxy, JOINED, 2).await;
    drop(leader);
    // The proxy has noticed: only the two waiters (and this probe) are open.
    eventually("the proxy closed the leader's connection", || async {
        proxy.metric("proxy_connections_open").await <= 3
    })
    .await;
    backend.release.send_replace(true);
    for waiter in waiters {
        let response = tokio::time::timeout(HANG_GUARD, waiter)
            .await
            .expect("waiter hung")
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(backend.upstream.hits(), 1, "the waiters fetched on their own");
}

#[tokio::test]
async fn a_body_with_broken_chunked_framing_is_a_400_that_reaches_no_one_and_invalidates_nothing() {
    let backend = backend(false, false).await;
    let proxy = spawn_proxy(proxy_config(&config(), backend.upstream.addr, None, None)).await;
    assert_eq!(get(&proxy).await, ("MISS".into(), 0));
    let request = "POST /items HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
                   4\r\n{\"a\"\r\nzz\r\n:1}\r\n0\r\n\r\n";
    let answer = tokio::time::timeout(HANG_GUARD, raw_http(proxy.addr, request))
        .await
        .expect("proxy hung");
    assert_eq!(answer.status, 400, "{}", answer.head);
    assert_eq!(
        backend.writes_seen.load(Ordering::SeqCst),
        0,
        "the broken body reached the backend"
    );
    assert_eq!(get(&proxy).await, ("HIT".into(), 0), "the refused write invalidated");
}

#[tokio::test]
async fn a_request_body_that_stops_arriving_is_a_408_that_reaches_no_one_and_invalidates_nothing() {
    let backend = backend(false, false).await;
    let proxy = spawn_proxy(proxy_config(&config(), backend.upstream.addr, None, None)).await;
    assert_eq!(get(&proxy).await, ("MISS".into(), 0));
    let mut socket = TcpStream::connect(proxy.addr).await.unwrap();
    socket
        .write_all(b"POST /items HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"a\":")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(HANG_GUARD, socket.read_to_string(&mut answer))
        .await
        .expect("a stalled body held the connection")
        .ok();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(
        backend.writes_seen.load(Ordering::SeqCst),
        0,
        "the incomplete write reached the backend"
    );
    assert_eq!(get(&proxy).await, ("HIT".into(), 0), "the refused write invalidated");
}

/// Finding 6: with Redis full under `noeviction`, invalidations failed
/// while reads still succeeded, so other instances kept serving entries a
/// write had replaced (on 11a5e57 the second instance answered HIT with the
/// pre-write version).
#[tokio::test]
async fn with_redis_full_no_instance_serves_what_a_write_replaced() {
    let redis = RedisServer::start();
    let backend = backend(false, false).await;
    let both = || proxy_config(&config(), backend.upstream.addr, Some(redis.url()), None);
    let (writer, other) = (spawn_proxy(both()).await, spawn_proxy(both()).await);
    assert_eq!(get(&writer).await, ("MISS".into(), 0));
    assert_eq!(get(&other).await, ("HIT".into(), 0));

    config_set(&redis, "maxmemory-policy", "noeviction").await;
    config_set(&redis, "maxmemory", "1").await;
    let written = reqwest::Client::new()
        .post(format!("{}/items", writer.base_url()))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(written.status(), 200);
    assert_eq!(backend.version.load(Ordering::SeqCst), 1);
    for proxy in [&other, &writer] {
        let (x_cache, version) = get(proxy).await;
        assert_eq!(version, 1, "a pre-write answer ({x_cache}) while Redis was full");
    }

    config_set(&redis, "maxmemory", "0").await;
    eventually("caching resumed once Redis had memory again", || async {
        get(&other).await == ("HIT".to_owned(), 1)
    })
    .await;
}

#[tokio::test]
async fn readyz_says_when_redis_may_evict_generations() {
    let redis = RedisServer::start();
    let backend = backend(false, false).await;
    let proxy = spawn_proxy(proxy_config(&config(), backend.upstream.addr, Some(redis.url()), None)).await;
    let warnings = || async {
        let ready: Value = reqwest::get(proxy.admin_url("/readyz"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ready["warnings"].as_array().cloned().unwrap_or_default()
    };
    assert!(warnings().await.is_empty(), "volatile-lru is the safe policy");
    config_set(&redis, "maxmemory-policy", "allkeys-lru").await;
    let said = warnings().await;
    assert!(
        said.iter().any(|w| w.as_str().unwrap().contains("allkeys-lru")),
        "{said:?}"
    );
}
