//! The raw layer: mirrors `config.toml` field for field; unknown fields are
//! errors.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::errors::{ConfigError, ConfigErrors};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub upstream: RawUpstream,
    #[serde(default)]
    pub cache: RawCache,
    #[serde(default)]
    pub jwt: RawJwt,
    #[serde(default)]
    pub identity: RawIdentity,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub revocation: RawRevocation,
    /// TLS on the client listener.
    pub tls: Option<RawTls>,
    /// TLS on the admin listener.
    pub admin_tls: Option<RawTls>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    #[serde(default, with = "humantime_serde")]
    pub header_read_timeout: Option<Duration>,
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub body_read_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub write_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub max_connection_age: Option<Duration>,
    pub max_request_body_bytes: Option<u64>,
    #[serde(default, with = "humantime_serde")]
    pub shutdown_grace: Option<Duration>,
    pub trusted_proxies: Option<Vec<String>>,
    pub client_ip_header: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub url: Option<String>,
    pub urls: Option<Vec<String>>,
    pub balance: Option<String>,
    pub eject_after: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    pub eject_for: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub response_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub pool_idle_timeout: Option<Duration>,
    pub pool_max_idle_per_host: Option<usize>,
    pub max_concurrent_requests: Option<usize>,
    pub ca_file: Option<PathBuf>,
    pub server_name: Option<String>,
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    pub http2: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub certificates: Vec<RawNamedCertificate>,
    pub client_ca_file: Option<PathBuf>,
    pub client_auth: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNamedCertificate {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub server_names: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub redis_url: Option<String>,
    pub redis_cluster: Option<Vec<String>>,
    pub redis_buckets: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    pub default_ttl: Option<Duration>,
    pub max_entry_bytes: Option<u64>,
    pub max_key_bytes: Option<u64>,
    #[serde(default, with = "humantime_serde")]
    pub max_stale: Option<Duration>,
    pub memory_max_bytes: Option<u64>,
    pub l1_max_bytes: Option<u64>,
    #[serde(default, with = "humantime_serde")]
    pub operation_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub invalidation_wait: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub revalidation_retention: Option<Duration>,
    pub breaker_failures: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    pub breaker_open_for: Option<Duration>,
    pub key_prefix: Option<String>,
    pub namespace: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub lease_ttl: Option<Duration>,
    pub surrogate_key_header: Option<String>,
    pub revoke_header: Option<String>,
    pub revoke_jti_header: Option<String>,
    pub forward_headers: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    pub algorithm: Option<String>,
    pub algorithms: Option<Vec<String>>,
    pub public_key_file: Option<PathBuf>,
    pub jwks_file: Option<PathBuf>,
    pub jwks_url: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub previous_secret_file: Option<PathBuf>,
    pub discovery: Option<bool>,
    pub jwks_ca_file: Option<PathBuf>,
    #[serde(default, with = "humantime_serde")]
    pub jwks_min_refresh: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub jwks_max_refresh: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub jwks_refetch_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub jwks_max_stale: Option<Duration>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub leeway: Option<Duration>,
    pub role_claim: Option<String>,
    /// Several issuers, each a table of the fields above.
    #[serde(default)]
    pub issuers: Vec<RawJwt>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub access: Option<bool>,
    pub access_sample: Option<f64>,
    pub hash_subjects: Option<bool>,
    pub redact_query: Option<Vec<String>>,
    pub request_id_header: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    pub subject_header: Option<String>,
    pub role_header: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Option<String>,
    pub path: Option<String>,
    pub methods: Option<Vec<String>>,
    pub access: Option<String>,
    pub roles: Option<Vec<String>>,
    pub cache: Option<RawRouteCache>,
    pub invalidates: Option<Vec<String>>,
    pub forward_headers: Option<Vec<String>>,
    #[serde(default)]
    pub allow_encoded_separators: bool,
    pub max_concurrent_requests: Option<usize>,
    pub limits: Option<Vec<RawLimit>>,
}

/// One rate limit: `{ key = "subject", rate = "10/s", burst = 5 }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimit {
    pub key: Option<String>,
    pub rate: Option<String>,
    pub burst: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub instances: Option<u32>,
    pub default: Option<Vec<RawLimit>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRevocation {
    pub check: Option<bool>,
    pub when_unavailable: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteCache {
    pub scope: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub ttl: Option<Duration>,
    pub statuses: Option<Vec<u16>>,
    pub vary: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
    #[serde(default, with = "humantime_serde")]
    pub stale_while_revalidate: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub stale_if_error: Option<Duration>,
    pub freshness: Option<String>,
    pub honour_request_directives: Option<bool>,
    pub targeted_cache_control: Option<String>,
}

impl RawConfig {
    /// Parses TOML; syntax errors and unknown fields are reported with
    /// their location.
    pub fn parse(text: &str) -> Result<RawConfig, ConfigErrors> {
        toml::from_str(text).map_err(|e| ConfigErrors(vec![ConfigError::new("config.toml", e.to_string())]))
    }
}
