//! `POST /purge` on the admin listener: by tag, path, prefix and all, hard
//! or soft, and only for the admin.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use e2e::shared_redis::Deployment;
use e2e::token::mint;
use e2e::wait::eventually;
use e2e::{
    json_reply, on_every_redis, proxy_config, spawn_proxy, ApiClient, ProxyHandle, RedisServer, ScriptedUpstream, Stack,
};
use proxy::config::Secret;
use serde_json::{json, Value};

const ADMIN_TOKEN: &str = "purge-test-admin-token-0123456789";

const CONFIG: &str = r#"
[[routes]]
name = "a"
path = "/a"
methods = ["GET"]
access = "public"
cache = { tags = ["a"], stale_while_revalidate = "1h" }

[[routes]]
name = "a-item"
path = "/a/{id}"
methods = ["GET"]
access = "public"
cache = { tags = ["a"], stale_while_revalidate = "1h" }

[[routes]]
name = "a-item-x"
path = "/a/{id}/x"
methods = ["GET"]
access = "public"
cache = { tags = ["a"], stale_while_revalidate = "1h" }

[[routes]]
name = "ab"
path = "/ab"
methods = ["GET"]
access = "public"
cache = { tags = ["ab"], stale_while_revalidate = "1h" }

[[routes]]
name = "b-item"
path = "/b/{id}"
methods = ["GET"]
access = "public"
cache = { tags = ["b"], stale_while_revalidate = "1h" }

[[routes]]
name = "private"
path = "/private"
methods = ["GET"]
access = "authenticated"
"#;

const PATHS: [&str; 5] = ["/a", "/a/1?q=1", "/a/1/x", "/ab", "/b/1"];

/// The proxy in front of an upstream answering `{"version": v}`.
struct Rig {
    proxy: ProxyHandle,
    api: ApiClient,
    version: Arc<AtomicU64>,
    _upstream: ScriptedUpstream,
}

async fn rig(redis_url: Option<String>) -> Rig {
    let version = Arc::new(AtomicU64::new(0));
    let current = version.clone();
    let upstream = ScriptedUpstream::start(move |_| {
        let body = json!({ "version": current.load(Ordering::SeqCst) }).to_string();
        async move { json_reply(200, &body, &[]) }
    })
    .await;
    let mut config = proxy_config(CONFIG, upstream.addr, redis_url, None);
    config.runtime.admin_token = Some(Secret(ADMIN_TOKEN.into()));
    let proxy = spawn_proxy(config).await;
    let api = ApiClient::new(proxy.base_url());
    Rig {
        proxy,
        api,
        version,
        _upstream: upstream,
    }
}

impl Rig {
    /// X-Cache and version of each of [`PATHS`].
    async fn states(&self) -> Vec<(String, u64)> {
        let mut states = Vec::new();
        for path in PATHS {
            let r = self.api.get(path, None).await;
            assert_eq!(r.status, 200);
            states.push((
                r.header("x-cache").unwrap().to_owned(),
                r.body["version"].as_u64().unwrap(),
            ));
        }
        states
    }

    /// Fills every path, waits until each is a hit (a miss's store into
    /// Redis completes after its answer), then moves the upstream on.
    async fn filled(self) -> Rig {
        eventually("every path is a hit", || async {
            self.states().await.iter().all(|(x, v)| x == "HIT" && *v == 0)
        })
        .await;
        self.version.store(1, Ordering::SeqCst);
        self
    }

    async fn purge(&self, token: Option<&str>, request: Value) -> (u16, Value) {
        let mut post = reqwest::Client::new()
            .post(self.proxy.admin_url("/purge"))
            .json(&request);
        if let Some(token) = token {
            post = post.bearer_auth(token);
        }
        let response = post.send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }
}

/// Which of [`PATHS`] a purge emptied: those read again as MISS with the
/// upstream's new version; the rest must still be hits on the old one.
fn emptied(states: &[(String, u64)]) -> Vec<&'static str> {
    PATHS
        .iter()
        .zip(states)
        .filter_map(|(path, (x_cache, version))| match (x_cache.as_str(), version) {
            ("MISS", 1) => Some(*path),
            ("HIT", 0) => None,
            other => panic!("{path}: {other:?}"),
        })
        .collect()
}

