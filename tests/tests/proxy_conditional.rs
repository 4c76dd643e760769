//! Conditional requests: every cached answer carries a strong ETag; a
//! client holding it gets a 304; an expired entry is revalidated upstream
//! with its validators and refreshed by a 304.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use e2e::{json_reply, proxy_config, spawn_proxy, RedisServer, ScriptedUpstream, Stack};
use serde_json::json;

#[tokio::test]
async fn a_hit_is_304_for_a_matching_if_none_match_and_200_otherwise() {
    let s = Stack::start().await;
    let (_, token) = s.api.register_and_login("conditional").await;
    let first = s.api.get("/users", Some(&token)).await;
    assert_eq!(first.header("x-cache"), Some("MISS"));
    let etag = first
        .header("etag")
        .expect("a cached answer carries an ETag")
        .to_owned();
    assert!(etag.starts_with('"'), "strong: {etag}");

    let client = reqwest::Client::new();
    let get = |if_none_match: &str| {
        client
            .get(s.api.url("/users"))
            .bearer_auth(&token)
            .header("if-none-match", if_none_match)
            .send()
    };
    let matching = get(&etag).await.unwrap();
    assert_eq!(matching.status(), 304);
    assert_eq!(matching.headers()["x-cache"], "HIT");
    assert_eq!(matching.headers()["etag"].to_str().unwrap(), etag);
    assert!(matching.bytes().await.unwrap().is_empty());

    let weak_in_a_list = get(&format!("\"other\", W/{etag}")).await.unwrap();
    assert_eq!(weak_in_a_list.status(), 304);

    let other = get("\"other\"").await.unwrap();
    assert_eq!(other.status(), 200);
    assert_eq!(other.json::<serde_json::Value>().await.unwrap(), first.body);

    // After a write the answer changes, and so does its tag.
    let registered = s.api.register("another", "another@example.com", "password-123").await;
    assert_eq!(registered.status, 201);
    let after = get(&etag).await.unwrap();
    assert_eq!(after.status(), 200, "the old tag no longer matches");
    assert_ne!(after.headers()["etag"].to_str().unwrap(), etag);
}

const CONFIG: &str = r#"
[[routes]]
name = "doc"
path = "/doc"
methods = ["GET"]
access = "public"
cache = { tags = ["doc"] }
"#;

#[tokio::test]
async fn an_expired_entry_is_revalidated_and_refreshed_by_an_upstream_304() {
    let not_modified = Arc::new(AtomicUsize::new(0));
    let counted = not_modified.clone();
    let upstream = ScriptedUpstream::start(move |req| {
        let revalidating = req.headers().get("if-none-match").is_some_and(|v| v == "\"v1\"");
        if revalidating {
            counted.fetch_add(1, Ordering::SeqCst);
        }
        async move {
            let headers = [("etag", "\"v1\""), ("cache-control", "max-age=1")];
            if revalidating {
                json_reply(304, "", &headers)
            } else {
                json_reply(200, &json!({"doc": 1}).to_string(), &headers)
            }
        }
    })
    .await;
    let redis = RedisServer::start();
    let proxy = spawn_proxy(proxy_config(CONFIG, upstream.addr, Some(redis.url()), None)).await;
    let client = reqwest::Client::new();
    let get = || async {
        let r = client.get(format!("{}/doc", proxy.base_url())).send().await.unwrap();
        let cache_status = r.headers()["cache-status"].to_str().unwrap().to_owned();
        (
            r.status().as_u16(),
            cache_status,
            r.json::<serde_json::Value>().await.unwrap(),
        )
    };
    assert_eq!(get().await.1, "proxy; fwd=miss; stored");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, cache_status, body) = get().await;
        assert_eq!((status, &body), (200, &json!({"doc": 1})));
        if cache_status.contains("fwd-status=304") {
            assert_eq!(cache_status, "proxy; fwd=stale; fwd-status=304; stored");
            break;
        }
        assert!(cache_status.starts_with("proxy; hit"), "{cache_status}");
        assert!(tokio::time::Instant::now() < deadline, "never revalidated");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(not_modified.load(Ordering::SeqCst), 1);
    assert!(get().await.1.starts_with("proxy; hit"), "fresh again after the 304");
    assert_eq!(upstream.hits(), 2, "one full fetch, one revalidation");
    assert_eq!(
        proxy.metric(r#"proxy_conditional_total{outcome="revalidated"}"#).await,
        1
    );
}
