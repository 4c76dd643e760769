//! A listener's rustls configuration: the certificate for each SNI name,
//! optional client-certificate verification, ALPN `h2` and `http/1.1`,
//! and session resumption that survives a reload.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ProducesTickets, ResolvesServerCert, StoresServerSessions, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::DnsName;

use super::settings::{CertificateFiles, ClientAuth, TlsSettings};
use super::{pem, provider};
use crate::problem::Problem;

/// Sessions a listener remembers for TLS 1.2 resumption.
const SESSION_CACHE_SIZE: usize = 4096;

/// Resumption state, made once per listener and lent to every
/// configuration built after it: a reload must not make every client do a
/// full handshake again.
#[derive(Clone)]
pub struct Resumption {
    sessions: Arc<dyn StoresServerSessions>,
    /// Stateless TLS 1.3 tickets, keys rotated by rustls every few hours.
    ticketer: Arc<dyn ProducesTickets>,
}

impl std::fmt::Debug for Resumption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resumption")
    }
}

impl Resumption {
    pub fn new() -> Result<Resumption, Problem> {
        let ticketer = rustls::crypto::ring::Ticketer::new()
            .map_err(|e| Problem::new("tls", format!("cannot make a session ticket key: {e}")))?;
        Ok(Resumption {
            sessions: rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_SIZE),
            ticketer,
        })
    }
}

/// A listener's TLS, put to use.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    resumption: Resumption,
}

impl ServerTls {
    /// Reads every certificate, key and CA file `settings` names (under
    /// config section `section`) and checks each key matches its
    /// certificate. `previous`: the same listener's TLS before a reload,
    /// whose resumption state carries over.
    pub async fn load(
        section: &str,
        settings: &TlsSettings,
        previous: Option<&ServerTls>,
    ) -> Result<ServerTls, Problem> {
        let mut by_name = HashMap::new();
        let mut default = match &settings.default {
            Some(files) => Some(certified_key(section, files).await?),
            None => None,
        };
        for (i, named) in settings.certificates.iter().enumerate() {
            let field = format!("{section}.certificates[{i}]");
            let key = certified_key(&field, &named.files).await?;
            for name in &named.server_names {
                if by_name.insert(name.to_ascii_lowercase(), key.clone()).is_some() {
                    return Err(Problem::new(
                        format!("{field}.server_names"),
                        format!("{name:?} is named by another certificate too"),
                    ));
                }
            }
            default.get_or_insert(key);
        }
        let Some(default) = default else {
            return Err(Problem::new(
                format!("{section}.cert_file"),
                "is required (or at least one [[tls.certificates]])",
            ));
        };
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Problem::new(section, e.to_string()))?;
        let builder = match &settings.client_ca_file {
            Some(path) => {
                let field = format!("{section}.client_ca_file");
                let roots = Arc::new(pem::roots(&field, path).await?);
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
                let verifier = match settings.client_auth {
                    ClientAuth::Required => verifier,
                    ClientAuth::Optional => verifier.allow_unauthenticated(),
                };
                let verifier = verifier.build().map_err(|e| Problem::new(field, e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(ByServerName { by_name, default }));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let resumption = match previous {
            Some(previous) => previous.resumption.clone(),
            None => Resumption::new()?,
        };
        config.session_storage = resumption.sessions.clone();
        config.ticketer = resumption.ticketer.clone();
        Ok(ServerTls {
            config: Arc::new(config),
            resumption,
        })
    }
}

/// The certificate pair of a `[tls]` section (or one of its
/// `certificates`), named by its fields.
async fn certified_key(section: &str, files: &CertificateFiles) -> Result<Arc<CertifiedKey>, Problem> {
    let fields = (format!("{section}.cert_file"), format!("{section}.key_file"));
    pem::certified_key(files, (&fields.0, &fields.1)).await
}

/// Whether `name` may be listed in `server_names`: a DNS name, or `*.`
/// and one.
pub fn is_valid_server_name(name: &str) -> bool {
    let bare = name.strip_prefix("*.").unwrap_or(name);
    !bare.contains('*') && DnsName::try_from(bare).is_ok()
}

/// Picks the certificate for a client's SNI: an exact name, then a
/// wildcard for its parent, then the default (which also answers clients
/// that send no SNI, such as those connecting by IP address).
#[derive(Debug)]
struct ByServerName {
    /// Lower-case names, wildcards as written (`*.example.com`).
    by_name: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for ByServerName {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return Some(self.default.clone());
        };
        let name = name.to_ascii_lowercase();
        let wildcard = || {
            let (_, parent) = name.split_once('.')?;
            self.by_name.get(&format!("*.{parent}"))
        };
        let chosen = self.by_name.get(&name).or_else(wildcard).unwrap_or(&self.default);
        Some(chosen.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_are_dns_names_or_one_label_wildcards() {
        for ok in ["api.example.com", "*.example.com", "localhost"] {
            assert!(is_valid_server_name(ok), "{ok}");
        }
        for bad in [
            "",
            "*",
            "a.*.example.com",
            "*.*.example.com",
            "exa mple.com",
            "api.example.com/",
        ] {
            assert!(!is_valid_server_name(bad), "{bad}");
        }
    }
}
