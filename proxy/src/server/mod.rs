//! The accept loop: connection limits, every phase of a connection bounded
//! in time, TLS, HTTP/1.1 and HTTP/2, graceful shutdown.
//!
//! Takes an already-bound listener and a shutdown future, so tests and
//! `main` share it; both listeners (clients and admin) run it. Each
//! connection is served by hyper-util's auto builder (HTTP/1.1, or HTTP/2
//! when the client opens with the h2 preface) and bounded in every phase:
//! - a TLS handshake: `header_read_timeout` ([`tls`]);
//! - before the first request (protocol not yet known, partial preface):
//!   `header_read_timeout` from accept, or from the end of the handshake
//!   ([`activity`]);
//! - an HTTP/1 request head: `header_read_timeout` (hyper's own timer);
//! - no request in flight (HTTP/1 keep-alive, an HTTP/2 connection that
//!   only answers pings): `idle_timeout` ([`activity`]);
//! - a request body that stops arriving: `body_read_timeout` (the
//!   handler reads bodies through [`crate::body::IdleTimeout`]);
//! - a client that stops reading its response: `write_timeout` ([`io`]);
//! - optionally the whole connection: `max_connection_age`.
//!
//! One address may hold at most `max_connections_per_ip` connections, so
//! one client cannot take every slot of `max_connections`.

mod activity;
mod bind;
mod io;
mod per_ip;
mod settings;
mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::CONNECTION;
use http::{HeaderValue, Request, Response, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use self::activity::{Activity, Limits, Tracked};
pub use self::bind::{bind_shared, queued_connections_migrate};
use self::io::WriteDeadline;
use self::per_ip::PerIpLimit;
pub use self::settings::ServerSettings;
pub use self::tls::TlsSource;
use crate::metrics::Metrics;
use crate::upstream::ProxyBody;

/// Pause after an accept error (e.g. out of file descriptors) so the loop
/// does not spin while the condition lasts.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// What the server knows of the client behind a request, handed to the
/// handler with each request: the start of its per-request context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// The client's address (the TCP peer).
    pub peer: SocketAddr,
    /// The proxy's own address the client connected to.
    pub local: SocketAddr,
    /// Whether the connection is TLS: the scheme the client used.
    pub secure: bool,
}

impl Client {
    pub fn scheme(&self) -> &'static str {
        if self.secure {
            "https"
        } else {
            "http"
        }
    }
}

/// Where the server is in its life; connections watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    /// Finish what is in flight, accept no new request.
    Draining,
    /// The grace period is over: close now.
    Closing,
}

/// Serves `listener` with `handle` until `shutdown` resolves, then stops
/// accepting and gives open connections `settings.shutdown_grace` to finish.
/// Each connection asks `tls` whether to do a TLS handshake, and with what.
pub async fn serve<H, F>(
    listener: TcpListener,
    settings: ServerSettings,
    metrics: Arc<Metrics>,
    tls: TlsSource,
    handle: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>, Client) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(settings.header_read_timeout));
    let limit = Arc::new(Semaphore::new(settings.max_connections));
    let per_ip = PerIpLimit::new(
        settings.max_connections_per_ip,
        settings.client_ip.trusted_proxies.clone(),
    );
    let (phase_tx, phase_rx) = watch::channel(Phase::Serving);
    let settings = Arc::new(settings);
    let shared = Shared {
        builder: Arc::new(builder),
        settings: settings.clone(),
        metrics: metrics.clone(),
        handle,
        phase: phase_rx,
    };
    tokio::pin!(shutdown);

    let admit = |stream: TcpStream, peer: SocketAddr, permit: OwnedSemaphorePermit| {
        let Some(ip_slot) = per_ip.acquire(peer.ip()) else {
            // Closed at once: the address already holds its share.
            metrics.connection_closed("per_ip_limit");
            tracing::debug!(%peer, "connection refused: too many from this address");
            return;
        };
        let connection = serve_connection(shared.clone(), stream, peer, tls());
        tokio::spawn(async move {
            connection.await;
            drop((permit, ip_slot));
        });
    };

    loop {
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => permit.expect("semaphore never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        admit(stream, peer, permit);
    }

    // Connections the kernel has already queued for this listener would be
    // reset when it closes: take them, and serve them while draining.
    for (stream, peer) in accept_queued(listener) {
        match limit.clone().try_acquire_owned() {
            Ok(permit) => admit(stream, peer, permit),
            Err(_) => metrics.connection_closed("limit"),
        }
    }
    let _ = phase_tx.send(Phase::Draining);
    let all_closed = limit.acquire_many(settings.max_connections as u32);
    if tokio::time::timeout(settings.shutdown_grace, all_closed).await.is_err() {
        tracing::warn!(grace = ?settings.shutdown_grace, "connections still open after the shutdown grace period; closing them");
        let _ = phase_tx.send(Phase::Closing);
    }
}

/// Closes `listener` after accepting what is already queued on it,
/// without waiting: straight `accept` calls until the kernel has none.
fn accept_queued(listener: TcpListener) -> Vec<(TcpStream, SocketAddr)> {
    let Ok(listener) = listener.into_std() else {
        return Vec::new();
    };
    let mut queued = Vec::new();
    while let Ok((stream, peer)) = listener.accept() {
        let stream = stream.set_nonblocking(true).and_then(|()| TcpStream::from_std(stream));
        if let Ok(stream) = stream {
            queued.push((stream, peer));
        }
    }
    queued
}

