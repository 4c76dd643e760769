//! Every phase of a connection is bounded (issue 9, finding 1): sockets
//! that never say anything, half an HTTP/2 preface, an HTTP/2 connection
//! that opens no stream, a request body that stops, a client that stops
//! reading, and one address holding every slot.
//!
//! Each test fails on 11a5e57, where the header-read timeout started only
//! once hyper knew the connection was HTTP/1. Waits are polls on a
//! condition (a metric, a closed socket); the `HANG_GUARD` timeouts only
//! turn "the proxy hung" into a failure.

use std::time::Duration;

use e2e::wait::eventually;
use e2e::{json_reply, proxy_config, raw_http, spawn_proxy, ProxyHandle, ScriptedUpstream, ITEMS_CONFIG};
use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Far above every limit configured below, so only a hang trips it.
const HANG_GUARD: Duration = Duration::from_secs(10);

const SERVER: &str = r#"
header_read_timeout = "500ms"
idle_timeout = "500ms"
write_timeout = "500ms"
max_connections = 20
"#;

/// Besides the items routes: an uncacheable route with a large answer.
const BIG_ROUTE: &str = r#"
[[routes]]
name = "big"
path = "/big"
methods = ["GET"]
access = "public"
"#;

/// Bytes of `/big`: far more than the kernel buffers between a client that
/// does not read and the proxy.
const BIG: usize = 64 << 20;

async fn upstream() -> ScriptedUpstream {
    ScriptedUpstream::start(|req| async move {
        if req.uri().path() == "/big" {
            return json_reply(200, &"x".repeat(BIG), &[]);
        }
        json_reply(200, r#"{"items":[]}"#, &[])
    })
    .await
}

/// A proxy with the limits above, plus `server_extra` in `[server]`.
async fn proxy(upstream: &ScriptedUpstream, server_extra: &str) -> ProxyHandle {
    let config = format!("[server]\n{SERVER}{server_extra}\n{ITEMS_CONFIG}{BIG_ROUTE}");
    spawn_proxy(proxy_config(&config, upstream.addr, None, None)).await
}

async fn get_items(proxy: &ProxyHandle) -> u16 {
    let request = "GET /items HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    tokio::time::timeout(HANG_GUARD, raw_http(proxy.addr, request))
        .await
        .expect("a normal request hung behind idle connections")
        .status
}

/// Resolves once the server has closed `stream` (EOF or reset).
async fn closed_by_server(stream: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    let closed = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(HANG_GUARD, closed)
        .await
        .expect("the proxy kept the connection open");
}

#[tokio::test]
async fn twenty_idle_and_half_preface_sockets_do_not_stop_a_normal_request() {
    let upstream = upstream().await;
    let proxy = proxy(&upstream, "").await;
    let mut hogs = Vec::new();
    for i in 0..20 {
        let mut socket = TcpStream::connect(proxy.addr).await.unwrap();
        if i % 2 == 1 {
            // The first half of the HTTP/2 preface: the protocol is never known.
            socket.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        }
        hogs.push(socket);
    }
    assert_eq!(get_items(&proxy).await, 200);
    for hog in &mut hogs {
        closed_by_server(hog).await;
    }
    assert!(
        proxy
            .metric(r#"proxy_connections_closed_total{reason="first_request_timeout"}"#)
            .await
            >= 20
    );
}

#[tokio::test]
async fn an_http2_connection_that_opens_no_stream_is_closed_after_the_idle_limit() {
    let upstream = upstream().await;
    let proxy = proxy(&upstream, "").await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (_sender, connection) = hyper::client::conn::http2::handshake::<_, _, http_body_util::Empty<bytes::Bytes>>(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    // The connection answers the proxy's pings and SETTINGS for as long as
    // it is polled; it ends only when the proxy closes it.
    tokio::time::timeout(HANG_GUARD, connection)
        .await
        .expect("an HTTP/2 connection without streams stayed open")
        .ok();
}

#[tokio::test]
async fn an_address_holding_its_share_has_further_connections_refused() {
    let upstream = upstream().await;
    let uncapped = proxy(&upstream, "").await;
    let capped = proxy(&upstream, "max_connections_per_ip = 2").await;
    let _held = [
        TcpStream::connect(capped.addr).await.unwrap(),
        TcpStream::connect(capped.addr).await.unwrap(),
    ];
    let mut third = TcpStream::connect(capped.addr).await.unwrap();
    closed_by_server(&mut third).await;
    assert_eq!(
        capped
            .metric(r#"proxy_connections_closed_total{reason="per_ip_limit"}"#)
            .await,
        1
    );
    // Another proxy without the cap is unaffected (the default is 1024).
    assert_eq!(get_items(&uncapped).await, 200);
}

#[tokio::test]
async fn a_client_that_stops_reading_its_response_is_disconnected() {
    let upstream = upstream().await;
    let proxy = proxy(&upstream, "").await;
    let socket = std::net::TcpStream::connect(proxy.addr).unwrap();
    let mut socket = TcpStream::from_std({
        socket.set_nonblocking(true).unwrap();
        socket
    })
    .unwrap();
    socket
        .write_all(b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    // Not reading: the proxy's writes stall once the socket buffers fill.
    eventually("the proxy dropped the connection whose client stopped reading", || {
        let proxy = &proxy;
        async move { proxy.metric("proxy_connections_open").await <= 1 }
    })
    .await;
    let mut received = Vec::new();
    let _ = socket.read_to_end(&mut received).await;
    assert!(received.len() < BIG, "the whole response arrived after all");
}

#[tokio::test]
async fn the_admin_listener_is_bounded_the_same_way() {
    let upstream = upstream().await;
    let proxy = proxy(&upstream, "").await;
    let mut idle = TcpStream::connect(proxy.admin_addr).await.unwrap();
    closed_by_server(&mut idle).await;
    let health = reqwest::Client::new()
        .request(Method::GET, proxy.admin_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}
