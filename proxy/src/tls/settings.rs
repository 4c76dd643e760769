//! What `[tls]`, `[admin_tls]` and `upstream.*` say about TLS.

use std::path::PathBuf;

/// A certificate chain and its private key, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    /// The leaf first, then intermediates.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// A certificate chosen when the client's SNI names one of `server_names`
/// (exact, or `*.example.com` for one label).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedCertificate {
    pub files: CertificateFiles,
    pub server_names: Vec<String>,
}

/// Whether a listener asks for client certificates, and what it does
/// without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// The handshake fails without a certificate signed by the CA.
    Required,
    /// A certificate is verified if sent; connections without one are served.
    Optional,
}

/// One listener's TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// Served when SNI is absent or names no `certificates` entry;
    /// `None`: the first of `certificates`.
    pub default: Option<CertificateFiles>,
    pub certificates: Vec<NamedCertificate>,
    /// Verify client certificates against these CAs.
    pub client_ca_file: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

/// TLS to the backend (an `https://` upstream), as the connection pool
/// is built with it: a boot setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// The name the backend's certificate must carry (and SNI sends);
    /// `None`: the upstream URL's host.
    pub server_name: Option<String>,
}

/// The files TLS to the backend reads: runtime settings, renewed on
/// reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendTlsFiles {
    /// Trust only these CAs; `None`: the Mozilla roots built in.
    pub ca_file: Option<PathBuf>,
    /// A client certificate for mutual TLS to the backend.
    pub client_certificate: Option<CertificateFiles>,
}
