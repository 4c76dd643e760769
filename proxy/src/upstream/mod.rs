//! The upstream side (DESIGN.md steps 4 and 6): request shaping
//! ([`headers`]) and the pooled client, with its timeouts and the single
//! retry of an idempotent request whose pooled connection closed before
//! answering.

mod headers;

use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderMap;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Method, Request, Response, Uri};
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
use crate::tls::UpstreamTls;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every body the proxy sends or returns: streamed or buffered, boxed once.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// How to reach the backend: boot settings, as the connection pool is
/// built from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSettings {
    /// `http://host:port` or `https://host:port`, no path.
    pub base: Uri,
    /// Set for an `https://` base.
    pub tls: Option<UpstreamTls>,
    pub http2: Http2,
    pub connect_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    /// Requests at the backend at once, all rules together; 0: no limit.
    pub max_concurrent_requests: usize,
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

/// The pooled client for one backend.
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, ProxyBody>,
    scheme: Scheme,
    authority: Authority,
    host: HeaderValue,
}

impl Upstream {
    /// `tls`: how to verify an `https://` backend (from
    /// [`crate::tls::client::client_config`]); `None` for `http://`.
    pub fn new(settings: &UpstreamSettings, tls: Option<rustls::ClientConfig>) -> Upstream {
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
        let authority = settings
            .base
            .authority()
            .expect("validated upstream has an authority")
            .clone();
        let https = settings.base.scheme() == Some(&Scheme::HTTPS);
        Upstream {
            client,
            scheme: if https { Scheme::HTTPS } else { Scheme::HTTP },
            host: HeaderValue::from_str(authority.as_str()).expect("an authority is a valid header value"),
            authority,
        }
    }

    /// The `Host` the backend sees: its own authority, not the client's,
    /// so virtual hosting on the backend works and clients cannot steer it.
    pub fn host(&self) -> &HeaderValue {
        &self.host
    }

    /// Sends `out` and returns the response head with a streaming body.
    /// Retries once when a replayable request's pooled connection closed
    /// before any response byte (the backend closed an idle connection as
    /// we reused it).
    pub async fn send(&self, out: Outbound) -> Result<Response<Incoming>, UpstreamError> {
        let timeout = out.response_timeout;
        let retry = out
            .replayable
            .then(|| (out.method.clone(), out.path_and_query.clone(), out.headers.clone()));
        let first = self.request(out.method, &out.path_and_query, out.headers, out.body)?;
        match self.timed(first, timeout).await {
            Err(Attempt::Closed(_)) if retry.is_some() => {
                let (method, path, headers) = retry.expect("checked");
                tracing::debug!("pooled upstream connection closed early; retrying once");
                let body = Empty::new().map_err(|e| match e {}).boxed();
                let second = self.request(method, &path, headers, body)?;
                self.timed(second, timeout).await.map_err(Attempt::into_error)
            }
            other => other.map_err(Attempt::into_error),
        }
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        headers: HeaderMap,
        body: ProxyBody,
    ) -> Result<Request<ProxyBody>, UpstreamError> {
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|e| UpstreamError::Failed(format!("building the upstream URI: {e}")))?;
        let mut request = Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        Ok(request)
    }

    async fn timed(&self, request: Request<ProxyBody>, timeout: Duration) -> Result<Response<Incoming>, Attempt> {
        match tokio::time::timeout(timeout, self.client.request(request)).await {
            Err(_) => Err(Attempt::TimedOut),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(classify(e)),
        }
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
    for e in source_chain(&err) {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() {
                return Attempt::Closed(message);
            }
        }
    }
    Attempt::Other(UpstreamError::Failed(message))
}

/// The errors below `err`, nearest first.
fn source_chain<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(err.source(), |e| e.source())
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}