/// What every connection of one listener is served with.
#[derive(Clone)]
struct Shared<H> {
    builder: Arc<auto::Builder<TokioExecutor>>,
    settings: Arc<ServerSettings>,
    metrics: Arc<Metrics>,
    handle: H,
    phase: watch::Receiver<Phase>,
}

/// Serves one connection, after a TLS handshake with `tls` if given.
async fn serve_connection<H, F>(
    shared: Shared<H>,
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
) where
    H: Fn(Request<Incoming>, Client) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let _open = shared.metrics.connection_opened();
    let _ = stream.set_nodelay(true);
    let client = Client {
        peer,
        local: stream.local_addr().unwrap_or(peer),
        secure: tls.is_some(),
    };
    // The write deadline sits under TLS: it bounds the socket, whatever
    // writes it (handshake, records, alerts).
    let io = WriteDeadline::new(stream, shared.settings.write_timeout);
    match tls {
        None => serve_http(shared, io, client).await,
        Some(config) => {
            let limit = shared.settings.header_read_timeout;
            let Some(io) = tls::handshake(config, io, limit, peer, &shared.metrics).await else {
                return;
            };
            serve_http(shared, io, client).await
        }
    }
}

/// Serves HTTP on one connection until it ends, its watchdog expires it,
/// or the server closes it.
async fn serve_http<I, H, F>(shared: Shared<H>, io: I, client: Client)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>, Client) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let Shared {
        builder,
        settings,
        metrics,
        handle,
        mut phase,
    } = shared;
    let peer = client.peer;
    let activity = Arc::new(Activity::default());
    let limits = Limits {
        first_request: settings.header_read_timeout,
        idle: settings.idle_timeout,
        max_age: settings.max_connection_age,
    };
    // A connection told to close gets this long to finish its last
    // response; a client that stops reading would otherwise hold it.
    let wind_down = settings.write_timeout;
    let service = {
        let activity = activity.clone();
        service_fn(move |req: Request<Incoming>| {
            let in_flight = activity.start();
            let http1 = req.version() < Version::HTTP_2;
            if !http1 {
                activity.saw_http2();
            }
            // Boxed once here: a request's future holds every step's state
            // (about 4 KB for the proxy's handler), which this service's
            // future and hyper's dispatcher would each move by value.
            let handling = Box::pin(handle(req, client));
            async move {
                let mut response = handling.await;
                if http1 && in_flight.connection_closing() {
                    // hyper closes the connection once this response is
                    // written; the client opens its next one elsewhere.
                    response
                        .headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(response.map(|body| Tracked::new(body, in_flight)))
            }
        })
    };
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);

    let expired = tokio::select! {
        result = connection.as_mut() => return log_end(peer, result),
        why = activity.expired(limits) => Some(why),
        () = wait_for(&mut phase, Phase::Draining) => None,
    };
    match expired {
        Some(why) => {
            metrics.connection_closed(why.label());
            tracing::debug!(%peer, reason = why.label(), "closing connection");
            if why == activity::Expired::Age {
                // Finish what is in flight (HTTP/2: GOAWAY), accept nothing new.
                connection.as_mut().graceful_shutdown();
                tokio::select! {
                    result = connection.as_mut() => log_end(peer, result),
                    () = wait_for(&mut phase, Phase::Closing) => {}
                    () = tokio::time::sleep(wind_down) => {}
                }
            }
        }
        None => {
            // Draining. hyper's graceful shutdown would close an idle
            // HTTP/1 connection at once, resetting a request the client may
            // have just sent on it. Instead each HTTP/1 connection's next
            // response says `Connection: close`; a connection that stays
            // idle is closed only at the end of the grace period. HTTP/2
            // has GOAWAY for this: the client learns which streams were
            // taken and sends the rest elsewhere.
            activity.close_after_response();
            if activity.is_http2() {
                connection.as_mut().graceful_shutdown();
            }
            tokio::select! {
                result = connection.as_mut() => log_end(peer, result),
                () = wait_for(&mut phase, Phase::Closing) => {}
                why = activity.expired(limits) => metrics.connection_closed(why.label()),
            }
        }
    }
    // Idle (nothing in flight), or out of time: dropping the connection
    // closes the socket.
}

/// Resolves once the server's phase is `at` or later.
async fn wait_for(phase: &mut watch::Receiver<Phase>, at: Phase) {
    let reached = |p: &Phase| match at {
        Phase::Serving => true,
        Phase::Draining => *p != Phase::Serving,
        Phase::Closing => *p == Phase::Closing,
    };
    if phase.wait_for(reached).await.is_err() {
        // The server is gone: nothing will ever change the phase.
        std::future::pending::<()>().await;
    }
}

fn log_end<E: std::fmt::Display>(peer: SocketAddr, result: Result<(), E>) {
    if let Err(err) = result {
        tracing::debug!(%peer, error = %err, "connection ended with an error");
    }
}
