//! Request ids and W3C trace context: made or kept, returned to the client,
//! forwarded to the backend, never stored in or served from an entry.

use e2e::{json_reply, proxy_config, spawn_proxy, ProxyHandle, ScriptedUpstream, ITEMS_CONFIG};
use serde_json::{json, Value};

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A backend answering, in its body, the trace headers it received, and
/// echoing the request id in its own response header (as many do).
async fn echoing_upstream() -> ScriptedUpstream {
    ScriptedUpstream::start(|req| async move {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let id = header("x-request-id").unwrap_or_default();
        let body = json!({
            "request_id": id,
            "traceparent": header("traceparent"),
            "tracestate": header("tracestate"),
        });
        json_reply(200, &body.to_string(), &[("x-request-id", &id)])
    })
    .await
}

async fn proxy(upstream: &ScriptedUpstream) -> ProxyHandle {
    spawn_proxy(proxy_config(ITEMS_CONFIG, upstream.addr, None, None)).await
}

/// GET /items with `headers`: the response's request id, its X-Cache, and
/// the body (what the backend received, on a miss).
async fn get(proxy: &ProxyHandle, headers: &[(&str, &str)]) -> (String, String, Value) {
    let mut request = reqwest::Client::new().get(format!("{}/items", proxy.base_url()));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
    let (id, x_cache) = (header("x-request-id"), header("x-cache"));
    (id, x_cache, response.json().await.unwrap())
}

#[tokio::test]
async fn a_request_id_is_made_when_absent_returned_and_forwarded() {
    let upstream = echoing_upstream().await;
    let proxy = proxy(&upstream).await;
    let (id, _, body) = get(&proxy, &[]).await;
    assert_eq!(id.len(), 32, "{id}");
    assert!(id.bytes().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(body["request_id"], id, "the backend got the same id");
}

#[tokio::test]
async fn a_sane_client_request_id_is_kept_and_an_invalid_one_replaced() {
    let upstream = echoing_upstream().await;
    let proxy = proxy(&upstream).await;
    let (id, _, body) = get(&proxy, &[("x-request-id", "order-42:retry-1")]).await;
    assert_eq!(
        (id.as_str(), &body["request_id"]),
        ("order-42:retry-1", &json!("order-42:retry-1"))
    );

    let upstream = echoing_upstream().await;
    let proxy = self::proxy(&upstream).await;
    let (id, _, body) = get(&proxy, &[("x-request-id", "bad id\"; rm")]).await;
    assert_eq!(id.len(), 32, "replaced: {id}");
    assert_eq!(body["request_id"], id);
}

#[tokio::test]
async fn a_cached_answer_carries_the_id_of_the_request_it_answers() {
    let upstream = echoing_upstream().await;
    let proxy = proxy(&upstream).await;
    let (first, x_cache, _) = get(&proxy, &[("x-request-id", "first")]).await;
    assert_eq!((first.as_str(), x_cache.as_str()), ("first", "MISS"));
    // The backend echoed "first" in its own header; the entry must not
    // keep it.
    e2e::wait::eventually("the entry is served", || async { get(&proxy, &[]).await.1 == "HIT" }).await;
    let (second, x_cache, _) = get(&proxy, &[("x-request-id", "second")]).await;
    assert_eq!((second.as_str(), x_cache.as_str()), ("second", "HIT"));
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn traceparent_is_forwarded_with_the_same_trace_id_and_a_new_parent_id() {
    let upstream = echoing_upstream().await;
    let proxy = proxy(&upstream).await;
    let (_, _, body) = get(&proxy, &[("traceparent", PARENT), ("tracestate", "congo=t61rcWkgMzE")]).await;
    let forwarded = body["traceparent"].as_str().expect("a traceparent reached the backend");
    assert_eq!(&forwarded[..36], &PARENT[..36], "same version and trace id");
    assert_ne!(&forwarded[36..52], &PARENT[36..52], "a new parent id: the proxy's span");
    assert_eq!(&forwarded[52..], "-01", "same flags");
    assert_eq!(body["tracestate"], "congo=t61rcWkgMzE");

    let upstream = echoing_upstream().await;
    let proxy = self::proxy(&upstream).await;
    let (_, _, body) = get(&proxy, &[("traceparent", "not-a-trace"), ("tracestate", "a=b")]).await;
    assert_eq!(
        (&body["traceparent"], &body["tracestate"]),
        (&Value::Null, &Value::Null),
        "an invalid one is dropped"
    );
}

#[tokio::test]
async fn the_request_id_header_is_the_operators_choice() {
    let upstream = ScriptedUpstream::start(|req| async move {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = json!({"correlation": header("x-correlation-id"), "request_id": header("x-request-id")});
        json_reply(200, &body.to_string(), &[])
    })
    .await;
    let toml = format!("[log]\nrequest_id_header = \"X-Correlation-Id\"\n{ITEMS_CONFIG}");
    let proxy = spawn_proxy(proxy_config(&toml, upstream.addr, None, None)).await;
    let response = reqwest::Client::new()
        .get(format!("{}/items", proxy.base_url()))
        .header("x-correlation-id", "corr-7")
        .header("x-request-id", "not-this-one")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-correlation-id"], "corr-7");
    assert!(response.headers().get("x-request-id").is_none());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["correlation"], "corr-7", "forwarded under the configured name");
    assert_eq!(
        body["request_id"],
        Value::Null,
        "X-Request-Id is then an ordinary header, not forwarded on a cached rule"
    );
}
