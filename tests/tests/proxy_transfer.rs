//! Bodies and connections: what is stored by size and origin directives,
//! request-size limits, and the retry of a request whose pooled upstream
//! connection closed before answering.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use e2e::{json_reply, proxy_config, spawn_proxy, ScriptedUpstream};
use http::Response;
use http_body_util::Full;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONFIG: &str = r#"
[server]
max_request_body_bytes = 1000

[cache]
max_entry_bytes = 1000

[[routes]]
name = "files"
path = "/files/*"
methods = ["GET"]
access = "public"
cache = {}

[[routes]]
name = "upload"
path = "/upload"
methods = ["POST"]
access = "public"

[[routes]]
name = "plain"
path = "/plain"
methods = ["GET"]
access = "public"
"#;

async fn files_upstream() -> ScriptedUpstream {
    ScriptedUpstream::start(|req| async move {
        match req.uri().path() {
            "/files/big" => json_reply(200, &format!("\"{}\"", "x".repeat(5000)), &[]),
            "/files/big-chunked" => {
                // A streamed body: no Content-Length for the proxy to decide by.
                let chunks: Vec<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>> = (0..10)
                    .map(|_| Ok(hyper::body::Frame::data(Bytes::from(vec![b'y'; 500]))))
                    .collect();
                let body = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
                let collected = http_body_util::BodyExt::collect(body).await.unwrap().to_bytes();
                let mut resp = Response::new(Full::new(collected));
                resp.headers_mut()
                    .insert("transfer-encoding", "chunked".parse().unwrap());
                resp
            }
            "/files/short" => json_reply(200, "\"short\"", &[("cache-control", "max-age=1")]),
            "/files/shared-short" => json_reply(200, "\"s\"", &[("cache-control", "max-age=600, s-maxage=2")]),
            "/upload" => {
                let body = http_body_util::BodyExt::collect(req.into_body())
                    .await
                    .unwrap()
                    .to_bytes();
                json_reply(200, &format!("{{\"received\":{}}}", body.len()), &[])
            }
            _ => json_reply(200, "\"small\"", &[]),
        }
    })
    .await
}

#[tokio::test]
async fn responses_over_the_entry_limit_are_streamed_whole_and_not_stored() {
    let upstream = files_upstream().await;
    let proxy = spawn_proxy(proxy_config(CONFIG, upstream.addr, None, None)).await;
    for (path, len) in [("/files/big", 5002), ("/files/big-chunked", 5000)] {
        for _ in 0..2 {
            let resp = reqwest::get(format!("{}{path}", proxy.base_url())).await.unwrap();
            assert_eq!(resp.headers()["x-cache"], "MISS", "{path}");
            assert_eq!(resp.headers()["cache-status"], "proxy; fwd=miss", "{path}");
            assert_eq!(resp.bytes().await.unwrap().len(), len, "{path}: nothing lost");
        }
    }
    let small = format!("{}/files/small", proxy.base_url());
    reqwest::get(&small).await.unwrap();
    assert_eq!(reqwest::get(&small).await.unwrap().headers()["x-cache"], "HIT");
    assert_eq!(upstream.hits(), 5);
}

#[tokio::test]
async fn origin_max_age_and_s_maxage_shorten_the_rule_ttl() {
    let upstream = files_upstream().await;
    let proxy = spawn_proxy(proxy_config(CONFIG, upstream.addr, None, None)).await;
    for (path, cap) in [("/files/short", 1), ("/files/shared-short", 2)] {
        let url = format!("{}{path}", proxy.base_url());
        reqwest::get(&url).await.unwrap();
        let hit = reqwest::get(&url).await.unwrap();
        let status = hit.headers()["cache-status"].to_str().unwrap().to_owned();
        let ttl: u64 = status.rsplit("ttl=").next().unwrap().parse().unwrap();
        assert!(ttl <= cap, "{path}: {status}");
    }
}

#[tokio::test]
async fn request_bodies_over_the_limit_are_413_declared_or_streamed() {
    let upstream = files_upstream().await;
    let proxy = spawn_proxy(proxy_config(CONFIG, upstream.addr, None, None)).await;
    let client = reqwest::Client::new();
    let url = format!("{}/upload", proxy.base_url());

    let ok = client.post(&url).body(vec![b'a'; 1000]).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.text().await.unwrap(), r#"{"received":1000}"#);

    let declared = client.post(&url).body(vec![b'a'; 1001]).send().await.unwrap();
    assert_eq!(declared.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(upstream.hits(), 1, "refused before contacting the upstream");

    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..5).map(|_| Ok(vec![b'b'; 400])).collect();
    let streamed = client
        .post(&url)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        streamed.json::<serde_json::Value>().await.unwrap()["error"],
        "request body too large"
    );
}

/// A raw upstream that answers the first request on each connection with
/// keep-alive, then closes the connection when the next request arrives
/// without answering it: the race of a backend closing an idle connection
/// just as the proxy reuses it.
async fn closes_reused_connections() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    e2e::upstream::raw_upstream(|mut stream| async move {
        let body = r#"{"ok":true}"#;
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(reply.as_bytes()).await;
        // Wait for the next request on this connection, then drop it unanswered.
        let _ = stream.read(&mut [0u8; 4096]).await;
    })
    .await
}

#[tokio::test]
async fn an_idempotent_request_is_retried_once_when_its_pooled_connection_closed_early() {
    let (upstream, answered) = closes_reused_connections().await;
    let proxy = spawn_proxy(proxy_config(CONFIG, upstream, None, None)).await;
    let url = format!("{}/plain", proxy.base_url());
    for _ in 0..3 {
        let resp = reqwest::get(&url).await.unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "a closed pooled connection surfaced as an error"
        );
    }
    assert_eq!(answered.load(Ordering::SeqCst), 3);
}
