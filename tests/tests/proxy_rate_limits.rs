//! Rate limits (issue 15): counted in Redis across instances, in the
//! round trip a cache hit already takes, by the client the trusted
//! proxies name, and per instance while Redis is away.

use std::time::Instant;

use e2e::token::mint;
use e2e::wait::eventually;
use e2e::{client_from, json_reply, proxy_config, spawn_proxy, ProxyHandle, RedisServer, ScriptedUpstream};
use reqwest::StatusCode;

/// An uncached authenticated route limited per subject (10/s, burst 5),
/// a cached one limited per subject, and public routes limited per IP.
const CONFIG: &str = r#"
[server]
trusted_proxies = ["127.0.0.2"]

[limits]
instances = 2

[[routes]]
name = "things"
path = "/things"
methods = ["GET"]
access = "authenticated"
limits = [{ key = "subject", rate = "10/s", burst = 5 }]

[[routes]]
name = "cached"
path = "/cached"
methods = ["GET"]
access = "authenticated"
cache = { scope = "shared", tags = ["cached"] }
limits = [{ key = "subject", rate = "1/h", burst = 3 }]

[[routes]]
name = "by-ip"
path = "/by-ip"
methods = ["GET"]
access = "public"
limits = [{ key = "ip", rate = "1/h", burst = 2 }]

[[routes]]
name = "keyed"
path = "/keyed"
methods = ["GET"]
access = "public"
limits = [{ key = "header:x-api-key", rate = "1/h", burst = 1 }, { key = "ip", rate = "1000/s" }]

[[routes]]
name = "items"
path = "/items"
methods = ["GET"]
access = "public"
cache = { tags = ["items"] }

[[routes]]
name = "items-write"
path = "/items"
methods = ["POST"]
access = "public"
invalidates = ["items"]
limits = [{ key = "ip", rate = "1/h", burst = 1 }]
"#;

