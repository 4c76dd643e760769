//! Reloading `config.toml` while serving: new rules apply to the next
//! request, entries of rules whose keyed parts did not change stay hits,
//! a rule whose keyed parts changed starts fresh, an invalid file or a
//! change to a boot field is refused with the field named and the running
//! rules untouched, and `/reload` and `/config` are the admin's, as `/purge`.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use e2e::token::mint;
use e2e::{
    json_reply, proxy_config_file, spawn_reloadable_proxy, ApiClient, ProxyHandle, RedisServer, ScriptedUpstream,
};
use serde_json::{json, Value};

const ADMIN_TOKEN: &str = "reload-test-admin-token-0123456789";

/// `reports` is for admins only and shared by them; `things` is public.
const BEFORE: &str = r#"
[[routes]]
name = "reports"
path = "/reports"
methods = ["GET"]
roles = ["admin"]
cache = { scope = "shared", ttl = "1h" }

[[routes]]
name = "things"
path = "/things/*"
methods = ["GET"]
access = "public"
cache = { ttl = "1h" }
"#;

/// The proxy in front of an upstream answering `{"version": v}`, with
/// the rules in a file it reloads from.
struct Rig {
    proxy: ProxyHandle,
    api: ApiClient,
    version: Arc<AtomicU64>,
    upstream: ScriptedUpstream,
    dir: tempfile::TempDir,
}

