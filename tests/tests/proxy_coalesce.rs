//! Request coalescing: concurrent misses for one key send one upstream
//! request, within an instance and across instances sharing Redis.
//!
//! Deterministic: the upstream holds every answer until the test has seen,
//! in the proxies' metrics, that every request is waiting where it should.

use e2e::shared_redis::Deployment;
use e2e::token::mint;
use e2e::wait::eventually;
use e2e::{
    json_reply, on_every_redis, proxy_config, redis_prefix, shared_key, spawn_proxy, ProxyHandle, RedisServer,
    ScriptedUpstream,
};
use futures_util::future::join_all;
use serde_json::{json, Value};
use tokio::sync::watch;

const CONFIG: &str = r#"
[cache]
lease_ttl = "2s"

[[routes]]
name = "items"
path = "/items"
methods = ["GET"]
access = "public"
cache = { tags = ["items"] }

[[routes]]
name = "feed"
path = "/feed"
methods = ["GET"]
access = "authenticated"
cache = { scope = "shared", tags = ["items"] }
"#;

const JOINED: &str = r#"proxy_coalesced_total{outcome="joined"}"#;
const HELD_ELSEWHERE: &str = r#"proxy_leases_total{outcome="held_elsewhere"}"#;
const FETCHED_ANYWAY: &str = r#"proxy_leases_total{outcome="fetched_anyway"}"#;

/// An upstream that answers nothing until the gate opens, then answers
/// each request with the subject the proxy forwarded, adding `headers`.
async fn gated_upstream(headers: &'static [(&'static str, &'static str)]) -> (ScriptedUpstream, watch::Sender<bool>) {
    let (open, gate) = watch::channel(false);
    let upstream = ScriptedUpstream::start(move |req| {
        let mut gate = gate.clone();
        let subject = req
            .headers()
            .get("x-auth-subject")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("nobody")
            .to_owned();
        async move {
            let _ = gate.wait_for(|open| *open).await;
            json_reply(200, &json!({ "for": subject }).to_string(), headers)
        }
    })
    .await;
    (upstream, open)
}

/// Sums `series` over `proxies` until it reaches `wanted`.
async fn until_total(proxies: &[&ProxyHandle], series: &str, wanted: u64) {
    eventually(&format!("{series} reaches {wanted}"), || async {
        let mut total = 0;
        for p in proxies {
            total += p.metric(series).await;
        }
        assert!(total <= wanted, "{series} overshot: {total} > {wanted}");
        total == wanted
    })
    .await;
}

/// Sends `count` GETs of `path`, spread over `proxies` in turn, each with
/// the token `token_of(i)` if any; returns (status, X-Cache, body) each.
async fn send_all(
    proxies: &[&ProxyHandle],
    path: &str,
    count: usize,
    token_of: impl Fn(usize) -> Option<String>,
) -> Vec<tokio::task::JoinHandle<(u16, String, Value)>> {
    let client = reqwest::Client::new();
    (0..count)
        .map(|i| {
            let mut request = client.get(format!("{}{path}", proxies[i % proxies.len()].base_url()));
            if let Some(token) = token_of(i) {
                request = request.bearer_auth(token);
            }
            tokio::spawn(async move {
                let response = request.send().await.expect("request sent");
                let status = response.status().as_u16();
                let x_cache = response.headers()["x-cache"].to_str().unwrap().to_owned();
                (status, x_cache, response.json().await.unwrap_or(Value::Null))
            })
        })
        .collect()
}

async fn results(requests: Vec<tokio::task::JoinHandle<(u16, String, Value)>>) -> Vec<(u16, String, Value)> {
    join_all(requests)
        .await
        .into_iter()
        .map(|r| r.expect("request task"))
        .collect()
}

