//! The two-tier cache: in-process L1 copies in front of Redis, shared by
//! several instances. An L1 copy is served only when Redis confirms, in the
//! hit's round trip, that it still holds that very entry under current
//! generations.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use e2e::shared_redis::Deployment;
use e2e::wait::eventually;
use e2e::{
    json_reply, on_every_redis, proxy_config, redis_prefix, spawn_proxy, ApiClient, ProxyHandle, RedisServer,
    ScriptedUpstream, Stack, ITEMS_CONFIG,
};
use http::Method;
use serde_json::json;

const L1_HITS: &str = r#"proxy_l1_lookups_total{outcome="hit"}"#;

/// A second proxy on the stack's Redis and origin: instance B.
async fn second_instance(stack: &Stack) -> (ProxyHandle, ApiClient) {
    let config = proxy_config(
        e2e::SHIPPED_CONFIG,
        stack.origin.addr,
        Some(stack.redis_url.clone()),
        None,
    );
    let proxy = spawn_proxy(config).await;
    let api = ApiClient::new(proxy.base_url());
    (proxy, api)
}

/// The version a test wrote into the user's name, `rw-<version>`.
fn version_of(body: &serde_json::Value) -> u64 {
    body["username"]
        .as_str()
        .and_then(|name| name.strip_prefix("rw-"))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no version in {body}"))
}

/// Renames the user to `rw-<version>` through `api`.
async fn write_version(api: &ApiClient, path: &str, token: &str, version: u64) {
    let name = format!("rw-{version}");
    let put = api
        .send(Method::PUT, path, Some(token), Some(json!({ "username": name })))
        .await;
    assert_eq!(put.status, 200, "{:?}", put.body);
}

// Read-your-writes across instances, with L1, on one node, a Sentinel
// group and a cluster.
on_every_redis!(
    a_write_through_one_instance_is_read_through_another_with_l1_on,
    four_readers_on_one_instance_never_see_a_write_made_through_another_undone,
);

async fn a_write_through_one_instance_is_read_through_another_with_l1_on(redis: Deployment) {
    let a = Stack::start_on_shared(redis.url()).await;
    let (b_proxy, b) = second_instance(&a).await;
    let (id, token) = a.api.register_and_login("rw-0").await;
    let path = format!("/users/{id}");

    for version in 1..=1000u64 {
        write_version(&a.api, &path, &token, version).await;
        // Read twice: the first read fills Redis and B's L1, the second is
        // served from B's L1, so the next write has a copy to outdate.
        for _ in 0..2 {
            let read = b.get(&path, Some(&token)).await;
            assert_eq!(read.status, 200);
            assert_eq!(version_of(&read.body), version, "B served a pre-write answer");
        }
    }
    assert!(b_proxy.metric(L1_HITS).await >= 1000, "B's L1 was not in play");
}

async fn four_readers_on_one_instance_never_see_a_write_made_through_another_undone(redis: Deployment) {
    let a = Stack::start_on_shared(redis.url()).await;
    let (b_proxy, b) = second_instance(&a).await;
    let (id, token) = a.api.register_and_login("rw-0").await;
    let path = format!("/users/{id}");
    // The latest version whose write has been answered: a read sent after
    // that must see it or a later one.
    let acknowledged = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));

    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (b, path, token) = (b.clone(), path.clone(), token.clone());
            let (acknowledged, done) = (acknowledged.clone(), done.clone());
            tokio::spawn(async move {
                let mut reads = 0u64;
                while done.load(Ordering::SeqCst) == 0 {
                    let floor = acknowledged.load(Ordering::SeqCst);
                    let read = b.get(&path, Some(&token)).await;
                    assert_eq!(read.status, 200);
                    let seen = version_of(&read.body);
                    assert!(
                        seen >= floor,
                        "read sent after version {floor} was acknowledged saw {seen}"
                    );
                    reads += 1;
                }
                reads
            })
        })
        .collect();

    for version in 1..=1000u64 {
        write_version(&a.api, &path, &token, version).await;
        acknowledged.store(version, Ordering::SeqCst);
    }
    done.store(1, Ordering::SeqCst);
    let mut reads = 0;
    for reader in readers {
        reads += reader.await.expect("a reader failed");
    }
    assert!(reads >= 1000, "readers barely ran: {reads} reads");
    assert!(b_proxy.metric(L1_HITS).await > 0, "B's L1 was not in play");
}

#[tokio::test]
async fn an_l1_copy_is_not_served_once_redis_no_longer_holds_its_entry() {
    let version = Arc::new(AtomicU64::new(0));
    let current = version.clone();
    let upstream = ScriptedUpstream::start(move |_| {
        let v = current.load(Ordering::SeqCst);
        async move { json_reply(200, &json!({ "version": v }).to_string(), &[]) }
    })
    .await;
    let redis = RedisServer::start();
    let proxy = spawn_proxy(proxy_config(ITEMS_CONFIG, upstream.addr, Some(redis.url()), None)).await;
    let api = ApiClient::new(proxy.base_url());
    let read = || async {
        let r = api.get("/items", None).await;
        (
            r.header("x-cache").unwrap_or_default().to_owned(),
            r.body["version"].as_u64(),
        )
    };
    assert_eq!(read().await, ("MISS".into(), Some(0)));
    assert_eq!(read().await, ("HIT".into(), Some(0)));
    assert_eq!(proxy.metric(L1_HITS).await, 1);

    // Redis loses the entry (eviction, a purge) while the generations stay:
    // only the stamp tells the L1 copy is no longer what Redis holds.
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}e:*", redis_prefix(upstream.addr)))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.unwrap();
    version.store(1, Ordering::SeqCst);

    assert_eq!(read().await, ("MISS".into(), Some(1)));
    assert_eq!(read().await, ("HIT".into(), Some(1)));
    assert_eq!(upstream.hits(), 2);
}

#[tokio::test]
async fn a_write_through_one_instance_evicts_the_others_l1_copies_at_once() {
    let upstream = ScriptedUpstream::start(|_| async { json_reply(200, "{}", &[]) }).await;
    let redis = RedisServer::start();
    let a = spawn_proxy(proxy_config(ITEMS_CONFIG, upstream.addr, Some(redis.url()), None)).await;
    let b = spawn_proxy(proxy_config(ITEMS_CONFIG, upstream.addr, Some(redis.url()), None)).await;
    let b_api = ApiClient::new(b.base_url());
    assert_eq!(b_api.get("/items", None).await.header("x-cache"), Some("MISS"));
    assert_eq!(b_api.get("/items", None).await.header("x-cache"), Some("HIT"));
    assert_eq!(b.metric(L1_HITS).await, 1, "B holds an L1 copy");
    // Both instances subscribe in the background; announcements sent
    // before that are not for them.
    let conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    eventually("both instances subscribe", || {
        let mut conn = conn.clone();
        async move {
            let (_, subscribers): (String, u64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(format!("{}events", redis_prefix(upstream.addr)))
                .query_async(&mut conn)
                .await
                .unwrap();
            subscribers == 2
        }
    })
    .await;

    let write = ApiClient::new(a.base_url())
        .send(Method::POST, "/items", None, None)
        .await;
    assert_eq!(write.status, 200);
    // No request reaches B: only the announcement can evict its copy.
    let evicted = r#"proxy_l1_evictions_total{cause="outdated"}"#;
    eventually("B drops its copy", || async { b.metric(evicted).await > 0 }).await;
    assert_eq!(b_api.get("/items", None).await.header("x-cache"), Some("MISS"));
}
