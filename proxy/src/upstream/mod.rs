//! The upstream side (DESIGN.md steps 4 and 6): request shaping
//! ([`headers`]), the backend's endpoints and their passive health
//! ([`pool`]), and the pooled client, with its timeouts and the single
//! retry of a replayable request: after its pooled connection closed
//! before answering, or, on another endpoint, after it could not connect.

mod headers;
mod pool;

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HOST};
use http::uri::{Authority, Scheme};
use http::{Method, Request, Response, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub use self::headers::{
    is_proxy_owned, strip_hop_by_hop, upstream_headers, Forwarded, HeaderPolicy, IdentitySettings, InvalidIdentity, VIA,
};
pub use self::pool::Balance;
use self::pool::{Endpoint, Endpoints, Outcome};
use crate::error_chain::error_chain;
use crate::metrics::Metrics;
use crate::tls::UpstreamTls;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every body the proxy sends or returns: streamed or buffered, boxed once.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// How to reach the backend: boot settings, as the connection pool is
/// built from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSettings {
    /// The backend's endpoints, `http://host:port` or `https://host:port`
    /// with no path: at least one, all of one scheme, no two alike.
    pub endpoints: Vec<Uri>,
    /// How requests are spread over the endpoints.
    pub balance: Balance,
    /// Consecutive failures to connect or to answer in time that eject an
    /// endpoint (when there are several).
    pub eject_after: u32,
    /// How long an ejected endpoint gets no requests before one probes it.
    pub eject_for: Duration,
    /// Set for `https://` endpoints.
    pub tls: Option<UpstreamTls>,
    pub http2: Http2,
    pub connect_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    /// Requests at the backend at once, all rules together; 0: no limit.
    pub max_concurrent_requests: usize,
}

impl UpstreamSettings {
    /// The endpoints' `host:port`s, in order.
    pub fn authorities(&self) -> impl Iterator<Item = &Authority> {
        self.endpoints.iter().filter_map(Uri::authority)
    }

    fn is_https(&self) -> bool {
        self.endpoints.first().and_then(Uri::scheme) == Some(&Scheme::HTTPS)
    }
}

/// Which HTTP version the proxy speaks to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Http2 {
    /// HTTP/2 when the backend's TLS handshake offers it (ALPN), else
    /// HTTP/1.1; plain-text backends get HTTP/1.1.
    Auto,
    /// HTTP/2 only: over TLS via ALPN, in plain text with prior knowledge
    /// (h2c).
    Always,
    /// HTTP/1.1 only.
    Never,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Connection refused, reset or unresolvable before anything was sent.
    #[error("upstream unreachable: {0}")]
    Connect(String),
    /// No connection within the connect timeout; nothing was sent.
    #[error("upstream connect timed out")]
    ConnectTimeout,
    /// No response headers within the response timeout. The request may
    /// have been processed.
    #[error("upstream timed out")]
    Timeout,
    /// The connection failed after the request was (possibly) sent.
    #[error("upstream failed: {0}")]
    Failed(String),
    /// Too many requests at the backend already; nothing was sent.
    #[error("upstream concurrency limit reached")]
    Busy,
}

impl UpstreamError {
    /// Whether the backend may have acted on the request; decides whether a
    /// write still invalidates (a timed-out write may have committed).
    pub fn may_have_reached_upstream(&self) -> bool {
        matches!(self, UpstreamError::Timeout | UpstreamError::Failed(_))
    }
}

/// What the proxy sends upstream.
pub struct Outbound {
    pub method: Method,
    /// Normalised path and query.
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: ProxyBody,
    /// Idempotent and bodiless: safe to send twice.
    pub replayable: bool,
    /// How long the response head may take (each attempt).
    pub response_timeout: Duration,
}

/// The pooled client for one backend and its endpoints. One client for
/// all of them: its pool keeps connections per endpoint already.
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, ProxyBody>,
    scheme: Scheme,
    endpoints: Endpoints,
}

