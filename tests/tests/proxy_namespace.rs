//! Deployments sharing one Redis share nothing unless they say so (issue 9,
//! finding 5). On 11a5e57 the key did not include the backend and every
//! deployment used the prefix `cgw:`: a staging proxy served production's
//! entries, and shared its generations and its `/purge all`.

use e2e::{json_reply, proxy_config, spawn_proxy, ProxyHandle, RedisServer, ScriptedUpstream};
use proxy::config::Secret;
use serde_json::{json, Value};

const CONFIG: &str = r#"
[[routes]]
name = "items"
path = "/items"
methods = ["GET"]
access = "public"
cache = { tags = ["items"], ttl = "1h" }
"#;

const ADMIN_TOKEN: &str = "namespace-test-admin-token";

async fn backend(name: &'static str) -> ScriptedUpstream {
    ScriptedUpstream::start(move |_| async move { json_reply(200, &json!({ "from": name }).to_string(), &[]) }).await
}

async fn proxy(toml: &str, upstream: &ScriptedUpstream, redis: &RedisServer) -> ProxyHandle {
    let mut config = proxy_config(toml, upstream.addr, Some(redis.url()), None);
    config.runtime.admin_token = Some(Secret(ADMIN_TOKEN.into()));
    spawn_proxy(config).await
}

async fn get(proxy: &ProxyHandle) -> (String, String) {
    let response = reqwest::get(format!("{}/items", proxy.base_url())).await.unwrap();
    let x_cache = response.headers()["x-cache"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    (x_cache, body["from"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn proxies_in_front_of_different_backends_share_no_entry_generation_or_purge() {
    let redis = RedisServer::start();
    let (production, staging) = (backend("production").await, backend("staging").await);
    let prod = proxy(CONFIG, &production, &redis).await;
    let stage = proxy(CONFIG, &staging, &redis).await;

    assert_eq!(get(&prod).await, ("MISS".into(), "production".into()));
    assert_eq!(get(&prod).await, ("HIT".into(), "production".into()));
    assert_eq!(get(&stage).await, ("MISS".into(), "staging".into()));

    let purged = reqwest::Client::new()
        .post(stage.admin_url("/purge"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"all": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(purged.status(), 200);
    assert_eq!(
        get(&prod).await,
        ("HIT".into(), "production".into()),
        "staging purged production"
    );

    let ready: Value = reqwest::get(prod.admin_url("/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["cache_namespace"], production.addr.to_string());
}

#[tokio::test]
async fn instances_naming_one_namespace_share_a_cache_whatever_authority_they_use() {
    let redis = RedisServer::start();
    let (one, other) = (backend("one").await, backend("other").await);
    let shared = format!("[cache]\nnamespace = \"users-api\"\n{CONFIG}");
    let first = proxy(&shared, &one, &redis).await;
    let second = proxy(&shared, &other, &redis).await;
    assert_eq!(get(&first).await, ("MISS".into(), "one".into()));
    assert_eq!(get(&second).await, ("HIT".into(), "one".into()));
}
