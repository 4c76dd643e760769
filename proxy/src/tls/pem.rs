//! PEM files into DER, with errors that name the field and the file.

use std::path::Path;

use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::provider;
use super::settings::CertificateFiles;
use crate::problem::Problem;

async fn read(field: &str, path: &Path) -> Result<Vec<u8>, Problem> {
    tokio::fs::read(path)
        .await
        .map_err(|e| Problem::new(field, format!("cannot read {}: {e}", path.display())))
}

/// Every certificate in the file, in order (a chain: the leaf first).
pub async fn certificates(field: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, Problem> {
    let pem = read(field, path).await?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Problem::new(field, format!("{}: not a PEM certificate file: {e}", path.display())))?;
    if chain.is_empty() {
        return Err(Problem::new(field, format!("{}: no certificate in it", path.display())));
    }
    Ok(chain)
}

/// The first private key in the file (PKCS#8, PKCS#1 or SEC1).
pub async fn private_key(field: &str, path: &Path) -> Result<PrivateKeyDer<'static>, Problem> {
    let pem = read(field, path).await?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| Problem::new(field, format!("{}: no usable PEM private key: {e}", path.display())))
}

/// A store of the CA certificates in the file.
pub async fn roots(field: &str, path: &Path) -> Result<RootCertStore, Problem> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(field, path).await? {
        roots
            .add(cert)
            .map_err(|e| Problem::new(field, format!("{}: not a usable CA certificate: {e}", path.display())))?;
    }
    Ok(roots)
}

/// A certificate chain and its private key, checked to belong together;
/// errors name `cert_field` or `key_field`.
pub async fn certified_key(
    files: &CertificateFiles,
    (cert_field, key_field): (&str, &str),
) -> Result<Arc<CertifiedKey>, Problem> {
    let chain = certificates(cert_field, &files.cert_file).await?;
    let key = private_key(key_field, &files.key_file).await?;
    let certified = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
        Problem::new(
            key_field,
            format!(
                "{} cannot be used with {}: {e}",
                files.key_file.display(),
                files.cert_file.display()
            ),
        )
    })?;
    Ok(Arc::new(certified))
}
