//! The read/write race: a read that reached the upstream before a write and
//! completes after it must never leave pre-write data in the cache.
//!
//! Deterministic: the upstream holds the read's response until the test has
//! seen the write complete through the proxy, then releases it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use e2e::shared_redis::Deployment;
use e2e::{json_reply, on_every_redis, proxy_config, spawn_proxy, ScriptedUpstream, ITEMS_CONFIG};
use http::Method;
use serde_json::{json, Value};
use tokio::sync::{oneshot, Notify};

/// Upstream state: a version bumped by each POST; the first GET reads the
/// version, announces itself, and waits for the gate before answering.
struct Backend {
    version: AtomicU64,
    first_read_arrived: Notify,
    gate: Mutex<Option<oneshot::Receiver<()>>>,
}

async fn race_leaves_no_stale_entry(redis_url: Option<String>) {
    let (open_gate, gate) = oneshot::channel();
    let backend = Arc::new(Backend {
        version: AtomicU64::new(0),
        first_read_arrived: Notify::new(),
        gate: Mutex::new(Some(gate)),
    });
    let state = backend.clone();
    let upstream = ScriptedUpstream::start(move |req| {
        let state = state.clone();
        async move {
            if req.method() == Method::POST {
                let v = state.version.fetch_add(1, Ordering::SeqCst) + 1;
                return json_reply(200, &json!({ "version": v }).to_string(), &[]);
            }
            let seen = state.version.load(Ordering::SeqCst);
            let gate = state.gate.lock().unwrap().take();
            if let Some(gate) = gate {
                state.first_read_arrived.notify_one();
                let _ = gate.await;
            }
            json_reply(200, &json!({ "version": seen }).to_string(), &[])
        }
    })
    .await;
    let proxy = spawn_proxy(proxy_config(ITEMS_CONFIG, upstream.addr, redis_url, None)).await;
    let client = reqwest::Client::new();
    let url = format!("{}/items", proxy.base_url());

    // 1. A read starts and reaches the upstream, which reads version 0.
    let arrived = backend.first_read_arrived.notified();
    let slow_read = tokio::spawn({
        let (client, url) = (client.clone(), url.clone());
        async move { client.get(&url).send().await.unwrap().json::<Value>().await.unwrap() }
    });
    arrived.await;

    // 2. A write goes through the proxy and completes.
    let write = client.post(&url).send().await.unwrap();
    assert_eq!(write.status(), 200);

    // 3. Only now does the read's (pre-write) answer come back.
    open_gate.send(()).unwrap();
    assert_eq!(
        slow_read.await.unwrap()["version"],
        0,
        "the read saw the pre-write state"
    );

    // 4. The cache must not serve it.
    let after = client.get(&url).send().await.unwrap();
    assert_eq!(
        after.headers()["x-cache"],
        "MISS",
        "the raced read must not have been cached"
    );
    assert_eq!(after.json::<Value>().await.unwrap()["version"], 1);
    let cached = client.get(&url).send().await.unwrap();
    assert_eq!(cached.headers()["x-cache"], "HIT");
    assert_eq!(cached.json::<Value>().await.unwrap()["version"], 1);
}

// The race on one node, a Sentinel group and a cluster.
on_every_redis!(a_raced_read_never_caches_pre_write_data_in_redis);

async fn a_raced_read_never_caches_pre_write_data_in_redis(redis: Deployment) {
    race_leaves_no_stale_entry(Some(redis.url())).await;
}

#[tokio::test]
async fn a_raced_read_never_caches_pre_write_data_in_memory() {
    race_leaves_no_stale_entry(None).await;
}
