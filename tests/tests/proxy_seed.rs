//! The seed system's behaviour, through the proxy, with real Redis, real
//! FerretDB and the real origin: caching of the user list, invalidation on
//! writes, TTL expiry, and the admin route.

use std::time::{Duration, Instant};

use e2e::Stack;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn users_list_is_a_miss_then_a_hit_with_an_equal_body() {
    let s = Stack::start().await;
    let (_, token) = s.api.register_and_login("ann").await;
    let first = s.api.get("/users", Some(&token)).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.header("x-cache"), Some("MISS"));
    assert_eq!(first.header("cache-status"), Some("proxy; fwd=miss; stored"));
    assert!(first.header("age").is_none());

    let second = s.api.get("/users", Some(&token)).await;
    assert_eq!(second.header("x-cache"), Some("HIT"));
    assert!(second
        .header("cache-status")
        .is_some_and(|v| v.starts_with("proxy; hit; ttl=")));
    assert!(second.header("age").is_some());
    assert_eq!(first.body, second.body);
    // Shared scope: another user gets the same entry.
    let (_, other) = s.api.register_and_login("bob").await;
    let _ = s.api.get("/users", Some(&other)).await; // register invalidated; refill
    assert_eq!(s.api.get("/users", Some(&token)).await.header("x-cache"), Some("HIT"));
}

