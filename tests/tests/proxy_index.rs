//! What a request with a huge path costs the shared store (issue 9,
//! finding 3). On 11a5e57 every entry was filed under every prefix of its
//! path: one 16 KB path of 8,000 segments made ~8,000 Redis keys and a
//! script that blocked the Redis every instance shares.
//!
//! The bound stated in the README: by default (`cache.max_key_bytes` =
//! 8 KiB) such a request adds no key at all; with the bound raised so it is
//! cached, one entry adds at most `INDEXED_PREFIX_DEPTH + 5` keys (the
//! entry, its exact-path set, at most `INDEXED_PREFIX_DEPTH + 2` prefix
//! sets including `/`, its one tag's set) whose names and members hold the
//! path a bounded number of times, so Redis's memory grows linearly in the
//! path's length.

use e2e::{json_reply, proxy_config, redis_prefix, spawn_proxy, RedisServer, ScriptedUpstream};
use proxy::cache::purge::INDEXED_PREFIX_DEPTH;

const CONFIG: &str = r#"
[[routes]]
name = "files"
path = "/files/*"
methods = ["GET"]
access = "public"
cache = { tags = ["files"], ttl = "1h" }
"#;

/// Keys in Redis, leases aside: a miss's lease is given back after its
/// answer, in the background, so it may or may not still be there.
async fn dbsize(redis: &RedisServer, upstream: &ScriptedUpstream) -> u64 {
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut conn).await.unwrap();
    let leases = format!("{}l:", redis_prefix(upstream.addr));
    keys.iter().filter(|k| !k.starts_with(&leases)).count() as u64
}

/// What the stored keys take in Redis (`MEMORY USAGE` of each, names
/// included), leases aside: unlike `used_memory`, not the client buffers
/// of the connections the proxies open meanwhile.
async fn stored_bytes(redis: &RedisServer, upstream: &ScriptedUpstream) -> u64 {
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut conn).await.unwrap();
    let leases = format!("{}l:", redis_prefix(upstream.addr));
    let mut total = 0;
    for key in keys.iter().filter(|k| !k.starts_with(&leases)) {
        let usage: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut conn)
            .await
            .unwrap();
        total += usage.unwrap_or(0);
    }
    total
}

/// A 16 KB path of 8,000 segments under `/files`.
fn huge_path() -> String {
    let path = format!("/files{}", "/a".repeat(8_000));
    assert!(path.len() >= 16_000);
    path
}

async fn fetch(base: &str, path: &str) -> String {
    let response = reqwest::get(format!("{base}{path}")).await.unwrap();
    assert_eq!(response.status(), 200);
    response.headers()["cache-status"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_16kb_path_adds_no_key_by_default_and_a_bounded_few_when_cached() {
    let upstream = ScriptedUpstream::start(|_| async { json_reply(200, "{}", &[]) }).await;
    let redis = RedisServer::start();
    let default = spawn_proxy(proxy_config(CONFIG, upstream.addr, Some(redis.url()), None)).await;
    // Creates the tag generations, so only what the huge path adds is counted.
    assert!(fetch(&default.base_url(), "/files/warm").await.contains("stored"));

    let before = dbsize(&redis, &upstream).await;
    let status = fetch(&default.base_url(), &huge_path()).await;
    assert_eq!(status, "proxy; fwd=bypass; detail=key-too-large");
    assert_eq!(
        dbsize(&redis, &upstream).await,
        before,
        "a request the cache refused added keys"
    );

    let raised = format!("[cache]\nmax_key_bytes = 65536\n{CONFIG}");
    let cached = spawn_proxy(proxy_config(&raised, upstream.addr, Some(redis.url()), None)).await;
    let memory_before = stored_bytes(&redis, &upstream).await;
    assert!(fetch(&cached.base_url(), &huge_path()).await.contains("stored"));
    assert!(fetch(&cached.base_url(), &huge_path()).await.contains("hit"));
    let added = dbsize(&redis, &upstream).await - before;
    assert!(added <= INDEXED_PREFIX_DEPTH as u64 + 3, "one entry added {added} keys");
    // The path is held a bounded number of times (entry, exact-path set
    // name, the member at the depth cap), not once per prefix.
    let grown = stored_bytes(&redis, &upstream).await.saturating_sub(memory_before);
    assert!(grown < 8 * huge_path().len() as u64, "Redis grew by {grown} bytes");
}
