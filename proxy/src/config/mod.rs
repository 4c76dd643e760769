//! Configuration: `config.toml`, `.env`, environment and CLI, validated.
//!
//! Two layers. [`RawConfig`] mirrors the file field for field (unknown
//! fields are errors). [`Config::build`] merges overrides (CLI >
//! environment > file), checks every field, compiles route patterns, and
//! reports *every* problem at once, each naming its field path
//! (`routes[3].roles`). It reads no file and builds no service: the
//! settings it produces belong to the parts that use them (the server's,
//! the upstream's, the cache store's, the runtime rules), and the assembly
//! in `lib.rs` puts them to use. Only that assembly and `main.rs` import
//! this module.
//!
//! - `raw`: the TOML layer; `overrides`: environment and CLI;
//! - `sections`, `routes`, `fields`: validation, by section;
//! - `boot`: which changes a reload refuses ([`boot_changes`]);
//! - `file`: the file (and `.env`) read at start and on every reload
//!   ([`ConfigFile`], [`FileSource`]).

mod boot;
mod defaults;
mod errors;
mod fields;
mod file;
mod guard;
mod jwt;
mod log;
mod overrides;
mod raw;
mod routes;
mod sections;
#[cfg(test)]
mod tests;
mod tls;

use std::path::Path;
use std::sync::Arc;

pub use self::boot::boot_changes;
pub use self::defaults::*;
use self::errors::Problems;
pub use self::errors::{ConfigError, ConfigErrors};
use self::fields::{at_least_one, header_name, header_names, positive, socket_addr};
pub use self::file::{ConfigFile, FileSource};
pub use self::overrides::{Env, Overrides, ProcessEnv};
pub use self::raw::*;
pub use crate::boot::BootSettings;
use crate::route::RuleSet;
pub use crate::runtime::{ListenerTls, RuntimeSettings};
pub use crate::secret::Secret;
use crate::server::ServerSettings;
use crate::upstream::IdentitySettings;

/// Every setting, validated, in the two halves the proxy uses them in.
#[derive(Debug)]
pub struct Config {
    /// Fixed for the process's life.
    pub boot: BootSettings,
    /// Swapped whole on reload.
    pub runtime: RuntimeSettings,
    /// Names these settings (a hash of the parsed file and the non-secret
    /// overrides): equal on every instance given the same file, unchanged
    /// by comments and formatting.
    pub version: Arc<str>,
}

impl Config {
    /// Parses `text`, applies `overrides` and validates. Relative key paths
    /// are resolved against `base_dir` (the config file's folder).
    pub fn load(text: &str, overrides: Overrides, base_dir: &Path) -> Result<Config, ConfigErrors> {
        Config::build(RawConfig::parse(text)?, overrides, base_dir)
    }

    pub fn build(raw: RawConfig, overrides: Overrides, base_dir: &Path) -> Result<Config, ConfigErrors> {
        let version = version_of(&raw, &overrides);
        let mut p = Problems::default();

        let listen = socket_addr(&mut p, "listen", overrides.listen.or(raw.listen), DEFAULT_LISTEN);
        let admin_listen = socket_addr(
            &mut p,
            "admin_listen",
            overrides.admin_listen.or(raw.admin_listen),
            DEFAULT_ADMIN_LISTEN,
        );
        // Port 0 (any free port, as tests use) never collides.
        if listen.is_some() && listen == admin_listen && listen.is_some_and(|a| a.port() != 0) {
            p.add(
                "admin_listen",
                "must differ from listen: the admin endpoints must not be exposed to clients",
            );
        }

        let server = ServerSettings {
            header_read_timeout: positive(
                &mut p,
                "server.header_read_timeout",
                raw.server.header_read_timeout,
                DEFAULT_HEADER_READ_TIMEOUT,
            ),
            max_connections: at_least_one(
                &mut p,
                "server.max_connections",
                raw.server.max_connections,
                DEFAULT_MAX_CONNECTIONS,
            )
            // The drain at shutdown waits for every permit at once.
            .min(u32::MAX as usize),
            max_connections_per_ip: raw
                .server
                .max_connections_per_ip
                .unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_IP),
            idle_timeout: positive(
                &mut p,
                "server.idle_timeout",
                raw.server.idle_timeout,
                DEFAULT_IDLE_TIMEOUT,
            ),
            body_read_timeout: positive(
                &mut p,
                "server.body_read_timeout",
                raw.server.body_read_timeout,
                DEFAULT_BODY_READ_TIMEOUT,
            ),
            write_timeout: positive(
                &mut p,
                "server.write_timeout",
                raw.server.write_timeout,
                DEFAULT_WRITE_TIMEOUT,
            ),
            max_connection_age: raw.server.max_connection_age.filter(|age| !age.is_zero()),
            max_request_body_bytes: raw
                .server
                .max_request_body_bytes
                .unwrap_or(DEFAULT_MAX_REQUEST_BODY_BYTES),
            shutdown_grace: raw.server.shutdown_grace.unwrap_or(DEFAULT_SHUTDOWN_GRACE),
            client_ip: guard::client_ip(&mut p, &raw.server),
        };