#[tokio::test]
async fn a_registration_invalidates_the_list() {
    let s = Stack::start().await;
    let (_, token) = s.api.register_and_login("carl").await;
    s.api.get("/users", Some(&token)).await;
    assert_eq!(s.api.get("/users", Some(&token)).await.header("x-cache"), Some("HIT"));

    assert_eq!(
        s.api.register("dina", "dina@example.com", "dina-password").await.status,
        StatusCode::CREATED
    );
    let after = s.api.get("/users", Some(&token)).await;
    assert_eq!(after.header("x-cache"), Some("MISS"));
    let names: Vec<&str> = after.body["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"dina"), "{names:?}");
}

#[tokio::test]
async fn a_failed_registration_does_not_invalidate() {
    let s = Stack::start().await;
    let (_, token) = s.api.register_and_login("erik").await;
    s.api.get("/users", Some(&token)).await;
    let duplicate = s.api.register("erik", "erik@example.com", "erik-password").await;
    assert_eq!(duplicate.status, StatusCode::CONFLICT);
    assert_eq!(
        s.api.get("/users", Some(&token)).await.header("x-cache"),
        Some("HIT"),
        "a 4xx write changed nothing"
    );
}

#[tokio::test]
async fn put_invalidates_the_item_the_list_and_me() {
    let s = Stack::start().await;
    let (id, token) = s.api.register_and_login("fay").await;
    let item = format!("/users/{id}");
    for path in ["/users", item.as_str(), "/me"] {
        assert_eq!(
            s.api.get(path, Some(&token)).await.header("x-cache"),
            Some("MISS"),
            "{path}"
        );
        assert_eq!(
            s.api.get(path, Some(&token)).await.header("x-cache"),
            Some("HIT"),
            "{path}"
        );
    }
    let updated = s
        .api
        .send(Method::PUT, &item, Some(&token), Some(json!({"username": "faye"})))
        .await;
    assert_eq!(updated.status, StatusCode::OK);
    for path in ["/users", item.as_str(), "/me"] {
        let resp = s.api.get(path, Some(&token)).await;
        assert_eq!(resp.header("x-cache"), Some("MISS"), "{path} after PUT");
        assert!(
            resp.body.to_string().contains("faye"),
            "{path} shows the update: {}",
            resp.body
        );
    }
}

#[tokio::test]
async fn delete_invalidates_the_item_and_the_list() {
    let s = Stack::start().await;
    let (id, token) = s.api.register_and_login("gus").await;
    let admin = s.admin_token().await;
    let item = format!("/users/{id}");
    s.api.get("/users", Some(&admin)).await;
    s.api.get(&item, Some(&admin)).await;
    assert_eq!(s.api.get(&item, Some(&admin)).await.header("x-cache"), Some("HIT"));

    assert_eq!(
        s.api.send(Method::DELETE, &item, Some(&admin), None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(s.api.get(&item, Some(&admin)).await.status, StatusCode::NOT_FOUND);
    let list = s.api.get("/users", Some(&admin)).await;
    assert_eq!(list.header("x-cache"), Some("MISS"));
    assert!(!list.body.to_string().contains("gus"));
    assert_eq!(
        s.api.get("/me", Some(&token)).await.status,
        StatusCode::UNAUTHORIZED,
        "the origin refuses a deleted user"
    );
}

#[tokio::test]
async fn entries_expire_after_cache_ttl() {
    let s = Stack::start_with_ttl(Some(1)).await;
    let (_, token) = s.api.register_and_login("hal").await;
    assert_eq!(s.api.get("/users", Some(&token)).await.header("x-cache"), Some("MISS"));
    let stored = Instant::now();
    assert_eq!(s.api.get("/users", Some(&token)).await.header("x-cache"), Some("HIT"));
    // Expiry is the passing of time itself: poll until the entry is gone.
    let expired = loop {
        let resp = s.api.get("/users", Some(&token)).await;
        if resp.header("x-cache") == Some("MISS") {
            break stored.elapsed();
        }
        assert!(stored.elapsed() < Duration::from_secs(10), "entry never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        expired >= Duration::from_millis(900),
        "expired after {expired:?}, before its TTL"
    );
}

#[tokio::test]
async fn admin_is_403_for_a_user_and_200_for_the_admin() {
    let s = Stack::start().await;
    let (_, token) = s.api.register_and_login("ida").await;
    let denied = s.api.get("/admin", Some(&token)).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(denied.error(), "insufficient role");
    assert_eq!(denied.header("x-cache"), Some("BYPASS"));
    let allowed = s.api.get("/admin", Some(&s.admin_token().await)).await;
    assert_eq!(allowed.status, StatusCode::OK);
    assert_eq!(allowed.body["message"], "welcome, admin");
}

#[tokio::test]
async fn proxied_answers_match_the_origins() {
    let s = Stack::start().await;
    let (id, token) = s.api.register_and_login("joe").await;
    for path in ["/users", &format!("/users/{id}"), "/me", "/users?per_page=1&page=1"] {
        let via_proxy = s.api.get(path, Some(&token)).await;
        let direct = s.direct.get(path, Some(&token)).await;
        assert_eq!(via_proxy.status, direct.status, "{path}");
        assert_eq!(via_proxy.body, direct.body, "{path}");
    }
    for bad in ["/users?page=0", "/users/not-an-id", "/nope"] {
        assert_eq!(
            s.api.get(bad, Some(&token)).await.status,
            s.direct.get(bad, Some(&token)).await.status,
            "{bad}"
        );
    }
}

#[tokio::test]
async fn every_response_carries_cache_headers_and_head_is_served_from_get() {
    let s = Stack::start().await;
    let (_, token) = s.api.register_and_login("kai").await;
    let get = s.api.get("/users", Some(&token)).await;
    let head = reqwest::Client::new()
        .head(s.api.url("/users"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["x-cache"], "HIT");
    assert_eq!(
        head.headers()["content-length"]
            .to_str()
            .unwrap()
            .parse::<usize>()
            .unwrap(),
        get.body.to_string().len()
    );
    for (method, path) in [
        (Method::GET, "/nope"),
        (Method::POST, "/users"),
        (Method::GET, "/healthz"),
    ] {
        let resp = s.api.send(method.clone(), path, None, None).await;
        assert!(resp.header("x-cache").is_some(), "{method} {path}");
        assert!(resp.header("cache-status").is_some(), "{method} {path}");
    }
    assert_eq!(
        s.api.get("/nope", None).await.header("cache-status"),
        Some("proxy; fwd=uri-miss")
    );
    let wrong = s.api.send(Method::POST, "/users", None, None).await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.header("allow"), Some("GET, HEAD"));
}

#[tokio::test]
async fn http2_cleartext_clients_are_served_and_metrics_are_labelled_by_rule() {
    let s = Stack::start().await;
    let (id, token) = s.api.register_and_login("lea").await;
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    for expected in ["MISS", "HIT"] {
        let resp = h2
            .get(s.api.url(&format!("/users/{id}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.version(), reqwest::Version::HTTP_2);
        assert_eq!(resp.headers()["x-cache"], expected);
    }
    let metrics = reqwest::get(s.proxy.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"proxy_requests_total{rule="user",status="200"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"proxy_cache_total{rule="user",outcome="hit"} 1"#),
        "{metrics}"
    );
    assert!(!metrics.contains(&id), "raw paths never become labels");
    let ready = reqwest::get(s.proxy.admin_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(
        reqwest::get(s.proxy.admin_url("/healthz")).await.unwrap().status(),
        StatusCode::OK
    );
}