impl Upstream {
    /// `tls`: how to verify an `https://` backend (from
    /// [`crate::tls::backend::BackendTls`], renewed on reload); `None` for
    /// `http://`.
    /// `metrics` gets each endpoint's series.
    pub fn new(settings: &UpstreamSettings, tls: Option<rustls::ClientConfig>, metrics: &Metrics) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(false);
        let connector = https_connector(connector, settings, tls);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            // The timer makes the pool's idle timeout actually fire.
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(settings.pool_idle_timeout)
            .pool_max_idle_per_host(settings.pool_max_idle_per_host)
            .http2_only(settings.http2 == Http2::Always);
        let client = builder.build(connector);
        let endpoints = Endpoints::new(
            settings.authorities().cloned().collect(),
            settings.balance,
            settings.eject_after,
            settings.eject_for,
            metrics,
        );
        Upstream {
            client,
            scheme: if settings.is_https() {
                Scheme::HTTPS
            } else {
                Scheme::HTTP
            },
            endpoints,
        }
    }

    /// Sends `out` to an endpoint and returns the response head with a
    /// streaming body. A replayable request (idempotent, bodiless) is
    /// tried once more when [`Upstream::retries`] says so; nothing else
    /// is ever sent twice.
    pub async fn send(&self, out: Outbound) -> Result<Response<Incoming>, UpstreamError> {
        let timeout = out.response_timeout;
        let replay = out
            .replayable
            .then(|| (out.method.clone(), out.path_and_query.clone(), out.headers.clone()));
        let first = self.endpoints.pick(None);
        let failure = match self
            .attempt(first, out.method, &out.path_and_query, out.headers, out.body, timeout)
            .await
        {
            Ok(response) => return Ok(response),
            Err(failure) => failure,
        };
        let Some((method, path, headers)) = replay.filter(|_| self.retries(&failure)) else {
            return Err(failure.into_error());
        };
        let second = self.endpoints.pick(Some(first));
        tracing::debug!(
            failed = %self.endpoints.get(first).authority,
            retry = %self.endpoints.get(second).authority,
            reason = failure.describe(),
            "retrying a replayable request once"
        );
        let body = Empty::new().map_err(|e| match e {}).boxed();
        self.attempt(second, method, &path, headers, body, timeout)
            .await
            .map_err(Attempt::into_error)
    }

    /// Whether a replayable request that failed so is tried once more:
    /// when its pooled connection closed before a response byte (the
    /// backend closed or reset it as it was reused, or went away), on
    /// another endpoint if there is one, else on the same; when it could
    /// not connect (nothing was sent), on another endpoint only. Never
    /// after a response timeout: the backend may still be working on it,
    /// and a second wait would double the client's.
    fn retries(&self, failure: &Attempt) -> bool {
        match failure {
            Attempt::Closed(_) => true,
            Attempt::Other(UpstreamError::Connect(_) | UpstreamError::ConnectTimeout) => self.endpoints.len() > 1,
            Attempt::Other(_) | Attempt::TimedOut => false,
        }
    }

    /// One attempt at endpoint `index`, counted as outstanding there until
    /// its response headers, and recorded for its health.
    async fn attempt(
        &self,
        index: usize,
        method: Method,
        path: &str,
        headers: HeaderMap,
        body: ProxyBody,
        timeout: Duration,
    ) -> Result<Response<Incoming>, Attempt> {
        let request = self
            .request(self.endpoints.get(index), method, path, headers, body)
            .map_err(Attempt::Other)?;
        let _in_flight = self.endpoints.start(index);
        let result = match tokio::time::timeout(timeout, self.client.request(request)).await {
            Err(_) => Err(Attempt::TimedOut),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(classify(e)),
        };
        let outcome = match &result {
            Ok(_) => Outcome::Ok,
            Err(Attempt::TimedOut) => Outcome::Timeout,
            Err(Attempt::Other(UpstreamError::Connect(_))) => Outcome::ConnectError,
            Err(Attempt::Other(UpstreamError::ConnectTimeout)) => Outcome::ConnectTimeout,
            Err(Attempt::Closed(_) | Attempt::Other(_)) => Outcome::Error,
        };
        self.endpoints.record(index, outcome);
        result
    }

    /// The request for `endpoint`, with its `Host`: the endpoint's own
    /// authority, not the client's.
    fn request(
        &self,
        endpoint: &Endpoint,
        method: Method,
        path: &str,
        mut headers: HeaderMap,
        body: ProxyBody,
    ) -> Result<Request<ProxyBody>, UpstreamError> {
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(endpoint.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|e| UpstreamError::Failed(format!("building the upstream URI: {e}")))?;
        headers.insert(HOST, endpoint.host.clone());
        let mut request = Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        Ok(request)
    }
}

