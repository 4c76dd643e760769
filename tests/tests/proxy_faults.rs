//! Faults: Redis down, stopped, paused and restarted; the upstream refusing
//! and hanging; a client sending its headers too slowly.
//!
//! Waits are bounded polls on a condition (the breaker reopening, Redis
//! coming back), and the `tokio::time::timeout` guards turn "the proxy
//! hung" into a failure instead of a stuck test; neither asserts speed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use e2e::shared_redis::Deployment;
use e2e::{json_reply, on_every_redis, proxy_config, spawn_proxy, ProxyHandle, RedisServer, ScriptedUpstream};
use http::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONFIG: &str = r#"
[upstream]
response_timeout = "500ms"

[server]
header_read_timeout = "300ms"

[[routes]]
name = "items"
path = "/items"
methods = ["GET"]
access = "public"
cache = { tags = ["items"] }

[[routes]]
name = "items-write"
path = "/items"
methods = ["POST"]
access = "public"
invalidates = ["items"]

[[routes]]
name = "hang"
path = "/hang"
methods = ["GET", "POST"]
access = "public"
invalidates = []
"#;

/// Generous bound on any single request: far above every budget the proxy
/// has (50 ms per cache operation, 500 ms upstream), so only a hang trips it.
const HANG_GUARD: Duration = Duration::from_secs(5);
/// How long to wait for a condition that depends on the breaker reopening
/// (1 s) and Redis reconnecting.
const RECOVERY_LIMIT: Duration = Duration::from_secs(15);

/// An upstream whose GET /items returns a version that each POST /items
/// bumps, and whose /hang never answers.
async fn versioned_upstream() -> (ScriptedUpstream, Arc<AtomicU64>) {
    let version = Arc::new(AtomicU64::new(0));
    let state = version.clone();
    let upstream = ScriptedUpstream::start(move |req| {
        let state = state.clone();
        async move {
            if req.uri().path() == "/hang" {
                if req.method() == Method::POST {
                    state.fetch_add(1, Ordering::SeqCst);
                }
                std::future::pending::<()>().await;
            }
            let v = if req.method() == Method::POST {
                state.fetch_add(1, Ordering::SeqCst) + 1
            } else {
                state.load(Ordering::SeqCst)
            };
            json_reply(200, &json!({ "version": v }).to_string(), &[])
        }
    })
    .await;
    (upstream, version)
}

struct Probe {
    client: reqwest::Client,
    proxy: ProxyHandle,
}

