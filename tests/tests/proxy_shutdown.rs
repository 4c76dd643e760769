//! Shutdown drops nothing: the listener closes first, a kept-alive
//! connection's next request is answered (with `Connection: close`)
//! instead of the connection being dropped under it, and the proxy exits
//! once its connections are done.

use bytes::Bytes;
use e2e::wait::eventually;
use e2e::{json_reply, proxy_config, spawn_proxy, ScriptedUpstream, ITEMS_CONFIG};
use http::header::CONNECTION;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// One HTTP/1.1 connection, kept alive, requests sent one at a time.
struct KeptAlive {
    sender: SendRequest<Empty<Bytes>>,
}

impl KeptAlive {
    async fn open(addr: std::net::SocketAddr) -> KeptAlive {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        KeptAlive { sender }
    }

    /// Status and whether the answer said `Connection: close`.
    async fn get(&mut self, path: &str) -> (u16, bool) {
        self.sender.ready().await.expect("the connection is still usable");
        let request = Request::get(path).header("host", "proxy").body(Empty::new()).unwrap();
        let response = self.sender.send_request(request).await.expect("answered, not dropped");
        let close = response
            .headers()
            .get(CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let status = response.status().as_u16();
        response.into_body().collect().await.expect("a whole body");
        (status, close)
    }
}

#[tokio::test]
async fn a_kept_alive_connection_is_told_to_close_not_dropped_at_shutdown() {
    let upstream = ScriptedUpstream::start(|_| async { json_reply(200, "[]", &[]) }).await;
    // A grace period longer than the test: the proxy may only finish early
    // because its connection closed, not because time ran out.
    let config = proxy_config(
        &format!("[server]\nshutdown_grace = \"1h\"\n{ITEMS_CONFIG}"),
        upstream.addr,
        None,
        None,
    );
    let mut proxy = spawn_proxy(config).await;
    let mut connection = KeptAlive::open(proxy.addr).await;
    assert_eq!(connection.get("/items").await, (200, false));

    proxy.stop();
    let addr = proxy.addr;
    eventually("the listener is closed", || async move {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    // The idle connection is still served; its answer tells the client to
    // go elsewhere for the next one.
    let mut answers = Vec::new();
    while answers.last().is_none_or(|(_, close)| !close) {
        answers.push(connection.get("/items").await);
        assert!(answers.len() < 1000, "never told to close: {answers:?}");
    }
    assert!(answers.iter().all(|(status, _)| *status == 200), "{answers:?}");
    assert!(connection.sender.ready().await.is_err(), "closed after that answer");
    proxy.join().await.unwrap();
}