        let response_timeout = positive(
            &mut p,
            "upstream.response_timeout",
            raw.upstream.response_timeout,
            DEFAULT_RESPONSE_TIMEOUT,
        );
        let (upstream, backend_tls) =
            match sections::upstream_settings(&mut p, raw.upstream, overrides.upstream, base_dir) {
                Some((upstream, backend_tls)) => (Some(upstream), backend_tls),
                None => (None, None),
            };
        let store = sections::store_settings(&mut p, &raw.cache, overrides.redis_url, upstream.as_ref());
        let default_ttl = sections::default_ttl(&mut p, &raw.cache, overrides.cache_ttl);
        let cache = sections::cache_limits(&mut p, &raw.cache);
        let identity = IdentitySettings {
            subject_header: header_name(
                &mut p,
                "identity.subject_header",
                raw.identity.subject_header.as_deref().unwrap_or(DEFAULT_SUBJECT_HEADER),
            ),
            role_header: header_name(
                &mut p,
                "identity.role_header",
                raw.identity.role_header.as_deref().unwrap_or(DEFAULT_ROLE_HEADER),
            ),
        };
        let default_forward = header_names(
            &mut p,
            "cache.forward_headers",
            raw.cache.forward_headers.as_deref().unwrap_or_default(),
        );
        let default_limits = guard::limits(
            &mut p,
            "limits.default",
            raw.limits.default.as_deref().unwrap_or_default(),
        );
        let guard = guard::guard_settings(&mut p, &raw.limits, &raw.revocation, &raw.cache);
        let inherited = routes::Inherited {
            default_ttl,
            max_stale: raw.cache.max_stale.unwrap_or(DEFAULT_MAX_STALE),
            forward_headers: &default_forward,
            limits: &default_limits,
            raw_limits: raw.limits.default.as_deref().unwrap_or_default(),
            identity: &identity,
        };
        let rules = routes::rules(&mut p, raw.routes, &inherited);
        routes::proxy_owned_headers(&mut p, &rules, &identity);
        let needs_jwt = rules.iter().any(|r| !r.access.is_public());
        let mut raw_jwt = raw.jwt;
        raw_jwt.issuer = overrides.jwt_issuer.or(raw_jwt.issuer);
        raw_jwt.audience = overrides.jwt_audience.or(raw_jwt.audience);
        let secrets = (overrides.jwt_secret, overrides.jwt_secret_previous);
        let jwt = jwt::jwt_settings(&mut p, &raw_jwt, secrets, base_dir, needs_jwt);
        let tls = ListenerTls {
            clients: tls::listener_tls(&mut p, "tls", raw.tls, base_dir),
            admin: tls::listener_tls(&mut p, "admin_tls", raw.admin_tls, base_dir),
        };
        let admin_token = overrides.admin_token.filter(|t| !t.is_empty());
        let status_token = overrides.status_token.filter(|t| !t.is_empty());
        for (name, token) in [
            ("PROXY_ADMIN_TOKEN", &admin_token),
            ("PROXY_STATUS_TOKEN", &status_token),
        ] {
            if token.as_ref().is_some_and(|t| t.len() < MIN_ADMIN_TOKEN_LEN) {
                p.add(name, format!("must be at least {MIN_ADMIN_TOKEN_LEN} characters"));
            }
        }
        let log = log::log_settings(&mut p, raw.log, overrides.log_hash_key, &identity);

        if !p.0.is_empty() {
            return Err(ConfigErrors(p.0));
        }
        Ok(Config {
            boot: BootSettings {
                listen: listen.expect("checked"),
                admin_listen: admin_listen.expect("checked"),
                server,
                upstream: upstream.expect("checked"),
                store,
            },
            runtime: RuntimeSettings {
                routes: RuleSet::new(rules),
                jwt,
                identity,
                cache,
                response_timeout,
                admin_token: admin_token.map(Secret),
                status_token: status_token.map(Secret),
                log: Arc::new(log),
                guard,
                tls,
                backend_tls,
            },
            version,
        })
    }
}

/// A hash of what the settings were built from, secrets left out (the
/// version is shown on `/metrics`, which needs no credentials).
fn version_of(raw: &RawConfig, overrides: &Overrides) -> Arc<str> {
    use sha2::{Digest, Sha256};
    let public = [
        &overrides.listen,
        &overrides.admin_listen,
        &overrides.upstream,
        &overrides.cache_ttl,
        &overrides.jwt_issuer,
        &overrides.jwt_audience,
    ];
    let digest = Sha256::new()
        .chain_update(format!("{raw:?}"))
        .chain_update(format!("{public:?}"))
        .finalize();
    digest[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .into()
}