/// TLS for an `https://` backend, offering the HTTP versions
/// `settings.http2` allows by ALPN; plain connections pass through.
fn https_connector(
    connector: HttpConnector,
    settings: &UpstreamSettings,
    tls: Option<rustls::ClientConfig>,
) -> HttpsConnector<HttpConnector> {
    // A plain-text backend never uses the TLS half; it still needs one.
    let tls = tls.unwrap_or_else(|| {
        rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
    });
    let builder = HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http();
    let server_name = settings.tls.as_ref().and_then(|t| t.server_name.clone());
    let builder = match server_name.map(rustls_pki_types::ServerName::try_from) {
        Some(Ok(name)) => builder.with_server_name_resolver(FixedServerNameResolver::new(name)),
        _ => builder,
    };
    match settings.http2 {
        Http2::Never => builder.enable_http1().wrap_connector(connector),
        Http2::Auto => builder.enable_all_versions().wrap_connector(connector),
        Http2::Always => builder.enable_http2().wrap_connector(connector),
    }
}

/// One attempt's failure, before deciding whether to retry.
enum Attempt {
    TimedOut,
    /// Connection closed before a response byte: retryable if replayable.
    Closed(String),
    Other(UpstreamError),
}

impl Attempt {
    fn describe(&self) -> &'static str {
        match self {
            Attempt::TimedOut => "timed out",
            Attempt::Closed(_) => "connection closed before answering",
            Attempt::Other(UpstreamError::Connect(_)) => "could not connect",
            Attempt::Other(UpstreamError::ConnectTimeout) => "connect timed out",
            Attempt::Other(_) => "failed",
        }
    }

    fn into_error(self) -> UpstreamError {
        match self {
            Attempt::TimedOut => UpstreamError::Timeout,
            Attempt::Closed(msg) => UpstreamError::Failed(msg),
            Attempt::Other(e) => e,
        }
    }
}

fn classify(err: hyper_util::client::legacy::Error) -> Attempt {
    let message = error_chain(&err);
    if err.is_connect() {
        let timed_out = source_chain(&err).any(|e| {
            e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        });
        return Attempt::Other(if timed_out {
            UpstreamError::ConnectTimeout
        } else {
            UpstreamError::Connect(message)
        });
    }
    // Closed before a response byte: ended (incomplete message), dropped
    // before sending (canceled), or reset under the request (a backend
    // closing a connection with the request unread resets it).
    let closed = source_chain(&err).any(|e| {
        e.downcast_ref::<hyper::Error>()
            .is_some_and(|h| h.is_incomplete_message() || h.is_canceled())
            || e.downcast_ref::<std::io::Error>().is_some_and(|io| {
                matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::BrokenPipe
                )
            })
    });
    if closed {
        return Attempt::Closed(message);
    }
    Attempt::Other(UpstreamError::Failed(message))
}

/// The errors below `err`, nearest first.
fn source_chain<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(err.source(), |e| e.source())
}