async fn rig(redis: Option<&RedisServer>) -> Rig {
    let version = Arc::new(AtomicU64::new(0));
    let current = version.clone();
    let upstream = ScriptedUpstream::start(move |_| {
        let body = json!({ "version": current.load(Ordering::SeqCst) }).to_string();
        async move { json_reply(200, &body, &[]) }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = proxy_config_file(
        dir.path(),
        BEFORE,
        upstream.addr,
        redis.map(RedisServer::url),
        Some(ADMIN_TOKEN),
    );
    let proxy = spawn_reloadable_proxy(file).await;
    let api = ApiClient::new(proxy.base_url());
    Rig {
        proxy,
        api,
        version,
        upstream,
        dir,
    }
}

impl Rig {
    fn rewrite(&self, toml: &str) {
        write(self.dir.path(), toml);
    }

    async fn admin(&self, method: reqwest::Method, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = reqwest::Client::new().request(method, self.proxy.admin_url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    async fn reload(&self) -> (u16, Value) {
        self.admin(reqwest::Method::POST, "/reload", Some(ADMIN_TOKEN)).await
    }

    /// Status, `X-Cache` and version of a GET.
    async fn get(&self, path: &str, token: Option<&str>) -> (u16, String, Option<u64>) {
        let r = self.api.get(path, token).await;
        (
            r.status.as_u16(),
            r.header("x-cache").unwrap_or_default().to_owned(),
            r.body["version"].as_u64(),
        )
    }
}

fn write(dir: &Path, toml: &str) {
    std::fs::write(dir.join("config.toml"), toml).unwrap();
}

async fn new_roles_apply_at_once_and_entries_stay_hits(redis: Option<&RedisServer>) {
    let rig = rig(redis).await;
    let (admin, user) = (mint("a1", "admin"), mint("u1", "user"));
    assert_eq!(rig.get("/reports", Some(&admin)).await, (200, "MISS".into(), Some(0)));
    assert_eq!(rig.get("/reports", Some(&admin)).await, (200, "HIT".into(), Some(0)));
    assert_eq!(rig.get("/reports", Some(&user)).await.0, 403);
    rig.version.store(1, Ordering::SeqCst);

    // Users may now read reports, and the TTL changed: the entry is kept.
    rig.rewrite(&BEFORE.replace(
        "roles = [\"admin\"]\ncache = { scope = \"shared\", ttl = \"1h\" }",
        "roles = [\"admin\", \"user\"]\ncache = { scope = \"shared\", ttl = \"2h\" }",
    ));
    let (status, answer) = rig.reload().await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["reloaded"], true);
    assert_eq!(rig.get("/reports", Some(&user)).await, (200, "HIT".into(), Some(0)));
    assert_eq!(rig.get("/reports", Some(&admin)).await, (200, "HIT".into(), Some(0)));
    assert_eq!(rig.upstream.hits(), 1, "the entry outlived the reload");

    // Admins may no longer: refused at the next request.
    rig.rewrite(&BEFORE.replace("roles = [\"admin\"]", "roles = [\"user\"]"));
    assert_eq!(rig.reload().await.0, 200);
    assert_eq!(rig.get("/reports", Some(&admin)).await.0, 403);
    assert_eq!(rig.get("/reports", Some(&user)).await, (200, "HIT".into(), Some(0)));
    assert_eq!(rig.proxy.metric(r#"proxy_config_reloads_total{outcome="ok"}"#).await, 2);
}

#[tokio::test]
async fn new_roles_apply_at_once_and_entries_stay_hits_in_memory() {
    new_roles_apply_at_once_and_entries_stay_hits(None).await;
}

#[tokio::test]
async fn new_roles_apply_at_once_and_entries_stay_hits_in_redis() {
    let redis = RedisServer::start();
    new_roles_apply_at_once_and_entries_stay_hits(Some(&redis)).await;
}

async fn a_changed_path_pattern_never_serves_old_entries(redis: Option<&RedisServer>) {
    let rig = rig(redis).await;
    assert_eq!(rig.get("/things/1", None).await, (200, "MISS".into(), Some(0)));
    assert_eq!(rig.get("/things/1", None).await, (200, "HIT".into(), Some(0)));
    rig.version.store(1, Ordering::SeqCst);

    // Same name, same request path matches, but another rule now.
    rig.rewrite(&BEFORE.replace("path = \"/things/*\"", "path = \"/things/{id}\""));
    assert_eq!(rig.reload().await.0, 200);
    assert_eq!(rig.get("/things/1", None).await, (200, "MISS".into(), Some(1)));
    assert_eq!(rig.get("/things/1", None).await, (200, "HIT".into(), Some(1)));

    // Back to the first pattern: its old entry is never served either way
    // (its rule's entries are filed apart, and they are stale by now).
    rig.version.store(2, Ordering::SeqCst);
    rig.rewrite(BEFORE);
    assert_eq!(rig.reload().await.0, 200);
    let (status, _, version) = rig.get("/things/1", None).await;
    assert_eq!(status, 200);
    assert_ne!(version, Some(1), "an entry stored under the other pattern was served");
}

#[tokio::test]
async fn a_changed_path_pattern_never_serves_old_entries_in_memory() {
    a_changed_path_pattern_never_serves_old_entries(None).await;
}

#[tokio::test]
async fn a_changed_path_pattern_never_serves_old_entries_in_redis() {
    let redis = RedisServer::start();
    a_changed_path_pattern_never_serves_old_entries(Some(&redis)).await;
}

#[tokio::test]
async fn an_invalid_file_is_refused_with_its_fields_and_the_running_rules_serve_on() {
    let rig = rig(None).await;
    let admin = mint("a1", "admin");
    let (_, before) = rig.admin(reqwest::Method::GET, "/config", Some(ADMIN_TOKEN)).await;
    assert_eq!(rig.get("/reports", Some(&admin)).await.1, "MISS");

    rig.rewrite(
        &BEFORE
            .replace("ttl = \"1h\" }\n\n[[routes]]", "ttl = \"0s\" }\n\n[[routes]]")
            .replace("access = \"public\"", "access = \"everyone\""),
    );
    let (status, answer) = rig.reload().await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["reloaded"], false);
    let fields: Vec<&str> = answer["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["routes[0].cache.ttl", "routes[1].access"], "{answer}");

    // A file that is not TOML at all: refused too, naming the file.
    rig.rewrite("[[routes]\nname = ");
    let (status, answer) = rig.reload().await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["errors"][0]["field"], "config.toml");

    // The rules in use are the first ones, entries included.
    assert_eq!(rig.get("/reports", Some(&admin)).await.1, "HIT");
    assert_eq!(rig.get("/things/1", None).await.0, 200);
    let (_, after) = rig.admin(reqwest::Method::GET, "/config", Some(ADMIN_TOKEN)).await;
    assert_eq!(after["version"], before["version"]);
    assert_eq!(
        rig.proxy
            .metric(r#"proxy_config_reloads_total{outcome="invalid"}"#)
            .await,
        2
    );
    let info = format!(
        "proxy_config_info{{version=\"{}\"}}",
        before["version"].as_str().unwrap()
    );
    assert_eq!(rig.proxy.metric(&info).await, 1);
}

#[tokio::test]
async fn a_change_to_a_boot_field_is_refused_naming_it() {
    let rig = rig(None).await;
    for (change, field) in [
        ("[server]\nmax_connections = 5\n", "server.max_connections"),
        ("[cache]\nnamespace = \"elsewhere\"\n", "cache.namespace"),
        ("[upstream]\nconnect_timeout = \"7s\"\n", "upstream.connect_timeout"),
    ] {
        rig.rewrite(&format!("{change}{BEFORE}"));
        let (status, answer) = rig.reload().await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["errors"][0]["field"], field, "{answer}");
        assert_eq!(answer["errors"].as_array().unwrap().len(), 1, "{answer}");
    }
    // A runtime field of the same sections is fine.
    rig.rewrite(&format!("[upstream]\nresponse_timeout = \"7s\"\n{BEFORE}"));
    assert_eq!(rig.reload().await.0, 200);
}

#[tokio::test]
async fn reload_and_config_are_authorised_as_purge() {
    let rig = rig(None).await;
    let (admin, user) = (mint("a1", "admin"), mint("u1", "user"));
    for (method, path) in [(reqwest::Method::POST, "/reload"), (reqwest::Method::GET, "/config")] {
        let (status, answer) = rig.admin(method.clone(), path, None).await;
        assert_eq!(status, 401, "{path}: {answer}");
        assert_eq!(rig.admin(method.clone(), path, Some("not-the-token")).await.0, 401);
        assert_eq!(rig.admin(method.clone(), path, Some(&user)).await.0, 403, "{path}");
        assert_eq!(rig.admin(method.clone(), path, Some(&admin)).await.0, 200, "{path}");
        assert_eq!(
            rig.admin(method.clone(), path, Some(ADMIN_TOKEN)).await.0,
            200,
            "{path}"
        );
        let twice = reqwest::Client::new()
            .request(method, rig.proxy.admin_url(path))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(twice.status(), 400, "{path}");
    }
}

#[tokio::test]
async fn config_shows_the_rules_in_use_without_secrets() {
    let rig = rig(None).await;
    let (status, reloaded) = rig.reload().await;
    assert_eq!(status, 200);
    let (status, config) = rig.admin(reqwest::Method::GET, "/config", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(config["version"], reloaded["version"]);
    assert_eq!(config["cache_namespace"], rig.upstream.addr.to_string());
    assert_eq!(config["routes"][0]["name"], "reports");
    assert_eq!(config["routes"][0]["cache"]["ttl_secs"], 3600.0);
    let text = config.to_string();
    assert!(!text.contains(ADMIN_TOKEN), "{text}");
    assert!(!text.contains(e2e::origin::TEST_JWT_SECRET), "{text}");
}

#[tokio::test]
async fn a_request_in_flight_finishes_under_the_rules_it_started_with() {
    let (open, gate) = tokio::sync::watch::channel(false);
    let upstream = ScriptedUpstream::start(move |_| {
        let mut gate = gate.clone();
        async move {
            let _ = gate.wait_for(|open| *open).await;
            json_reply(200, r#"{"version": 0}"#, &[])
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = proxy_config_file(dir.path(), BEFORE, upstream.addr, None, Some(ADMIN_TOKEN));
    let proxy = spawn_reloadable_proxy(file).await;
    let api = ApiClient::new(proxy.base_url());

    // A public read, waiting at the upstream.
    let in_flight = tokio::spawn({
        let api = api.clone();
        async move { api.get("/things/1", None).await }
    });
    e2e::wait::eventually("the read reached the upstream", || {
        std::future::ready(upstream.hits() == 1)
    })
    .await;

    // Now the route is for admins only, each with entries of their own.
    write(
        dir.path(),
        &BEFORE.replace(
            "path = \"/things/*\"\nmethods = [\"GET\"]\naccess = \"public\"",
            "path = \"/things/*\"\nmethods = [\"GET\"]\nroles = [\"admin\"]",
        ),
    );
    let reloaded = reqwest::Client::new()
        .post(proxy.admin_url("/reload"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(reloaded.status(), 200);
    assert_eq!(api.get("/things/2", None).await.status, 401, "new requests: new rules");

    // The read in flight is answered under the rules it started with...
    open.send_replace(true);
    let first = in_flight.await.unwrap();
    assert_eq!(first.status, 200);
    assert_eq!(first.body["version"], 0);
    // ...and what it stored, a shared entry, is never served as an admin's
    // own (the route's scope changed, so its entries are filed anew).
    let admin = api.get("/things/1", Some(&mint("a1", "admin"))).await;
    assert_eq!(admin.status, 200);
    assert_eq!(admin.header("x-cache"), Some("MISS"));
}