impl Probe {
    async fn send(&self, method: Method, path: &str) -> (u16, String, Value) {
        let request = self
            .client
            .request(method, format!("{}{}", self.proxy.base_url(), path))
            .send();
        let resp = tokio::time::timeout(HANG_GUARD, request)
            .await
            .expect("proxy hung")
            .unwrap();
        let status = resp.status().as_u16();
        let x_cache = resp.headers()["x-cache"].to_str().unwrap().to_owned();
        (status, x_cache, resp.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self) -> (u16, String, u64) {
        let (status, x_cache, body) = self.send(Method::GET, "/items").await;
        (status, x_cache, body["version"].as_u64().unwrap_or(u64::MAX))
    }

    /// Polls GET /items until `x_cache` is seen, returning every answer.
    async fn until(&self, x_cache: &str) -> Vec<(String, u64)> {
        let deadline = tokio::time::Instant::now() + RECOVERY_LIMIT;
        let mut seen = Vec::new();
        loop {
            let (status, got, version) = self.get().await;
            assert_eq!(status, 200);
            seen.push((got.clone(), version));
            if got == x_cache {
                return seen;
            }
            assert!(tokio::time::Instant::now() < deadline, "never saw {x_cache}: {seen:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn probe(upstream: &ScriptedUpstream, redis_url: Option<String>) -> Probe {
    let proxy = spawn_proxy(proxy_config(CONFIG, upstream.addr, redis_url, None)).await;
    Probe {
        client: reqwest::Client::new(),
        proxy,
    }
}

#[tokio::test]
async fn starts_and_serves_with_redis_down_then_caches_once_it_is_up() {
    let (upstream, _) = versioned_upstream().await;
    let mut redis = RedisServer::start();
    redis.stop(); // the port is kept for the restart below
    let p = probe(&upstream, Some(redis.url())).await;
    for _ in 0..5 {
        assert_eq!(p.get().await, (200, "BYPASS".into(), 0));
    }
    let ready = reqwest::get(p.proxy.admin_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.json::<Value>().await.unwrap()["cache"], "unavailable");

    redis.restart();
    p.until("MISS").await;
    assert_eq!(p.get().await, (200, "HIT".into(), 0));
}

#[tokio::test]
async fn redis_stopped_mid_test_means_bypass_not_errors() {
    let (upstream, _) = versioned_upstream().await;
    let mut redis = RedisServer::start();
    let p = probe(&upstream, Some(redis.url())).await;
    assert_eq!(p.get().await.1, "MISS");
    assert_eq!(p.get().await.1, "HIT");
    redis.stop();
    for _ in 0..10 {
        assert_eq!(p.get().await, (200, "BYPASS".into(), 0));
    }
    let before = upstream.hits();
    assert_eq!(p.send(Method::POST, "/items").await.0, 200, "writes still pass");
    assert_eq!(upstream.hits(), before + 1);
}

// Outage invalidations on one node, a Sentinel group and a cluster: the
// whole deployment is paused (sentinels and every node too, so nothing
// fails over) while a write passes.
on_every_redis!(
    a_write_while_redis_is_paused_leaves_nothing_stale_once_it_resumes,
    a_write_during_a_short_redis_pause_is_acknowledged_before_its_response,
);

/// [`CONFIG`] with writes waiting 300 ms for their invalidation, so a
/// paused deployment stays paused less than a Sentinel's or a cluster
/// node's failure detection time (1 s and 2 s in the harness).
fn outage_config() -> String {
    format!("{CONFIG}\n[cache]\ninvalidation_wait = \"300ms\"\n")
}

async fn outage_probe(upstream: &ScriptedUpstream, redis: Deployment) -> Probe {
    let proxy = spawn_proxy(proxy_config(&outage_config(), upstream.addr, Some(redis.url()), None)).await;
    Probe {
        client: reqwest::Client::new(),
        proxy,
    }
}

async fn a_write_while_redis_is_paused_leaves_nothing_stale_once_it_resumes(redis: Deployment) {
    let _alone = redis.exclusive().await;
    let (upstream, _) = versioned_upstream().await;
    let p = outage_probe(&upstream, redis).await;
    assert_eq!(p.get().await, (200, "MISS".into(), 0));
    assert_eq!(p.get().await, (200, "HIT".into(), 0));

    redis.pause(); // SIGSTOP: keeps its data, and the v0 entry with it
    assert_eq!(p.send(Method::POST, "/items").await.0, 200);
    let during = p.get().await;
    assert_eq!(during, (200, "BYPASS".into(), 1));
    redis.resume();

    let after = p.until("HIT").await;
    assert!(
        after.iter().all(|(_, version)| *version == 1),
        "a pre-write answer was served: {after:?}"
    );
    for _ in 0..5 {
        assert_eq!(p.get().await, (200, "HIT".into(), 1));
    }
}

#[tokio::test]
async fn redis_restarted_empty_is_a_miss_then_a_hit_without_restarting_the_proxy() {
    let (upstream, _) = versioned_upstream().await;
    let mut redis = RedisServer::start();
    let p = probe(&upstream, Some(redis.url())).await;
    assert_eq!(p.get().await.1, "MISS");
    assert_eq!(p.get().await.1, "HIT");
    redis.restart();
    let seen = p.until("MISS").await;
    assert!(
        seen.iter().all(|(x, _)| x != "HIT"),
        "served a hit from an emptied Redis: {seen:?}"
    );
    assert_eq!(p.get().await.1, "HIT");
}

#[tokio::test]
async fn an_upstream_refusing_connections_is_502() {
    // A socket bound but never listening: connections to it are refused,
    // and no other test can take its port meanwhile (a port merely found
    // free could be).
    let dead = tokio::net::TcpSocket::new_v4().unwrap();
    dead.bind(([127, 0, 0, 1], 0).into()).unwrap();
    let proxy = spawn_proxy(proxy_config(CONFIG, dead.local_addr().unwrap(), None, None)).await;
    let resp = reqwest::get(format!("{}/items", proxy.base_url())).await.unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "upstream unavailable");
}

#[tokio::test]
async fn an_upstream_that_never_answers_is_504_and_a_timed_out_write_still_invalidates() {
    let (upstream, _) = versioned_upstream().await;
    let p = probe(&upstream, None).await;
    let (status, x_cache, body) = p.send(Method::GET, "/hang").await;
    assert_eq!((status, x_cache.as_str()), (504, "BYPASS"));
    assert_eq!(body["error"], "upstream timed out");

    // A write that times out may have committed: entries must not survive it.
    let hang_invalidates = CONFIG.replace("invalidates = []", "invalidates = [\"items\"]");
    let proxy = spawn_proxy(proxy_config(&hang_invalidates, upstream.addr, None, None)).await;
    let p = Probe {
        client: reqwest::Client::new(),
        proxy,
    };
    assert_eq!(p.get().await.1, "MISS");
    assert_eq!(p.get().await.1, "HIT");
    assert_eq!(p.send(Method::POST, "/hang").await.0, 504);
    let (_, x_cache, version) = p.get().await;
    assert_eq!((x_cache.as_str(), version), ("MISS", 1));
}

#[tokio::test]
async fn a_client_sending_headers_slowly_is_cut_off() {
    let (upstream, _) = versioned_upstream().await;
    let p = probe(&upstream, None).await;
    let mut stream = tokio::net::TcpStream::connect(p.proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /items HTTP/1.1\r\nHost: proxy\r\n")
        .await
        .unwrap();
    // Never finish the headers; the proxy must close the connection.
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(HANG_GUARD, stream.read(&mut buf))
        .await
        .expect("connection was not cut off");
    let n = read.unwrap_or(0);
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(
        n == 0 || answer.starts_with("HTTP/1.1 408"),
        "unexpected answer: {answer}"
    );
    assert_eq!(upstream.hits(), 0);
}

async fn a_write_during_a_short_redis_pause_is_acknowledged_before_its_response(redis: Deployment) {
    let _alone = redis.exclusive().await;
    let (upstream, _) = versioned_upstream().await;
    let writer = Arc::new(outage_probe(&upstream, redis).await);
    let reader = outage_probe(&upstream, redis).await;
    assert_eq!(reader.get().await, (200, "MISS".into(), 0));
    assert_eq!(reader.get().await, (200, "HIT".into(), 0));

    redis.pause();
    let metrics_url = writer.proxy.admin_url("/metrics");
    let write = tokio::spawn({
        let writer = writer.clone();
        async move { writer.send(Method::POST, "/items").await.0 }
    });
    // Resume only once the write's first invalidation attempt has timed
    // out: the invalidation is then being retried, and must be applied
    // before the write is answered.
    let deadline = tokio::time::Instant::now() + RECOVERY_LIMIT;
    loop {
        let metrics = reqwest::get(&metrics_url).await.unwrap().text().await.unwrap();
        if metrics.contains(r#"proxy_redis_errors_total{operation="timeout"}"#) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the invalidation never timed out"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        !write.is_finished(),
        "the write was answered before its invalidation was acknowledged"
    );
    redis.resume();
    assert_eq!(write.await.unwrap(), 200);

    // Another instance sharing the Redis never serves the replaced entry.
    let seen = reader.until("HIT").await;
    assert!(
        seen.iter().all(|(_, v)| *v == 1),
        "another instance served pre-write data: {seen:?}"
    );
}

/// A raw upstream that sends response headers promising 100 bytes, one
/// byte, and then nothing.
async fn stalls_mid_body() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{")
                    .await;
                std::future::pending::<()>().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_upstream_stalling_mid_body_is_504_when_buffered_and_cut_when_streamed() {
    let upstream = stalls_mid_body().await;
    let proxy = spawn_proxy(proxy_config(CONFIG, upstream, None, None)).await;
    let client = reqwest::Client::new();
    let cached = tokio::time::timeout(HANG_GUARD, client.get(format!("{}/items", proxy.base_url())).send())
        .await
        .expect("a stalled body hung the request")
        .unwrap();
    assert_eq!(cached.status(), 504);

    // An uncacheable route streams: the headers are already sent, so the
    // stalled body is cut off rather than answered with a status.
    let streamed = tokio::time::timeout(HANG_GUARD, client.post(format!("{}/items", proxy.base_url())).send())
        .await
        .expect("a stalled body hung the request")
        .unwrap();
    assert_eq!(streamed.status(), 200);
    let body = tokio::time::timeout(HANG_GUARD, streamed.bytes())
        .await
        .expect("a stalled body hung the stream");
    assert!(body.is_err(), "a truncated body must not look complete");
}

// Hits read on the proxy's own Redis connections (the ones its request
// tasks write and read themselves, see `redis_layer::direct`).

const PATHS_CONFIG: &str = r#"
[[routes]]
name = "a"
path = "/a"
methods = ["GET"]
access = "public"
cache = {}

[[routes]]
name = "b"
path = "/b"
methods = ["GET"]
access = "public"
cache = {}

[cache]
l1_max_bytes = 0
"#;

/// An upstream answering each path with that path.
async fn path_upstream() -> ScriptedUpstream {
    ScriptedUpstream::start(|req| async move { json_reply(200, &json!({ "path": req.uri().path() }).to_string(), &[]) })
        .await
}

impl Probe {
    async fn path(&self, path: &str) -> (String, String) {
        let (status, x_cache, body) = self.send(Method::GET, path).await;
        assert_eq!(status, 200, "{path}: {body}");
        (x_cache, body["path"].as_str().unwrap_or_default().to_owned())
    }
}

/// A connection to `redis` as the test's own client, authenticated with
/// `password` if given.
async fn admin_connection(redis: &RedisServer, password: Option<&str>) -> redis::aio::MultiplexedConnection {
    let url = match password {
        Some(password) => format!("redis://:{password}@{}/0", redis.addr()),
        None => redis.url(),
    };
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("redis reachable")
}

/// Waits until `redis` lists at least `count` ordinary clients in `db`
/// besides the test's own: the proxy's connections, made in the background.
async fn until_clients_in_db(conn: &mut redis::aio::MultiplexedConnection, db: u32, count: usize) {
    let deadline = tokio::time::Instant::now() + RECOVERY_LIMIT;
    loop {
        let list: String = redis::cmd("CLIENT").arg("LIST").query_async(conn).await.unwrap();
        let me: i64 = redis::cmd("CLIENT").arg("ID").query_async(conn).await.unwrap();
        let clients = list
            .lines()
            .filter(|line| line.contains(&format!(" db={db} ")) && line.contains(" flags=N "))
            .filter(|line| !line.starts_with(&format!("id={me} ")))
            .count();
        if clients >= count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{clients} clients in db {db}: {list}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn own_connections_authenticate_and_select_the_urls_database() {
    let upstream = path_upstream().await;
    let redis = RedisServer::start();
    let mut admin = admin_connection(&redis, None).await;
    let password = "direct-test-password";
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg(password)
        .query_async(&mut admin)
        .await
        .unwrap();
    let mut admin = admin_connection(&redis, Some(password)).await;
    let url = format!("redis://:{password}@{}/5", redis.addr());
    let proxy = spawn_proxy(proxy_config(PATHS_CONFIG, upstream.addr, Some(url), None)).await;
    let p = Probe {
        client: reqwest::Client::new(),
        proxy,
    };
    assert_eq!(p.path("/a").await, ("MISS".into(), "/a".into()));
    // The client's connection and one of the proxy's own, both
    // authenticated (a connection refused by AUTH is dropped, never
    // counted) and in database 5.
    until_clients_in_db(&mut admin, 5, 2).await;
    for _ in 0..5 {
        assert_eq!(p.path("/a").await, ("HIT".into(), "/a".into()));
    }
    let in_db_0: i64 = redis::cmd("DBSIZE").query_async(&mut admin).await.unwrap();
    assert_eq!(in_db_0, 0, "nothing stored in database 0");
}

#[tokio::test]
async fn a_read_given_up_on_never_leaves_its_connection_answering_the_next() {
    let upstream = path_upstream().await;
    let redis = RedisServer::start();
    let mut admin = admin_connection(&redis, None).await;
    let proxy = spawn_proxy(proxy_config(PATHS_CONFIG, upstream.addr, Some(redis.url()), None)).await;
    let p = Probe {
        client: reqwest::Client::new(),
        proxy,
    };
    for path in ["/a", "/b"] {
        assert_eq!(p.path(path).await.1, path);
    }
    until_clients_in_db(&mut admin, 0, 2).await;
    assert_eq!(p.path("/a").await, ("HIT".into(), "/a".into()));
    assert_eq!(p.path("/b").await, ("HIT".into(), "/b".into()));

    // /a's read is sent, then given up on (50 ms) while Redis answers
    // nothing; its replies arrive once Redis resumes. A connection reused
    // with them unread would hand /a's entry to the next read.
    redis.pause();
    assert_eq!(p.path("/a").await, ("BYPASS".into(), "/a".into()));
    redis.resume();
    let deadline = tokio::time::Instant::now() + RECOVERY_LIMIT;
    loop {
        let (x_cache, path) = p.path("/b").await;
        assert_eq!(path, "/b", "/b answered with another's entry ({x_cache})");
        if x_cache == "HIT" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "/b never a hit again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..5 {
        assert_eq!(p.path("/b").await, ("HIT".into(), "/b".into()));
        assert_eq!(p.path("/a").await, ("HIT".into(), "/a".into()));
    }
}