/// Each purge on a fresh proxy (its own upstream, so its own namespace) on
/// `redis` (`None`: the memory store).
async fn each_purge_empties_exactly_what_it_names(redis: Option<Deployment>) {
    let cases = [
        (
            json!({"paths": ["/a/1"]}),
            vec!["/a/1?q=1"],
            json!({"tags": 0, "paths": 1, "prefixes": 0}),
        ),
        (
            json!({"prefixes": ["/a/"]}),
            vec!["/a", "/a/1?q=1", "/a/1/x"],
            json!({"tags": 0, "paths": 0, "prefixes": 3}),
        ),
        (
            json!({"tags": ["b"]}),
            vec!["/b/1"],
            json!({"tags": 1, "paths": 0, "prefixes": 0}),
        ),
        (
            json!({"all": true}),
            PATHS.to_vec(),
            json!({"tags": 0, "paths": 0, "prefixes": 5}),
        ),
    ];
    for (request, expected, counts) in cases {
        let rig = rig(redis.map(Deployment::url)).await.filled().await;
        let (status, answer) = rig.purge(Some(ADMIN_TOKEN), request.clone()).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["purged"], counts, "{request}");
        assert_eq!(emptied(&rig.states().await), expected, "{request}");
    }
}

// Purge by path, prefix, tag and all on one node, a Sentinel group and a
// cluster (where each bucket has its own index sets).
on_every_redis!(purges_by_path_prefix_tag_and_all_empty_exactly_what_they_name_in_redis);

async fn purges_by_path_prefix_tag_and_all_empty_exactly_what_they_name_in_redis(redis: Deployment) {
    each_purge_empties_exactly_what_it_names(Some(redis)).await;
}

#[tokio::test]
async fn purges_by_path_prefix_tag_and_all_empty_exactly_what_they_name_in_memory() {
    each_purge_empties_exactly_what_it_names(None).await;
}

#[tokio::test]
async fn a_soft_purge_serves_stale_then_refreshes() {
    let redis = RedisServer::start();
    let rig = rig(Some(redis.url())).await.filled().await;
    let (status, answer) = rig
        .purge(Some(ADMIN_TOKEN), json!({"prefixes": ["/a"], "soft": true}))
        .await;
    assert_eq!((status, &answer["purged"]["prefixes"]), (200, &json!(3)), "{answer}");
    let after = rig.states().await;
    assert_eq!(
        after[0],
        ("STALE".to_owned(), 0),
        "marked stale, served while refreshed"
    );
    assert_eq!(after[3], ("HIT".to_owned(), 0), "/ab is not under /a");
    eventually("/a is refreshed in the background", || async {
        let r = rig.api.get("/a", None).await;
        let refreshed = r.header("x-cache") == Some("HIT");
        if refreshed {
            assert_eq!(r.body["version"], 1, "refreshed with the new version");
        }
        refreshed
    })
    .await;
}

#[tokio::test]
async fn only_the_admin_token_or_an_admin_jwt_may_purge() {
    let redis = RedisServer::start();
    let rig = rig(Some(redis.url())).await.filled().await;
    let everything = json!({"all": true});
    let user = mint("someone", "user");
    for (token, status) in [
        (None, 401),
        (Some("purge-test-admin-token-0123456780"), 401),
        (Some("not-a-jwt"), 401),
        (Some(user.as_str()), 403),
    ] {
        let (got, answer) = rig.purge(token, everything.clone()).await;
        assert_eq!(got, status, "{token:?}: {answer}");
        assert!(answer["error"].is_string());
    }
    assert!(
        emptied(&rig.states().await).is_empty(),
        "a refused purge purged something"
    );
    let (status, _) = rig.purge(Some(&mint("root", "admin")), json!({"paths": ["/ab"]})).await;
    assert_eq!(status, 200);
    assert_eq!(emptied(&rig.states().await), ["/ab"]);
}

#[tokio::test]
async fn a_malformed_purge_is_400_and_purges_nothing() {
    let redis = RedisServer::start();
    let rig = rig(Some(redis.url())).await.filled().await;
    for request in [
        json!({}),
        json!({"urls": ["/a"]}),
        json!({"paths": ["a"]}),
        json!({"tags": [""]}),
    ] {
        let (status, answer) = rig.purge(Some(ADMIN_TOKEN), request.clone()).await;
        assert_eq!(status, 400, "{request}: {answer}");
    }
    assert!(emptied(&rig.states().await).is_empty());
}

#[tokio::test]
async fn the_origins_admin_purges_one_user_through_the_real_stack() {
    let s = Stack::start().await;
    let admin = s.admin_token().await;
    let (id, token) = s.api.register_and_login("purged").await;
    let item = format!("/users/{id}");
    for path in ["/users", item.as_str(), "/users", item.as_str()] {
        s.api.get(path, Some(&token)).await;
    }
    let response = reqwest::Client::new()
        .post(s.proxy.admin_url("/purge"))
        .bearer_auth(&admin)
        .json(&json!({"paths": [item]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["purged"]["paths"], 1);
    assert_eq!(s.api.get(&item, Some(&token)).await.header("x-cache"), Some("MISS"));
    assert_eq!(s.api.get("/users", Some(&token)).await.header("x-cache"), Some("HIT"));
}
