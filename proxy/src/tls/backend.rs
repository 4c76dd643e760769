//! TLS to the backend, renewed on reload: the CAs its certificate must
//! chain to (`upstream.ca_file`) and the client certificate the proxy
//! presents (`upstream.client_cert_file`).
//!
//! The connection pool, and the rustls configuration inside it, live as
//! long as the process; what they verify with and present is looked up
//! here at each handshake, so a reload (or a renewed file with `--watch`)
//! applies to the next connection to the backend, with short-lived
//! client certificates (SPIFFE-style, hours) in mind. Pooled connections
//! keep the session they have.

use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use super::client::roots;
use super::settings::BackendTlsFiles;
use super::{pem, provider};
use crate::problem::Problem;

/// What one version of the settings verifies with and presents.
pub struct Material {
    verifier: Arc<WebPkiServerVerifier>,
    certificate: Option<Arc<CertifiedKey>>,
}

impl Material {
    /// Reads the files; a CA or certificate that cannot be used is named
    /// by its field.
    pub async fn load(files: &BackendTlsFiles) -> Result<Material, Problem> {
        let roots = roots("upstream", files.ca_file.as_deref()).await?;
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| Problem::new("upstream.ca_file", e.to_string()))?;
        let certificate = match &files.client_certificate {
            Some(pair) => {
                let fields = ("upstream.client_cert_file", "upstream.client_key_file");
                Some(pem::certified_key(pair, fields).await?)
            }
            None => None,
        };
        Ok(Material { verifier, certificate })
    }
}

/// The backend's TLS material of the moment.
pub struct BackendTls {
    verifier: ArcSwap<WebPkiServerVerifier>,
    certificate: ArcSwapOption<CertifiedKey>,
}

impl std::fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendTls")
            .field("client_certificate", &self.certificate.load().is_some())
            .finish_non_exhaustive()
    }
}

impl BackendTls {
    pub fn new(material: Material) -> Arc<BackendTls> {
        Arc::new(BackendTls {
            verifier: ArcSwap::new(material.verifier),
            certificate: ArcSwapOption::new(material.certificate),
        })
    }

    /// Uses `material` from the next handshake on.
    pub fn install(&self, material: Material) {
        self.verifier.store(material.verifier);
        self.certificate.store(material.certificate);
    }

    /// A client configuration that asks this object at every handshake.
    pub fn client_config(self: &Arc<Self>) -> ClientConfig {
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default versions")
            .dangerous()
            .with_custom_certificate_verifier(self.clone())
            .with_client_cert_resolver(self.clone())
    }
}

// Verification is WebPKI's own, against the roots of the moment.
impl ServerCertVerifier for BackendTls {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verifier
            .load()
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier.load().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier.load().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.verifier.load().supported_verify_schemes()
    }
}

impl ResolvesClientCert for BackendTls {
    fn resolve(&self, _root_hint_subjects: &[&[u8]], _sigschemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.certificate.load_full()
    }

    fn has_certs(&self) -> bool {
        self.certificate.load().is_some()
    }
}
