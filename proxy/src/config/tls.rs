//! `[tls]` and `[admin_tls]`: a listener's certificates and client
//! certificates. Files are named here and read when the settings are put
//! to use (`tls::server::ServerTls::load`).

use std::path::{Path, PathBuf};

use super::errors::Problems;
use super::raw::{RawNamedCertificate, RawTls};
use crate::tls::server::is_valid_server_name;
use crate::tls::{CertificateFiles, ClientAuth, NamedCertificate, TlsSettings};

pub(super) fn listener_tls(
    p: &mut Problems,
    section: &str,
    raw: Option<RawTls>,
    base_dir: &Path,
) -> Option<TlsSettings> {
    let raw = raw?;
    let given = raw.cert_file.is_some() || raw.key_file.is_some() || !raw.certificates.is_empty();
    let default = certificate_files(
        p,
        (format!("{section}.cert_file"), raw.cert_file),
        (format!("{section}.key_file"), raw.key_file),
        base_dir,
    );
    let certificates: Vec<NamedCertificate> = raw
        .certificates
        .into_iter()
        .enumerate()
        .filter_map(|(i, named)| named_certificate(p, &format!("{section}.certificates[{i}]"), named, base_dir))
        .collect();
    if !given {
        p.add(
            format!("{section}.cert_file"),
            "is required (or at least one [[tls.certificates]] with server_names)",
        );
    }
    let client_auth = match raw.client_auth.as_deref() {
        None | Some("required") => Some(ClientAuth::Required),
        Some("optional") => Some(ClientAuth::Optional),
        Some(other) => {
            p.add(
                format!("{section}.client_auth"),
                format!("{other:?} is not \"required\" or \"optional\""),
            );
            None
        }
    };
    if raw.client_auth.is_some() && client_auth.is_some() && raw.client_ca_file.is_none() {
        p.add(
            format!("{section}.client_auth"),
            "needs client_ca_file: the CAs client certificates are verified against",
        );
    }
    Some(TlsSettings {
        default,
        certificates,
        client_ca_file: raw.client_ca_file.map(|path| base_dir.join(path)),
        client_auth: client_auth.unwrap_or(ClientAuth::Required),
    })
}

fn named_certificate(
    p: &mut Problems,
    field: &str,
    raw: RawNamedCertificate,
    base_dir: &Path,
) -> Option<NamedCertificate> {
    if raw.server_names.is_empty() {
        p.add(format!("{field}.server_names"), "must name at least one server name");
    }
    for name in &raw.server_names {
        if !is_valid_server_name(name) {
            p.add(
                format!("{field}.server_names"),
                format!("{name:?} is not a DNS name (or *. and one)"),
            );
        }
    }
    if raw.cert_file.is_none() && raw.key_file.is_none() {
        p.add(format!("{field}.cert_file"), "and key_file are required");
    }
    let files = certificate_files(
        p,
        (format!("{field}.cert_file"), raw.cert_file),
        (format!("{field}.key_file"), raw.key_file),
        base_dir,
    );
    Some(NamedCertificate {
        files: files?,
        server_names: raw.server_names,
    })
}

/// Both files (each with its field name), or neither; one alone is an error.
pub(super) fn certificate_files(
    p: &mut Problems,
    (cert_field, cert_file): (String, Option<PathBuf>),
    (key_field, key_file): (String, Option<PathBuf>),
    base_dir: &Path,
) -> Option<CertificateFiles> {
    match (cert_file, key_file) {
        (Some(cert), Some(key)) => Some(CertificateFiles {
            cert_file: base_dir.join(cert),
            key_file: base_dir.join(key),
        }),
        (Some(_), None) => {
            p.add(key_field, format!("is required with {cert_field}"));
            None
        }
        (None, Some(_)) => {
            p.add(cert_field, format!("is required with {key_field}"));
            None
        }
        (None, None) => None,
    }
}
