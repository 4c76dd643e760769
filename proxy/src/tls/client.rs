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

use super::settings::CertificateFiles;
use super::{pem, provider, LoadError};

/// The CAs in `ca_file` alone, or the built-in roots.
pub async fn roots(section: &str, ca_file: Option<&Path>) -> Result<RootCertStore, LoadError> {
    Ok(match ca_file {
        Some(path) => pem::roots(&format!("{section}.ca_file"), path).await?,
        None => RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    })
}

/// Verifies servers against `ca_file` alone, or the built-in roots;
/// presents `client_certificate` when the server asks for one.
pub async fn client_config(
    section: &str,
    ca_file: Option<&Path>,
    client_certificate: Option<&CertificateFiles>,
) -> Result<ClientConfig, LoadError> {
    let roots = roots(section, ca_file).await?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| LoadError::new(section, e.to_string()))?
        .with_root_certificates(roots);
    match client_certificate {
        Some(files) => {
            let cert_field = format!("{section}.client_cert_file");
            let key_field = format!("{section}.client_key_file");
            let chain = pem::certificates(&cert_field, &files.cert_file).await?;
            let key = pem::private_key(&key_field, &files.key_file).await?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| LoadError::new(key_field, format!("cannot be used with the client certificate: {e}")))
        }
        None => Ok(builder.with_no_client_auth()),
    }
}
