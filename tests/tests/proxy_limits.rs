//! Requests at the backend at once are bounded (issue 9, finding 10): on
//! 11a5e57 nothing limited them, so a stalled backend collected every
//! client's request.

use e2e::wait::eventually;
use e2e::{json_reply, proxy_config, spawn_proxy, ScriptedUpstream, ITEMS_CONFIG};
use tokio::sync::watch;

const CONFIG: &str = r#"
[[routes]]
name = "slow"
path = "/slow"
methods = ["GET", "POST"]
access = "public"
max_concurrent_requests = 1
invalidates = []
"#;

#[tokio::test]
async fn past_a_routes_limit_the_proxy_answers_503_without_asking_the_backend() {
    let (open, gate) = watch::channel(false);
    let upstream = ScriptedUpstream::start(move |_| {
        let mut gate = gate.clone();
        async move {
            let _ = gate.wait_for(|open| *open).await;
            json_reply(200, "{}", &[])
        }
    })
    .await;
    let config = format!("{CONFIG}{ITEMS_CONFIG}");
    let proxy = spawn_proxy(proxy_config(&config, upstream.addr, None, None)).await;
    let url = format!("{}/slow", proxy.base_url());
    let first = tokio::spawn(reqwest::get(url.clone()));
    eventually("the first request reached the backend", || async {
        upstream.hits() == 1
    })
    .await;

    let refused = reqwest::get(&url).await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(upstream.hits(), 1, "the refused request reached the backend");
    assert_eq!(proxy.metric(r#"proxy_upstream_rejected_total{rule="slow"}"#).await, 1);
    // Other routes have no limit of their own (the global one is 1024).
    open.send_replace(true);
    assert_eq!(first.await.unwrap().unwrap().status(), 200);
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 200, "the slot came back");
}

#[tokio::test]
async fn past_the_global_limit_a_write_is_refused_and_invalidates_nothing() {
    let (open, gate) = watch::channel(false);
    let upstream = ScriptedUpstream::start(move |req| {
        let mut gate = gate.clone();
        async move {
            if req.uri().path() == "/slow" {
                let _ = gate.wait_for(|open| *open).await;
            }
            json_reply(200, "{}", &[])
        }
    })
    .await;
    let config = format!("[upstream]\nmax_concurrent_requests = 1\n{CONFIG}{ITEMS_CONFIG}");
    let proxy = spawn_proxy(proxy_config(&config, upstream.addr, None, None)).await;
    let items = format!("{}/items", proxy.base_url());
    assert_eq!(reqwest::get(&items).await.unwrap().headers()["x-cache"], "MISS");
    let held = tokio::spawn(reqwest::get(format!("{}/slow", proxy.base_url())));
    eventually("the slow request holds the only slot", || async {
        upstream.hits() == 2
    })
    .await;

    let write = reqwest::Client::new().post(&items).body("{}").send().await.unwrap();
    assert_eq!(write.status(), 503);
    assert_eq!(
        reqwest::get(&items).await.unwrap().headers()["x-cache"],
        "HIT",
        "a refused write invalidated"
    );
    open.send_replace(true);
    assert_eq!(held.await.unwrap().unwrap().status(), 200);
}
