//! TLS with rustls and its ring provider: the listeners' server side
//! ([`server`]: certificates by SNI, client certificates, resumption) and
//! the backend's client side ([`client`]). Certificates and keys are
//! runtime settings: each snapshot builds its own configurations, so a
//! reload, or a certificate renewed on disk, takes effect for the next
//! handshake while open connections keep the session they have.

pub mod backend;
pub mod client;
mod pem;
pub mod server;
mod settings;

use std::sync::{Arc, LazyLock};

use rustls::crypto::CryptoProvider;

pub use self::settings::{BackendTlsFiles, CertificateFiles, ClientAuth, NamedCertificate, TlsSettings, UpstreamTls};

/// The one crypto provider, chosen explicitly rather than installed as the
/// process default: ring, already in the tree, with rustls' safe defaults
/// (TLS 1.2 and 1.3, forward-secret AEAD suites only).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: LazyLock<Arc<CryptoProvider>> =
        LazyLock::new(|| Arc::new(rustls::crypto::ring::default_provider()));
    PROVIDER.clone()
}
