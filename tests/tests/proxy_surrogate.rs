//! Surrogate keys: the origin tags its answers in a header that clients
//! never see; a write whose answer names tags, or a purge of them, empties
//! exactly the entries so tagged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use e2e::{json_reply, proxy_config, redis_prefix, spawn_proxy, ApiClient, RedisServer, ScriptedUpstream};
use http::Method;
use proxy::config::Secret;
use serde_json::json;

/// No route-level invalidation: only the origin's tags say what a write
/// touches.
const CONFIG: &str = r#"
[[routes]]
name = "item"
path = "/items/{id}"
methods = ["GET"]
access = "public"
cache = { tags = ["items"] }

[[routes]]
name = "item-write"
path = "/items/{id}"
methods = ["POST"]
access = "public"
"#;

const ADMIN_TOKEN: &str = "surrogate-admin-token-0123456789";

#[tokio::test]
async fn origin_tags_stay_hidden_and_a_write_or_purge_naming_them_empties_only_those_entries() {
    let version = Arc::new(AtomicU64::new(0));
    let current = version.clone();
    let upstream = ScriptedUpstream::start(move |req| {
        let id = req.uri().path().rsplit('/').next().unwrap_or_default().to_owned();
        if req.method() == Method::POST {
            current.fetch_add(1, Ordering::SeqCst);
        }
        let body = json!({ "id": id, "version": current.load(Ordering::SeqCst) }).to_string();
        // Reads are tagged with their item and the collection; a write's
        // answer names the item it changed.
        let tags = if req.method() == Method::POST {
            format!("item:{id}")
        } else {
            format!("item:{id} items")
        };
        async move { json_reply(200, &body, &[("surrogate-key", &tags)]) }
    })
    .await;
    let redis = RedisServer::start();
    let mut config = proxy_config(CONFIG, upstream.addr, Some(redis.url()), None);
    config.runtime.admin_token = Some(Secret(ADMIN_TOKEN.into()));
    let proxy = spawn_proxy(config).await;
    let api = ApiClient::new(proxy.base_url());
    let read = |id: u32| {
        let api = api.clone();
        async move {
            let r = api.get(&format!("/items/{id}"), None).await;
            assert!(
                r.header("surrogate-key").is_none(),
                "the origin's tags leaked to a client"
            );
            (
                r.header("x-cache").unwrap().to_owned(),
                r.body["version"].as_u64().unwrap(),
            )
        }
    };
    for id in [1, 2] {
        assert_eq!(read(id).await, ("MISS".into(), 0));
        assert_eq!(read(id).await, ("HIT".into(), 0));
    }

    // The write's answer names item:1, which entries record no generation
    // for: the index finds them.
    let write = api.send(Method::POST, "/items/1", None, None).await;
    assert_eq!(write.status, 200);
    assert!(write.header("surrogate-key").is_none());
    assert_eq!(read(1).await, ("MISS".into(), 1));
    assert_eq!(read(2).await, ("HIT".into(), 0), "item:2 was not named");
    assert_eq!(read(1).await, ("HIT".into(), 1));
    // No rule records item:1, so the write left no generation key behind.
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let left: bool = redis::cmd("EXISTS")
        .arg(format!("{}g:item:1", redis_prefix(upstream.addr)))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!left, "a generation key for a surrogate-only tag");

    let purged = reqwest::Client::new()
        .post(proxy.admin_url("/purge"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"tags": ["item:2"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(purged.status(), 200);
    version.store(5, Ordering::SeqCst);
    assert_eq!(read(2).await, ("MISS".into(), 5));
    assert_eq!(read(1).await, ("HIT".into(), 1), "item:1 was not named");

    // A purge of a tag both rules and the origin use empties all of it.
    let purged = reqwest::Client::new()
        .post(proxy.admin_url("/purge"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"tags": ["items"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(purged.status(), 200);
    assert_eq!(read(1).await, ("MISS".into(), 5));
    assert_eq!(read(2).await, ("MISS".into(), 5));
}
