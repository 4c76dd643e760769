//! A small scripted HTTP upstream, for tests that need an origin that sends
//! particular headers or misbehaves on purpose. It counts every request it
//! receives, so a test can prove a cache hit never reached it. Stopping it
//! (or dropping it) closes its listener and every connection it holds, as
//! a backend process that exits does.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::task::{JoinHandle, JoinSet};

pub type Reply = Response<Full<Bytes>>;
type Script = dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Reply> + Send>> + Send + Sync;

pub struct ScriptedUpstream {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl ScriptedUpstream {
    /// Serves every request with `script`.
    pub async fn start<F, Fut>(script: F) -> ScriptedUpstream
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        ScriptedUpstream::serve(None, script).await
    }

    /// Serves every request with `script` on `addr`: a stopped upstream
    /// started again where the proxy expects it.
    pub async fn start_on<F, Fut>(addr: SocketAddr, script: F) -> ScriptedUpstream
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind upstream again");
        ScriptedUpstream::serve_on(listener, None, script)
    }

    /// Serves every request with `script` over TLS with `tls`.
    pub async fn start_tls<F, Fut>(tls: Arc<rustls::ServerConfig>, script: F) -> ScriptedUpstream
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        ScriptedUpstream::serve(Some(tokio_rustls::TlsAcceptor::from(tls)), script).await
    }

    /// Serves every request with `script` over TLS on `addr` (a port an
    /// earlier server held: a backend that comes back).
    pub async fn start_tls_at<F, Fut>(addr: SocketAddr, tls: Arc<rustls::ServerConfig>, script: F) -> ScriptedUpstream
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind upstream again");
        ScriptedUpstream::serve_on(listener, Some(tokio_rustls::TlsAcceptor::from(tls)), script)
    }

    async fn serve<F, Fut>(tls: Option<tokio_rustls::TlsAcceptor>, script: F) -> ScriptedUpstream
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        ScriptedUpstream::serve_on(listener, tls, script)
    }

    fn serve_on<F, Fut>(
        listener: tokio::net::TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        script: F,
    ) -> ScriptedUpstream
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        let script: Arc<Script> = Arc::new(move |req| Box::pin(script(req)));
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let task = tokio::spawn(async move {
            // Owned by this task: ending it aborts every connection.
            let mut connections = JoinSet::new();
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    Some(_) = connections.join_next() => continue,
                };
                let Ok((stream, _)) = accepted else {
                    return;
                };
                let (script, counter, tls) = (script.clone(), counter.clone(), tls.clone());
                connections.spawn(async move {
                    let service = service_fn(move |req| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let reply = script(req);
                        async move { Ok::<_, std::convert::Infallible>(reply.await) }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = match tls {
                        None => builder.serve_connection(TokioIo::new(stream), service).await,
                        Some(tls) => match tls.accept(stream).await {
                            Ok(stream) => builder.serve_connection(TokioIo::new(stream), service).await,
                            Err(_) => return,
                        },
                    };
                });
            }
        });
        ScriptedUpstream { addr, hits, task }
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stops serving, as a backend process that exits: once this returns
    /// the listener is closed (connecting is refused, and the address can
    /// be bound again) and every open connection is being closed, requests
    /// in flight unanswered. Returns the address it served on.
    pub async fn stop(mut self) -> SocketAddr {
        self.task.abort();
        let _ = (&mut self.task).await;
        self.addr
    }
}

impl Drop for ScriptedUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A JSON reply with extra headers.
pub fn json_reply(status: u16, body: &str, headers: &[(&str, &str)]) -> Reply {
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("valid reply")
}

/// A raw backend, below HTTP, for backends that misbehave on the wire:
/// each connection's request head is read and counted, then `after_head`
/// gets the connection (to answer, hang up, or wait). Its address, and
/// the count of request heads read.
pub async fn raw_upstream<F, Fut>(after_head: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(AtomicUsize::new(0));
    let count = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (count, after_head) = (count.clone(), after_head.clone());
            tokio::spawn(async move {
                if read_request_head(&mut stream).await {
                    count.fetch_add(1, Ordering::SeqCst);
                    after_head(stream).await;
                }
            });
        }
    });
    (addr, heads)
}

/// Reads one request head (up to its blank line, at most 4 KiB); `false`
/// when the connection ended (or the head outgrew the buffer) first.
async fn read_request_head(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 4096];
    let mut read = 0;
    while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf[read..]).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => read += n,
        }
    }
    true
}