async fn upstream() -> ScriptedUpstream {
    ScriptedUpstream::start(|_| async { json_reply(200, r#"{"ok":true}"#, &[]) }).await
}

async fn get(proxy: &ProxyHandle, path: &str, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{}{path}", proxy.base_url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_subject_limit_holds_across_two_instances_counted_at_the_upstream() {
    let redis = RedisServer::start();
    let upstream = upstream().await;
    let config = || proxy_config(CONFIG, upstream.addr, Some(redis.url()), None);
    let (a, b) = (spawn_proxy(config()).await, spawn_proxy(config()).await);
    let token = mint("alice", "user");

    let started = Instant::now();
    let mut statuses = Vec::new();
    for i in 0..60 {
        let proxy = if i % 2 == 0 { &a } else { &b };
        statuses.push(get(proxy, "/things", &token).await.status());
    }
    let elapsed = started.elapsed().as_secs_f64();

    assert!(statuses
        .iter()
        .all(|s| *s == StatusCode::OK || *s == StatusCode::TOO_MANY_REQUESTS));
    assert!(
        statuses[..5].iter().all(|s| *s == StatusCode::OK),
        "the burst of 5 is allowed at once: {statuses:?}"
    );
    let allowed = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(upstream.hits(), allowed, "only allowed requests reached the backend");
    // At most the burst plus the rate over the time measured, whichever
    // instance each request went through (plus one for the interval
    // already begun).
    let bound = 5 + (10.0 * elapsed).ceil() as usize + 1;
    assert!(
        allowed <= bound,
        "{allowed} allowed in {elapsed:.3} s across both instances (at most {bound})"
    );
    assert!(allowed < statuses.len(), "some requests were limited");

    // Another subject has its own count.
    assert_eq!(get(&b, "/things", &mint("bob", "user")).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_429_says_when_to_come_back_and_what_the_limits_are() {
    let upstream = upstream().await;
    let proxy = spawn_proxy(proxy_config(CONFIG, upstream.addr, None, None)).await;
    let token = mint("carol", "user");
    for _ in 0..5 {
        let allowed = get(&proxy, "/things", &token).await;
        assert_eq!(allowed.status(), StatusCode::OK);
        assert_eq!(allowed.headers()["ratelimit-policy"], r#""subject";q=10;w=1"#);
        assert!(allowed.headers()["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with(r#""subject";r="#));
    }
    let hits = upstream.hits();
    let refused = get(&proxy, "/things", &token).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(refused.headers()["ratelimit-policy"], r#""subject";q=10;w=1"#);
    assert!(refused.headers()["ratelimit"]
        .to_str()
        .unwrap()
        .starts_with(r#""subject";r=0;t="#));
    assert_eq!(refused.text().await.unwrap(), r#"{"error":"rate limited"}"#);
    assert_eq!(upstream.hits(), hits, "a limited request never reaches the backend");
    assert_eq!(
        proxy
            .metric(r#"proxy_rate_limited_total{rule="things",key="subject"}"#)
            .await,
        1
    );
    // The status page counts them too (sampled every second).
    eventually("the status page counts the refusal", || async {
        let status: serde_json::Value = reqwest::get(proxy.admin_url("/status.json"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        status["counters"]["rate_limited"]["things"] == 1.0
    })
    .await;
}

#[tokio::test]
async fn cache_hits_are_limited_in_the_lookups_one_round_trip() {
    let redis = RedisServer::start();
    let upstream = upstream().await;
    let proxy = spawn_proxy(proxy_config(CONFIG, upstream.addr, Some(redis.url()), None)).await;
    let token = mint("dave", "user");
    let first = get(&proxy, "/cached", &token).await;
    assert_eq!(first.status(), StatusCode::OK);
    let trips = proxy.metric("proxy_redis_read_round_trips_total").await;
    for _ in 0..2 {
        let hit = get(&proxy, "/cached", &token).await;
        assert_eq!(hit.status(), StatusCode::OK);
        assert_eq!(hit.headers()["x-cache"], "HIT");
    }
    assert_eq!(
        proxy.metric("proxy_redis_read_round_trips_total").await - trips,
        2,
        "each hit, limit and revocation check included, is one round trip"
    );
    let refused = get(&proxy, "/cached", &token).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS, "a hit is limited too");
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn ip_limits_believe_only_trusted_proxies() {
    let upstream = ScriptedUpstream::start(|request| async move {
        let forwarded = request.headers()["x-forwarded-for"].to_str().unwrap().to_owned();
        json_reply(200, &format!(r#"{{"for":"{forwarded}"}}"#), &[])
    })
    .await;
    let proxy = spawn_proxy(proxy_config(CONFIG, upstream.addr, None, None)).await;
    let url = format!("{}/by-ip", proxy.base_url());

    // 127.0.0.1 is not trusted: whatever it claims, it is one client.
    let untrusted = client_from("127.0.0.1");
    let mut statuses = Vec::new();
    for i in 0..4 {
        let response = untrusted
            .get(&url)
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .send()
            .await
            .unwrap();
        statuses.push(response.status());
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS
        ],
        "spoofed X-Forwarded-For from an untrusted peer is ignored"
    );

    // 127.0.0.2 is a trusted balancer: the clients it names count apart,
    // and the backend is told who they are.
    let balancer = client_from("127.0.0.2");
    for client in ["203.0.113.7", "203.0.113.8"] {
        for _ in 0..2 {
            let response = balancer
                .get(&url)
                .header("x-forwarded-for", format!("6.6.6.6, {client}"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{client}");
            assert_eq!(response.text().await.unwrap(), format!(r#"{{"for":"{client}"}}"#));
        }
        let third = balancer
            .get(&url)
            .header("x-forwarded-for", client)
            .send()
            .await
            .unwrap();
        assert_eq!(
            third.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "{client}'s own burst is spent"
        );
    }
}

#[tokio::test]
async fn a_limited_write_never_reaches_the_backend_nor_invalidates() {
    let upstream = upstream().await;
    let proxy = spawn_proxy(proxy_config(CONFIG, upstream.addr, None, None)).await;
    let client = reqwest::Client::new();
    let items = format!("{}/items", proxy.base_url());
    assert_eq!(client.post(&items).send().await.unwrap().status(), StatusCode::OK);
    client.get(&items).send().await.unwrap();
    let hit = client.get(&items).send().await.unwrap();
    assert_eq!(hit.headers()["x-cache"], "HIT");
    let hits = upstream.hits();

    let refused = client.post(&items).body("{}").send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(upstream.hits(), hits, "the write never reached the backend");
    let still = client.get(&items).send().await.unwrap();
    assert_eq!(still.headers()["x-cache"], "HIT", "and invalidated nothing");
}

#[tokio::test]
async fn with_redis_down_each_instance_counts_its_share_and_answers_no_5xx() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    redis.stop();
    let upstream = upstream().await;
    let proxy = spawn_proxy(proxy_config(CONFIG, upstream.addr, Some(url), None)).await;
    let token = mint("erin", "user");
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(get(&proxy, "/things", &token).await.status());
    }
    // burst 5 over limits.instances = 2: 2 each.
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    assert!(
        proxy
            .metric(r#"proxy_guard_fallback_total{check="limits",outcome="local"}"#)
            .await
            >= 4
    );
    // Revocation is unchecked (open) meanwhile, by default.
    assert!(
        proxy
            .metric(r#"proxy_guard_fallback_total{check="revocation",outcome="open"}"#)
            .await
            >= 4
    );
}

#[tokio::test]
async fn a_key_header_counts_per_value_and_sent_twice_is_refused() {
    let upstream = upstream().await;
    let proxy = spawn_proxy(proxy_config(CONFIG, upstream.addr, None, None)).await;
    let client = reqwest::Client::new();
    let url = format!("{}/keyed", proxy.base_url());
    let with_key = |key: &'static str| client.get(&url).header("x-api-key", key).send();
    assert_eq!(with_key("a").await.unwrap().status(), StatusCode::OK);
    assert_eq!(with_key("a").await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        with_key("b").await.unwrap().status(),
        StatusCode::OK,
        "another key counts apart"
    );
    // Without the header, only the ip limit counts it.
    assert_eq!(client.get(&url).send().await.unwrap().status(), StatusCode::OK);
    let hits = upstream.hits();
    let twice = client
        .get(&url)
        .header("x-api-key", "a")
        .header("x-api-key", "fresh-every-time")
        .send()
        .await
        .unwrap();
    assert_eq!(
        twice.status(),
        StatusCode::BAD_REQUEST,
        "a second value cannot open a new count"
    );
    assert_eq!(upstream.hits(), hits);
}
