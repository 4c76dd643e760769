//! Token revocation (issue 15): through the origin's own headers (logout,
//! deletion, demotion) and the admin listener's `POST /revoke`, holding on
//! the very next request through any instance, cache hits included.

use e2e::proxy::SHIPPED_CONFIG;
use e2e::token::{claims, mint, now, sign};
use e2e::wait::eventually;
use e2e::{json_reply, proxy_config, spawn_proxy, ApiClient, ProxyHandle, RedisServer, ScriptedUpstream, Stack};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// The stack (instance A, the shipped config on Redis) and a second
/// instance B on the same Redis and origin.
async fn two_instances() -> (Stack, ProxyHandle, ApiClient) {
    let stack = Stack::start().await;
    let config = proxy_config(SHIPPED_CONFIG, stack.origin.addr, Some(stack.redis_url.clone()), None);
    let b = spawn_proxy(config).await;
    let api_b = ApiClient::new(b.base_url());
    (stack, b, api_b)
}

#[tokio::test]
async fn logout_through_one_instance_revokes_the_token_through_another_at_once() {
    let (stack, b, api_b) = two_instances().await;
    let (_, token) = stack.api.register_and_login("lou").await;
    let (_, other) = stack.api.register_and_login("max").await;
    assert_eq!(api_b.get("/users", Some(&token)).await.status, StatusCode::OK);
    let hit = api_b.get("/users", Some(&token)).await;
    assert_eq!(hit.header("x-cache"), Some("HIT"), "the list is cached and shared");

    let out = stack.api.send(Method::POST, "/logout", Some(&token), None).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert_eq!(
        out.header("revoke-jti"),
        None,
        "the revocation header is the proxy's, not the client's"
    );

    // The very next request, through the other instance, to a cached entry.
    let refused = api_b.get("/users", Some(&token)).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{:?}", refused.body);
    assert_eq!(refused.error(), "token revoked");
    assert_eq!(api_b.get("/me", Some(&token)).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        stack.api.get("/users", Some(&token)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert!(b.metric(r#"proxy_revoked_total{rule="users-list"}"#).await >= 1);

    let others = api_b.get("/users", Some(&other)).await;
    assert_eq!(others.status, StatusCode::OK, "another user's token is untouched");
    assert_eq!(others.header("x-cache"), Some("HIT"));
    // Logging in again gives a token of its own, which works.
    let again = stack.api.token("lou@example.com", "lou-password").await;
    assert_eq!(api_b.get("/users", Some(&again)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_deleted_users_still_valid_token_is_refused_everywhere() {
    let (stack, _b, api_b) = two_instances().await;
    let admin = stack.admin_token().await;
    let (id, token) = stack.api.register_and_login("nia").await;
    for api in [&stack.api, &api_b] {
        assert_eq!(api.get("/users", Some(&token)).await.status, StatusCode::OK);
    }
    let deleted = stack
        .api
        .send(Method::DELETE, &format!("/users/{id}"), Some(&admin), None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(deleted.header("revoke-subject"), None);
    for api in [&stack.api, &api_b] {
        for path in ["/users", "/me", "/users/000000000000000000000000"] {
            let refused = api.get(path, Some(&token)).await;
            assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{path}: {:?}", refused.body);
        }
    }
    assert_eq!(api_b.get("/users", Some(&admin)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_demotion_ends_the_old_tokens_admin_access() {
    let (stack, _b, api_b) = two_instances().await;
    let admin = stack.admin_token().await;
    let (id, _) = stack.api.register_and_login("ora").await;
    let promoted = stack
        .api
        .send(
            Method::PUT,
            &format!("/users/{id}"),
            Some(&admin),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(promoted.status, StatusCode::OK);
    // At once: the origin dates a token after its user's last revocation,
    // even within the same second.
    let admin_token = stack.api.token("ora@example.com", "ora-password").await;
    assert_eq!(api_b.get("/admin", Some(&admin_token)).await.status, StatusCode::OK);

    let demoted = stack
        .api
        .send(
            Method::PUT,
            &format!("/users/{id}"),
            Some(&admin),
            Some(json!({"role": "user"})),
        )
        .await;
    assert_eq!(demoted.status, StatusCode::OK);
    for api in [&stack.api, &api_b] {
        let refused = api.get("/admin", Some(&admin_token)).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{:?}", refused.body);
    }
    // Renaming oneself revokes nothing.
    let token = stack.api.token("ora@example.com", "ora-password").await;
    let renamed = stack
        .api
        .send(
            Method::PUT,
            &format!("/users/{id}"),
            Some(&token),
            Some(json!({"username": "ora2"})),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK);
    assert_eq!(api_b.get("/me", Some(&token)).await.status, StatusCode::OK);
}

/// The status of `GET /users` through `proxy` with `token`.
async fn users_status(proxy: &ProxyHandle, token: &str) -> StatusCode {
    ApiClient::new(proxy.base_url()).get("/users", Some(token)).await.status
}

/// `POST /revoke` on `proxy`'s admin listener.
async fn revoke(proxy: &ProxyHandle, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(proxy.admin_url("/revoke")).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn post_revoke_is_authorised_as_purge_and_holds_across_instances() {
    let redis = RedisServer::start();
    let upstream = ScriptedUpstream::start(|_| async { json_reply(200, "{}", &[]) }).await;
    let config = || proxy_config(SHIPPED_CONFIG, upstream.addr, Some(redis.url()), None);
    let (a, b) = (spawn_proxy(config()).await, spawn_proxy(config()).await);
    let mut victim = claims("victim", "user", 600);
    victim["jti"] = json!("token-1");
    let victim = sign(&victim, e2e::origin::TEST_JWT_SECRET.as_bytes());
    assert_eq!(users_status(&b, &victim).await, StatusCode::OK);

    let by_jti = json!({"jti": "token-1", "exp": now() + 600});
    let user = mint("someone", "user");
    for (token, status) in [(None, 401), (Some("not-a-jwt"), 401), (Some(user.as_str()), 403)] {
        let (got, answer) = revoke(&a, token, by_jti.clone()).await;
        assert_eq!(got, status, "{token:?}: {answer}");
    }
    assert_eq!(
        users_status(&b, &victim).await,
        StatusCode::OK,
        "a refused revocation revoked nothing"
    );

    let root = mint("root", "admin");
    for bad in [json!({"jti": "token-1"}), json!({"subject": ""}), json!({"nothing": 1})] {
        assert_eq!(revoke(&a, Some(&root), bad.clone()).await.0, 400, "{bad}");
    }
    let (status, answer) = revoke(&a, Some(&root), by_jti).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["revoked"]["jti"], "token-1");
    assert_eq!(users_status(&b, &victim).await, StatusCode::UNAUTHORIZED);

    // A subject's tokens issued until now (the default `before`).
    let other = mint("other", "user");
    assert_eq!(users_status(&b, &other).await, StatusCode::OK);
    assert_eq!(revoke(&a, Some(&root), json!({"subject": "other"})).await.0, 200);
    assert_eq!(users_status(&b, &other).await, StatusCode::UNAUTHORIZED);
    // ... but not those issued after `before`.
    let (status, _) = revoke(&a, Some(&root), json!({"subject": "later", "before": now() - 60})).await;
    assert_eq!(status, 200);
    assert_eq!(users_status(&b, &mint("later", "user")).await, StatusCode::OK);
}

#[tokio::test]
async fn revocations_hold_in_the_memory_store_too() {
    let upstream = ScriptedUpstream::start(|_| async { json_reply(200, "{}", &[]) }).await;
    let proxy = spawn_proxy(proxy_config(SHIPPED_CONFIG, upstream.addr, None, None)).await;
    let token = mint("mem", "user");
    let api = ApiClient::new(proxy.base_url());
    assert_eq!(api.get("/users", Some(&token)).await.status, StatusCode::OK);
    assert_eq!(api.get("/users", Some(&token)).await.header("x-cache"), Some("HIT"));
    let (status, _) = revoke(&proxy, Some(&mint("root", "admin")), json!({"subject": "mem"})).await;
    assert_eq!(status, 200);
    assert_eq!(users_status(&proxy, &token).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn with_when_unavailable_closed_redis_down_refuses_tokens_but_not_public_routes() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    redis.stop();
    let upstream = ScriptedUpstream::start(|_| async { json_reply(200, "{}", &[]) }).await;
    let config = SHIPPED_CONFIG.replace(r#"when_unavailable = "open""#, r#"when_unavailable = "closed""#);
    let proxy = spawn_proxy(proxy_config(&config, upstream.addr, Some(url), None)).await;
    let client = reqwest::Client::new();
    let refused = client
        .get(format!("{}/users", proxy.base_url()))
        .bearer_auth(mint("x", "user"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "1");
    let public = client
        .get(format!("{}/healthz", proxy.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), StatusCode::OK);
    assert!(
        proxy
            .metric(r#"proxy_guard_fallback_total{check="revocation",outcome="closed"}"#)
            .await
            >= 1
    );
}

#[tokio::test]
async fn a_revocation_made_while_redis_is_down_holds_here_and_reaches_the_others_when_it_returns() {
    let mut redis = RedisServer::start();
    let upstream = ScriptedUpstream::start(|request| async move {
        match request.method().as_str() {
            "PUT" => json_reply(200, "{}", &[("revoke-subject", "victim")]),
            _ => json_reply(200, "{}", &[]),
        }
    })
    .await;
    let config = || proxy_config(SHIPPED_CONFIG, upstream.addr, Some(redis.url()), None);
    let (a, b) = (spawn_proxy(config()).await, spawn_proxy(config()).await);
    let token = mint("victim", "user");
    assert_eq!(users_status(&b, &token).await, StatusCode::OK);

    redis.stop();
    let admin = mint("root", "admin");
    let written = reqwest::Client::new()
        .put(format!("{}/users/victim", a.base_url()))
        .bearer_auth(&admin)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(written.status(), StatusCode::OK);
    // Redis is down and revocation fails open by default, but the instance
    // that was told keeps the revocation itself.
    assert_eq!(users_status(&a, &token).await, StatusCode::UNAUTHORIZED);

    redis.restart();
    eventually("the kept revocation reaches the other instance", || async {
        users_status(&b, &token).await == StatusCode::UNAUTHORIZED
    })
    .await;
}
