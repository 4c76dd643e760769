//! A rolling upgrade: the previous release and this one serve from one
//! Redis at once, and a write (or a purge) through either makes both stop
//! serving what it replaced.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use e2e::previous::previous_proxy;
use e2e::process::{free_port, wait_until, ManagedChild};
use e2e::{json_reply, proxy_config, spawn_proxy, ApiClient, RedisServer, ScriptedUpstream, ITEMS_CONFIG};
use proxy::config::Secret;
use serde_json::json;

const ADMIN_TOKEN: &str = "upgrade-test-admin-token-0123456789";

/// The previous release's binary on free ports, with `ITEMS_CONFIG`.
fn start_previous(
    dir: &std::path::Path,
    upstream: SocketAddr,
    redis_url: &str,
) -> (ManagedChild, SocketAddr, SocketAddr) {
    std::fs::write(dir.join("config.toml"), ITEMS_CONFIG).unwrap();
    let (listen, admin): (SocketAddr, SocketAddr) = (
        format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        format!("127.0.0.1:{}", free_port()).parse().unwrap(),
    );
    let mut command = Command::new(previous_proxy());
    command
        .arg("--config")
        .arg(dir.join("config.toml"))
        .args(["--listen", &listen.to_string(), "--admin-listen", &admin.to_string()])
        .args(["--upstream", &format!("http://{upstream}"), "--redis-url", redis_url])
        .current_dir(dir)
        .env_clear()
        .env("PROXY_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("LOG", "warn")
        .stdout(Stdio::null());
    let mut child = ManagedChild::spawn("previous proxy", command).unwrap();
    wait_until(&mut child, Duration::from_secs(30), || {
        std::net::TcpStream::connect(listen).is_ok()
    })
    .unwrap();
    (child, listen, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_either_version_stops_both_serving_what_it_replaced() {
    let version = Arc::new(AtomicU64::new(0));
    let current = version.clone();
    let upstream = ScriptedUpstream::start(move |req| {
        // Each write moves the data on.
        if req.method() == http::Method::POST {
            current.fetch_add(1, Ordering::SeqCst);
        }
        let body = json!({ "version": current.load(Ordering::SeqCst) }).to_string();
        async move { json_reply(200, &body, &[]) }
    })
    .await;
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (_old, old_addr, _) = start_previous(dir.path(), upstream.addr, &redis.url());
    let mut config = proxy_config(ITEMS_CONFIG, upstream.addr, Some(redis.url()), None);
    config.runtime.admin_token = Some(Secret(ADMIN_TOKEN.into()));
    let new = spawn_proxy(config).await;
    let (old, new_api) = (
        ApiClient::new(format!("http://{old_addr}")),
        ApiClient::new(new.base_url()),
    );

    // Both fill and serve their entries.
    let read = |api: &ApiClient| {
        let api = api.clone();
        async move {
            let r = api.get("/items", None).await;
            assert_eq!(r.status, 200);
            (
                r.header("x-cache").unwrap().to_owned(),
                r.body["version"].as_u64().unwrap(),
            )
        }
    };
    for api in [&old, &new_api] {
        read(api).await;
        assert_eq!(read(api).await, ("HIT".into(), 0));
    }

    // A write through the new version: neither serves version 0 again.
    assert_eq!(
        new_api
            .send(reqwest::Method::POST, "/items", None, Some(json!({})))
            .await
            .status,
        200
    );
    assert_eq!(
        read(&old).await.1,
        1,
        "the previous release served what a write replaced"
    );
    assert_eq!(read(&new_api).await.1, 1);
    assert_eq!(read(&old).await, ("HIT".into(), 1));
    assert_eq!(read(&new_api).await, ("HIT".into(), 1));

    // A write through the previous version: likewise.
    assert_eq!(
        old.send(reqwest::Method::POST, "/items", None, Some(json!({})))
            .await
            .status,
        200
    );
    assert_eq!(read(&new_api).await.1, 2, "this release served what a write replaced");
    assert_eq!(read(&old).await.1, 2);

    // A purge by path through the new version empties the old one's entry.
    assert_eq!(read(&old).await, ("HIT".into(), 2));
    let purged = reqwest::Client::new()
        .post(new.admin_url("/purge"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"paths": ["/items"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(purged.status(), 200);
    assert_eq!(
        read(&old).await.0,
        "MISS",
        "the purge reached the previous release's entry"
    );
}
