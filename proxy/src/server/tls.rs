//! The TLS handshake of an accepted connection, bounded in time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::metrics::Metrics;

/// Asked once per accepted connection: the TLS configuration for its
/// handshake, or `None` to serve plain text. Reads the snapshot of the
/// moment, so a reload's certificates apply to the next handshake.
pub type TlsSource = Arc<dyn Fn() -> Option<Arc<ServerConfig>> + Send + Sync>;

/// Completes the handshake within `limit`, or closes the connection:
/// a client that connects and sends nothing, or half a ClientHello, holds
/// a slot no longer than a plain one that sends half a request head.
/// Failures are the client's (wrong name, no client certificate, a port
/// scanner): logged at debug and counted, not warned about.
pub async fn handshake<S>(
    config: Arc<ServerConfig>,
    io: S,
    limit: Duration,
    peer: SocketAddr,
    metrics: &Metrics,
) -> Option<TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(limit, TlsAcceptor::from(config).accept(io)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(err)) => {
            metrics.connection_closed("tls_handshake");
            tracing::debug!(%peer, error = %err, "TLS handshake failed");
            None
        }
        Err(_) => {
            metrics.connection_closed("tls_handshake_timeout");
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}