async fn two_hundred_cold_misses_through_one_instance(redis_url: Option<String>) {
    let (upstream, open) = gated_upstream(&[]).await;
    let proxy = spawn_proxy(proxy_config(CONFIG, upstream.addr, redis_url, None)).await;
    let requests = send_all(&[&proxy], "/items", 200, |_| None).await;
    until_total(&[&proxy], JOINED, 199).await;
    assert_eq!(upstream.hits(), 1);
    open.send_replace(true);

    let answers = results(requests).await;
    assert!(answers
        .iter()
        .all(|(status, _, body)| *status == 200 && body["for"] == "nobody"));
    let misses = answers.iter().filter(|(_, x_cache, _)| x_cache == "MISS").count();
    assert_eq!(misses, 1, "one leader; the others are served its entry");
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn two_hundred_cold_misses_through_one_instance_send_one_upstream_request_with_redis() {
    let redis = RedisServer::start();
    two_hundred_cold_misses_through_one_instance(Some(redis.url())).await;
}

#[tokio::test]
async fn two_hundred_cold_misses_through_one_instance_send_one_upstream_request_in_memory() {
    two_hundred_cold_misses_through_one_instance(None).await;
}

// Coalescing across instances, by a lease in Redis, on one node, a
// Sentinel group and a cluster.
on_every_redis!(two_hundred_cold_misses_through_three_instances_send_one_upstream_request);

async fn two_hundred_cold_misses_through_three_instances_send_one_upstream_request(redis: Deployment) {
    let (upstream, open) = gated_upstream(&[]).await;
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(spawn_proxy(proxy_config(CONFIG, upstream.addr, Some(redis.url()), None)).await);
    }
    let proxies: Vec<&ProxyHandle> = instances.iter().collect();
    let requests = send_all(&proxies, "/items", 200, |_| None).await;
    // One leader per instance; one of them holds the lease and fetches,
    // the two others wait for its entry.
    until_total(&proxies, JOINED, 197).await;
    until_total(&proxies, HELD_ELSEWHERE, 2).await;
    assert_eq!(upstream.hits(), 1);
    open.send_replace(true);

    let answers = results(requests).await;
    assert!(answers.iter().all(|(status, _, _)| *status == 200));
    assert_eq!(upstream.hits(), 1);
    assert_eq!(answers.iter().filter(|(_, x_cache, _)| x_cache == "MISS").count(), 1);
    for p in &proxies {
        assert_eq!(p.metric(FETCHED_ANYWAY).await, 0);
    }
}

#[tokio::test]
async fn a_lease_left_by_a_dead_instance_only_delays_the_others_until_it_expires() {
    let (upstream, open) = gated_upstream(&[]).await;
    open.send_replace(true);
    let redis = RedisServer::start();
    // An instance took the lease and died mid-fetch: its lease stays until
    // it expires, and nobody gives it back.
    let config = proxy_config(CONFIG, upstream.addr, Some(redis.url()), None);
    let key = shared_key(&config, "items", "/items");
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("{}l:{}", redis_prefix(upstream.addr), key.to_hex()))
        .arg("dead-instance")
        .arg("PX")
        .arg(1500)
        .query_async(&mut conn)
        .await
        .unwrap();

    let proxy = spawn_proxy(config).await;
    let answers = results(send_all(&[&proxy], "/items", 20, |_| None).await).await;
    assert!(answers.iter().all(|(status, _, _)| *status == 200));
    assert_eq!(
        upstream.hits(),
        1,
        "after the lease expired, this instance fetched once"
    );
    assert_eq!(proxy.metric(HELD_ELSEWHERE).await, 1);
    assert_eq!(proxy.metric(FETCHED_ANYWAY).await, 1);
    // The dead instance's lease expired; this one gives its own back.
    let lease = format!("{}l:{}", redis_prefix(upstream.addr), key.to_hex());
    eventually("the lease is given back", || {
        let (mut conn, lease) = (conn.clone(), lease.clone());
        async move {
            let exists: bool = redis::cmd("EXISTS").arg(lease).query_async(&mut conn).await.unwrap();
            !exists
        }
    })
    .await;
}

#[tokio::test]
async fn an_uncacheable_answer_is_never_handed_to_a_waiter_of_another_subject() {
    let (upstream, open) = gated_upstream(&[("cache-control", "private")]).await;
    let redis = RedisServer::start();
    let proxy = spawn_proxy(proxy_config(CONFIG, upstream.addr, Some(redis.url()), None)).await;
    let subject = |i: usize| format!("subject-{i}");
    let requests = send_all(&[&proxy], "/feed", 10, |i| Some(mint(&subject(i), "user"))).await;
    until_total(&[&proxy], JOINED, 9).await;
    open.send_replace(true);

    let answers = results(requests).await;
    for (i, (status, _, body)) in answers.iter().enumerate() {
        assert_eq!(*status, 200);
        assert_eq!(
            body["for"],
            subject(i),
            "request {i} was handed another subject's answer"
        );
    }
    assert_eq!(upstream.hits(), 10, "each waiter fetched its own");
}
