//! Path tricks and query normalisation, sent byte for byte.

use std::collections::BTreeMap;

use e2e::{json_reply, proxy_config, raw_http, spawn_proxy, ScriptedUpstream, Stack};
use serde_json::json;

fn get(path: &str, token: Option<&str>) -> String {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nHost: proxy\r\n{auth}Connection: close\r\n\r\n")
}

#[tokio::test]
async fn path_tricks_never_reach_admin_without_the_role_and_never_5xx() {
    let s = Stack::start().await;
    let (_, user) = s.api.register_and_login("mallory").await;
    let admin = s.admin_token().await;
    let tricks = [
        "/admin/",
        "//admin",
        "/./admin",
        "/users/../admin",
        "/%61dmin",
        "/admin;x",
        "/admin%2f",
        "/admin%2F..",
        "/ADMIN",
        "/admin%00",
        "/admin\\",
        "/%2e%2e/admin",
        "/users/%2e%2e/admin",
        "/admin/.",
        "/admin?x=1",
        "/admin#x",
    ];
    for trick in tricks {
        for token in [None, Some(user.as_str())] {
            let resp = raw_http(s.proxy.addr, &get(trick, token)).await;
            assert!(
                matches!(resp.status, 400 | 401 | 403 | 404),
                "{trick} with {} gave {}: {}",
                if token.is_some() { "a user token" } else { "no token" },
                resp.status,
                resp.body
            );
            assert!(!resp.body.contains("welcome, admin"), "{trick} reached the admin route");
        }
    }
    // The equivalent spellings do reach it with the admin role.
    for spelling in ["//admin", "/./admin", "/users/../admin", "/%61dmin", "/%2e%2e/admin"] {
        let resp = raw_http(s.proxy.addr, &get(spelling, Some(&admin))).await;
        assert_eq!(resp.status, 200, "{spelling}: {}", resp.body);
    }
    // Specific answers, so each refusal is for the right reason.
    assert_eq!(raw_http(s.proxy.addr, &get("/admin;x", Some(&user))).await.status, 400);
    assert_eq!(raw_http(s.proxy.addr, &get("/admin%2f", Some(&user))).await.status, 400);
    assert_eq!(raw_http(s.proxy.addr, &get("/ADMIN", Some(&user))).await.status, 404);
    assert_eq!(
        raw_http(s.proxy.addr, &get("/users/../admin", Some(&user)))
            .await
            .status,
        403
    );
    assert_eq!(raw_http(s.proxy.addr, &get("/a%zz", None)).await.status, 400);
}

const CONFIG: &str = r#"
[[routes]]
name = "search"
path = "/search"
methods = ["GET"]
access = "public"
cache = {}
"#;

#[tokio::test]
async fn query_order_is_normalised_for_keys_and_forwarding() {
    let upstream = ScriptedUpstream::start(|req| async move {
        json_reply(200, &json!({"forwarded": req.uri().to_string()}).to_string(), &[])
    })
    .await;
    let proxy = spawn_proxy(proxy_config(CONFIG, upstream.addr, None, None)).await;
    let fetch = |q: &'static str| {
        let addr = proxy.addr;
        async move {
            let resp = raw_http(addr, &get(&format!("/search?{q}"), None)).await;
            let body: BTreeMap<String, String> = serde_json::from_str(&resp.body).unwrap();
            (resp.header("x-cache").unwrap().to_owned(), body["forwarded"].clone())
        }
    };
    assert_eq!(fetch("b=2&a=1").await, ("MISS".into(), "/search?a=1&b=2".into()));
    assert_eq!(fetch("a=1&b=2").await.0, "HIT", "same parameters, other order");
    assert_eq!(
        fetch("a=%31&b=2").await.0,
        "HIT",
        "an escaped unreserved character (%31 is 1) is the same query"
    );
    assert_eq!(
        fetch("a=%2F&b=2").await.0,
        "MISS",
        "an escaped reserved character is not"
    );
    assert_eq!(fetch("a=1&b=3").await.0, "MISS", "different value");
    // Repeated names keep their relative order: these are different queries.
    assert_eq!(
        fetch("x=2&a=1&x=1").await,
        ("MISS".into(), "/search?a=1&x=2&x=1".into())
    );
    assert_eq!(
        fetch("x=1&a=1&x=2").await,
        ("MISS".into(), "/search?a=1&x=1&x=2".into())
    );
    assert_eq!(fetch("a=1&x=2&x=1").await.0, "HIT");
    assert_eq!(upstream.hits(), 5);
}
