//! The origin's `Vary`: variants stay apart under keys that include the
//! headers it names (when they reach it), and `Vary: *` is never stored.

use e2e::{json_reply, proxy_config, spawn_proxy, ApiClient, RedisServer, ScriptedUpstream};
use serde_json::json;

/// `/negotiated` varies on Accept, which `forward_headers` lets through;
/// `/anything` says `Vary: *`; `/custom` varies on a header that never
/// reaches the origin.
const CONFIG: &str = r#"
[cache]
forward_headers = ["accept"]

[[routes]]
name = "negotiated"
path = "/negotiated"
methods = ["GET"]
access = "public"
cache = { tags = ["t"] }

[[routes]]
name = "anything"
path = "/anything"
methods = ["GET"]
access = "public"
cache = { tags = ["t"] }

[[routes]]
name = "custom"
path = "/custom"
methods = ["GET"]
access = "public"
cache = { tags = ["t"] }
"#;

async fn upstream() -> ScriptedUpstream {
    ScriptedUpstream::start(|req| {
        let accept = req
            .headers()
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        let vary = match req.uri().path() {
            "/negotiated" => "Accept",
            "/anything" => "*",
            _ => "X-Custom",
        };
        async move { json_reply(200, &json!({ "for": accept }).to_string(), &[("vary", vary)]) }
    })
    .await
}

async fn get(api: &ApiClient, path: &str, accept: &str) -> (String, String) {
    let response = reqwest::Client::new()
        .get(api.url(path))
        .header("accept", accept)
        .send()
        .await
        .unwrap();
    let x_cache = response.headers()["x-cache"].to_str().unwrap().to_owned();
    let body: serde_json::Value = response.json().await.unwrap();
    (x_cache, body["for"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn origin_sent_vary_keeps_variants_apart() {
    let (upstream, redis) = (upstream().await, RedisServer::start());
    let proxy = spawn_proxy(proxy_config(CONFIG, upstream.addr, Some(redis.url()), None)).await;
    let api = ApiClient::new(proxy.base_url());
    let (a, b) = ("application/a", "application/b");
    assert_eq!(get(&api, "/negotiated", a).await, ("MISS".into(), a.into()));
    assert_eq!(get(&api, "/negotiated", b).await, ("MISS".into(), b.into()));
    assert_eq!(get(&api, "/negotiated", a).await, ("HIT".into(), a.into()));
    assert_eq!(get(&api, "/negotiated", b).await, ("HIT".into(), b.into()));
    assert_eq!(upstream.hits(), 2);
}

#[tokio::test]
async fn vary_star_and_vary_on_headers_that_never_reach_the_origin_are_not_stored() {
    let (upstream, redis) = (upstream().await, RedisServer::start());
    let proxy = spawn_proxy(proxy_config(CONFIG, upstream.addr, Some(redis.url()), None)).await;
    let api = ApiClient::new(proxy.base_url());
    for path in ["/anything", "/custom"] {
        for _ in 0..2 {
            assert_eq!(get(&api, path, "application/a").await.0, "MISS", "{path}");
        }
    }
    assert_eq!(upstream.hits(), 4);
}
