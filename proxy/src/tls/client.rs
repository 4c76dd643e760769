//! The client side: how the proxy verifies a server it calls (the backend,
//! a JWKS endpoint) and what it presents to it.
//!
//! Roots: the Mozilla set built into the binary (webpki-roots), not the
//! system store. The proxy then trusts the same CAs on every host and in
//! every container image, including distroless ones with no CA bundle,
//! and an image update cannot silently widen what it trusts. A backend
//! behind a private CA names it with `ca_file`, which then is the only
//! root trusted: the usual case for a backend on an internal network.

use std::path::Path;

use rustls::{ClientConfig, RootCertStore};

use super::{pem, provider};
use crate::problem::Problem;

/// The CAs in `ca_file` alone, or the built-in roots.
pub async fn roots(section: &str, ca_file: Option<&Path>) -> Result<RootCertStore, Problem> {
    Ok(match ca_file {
        Some(path) => pem::roots(&format!("{section}.ca_file"), path).await?,
        None => RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    })
}

/// Verifies servers against `ca_file` alone, or the built-in roots, and
/// presents no certificate (a JWKS endpoint; the backend's configuration,
/// renewed on reload, is [`super::backend::BackendTls`]).
pub async fn client_config(section: &str, ca_file: Option<&Path>) -> Result<ClientConfig, Problem> {
    let roots = roots(section, ca_file).await?;
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Problem::new(section, e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
