//! The status page and its JSON on the admin listener: live figures per
//! rule and for the store, reload history, one self-contained document,
//! and the optional credential. (The page itself is driven in a real
//! browser by `scripts/test --extended`.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use base64::Engine;
use e2e::wait::eventually;
use e2e::{
    json_reply, proxy_config, proxy_config_file, proxy_config_with, spawn_proxy, spawn_reloadable_proxy, ProxyHandle,
    ScriptedUpstream, ITEMS_CONFIG,
};
use serde_json::Value;

const STATUS_TOKEN: &str = "status-token-0123456789abcdef0123";
const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef012345";

async fn upstream() -> ScriptedUpstream {
    ScriptedUpstream::start(|_| async { json_reply(200, r#"{"items":[1,2,3]}"#, &[]) }).await
}

async fn status(proxy: &ProxyHandle) -> Value {
    reqwest::get(proxy.admin_url("/status.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn rule<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == name)
        .unwrap_or_else(|| panic!("no rule {name} in {status}"))
}

/// GETs `/items` until told to stop.
fn steady_reads(proxy: &ProxyHandle) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let (url, stopped) = (format!("{}/items", proxy.base_url()), stop.clone());
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        while !stopped.load(Ordering::Relaxed) {
            client.get(&url).send().await.unwrap().bytes().await.unwrap();
        }
    });
    stop
}

#[tokio::test]
async fn status_json_shows_each_rules_traffic_and_the_store() {
    let upstream = upstream().await;
    let proxy = spawn_proxy(proxy_config(ITEMS_CONFIG, upstream.addr, None, None)).await;
    let stop = steady_reads(&proxy);
    eventually("the status shows /items being read, mostly from the cache", || async {
        let status = status(&proxy).await;
        let items = rule(&status, "items");
        items["requests_per_second"].as_f64().is_some_and(|rps| rps > 0.0)
            && items["hit_ratio"].as_f64().is_some_and(|ratio| ratio > 0.5)
            && items["p99_ms"].as_f64().is_some()
            && items["history"].as_array().is_some_and(|h| !h.is_empty())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let status = status(&proxy).await;
    assert_eq!(rule(&status, "items-write")["requests_per_second"], 0.0, "{status}");
    assert_eq!(status["store"]["kind"], "memory");
    assert_eq!(status["store"]["up"], true);
    assert_eq!(status["store"]["local_entries"], 1);
    assert!(status["store"]["local_bytes"].as_u64().unwrap() > 0);
    assert!(status["totals"]["requests_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(upstream.hits(), 1, "the reads were hits");
}

#[tokio::test]
async fn the_page_is_one_document_that_loads_nothing_else() {
    let upstream = upstream().await;
    let proxy = spawn_proxy(proxy_config(ITEMS_CONFIG, upstream.addr, None, None)).await;
    for path in ["/", "/status"] {
        let response = reqwest::get(proxy.admin_url(path)).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["content-type"], "text/html; charset=utf-8");
        let policy = response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            policy.starts_with("default-src 'none'") && policy.contains("connect-src 'self'"),
            "{policy}"
        );
        let page = response.text().await.unwrap();
        assert!(page.contains("fetch(\"status.json\""), "fed by the JSON endpoint");
        assert!(page.contains("name=\"viewport\""), "laid out for phones");
        for outside in [" src=", "<link", "@import", "url("] {
            assert!(!page.contains(outside), "the page loads something: {outside}");
        }
    }
    let post = reqwest::Client::new()
        .post(proxy.admin_url("/status.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
}

#[tokio::test]
async fn a_status_token_guards_the_page_and_the_metrics() {
    let upstream = upstream().await;
    let config = proxy_config_with(ITEMS_CONFIG, upstream.addr, |o| {
        o.status_token = Some(STATUS_TOKEN.into());
        o.admin_token = Some(ADMIN_TOKEN.into());
    });
    let proxy = spawn_proxy(config).await;
    let client = reqwest::Client::new();
    for path in ["/", "/status", "/status.json", "/metrics"] {
        let bare = client.get(proxy.admin_url(path)).send().await.unwrap();
        assert_eq!(bare.status(), 401, "{path}");
        assert!(
            bare.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Basic "),
            "a browser asks for it"
        );
        let wrong = client
            .get(proxy.admin_url(path))
            .bearer_auth("not-the-token")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401, "{path}");
        for token in [STATUS_TOKEN, ADMIN_TOKEN] {
            let bearer = client
                .get(proxy.admin_url(path))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(bearer.status(), 200, "{path}");
        }
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("anyone:{STATUS_TOKEN}"));
        let browser = client
            .get(proxy.admin_url(path))
            .header("authorization", format!("Basic {basic}"))
            .send()
            .await
            .unwrap();
        assert_eq!(browser.status(), 200, "{path}");
    }
    let health = client.get(proxy.admin_url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200, "liveness stays open");
}

#[tokio::test]
async fn reloads_refused_and_applied_are_listed() {
    let upstream = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let file = proxy_config_file(dir.path(), ITEMS_CONFIG, upstream.addr, None, Some(ADMIN_TOKEN));
    let path = file.path.clone();
    let proxy = spawn_reloadable_proxy(file).await;
    let reload = || async {
        reqwest::Client::new()
            .post(proxy.admin_url("/reload"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .status()
    };
    std::fs::write(&path, format!("{ITEMS_CONFIG}\n[log]\naccess_sample = 7\n")).unwrap();
    assert_eq!(reload().await, 400);
    std::fs::write(&path, format!("{ITEMS_CONFIG}\n[log]\naccess_sample = 0.5\n")).unwrap();
    assert_eq!(reload().await, 200);
    let status = status(&proxy).await;
    let reloads = status["config"]["reloads"].as_array().unwrap();
    assert_eq!(reloads.len(), 2, "{status}");
    assert_eq!(reloads[0]["ok"], false);
    assert_eq!(reloads[0]["fields"][0], "log.access_sample");
    assert_eq!(reloads[1]["ok"], true);
    assert_eq!(reloads[1]["version"], status["version"]);
}
