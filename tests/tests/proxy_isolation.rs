//! Isolation: entries never cross the scope they were stored under,
//! uncacheable responses are never served from a shared entry, and
//! client-supplied headers shape neither routing, authorisation, keys nor
//! what is stored.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use e2e::token::mint as token;
use e2e::{json_reply, proxy_config, spawn_proxy, ProxyHandle, ScriptedUpstream};
use reqwest::StatusCode;
use serde_json::{json, Value};

const CONFIG: &str = r#"
[cache]
forward_headers = ["accept"]

[jwt]
issuer = "origin"
audience = "api"

[[routes]]
name = "profile"
path = "/profile"
methods = ["GET"]
cache = { scope = "user" }

[[routes]]
name = "team"
path = "/team"
methods = ["GET"]
access = "roles"
roles = ["user", "admin"]
cache = { scope = "role" }

[[routes]]
name = "shared"
path = "/shared/*"
methods = ["GET"]
cache = { scope = "shared" }

[[routes]]
name = "mine"
path = "/mine/*"
methods = ["GET"]
cache = { scope = "user" }

[[routes]]
name = "admin"
path = "/admin"
methods = ["GET"]
access = "roles"
roles = ["admin"]
"#;

/// An upstream that echoes the request headers it received and a request
/// counter, and adds response headers chosen by path.
async fn echo_upstream() -> ScriptedUpstream {
    let counter = Arc::new(AtomicUsize::new(0));
    ScriptedUpstream::start(move |req| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let headers: BTreeMap<String, String> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("?").to_owned()))
                .collect();
            let body = json!({"path": req.uri().to_string(), "n": n, "headers": headers}).to_string();
            let extra: &[(&str, &str)] = match req.uri().path() {
                "/shared/cookie" => &[("set-cookie", "session=abc")],
                "/shared/no-store" => &[("cache-control", "no-store")],
                "/shared/private" | "/mine/private" => &[("cache-control", "private")],
                _ => &[],
            };
            json_reply(200, &body, extra)
        }
    })
    .await
}

struct Setup {
    upstream: ScriptedUpstream,
    proxy: ProxyHandle,
    client: reqwest::Client,
}

impl Setup {
    async fn start() -> Setup {
        let upstream = echo_upstream().await;
        let proxy = spawn_proxy(proxy_config(CONFIG, upstream.addr, None, None)).await;
        Setup {
            upstream,
            proxy,
            client: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str, token: &str, extra: &[(&str, &str)]) -> (StatusCode, String, Value) {
        let mut request = self
            .client
            .get(format!("{}{}", self.proxy.base_url(), path))
            .bearer_auth(token);
        for (k, v) in extra {
            request = request.header(*k, *v);
        }
        let resp = request.send().await.unwrap();
        let status = resp.status();
        let x_cache = resp
            .headers()
            .get("x-cache")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, x_cache, resp.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn user_scoped_entries_are_never_served_to_another_subject() {
    let s = Setup::start().await;
    let (alice, bob) = (token("alice", "user"), token("bob", "user"));
    let (_, first, body) = s.get("/profile", &alice, &[]).await;
    assert_eq!(
        (first.as_str(), body["headers"]["x-auth-subject"].as_str()),
        ("MISS", Some("alice"))
    );
    assert_eq!(s.get("/profile", &alice, &[]).await.1, "HIT");

    let (_, bobs, body) = s.get("/profile", &bob, &[]).await;
    assert_eq!(bobs, "MISS");
    assert_eq!(body["headers"]["x-auth-subject"], "bob");
    let (_, again, body) = s.get("/profile", &bob, &[]).await;
    assert_eq!(
        (again.as_str(), body["headers"]["x-auth-subject"].as_str()),
        ("HIT", Some("bob"))
    );
    let (_, _, body) = s.get("/profile", &alice, &[]).await;
    assert_eq!(body["headers"]["x-auth-subject"], "alice");
    assert_eq!(s.upstream.hits(), 2);
}

#[tokio::test]
async fn role_scoped_entries_are_shared_within_a_role_and_never_across() {
    let s = Setup::start().await;
    let (_, first, body) = s.get("/team", &token("u1", "user"), &[]).await;
    assert_eq!(
        (first.as_str(), body["headers"]["x-auth-role"].as_str()),
        ("MISS", Some("user"))
    );
    let (_, same_role, _) = s.get("/team", &token("u2", "user"), &[]).await;
    assert_eq!(same_role, "HIT");
    let (_, admin, body) = s.get("/team", &token("root", "admin"), &[]).await;
    assert_eq!(
        (admin.as_str(), body["headers"]["x-auth-role"].as_str()),
        ("MISS", Some("admin"))
    );
    assert_eq!(
        s.get("/team", &token("u3", "user"), &[]).await.2["headers"]["x-auth-role"],
        "user"
    );
}

#[tokio::test]
async fn uncacheable_responses_are_never_served_from_a_shared_entry() {
    let s = Setup::start().await;
    for path in ["/shared/cookie", "/shared/no-store", "/shared/private"] {
        let (_, first, one) = s.get(path, &token("a", "user"), &[]).await;
        let (_, second, two) = s.get(path, &token("b", "user"), &[]).await;
        assert_eq!((first.as_str(), second.as_str()), ("MISS", "MISS"), "{path}");
        assert_ne!(one["n"], two["n"], "{path}: each answer came from the upstream");
    }
    // `private` is fine per user.
    let alice = token("alice", "user");
    s.get("/mine/private", &alice, &[]).await;
    assert_eq!(s.get("/mine/private", &alice, &[]).await.1, "HIT");
    assert_eq!(s.get("/mine/private", &token("bob", "user"), &[]).await.1, "MISS");
}

#[tokio::test]
async fn client_supplied_headers_shape_nothing() {
    let s = Setup::start().await;
    let alice = token("alice", "user");
    let spoofed = [
        ("x-cache", "HIT"),
        ("x-auth-subject", "admin"),
        ("x-auth-role", "admin"),
        ("x-forwarded-for", "10.9.8.7"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-proto", "https"),
        ("forwarded", "for=10.9.8.7;host=evil.example"),
        ("x-original-url", "/admin"),
        ("x-http-method-override", "DELETE"),
        ("x-custom", "poison"),
        ("accept-language", "xx"),
    ];
    let (status, first, body) = s.get("/shared/page", &alice, &spoofed).await;
    assert_eq!(
        (status, first.as_str()),
        (StatusCode::OK, "MISS"),
        "spoofed X-Cache does not fake a hit"
    );
    let seen = &body["headers"];
    assert_eq!(seen["x-auth-subject"], "alice");
    assert_eq!(seen["x-auth-role"], "user");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    for absent in [
        "x-forwarded-host",
        "forwarded",
        "x-original-url",
        "x-http-method-override",
        "x-custom",
        "accept-language",
        "x-cache",
    ] {
        assert!(
            seen.get(absent).is_none(),
            "{absent} reached the upstream of a cacheable route"
        );
    }
    // Same key without the spoofed headers: they were not part of it, and
    // what was stored is the clean answer.
    let (_, second, stored) = s.get("/shared/page", &token("bob", "user"), &[]).await;
    assert_eq!(second, "HIT");
    assert_eq!(stored, body);

    // Identity headers never grant a role, and path-override headers never route.
    let (status, _, _) = s.get("/admin", &alice, &spoofed).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(s.upstream.hits(), 1);
}
