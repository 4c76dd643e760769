//! Configuration: `config.toml`, environment and CLI, validated once.
//!
//! Two layers. [`RawConfig`] mirrors the file field for field (unknown fields
//! are errors). [`Config::build`] merges overrides (CLI > environment > file),
//! checks every field, compiles route patterns and loads JWT keys, and
//! reports *every* problem at once, each naming its field path
//! (`routes[3].roles`). Nothing else in the proxy parses settings.
//!
//! Does not read the config file itself (`main.rs` does) nor the process
//! environment (overrides come through [`Env`]), so tests feed inline TOML
//! and a map.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Method, Uri};
use serde::Deserialize;

use crate::auth::{JwtVerifier, KeySource};
use crate::route::{Pattern, Rule, RuleSet};

// === Defaults, each with its reason ===

/// DESIGN.md's port table.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
/// Long enough for a slow mobile client, short enough that a slowloris
/// client cannot hold a connection slot for long. Also the keep-alive idle
/// limit (see [`ServerSettings::header_read_timeout`]).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Beyond this, new connections wait in the kernel backlog instead of
/// exhausting file descriptors.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Connections one client address may hold: far above what a browser or a
/// load generator opens, far below `DEFAULT_MAX_CONNECTIONS`, so one
/// address cannot take every slot.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1024;
/// A connection with no request in flight is closed after this (nginx's
/// `keepalive_timeout` is 75 s; HTTP/1 keep-alive is also bounded by the
/// header-read timeout, which hyper starts while waiting for a head).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest pause between two pieces of a request body (nginx's
/// `client_body_timeout` is 60 s).
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a response write may make no progress because the client does
/// not read (nginx's `send_timeout` is 60 s).
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Same limit as the origin: JSON API requests are small.
pub const DEFAULT_MAX_REQUEST_BODY_BYTES: u64 = 1024 * 1024;
/// In-flight requests get this long to finish on shutdown.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// A loopback or LAN backend that takes longer than this to accept is down.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time to the upstream's response headers before answering 504.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Below common backend keep-alive timeouts (60 s+), so we close first and
/// rarely reuse a connection the backend is closing.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);
pub const DEFAULT_POOL_MAX_IDLE_PER_HOST: usize = 256;
/// Requests at the backend at once: far above what a healthy backend
/// behind one proxy has in flight, low enough that a stalled backend does
/// not collect every client's request.
pub const DEFAULT_UPSTREAM_MAX_CONCURRENT_REQUESTS: usize = 1024;
/// The seed's Redis TTL default; `CACHE_TTL` overrides it.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(60);
/// Larger responses are streamed through and not stored.
pub const DEFAULT_MAX_ENTRY_BYTES: u64 = 1024 * 1024;
/// Bound of the in-process store when no Redis is configured.
/// Largest key material (path, query, `vary` values) of a cached request:
/// nginx's default request-line buffer is 8 KiB; longer URLs are rare in
/// APIs and, cached, would bloat every index place they are filed under.
pub const DEFAULT_MAX_KEY_BYTES: u64 = 8 * 1024;
/// Cap on the stale windows an origin asks for: an origin sending
/// `stale-if-error=31536000` would otherwise keep every entry a year.
pub const DEFAULT_MAX_STALE: Duration = Duration::from_secs(3600);
pub const DEFAULT_MEMORY_MAX_BYTES: u64 = 64 * 1024 * 1024;
pub const DEFAULT_L1_MAX_BYTES: u64 = 32 * 1024 * 1024;
/// A cache operation slower than this is abandoned and the request served
/// from upstream: Redis on loopback answers in well under a millisecond.
pub const DEFAULT_CACHE_OPERATION_TIMEOUT: Duration = Duration::from_millis(50);
/// How long a write's response waits for its invalidation to be
/// acknowledged while Redis is failing, before it is released anyway (and
/// the invalidation kept for later).
pub const DEFAULT_INVALIDATION_WAIT: Duration = Duration::from_secs(1);
/// Consecutive failures that open the circuit breaker.
pub const DEFAULT_BREAKER_FAILURES: u32 = 3;
/// How long the breaker stays open before one probe is let through.
pub const DEFAULT_BREAKER_OPEN_FOR: Duration = Duration::from_secs(1);
pub const DEFAULT_KEY_PREFIX: &str = "cgw:";
pub const DEFAULT_SURROGATE_KEY_HEADER: &str = "surrogate-key";
/// Shorter admin tokens are refused: they guard cache-wide purges.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;
/// How long one instance may fetch a missing entry while the others sharing
/// its Redis wait for it instead of fetching too.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);
/// Tolerated clock skew between token issuer and proxy.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
pub const DEFAULT_ROLE_CLAIM: &str = "role";
pub const DEFAULT_SUBJECT_HEADER: &str = "x-auth-subject";
pub const DEFAULT_ROLE_HEADER: &str = "x-auth-role";
/// Response statuses stored when a rule does not list its own.
pub const DEFAULT_CACHE_STATUSES: [u16; 1] = [200];

// === Raw layer: mirrors config.toml ===

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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub url: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub response_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub pool_idle_timeout: Option<Duration>,
    pub pool_max_idle_per_host: Option<usize>,
    pub max_concurrent_requests: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub redis_url: Option<String>,
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
    pub breaker_failures: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    pub breaker_open_for: Option<Duration>,
    pub key_prefix: Option<String>,
    pub namespace: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub lease_ttl: Option<Duration>,
    pub surrogate_key_header: Option<String>,
    pub forward_headers: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    pub algorithm: Option<String>,
    pub public_key_file: Option<PathBuf>,
    pub jwks_file: Option<PathBuf>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub leeway: Option<Duration>,
    pub role_claim: Option<String>,
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
}

impl RawConfig {
    /// Parses TOML; syntax errors and unknown fields are reported with
    /// their location.
    pub fn parse(text: &str) -> Result<RawConfig, ConfigErrors> {
        toml::from_str(text).map_err(|e| ConfigErrors(vec![ConfigError::new("config.toml", e.to_string())]))
    }
}

// === Overrides: environment and CLI ===

/// A source of settings by name: the process environment in `main.rs`, a
/// map in tests.
pub trait Env {
    fn get(&self, name: &str) -> Option<String>;
}

pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Env for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

/// Settings that may come from outside the file. Secrets only ever come
/// from here, never from the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub upstream: Option<String>,
    pub redis_url: Option<String>,
    /// Default TTL in whole seconds (`CACHE_TTL`, the seed's name).
    pub cache_ttl: Option<String>,
    pub jwt_secret: Option<String>,
    /// `JWT_ISSUER`/`JWT_AUDIENCE`: the names the origin reads, so one
    /// `.env` keeps issuer and verifier in agreement.
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    /// `PROXY_ADMIN_TOKEN`: a bearer token for `POST /purge`.
    pub admin_token: Option<String>,
}

impl Overrides {
    /// Reads the environment names. `REDIS_URL` wins over the seed's
    /// `REDIS_HOST`/`REDIS_PORT`/`REDIS_DB`, which build a URL when any is set.
    pub fn from_env(env: &impl Env) -> Overrides {
        let redis_url = env.get("REDIS_URL").or_else(|| {
            let (host, port, db) = (env.get("REDIS_HOST"), env.get("REDIS_PORT"), env.get("REDIS_DB"));
            (host.is_some() || port.is_some() || db.is_some()).then(|| {
                format!(
                    "redis://{}:{}/{}",
                    host.as_deref().unwrap_or("127.0.0.1"),
                    port.as_deref().unwrap_or("6379"),
                    db.as_deref().unwrap_or("0")
                )
            })
        });
        Overrides {
            listen: env.get("PROXY_LISTEN"),
            admin_listen: env.get("PROXY_ADMIN_LISTEN"),
            upstream: env.get("UPSTREAM_URL"),
            redis_url,
            cache_ttl: env.get("CACHE_TTL"),
            jwt_secret: env.get("JWT_SECRET_KEY"),
            jwt_issuer: env.get("JWT_ISSUER"),
            jwt_audience: env.get("JWT_AUDIENCE"),
            admin_token: env.get("PROXY_ADMIN_TOKEN"),
        }
    }

    /// Layers `higher` (e.g. CLI flags) over `self`.
    pub fn overridden_by(self, higher: Overrides) -> Overrides {
        Overrides {
            listen: higher.listen.or(self.listen),
            admin_listen: higher.admin_listen.or(self.admin_listen),
            upstream: higher.upstream.or(self.upstream),
            redis_url: higher.redis_url.or(self.redis_url),
            cache_ttl: higher.cache_ttl.or(self.cache_ttl),
            jwt_secret: higher.jwt_secret.or(self.jwt_secret),
            jwt_issuer: higher.jwt_issuer.or(self.jwt_issuer),
            jwt_audience: higher.jwt_audience.or(self.jwt_audience),
            admin_token: higher.admin_token.or(self.admin_token),
        }
    }
}

// === Errors ===

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Every problem found, so an operator fixes them in one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {}", e.field, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects errors while building, so one bad field does not hide the next.
#[derive(Default)]
struct Problems(Vec<ConfigError>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError::new(field, message));
    }
}

// === Validated layer ===

/// The proxy's runtime configuration, built once and shared as `Arc<Config>`.
#[derive(Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub server: ServerSettings,
    pub upstream: UpstreamSettings,
    pub cache: CacheSettings,
    /// `None` when every route is public.
    pub jwt: Option<Arc<JwtVerifier>>,
    pub identity: IdentitySettings,
    pub routes: RuleSet,
    /// Authorises `POST /purge` besides an admin-role JWT; `None`: JWT only.
    pub admin_token: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Also bounds how long an idle HTTP/1 keep-alive connection waits for
    /// its next request: hyper starts this timer whenever it waits for a
    /// request head.
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    /// Connections one client address may hold; 0: no cap.
    pub max_connections_per_ip: usize,
    /// A connection with no request in flight is closed after this.
    pub idle_timeout: Duration,
    /// Longest pause while a request body arrives; then 408.
    pub body_read_timeout: Duration,
    /// Longest a response write may stall on a client that does not read.
    pub write_timeout: Duration,
    /// Connections older than this are closed gracefully; `None`: no limit.
    pub max_connection_age: Option<Duration>,
    pub max_request_body_bytes: u64,
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// `http://host:port`, no path.
    pub base: Uri,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    /// Requests at the backend at once, all rules together; 0: no limit.
    pub max_concurrent_requests: usize,
}

#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub store: StoreSettings,
    pub default_ttl: Duration,
    pub max_entry_bytes: u64,
    /// Requests whose key material (path, query, `vary` values) is larger
    /// are served without the cache: no lookup, nothing stored or indexed.
    pub max_key_bytes: u64,
    /// Longest stale window (`stale-while-revalidate`, `stale-if-error`) an
    /// origin may ask for; a rule's own windows are the operator's and
    /// not capped.
    pub max_stale: Duration,
    pub operation_timeout: Duration,
    pub invalidation_wait: Duration,
    pub breaker_failures: u32,
    pub breaker_open_for: Duration,
    pub key_prefix: String,
    /// Separates deployments sharing one Redis: folded into every key,
    /// generation and channel name. Defaults to the upstream's authority,
    /// so proxies in front of different backends never share entries,
    /// generations or purges.
    pub namespace: String,
    pub lease_ttl: Duration,
    /// Response header naming an answer's extra tags; stripped before
    /// clients see it. `None`: off.
    pub surrogate_key_header: Option<HeaderName>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSettings {
    /// Bounded in-process store; the default without Redis.
    Memory { max_bytes: u64 },
    Redis {
        url: Secret,
        /// Bound of the in-process copies kept in front of Redis; 0 turns
        /// that tier off.
        l1_max_bytes: u64,
    },
}

#[derive(Debug, Clone)]
pub struct IdentitySettings {
    pub subject_header: HeaderName,
    pub role_header: HeaderName,
}

/// A string kept out of logs and `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Config {
    /// Parses `text`, applies `overrides` and validates. Relative key paths
    /// are resolved against `base_dir` (the config file's folder).
    pub fn load(text: &str, overrides: Overrides, base_dir: &Path) -> Result<Config, ConfigErrors> {
        Config::build(RawConfig::parse(text)?, overrides, base_dir)
    }

    pub fn build(raw: RawConfig, overrides: Overrides, base_dir: &Path) -> Result<Config, ConfigErrors> {
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
        };

        let upstream = upstream_settings(&mut p, raw.upstream, overrides.upstream);
        let mut cache = cache_settings(&mut p, &raw.cache, overrides.redis_url, overrides.cache_ttl);
        cache.namespace = match (&raw.cache.namespace, &upstream) {
            (Some(explicit), _) => explicit.clone(),
            (None, Some(upstream)) => upstream
                .base
                .authority()
                .map(|a| a.as_str().to_ascii_lowercase())
                .unwrap_or_default(),
            (None, None) => String::new(),
        };
        if raw.cache.namespace.is_some() && !is_valid_namespace(&cache.namespace) {
            p.add(
                "cache.namespace",
                "must be 1 to 256 characters without spaces or control characters",
            );
        }
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
        let rules = rules(&mut p, raw.routes, &cache, &default_forward);
        proxy_owned_headers(&mut p, &rules, &identity);
        let needs_jwt = rules.iter().any(|r| !r.access.is_public());
        let mut raw_jwt = raw.jwt;
        raw_jwt.issuer = overrides.jwt_issuer.or(raw_jwt.issuer);
        raw_jwt.audience = overrides.jwt_audience.or(raw_jwt.audience);
        let jwt = jwt_verifier(&mut p, &raw_jwt, overrides.jwt_secret, base_dir, needs_jwt);
        let admin_token = overrides.admin_token.filter(|t| !t.is_empty());
        if admin_token.as_ref().is_some_and(|t| t.len() < MIN_ADMIN_TOKEN_LEN) {
            p.add(
                "PROXY_ADMIN_TOKEN",
                format!("must be at least {MIN_ADMIN_TOKEN_LEN} characters"),
            );
        }

        if !p.0.is_empty() {
            return Err(ConfigErrors(p.0));
        }
        Ok(Config {
            listen: listen.expect("checked"),
            admin_listen: admin_listen.expect("checked"),
            server,
            upstream: upstream.expect("checked"),
            cache,
            jwt,
            identity,
            routes: RuleSet::new(rules),
            admin_token: admin_token.map(Secret),
        })
    }
}

fn socket_addr(p: &mut Problems, field: &str, value: Option<String>, default: &str) -> Option<SocketAddr> {
    let value = value.unwrap_or_else(|| default.to_owned());
    match value.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            p.add(field, format!("{value:?} is not an address like 127.0.0.1:8080"));
            None
        }
    }
}

fn positive(p: &mut Problems, field: &str, value: Option<Duration>, default: Duration) -> Duration {
    let value = value.unwrap_or(default);
    if value.is_zero() {
        p.add(field, "must be greater than zero");
    }
    value
}

fn at_least_one(p: &mut Problems, field: &str, value: Option<usize>, default: usize) -> usize {
    let value = value.unwrap_or(default);
    if value == 0 {
        p.add(field, "must be at least 1");
    }
    value
}

fn at_least_one_u32(p: &mut Problems, field: &str, value: Option<u32>, default: u32) -> u32 {
    at_least_one(p, field, value.map(|v| v as usize), default as usize) as u32
}

fn header_name(p: &mut Problems, field: &str, value: &str) -> HeaderName {
    HeaderName::from_bytes(value.as_bytes()).unwrap_or_else(|_| {
        p.add(field, format!("{value:?} is not a valid header name"));
        HeaderName::from_static("invalid")
    })
}

/// A route may not forward or vary on a header the proxy sets or drops
/// itself (or its `_` twin, which CGI-style backends read as the same
/// header): the client's value never reaches the origin, so keying on it
/// would file one client's answer under another's claim (e.g. a spoofed
/// subject header).
fn proxy_owned_headers(p: &mut Problems, rules: &[Rule], identity: &IdentitySettings) {
    for (i, rule) in rules.iter().enumerate() {
        let vary = rule.cache.iter().flat_map(|c| &c.vary).map(|n| ("cache.vary", n));
        for (field, name) in rule.forward_headers.iter().map(|n| ("forward_headers", n)).chain(vary) {
            if crate::upstream::is_proxy_owned(name, identity) {
                p.add(
                    format!("routes[{i}].{field}"),
                    format!("{name:?} is set or dropped by the proxy; it cannot be forwarded or keyed on"),
                );
            }
        }
    }
}

fn header_names(p: &mut Problems, field: &str, values: &[String]) -> Vec<HeaderName> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| header_name(p, &format!("{field}[{i}]"), v))
        .collect()
}

fn upstream_settings(p: &mut Problems, raw: RawUpstream, url: Option<String>) -> Option<UpstreamSettings> {
    let Some(url) = url.or(raw.url) else {
        p.add("upstream.url", "is required (or set UPSTREAM_URL / --upstream)");
        return None;
    };
    let base = match url.parse::<Uri>() {
        Ok(uri)
            if uri.scheme_str() == Some("http")
                && uri.authority().is_some()
                && matches!(uri.path(), "" | "/")
                && uri.query().is_none() =>
        {
            uri
        }
        Ok(_) => {
            p.add(
                "upstream.url",
                format!("{url:?} must be http://host:port with no path or query"),
            );
            return None;
        }
        Err(e) => {
            p.add("upstream.url", format!("{url:?}: {e}"));
            return None;
        }
    };
    Some(UpstreamSettings {
        base,
        connect_timeout: positive(
            p,
            "upstream.connect_timeout",
            raw.connect_timeout,
            DEFAULT_CONNECT_TIMEOUT,
        ),
        response_timeout: positive(
            p,
            "upstream.response_timeout",
            raw.response_timeout,
            DEFAULT_RESPONSE_TIMEOUT,
        ),
        pool_idle_timeout: positive(
            p,
            "upstream.pool_idle_timeout",
            raw.pool_idle_timeout,
            DEFAULT_POOL_IDLE_TIMEOUT,
        ),
        pool_max_idle_per_host: raw.pool_max_idle_per_host.unwrap_or(DEFAULT_POOL_MAX_IDLE_PER_HOST),
        max_concurrent_requests: raw
            .max_concurrent_requests
            .unwrap_or(DEFAULT_UPSTREAM_MAX_CONCURRENT_REQUESTS),
    })
}

/// A namespace travels in Redis key and channel names.
fn is_valid_namespace(namespace: &str) -> bool {
    (1..=256).contains(&namespace.len()) && !namespace.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn cache_settings(
    p: &mut Problems,
    raw: &RawCache,
    redis_url: Option<String>,
    cache_ttl: Option<String>,
) -> CacheSettings {
    let store = match redis_url.or_else(|| raw.redis_url.clone()) {
        Some(url) => {
            if let Err(e) = redis::Client::open(url.as_str()) {
                p.add("cache.redis_url", format!("not a usable Redis URL: {e}"));
            }
            StoreSettings::Redis {
                url: Secret(url),
                l1_max_bytes: raw.l1_max_bytes.unwrap_or(DEFAULT_L1_MAX_BYTES),
            }
        }
        None => StoreSettings::Memory {
            max_bytes: raw.memory_max_bytes.unwrap_or(DEFAULT_MEMORY_MAX_BYTES),
        },
    };
    let default_ttl = match cache_ttl {
        Some(secs) => match secs.trim().parse::<u64>() {
            Ok(s) if s > 0 => Duration::from_secs(s),
            _ => {
                p.add(
                    "CACHE_TTL",
                    format!("{secs:?} must be a whole number of seconds above 0"),
                );
                DEFAULT_CACHE_TTL
            }
        },
        None => positive(p, "cache.default_ttl", raw.default_ttl, DEFAULT_CACHE_TTL),
    };
    CacheSettings {
        store,
        default_ttl,
        max_entry_bytes: raw.max_entry_bytes.unwrap_or(DEFAULT_MAX_ENTRY_BYTES),
        max_key_bytes: raw.max_key_bytes.unwrap_or(DEFAULT_MAX_KEY_BYTES),
        max_stale: raw.max_stale.unwrap_or(DEFAULT_MAX_STALE),
        operation_timeout: positive(
            p,
            "cache.operation_timeout",
            raw.operation_timeout,
            DEFAULT_CACHE_OPERATION_TIMEOUT,
        ),
        invalidation_wait: raw.invalidation_wait.unwrap_or(DEFAULT_INVALIDATION_WAIT),
        breaker_failures: at_least_one_u32(
            p,
            "cache.breaker_failures",
            raw.breaker_failures,
            DEFAULT_BREAKER_FAILURES,
        ),
        breaker_open_for: positive(
            p,
            "cache.breaker_open_for",
            raw.breaker_open_for,
            DEFAULT_BREAKER_OPEN_FOR,
        ),
        key_prefix: raw.key_prefix.clone().unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned()),
        namespace: String::new(),
        lease_ttl: positive(p, "cache.lease_ttl", raw.lease_ttl, DEFAULT_LEASE_TTL),
        surrogate_key_header: match raw.surrogate_key_header.as_deref() {
            Some("") => None,
            name => Some(header_name(
                p,
                "cache.surrogate_key_header",
                name.unwrap_or(DEFAULT_SURROGATE_KEY_HEADER),
            )),
        },
    }
}

fn jwt_verifier(
    p: &mut Problems,
    raw: &RawJwt,
    secret: Option<String>,
    base_dir: &Path,
    needed: bool,
) -> Option<Arc<JwtVerifier>> {
    let algorithm = raw.algorithm.as_deref().unwrap_or("HS256");
    let Ok(algorithm) = algorithm.parse::<jsonwebtoken::Algorithm>() else {
        p.add(
            "jwt.algorithm",
            format!("{algorithm:?} is not one of HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA"),
        );
        return None;
    };
    let read = |field: &str, path: &Path, p: &mut Problems| -> Option<Vec<u8>> {
        let full = base_dir.join(path);
        std::fs::read(&full)
            .map_err(|e| p.add(field, format!("cannot read {}: {e}", full.display())))
            .ok()
    };
    let source = match (&raw.public_key_file, &raw.jwks_file) {
        (Some(_), Some(_)) => {
            p.add(
                "jwt.jwks_file",
                "set either jwt.public_key_file or jwt.jwks_file, not both",
            );
            return None;
        }
        (Some(path), None) => KeySource::Pem(read("jwt.public_key_file", path, p)?),
        (None, Some(path)) => KeySource::Jwks(read("jwt.jwks_file", path, p)?),
        (None, None) if is_hmac(algorithm) => {
            match secret {
                Some(secret) => KeySource::Secret(secret.into_bytes()),
                None if needed => {
                    p.add("JWT_SECRET_KEY", format!("must be set in the environment: jwt.algorithm is {algorithm:?} and some routes need a token"));
                    return None;
                }
                None => return None,
            }
        }
        (None, None) if needed => {
            p.add(
                "jwt.public_key_file",
                format!("is required for {algorithm:?} (or set jwt.jwks_file)"),
            );
            return None;
        }
        (None, None) => return None,
    };
    let leeway = raw.leeway.unwrap_or(DEFAULT_LEEWAY);
    let role_claim = raw.role_claim.clone().unwrap_or_else(|| DEFAULT_ROLE_CLAIM.to_owned());
    match JwtVerifier::new(
        algorithm,
        source,
        raw.issuer.clone(),
        raw.audience.clone(),
        leeway,
        role_claim,
    ) {
        Ok(verifier) => Some(Arc::new(verifier)),
        Err(e) => {
            p.add(e.field, e.message);
            None
        }
    }
}

fn is_hmac(alg: jsonwebtoken::Algorithm) -> bool {
    use jsonwebtoken::Algorithm::*;
    matches!(alg, HS256 | HS384 | HS512)
}

fn rules(p: &mut Problems, raw: Vec<RawRoute>, cache: &CacheSettings, default_forward: &[HeaderName]) -> Vec<Rule> {
    if raw.is_empty() {
        p.add(
            "routes",
            "at least one route is required; without routes every request is a 404",
        );
    }
    let mut names = HashSet::new();
    let mut rules = Vec::with_capacity(raw.len());
    for (i, route) in raw.into_iter().enumerate() {
        let at = |field: &str| format!("routes[{i}].{field}");
        let name = match route.name {
            Some(name) if !name.is_empty() => name,
            _ => {
                p.add(at("name"), "is required (it labels metrics and cache keys)");
                format!("#{i}")
            }
        };
        if !names.insert(name.clone()) {
            p.add(at("name"), format!("{name:?} is used by another route"));
        }
        let pattern = match route.path.as_deref().map(Pattern::parse) {
            Some(Ok(pattern)) => Some(pattern),
            Some(Err(e)) => {
                p.add(at("path"), e);
                None
            }
            None => {
                p.add(at("path"), "is required");
                None
            }
        };
        let methods = methods(p, &at("methods"), route.methods);
        let access = access(p, &at(""), route.access.as_deref(), route.roles);
        let is_read = methods.iter().all(|m| *m == Method::GET || *m == Method::HEAD);
        let cache_policy = route.cache.and_then(|c| {
            if !is_read {
                p.add(
                    at("cache"),
                    "only GET/HEAD routes can be cached; list writes in their own route",
                );
                return None;
            }
            route_cache(p, &at("cache"), c, &access, cache)
        });
        let forward_headers = match &route.forward_headers {
            Some(list) => header_names(p, &at("forward_headers"), list),
            None => default_forward.to_vec(),
        };
        let invalidates = route.invalidates.unwrap_or_default();
        if route.max_concurrent_requests == Some(0) {
            p.add(
                at("max_concurrent_requests"),
                "must be at least 1 (leave it out for no limit)",
            );
        }
        if !invalidates.is_empty() && is_read {
            p.add(at("invalidates"), "only write routes (not GET/HEAD) invalidate");
        }
        tag_list(p, &at("invalidates"), &invalidates);
        if let Some(pattern) = pattern {
            rules.push(Rule {
                name: Box::leak(name.into_boxed_str()),
                pattern,
                methods,
                access,
                cache: cache_policy,
                invalidates,
                forward_headers,
                allow_encoded_separators: route.allow_encoded_separators,
                max_concurrent_requests: route.max_concurrent_requests,
            });
        }
    }
    rules
}

fn methods(p: &mut Problems, field: &str, raw: Option<Vec<String>>) -> Vec<Method> {
    let Some(raw) = raw.filter(|m| !m.is_empty()) else {
        p.add(field, "is required: list the methods this route accepts");
        return Vec::new();
    };
    let mut methods: Vec<Method> = Vec::new();
    for (j, m) in raw.iter().enumerate() {
        match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
            Ok(method) if method == Method::CONNECT || method == Method::TRACE => {
                p.add(format!("{field}[{j}]"), format!("{m} is not proxied"))
            }
            Ok(method) if !methods.contains(&method) => methods.push(method),
            Ok(_) => {}
            Err(_) => p.add(format!("{field}[{j}]"), format!("{m:?} is not an HTTP method")),
        }
    }
    // HEAD is answered wherever GET is: clients expect it, and it reveals
    // nothing GET would not.
    if methods.contains(&Method::GET) && !methods.contains(&Method::HEAD) {
        methods.push(Method::HEAD);
    }
    methods
}

fn access(p: &mut Problems, prefix: &str, access: Option<&str>, roles: Option<Vec<String>>) -> crate::rbac::Access {
    use crate::rbac::Access;
    match (access, roles) {
        (Some("public"), None) => Access::Public,
        (Some("authenticated") | None, None) => Access::Authenticated,
        (Some("roles") | None, Some(roles)) if !roles.is_empty() && roles.iter().all(|r| !r.is_empty()) => {
            Access::Roles(roles)
        }
        (_, Some(_)) if access.is_some_and(|a| a != "roles") => {
            p.add(
                format!("{prefix}roles"),
                "cannot be combined with access = \"public\" or \"authenticated\"",
            );
            Access::Authenticated
        }
        (_, Some(_)) => {
            p.add(format!("{prefix}roles"), "must list at least one non-empty role");
            Access::Authenticated
        }
        (Some(other), None) => {
            p.add(
                format!("{prefix}access"),
                format!("{other:?} must be \"public\", \"authenticated\" or \"roles\" (with roles = [...])"),
            );
            Access::Authenticated
        }
    }
}

fn route_cache(
    p: &mut Problems,
    field: &str,
    raw: RawRouteCache,
    access: &crate::rbac::Access,
    cache: &CacheSettings,
) -> Option<crate::cache::CachePolicy> {
    use crate::cache::{CachePolicy, Scope};
    let scope = match (raw.scope.as_deref(), access.is_public()) {
        (None, true) | (Some("shared"), _) => Scope::Shared,
        (None, false) | (Some("user"), false) => Scope::User,
        (Some("role"), false) => Scope::Role,
        (Some(s @ ("user" | "role")), true) => {
            p.add(
                format!("{field}.scope"),
                format!("{s:?} needs an authenticated route; public routes can only be \"shared\""),
            );
            return None;
        }
        (Some(other), _) => {
            p.add(
                format!("{field}.scope"),
                format!("{other:?} must be \"user\", \"role\" or \"shared\""),
            );
            return None;
        }
    };
    let ttl = raw.ttl.unwrap_or(cache.default_ttl);
    if ttl.is_zero() {
        p.add(format!("{field}.ttl"), "must be greater than zero");
    }
    let statuses = raw.statuses.unwrap_or_else(|| DEFAULT_CACHE_STATUSES.to_vec());
    for (j, s) in statuses.iter().enumerate() {
        if !(200..600).contains(s) {
            p.add(
                format!("{field}.statuses[{j}]"),
                format!("{s} is not a final HTTP status"),
            );
        }
    }
    let vary = header_names(p, &format!("{field}.vary"), raw.vary.as_deref().unwrap_or_default());
    let mut tags = raw.tags.unwrap_or_default();
    tag_list(p, &format!("{field}.tags"), &tags);
    // Every entry also records the generation `POST /purge {"all": true}`
    // replaces.
    tags.push(crate::cache::purge::ALL_TAG.to_owned());
    Some(CachePolicy {
        scope,
        ttl,
        statuses,
        vary,
        tags,
        stale_while_revalidate: raw.stale_while_revalidate.unwrap_or_default(),
        stale_if_error: raw.stale_if_error.unwrap_or_default(),
        max_origin_stale: cache.max_stale,
    })
}

fn tag_list(p: &mut Problems, field: &str, tags: &[String]) {
    for (j, tag) in tags.iter().enumerate() {
        if !crate::cache::purge::is_valid_tag(tag) {
            p.add(
                format!("{field}[{j}]"),
                format!(
                    "{tag:?} must be a non-empty word of at most {} bytes without spaces",
                    crate::cache::purge::MAX_TAG_LEN
                ),
            );
        } else if tag == crate::cache::purge::ALL_TAG {
            p.add(format!("{field}[{j}]"), "\"*\" is reserved for purging everything");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Scope;
    use crate::rbac::Access;

    /// Long enough for HS256 (RFC 7518 §3.2).
    const SECRET: &str = "config-test-secret-of-32-bytes-or-more";

    const MINIMAL: &str = r#"
        [upstream]
        url = "http://127.0.0.1:5000"
        [[routes]]
        name = "login"
        path = "/login"
        methods = ["POST"]
        access = "public"
    "#;

    fn load(text: &str) -> Result<Config, ConfigErrors> {
        Config::load(text, Overrides::default(), Path::new("."))
    }

    fn fields(err: ConfigErrors) -> Vec<String> {
        err.0.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_minimal_config_gets_every_default() {
        let cfg = load(MINIMAL).unwrap();
        assert_eq!(cfg.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(cfg.admin_listen.to_string(), DEFAULT_ADMIN_LISTEN);
        assert_eq!(
            cfg.cache.store,
            StoreSettings::Memory {
                max_bytes: DEFAULT_MEMORY_MAX_BYTES
            }
        );
        assert_eq!(cfg.cache.default_ttl, DEFAULT_CACHE_TTL);
        assert!(cfg.jwt.is_none(), "no route needs a token");
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_name() {
        let err = load(&format!("{MINIMAL}\n[cache]\nttl_seconds = 5\n")).unwrap_err();
        assert!(err.to_string().contains("ttl_seconds"), "{err}");
        let err = load(&MINIMAL.replace("access = \"public\"", "access = \"public\"\nrole = [\"x\"]")).unwrap_err();
        assert!(err.to_string().contains("role"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let text = r#"
            listen = "nowhere"
            [upstream]
            url = "https://example.com/api"
            [[routes]]
            name = "a"
            path = "/a"
            methods = ["GET"]
            access = "public"
            [[routes]]
            name = "a"
            path = "no-slash"
            methods = []
            roles = []
        "#;
        let got = fields(load(text).unwrap_err());
        for want in [
            "listen",
            "upstream.url",
            "routes[1].name",
            "routes[1].path",
            "routes[1].methods",
            "routes[1].roles",
        ] {
            assert!(got.iter().any(|f| f == want), "missing {want} in {got:?}");
        }
    }

    #[test]
    fn admin_listener_must_differ_from_the_client_listener() {
        let text = format!("listen = \"127.0.0.1:8080\"\nadmin_listen = \"127.0.0.1:8080\"\n{MINIMAL}");
        assert_eq!(fields(load(&text).unwrap_err()), ["admin_listen"]);
    }

    #[test]
    fn precedence_is_cli_then_environment_then_file() {
        let text = format!("listen = \"127.0.0.1:1000\"\n{MINIMAL}");
        let env: HashMap<String, String> = [("PROXY_LISTEN", "127.0.0.1:2000")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let from_env = Overrides::from_env(&env);
        assert_eq!(
            Config::load(&text, from_env.clone(), Path::new("."))
                .unwrap()
                .listen
                .port(),
            2000
        );
        let cli = Overrides {
            listen: Some("127.0.0.1:3000".into()),
            ..Overrides::default()
        };
        assert_eq!(
            Config::load(&text, from_env.overridden_by(cli), Path::new("."))
                .unwrap()
                .listen
                .port(),
            3000
        );
        assert_eq!(load(&text).unwrap().listen.port(), 1000);
    }

    #[test]
    fn redis_url_wins_over_the_seed_variables_which_build_a_url() {
        let env = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let seed = Overrides::from_env(&env(&[("REDIS_HOST", "10.0.0.1"), ("REDIS_DB", "2")]));
        assert_eq!(seed.redis_url.as_deref(), Some("redis://10.0.0.1:6379/2"));
        let both = Overrides::from_env(&env(&[("REDIS_HOST", "10.0.0.1"), ("REDIS_URL", "redis://x:1/0")]));
        assert_eq!(both.redis_url.as_deref(), Some("redis://x:1/0"));
        assert_eq!(Overrides::from_env(&env(&[])).redis_url, None);
    }

    #[test]
    fn routes_may_not_forward_or_vary_on_headers_the_proxy_sets() {
        let text = MINIMAL.replace(
            "access = \"public\"",
            "access = \"public\"\nforward_headers = [\"accept\", \"X-Auth-Subject\", \"x-forwarded-for\"]",
        );
        let err = load(&text).unwrap_err();
        assert_eq!(fields(err), ["routes[0].forward_headers", "routes[0].forward_headers"]);
    }

    #[test]
    fn routes_may_not_forward_or_vary_on_underscore_twins_or_override_headers() {
        let text = r#"
            [upstream]
            url = "http://127.0.0.1:5000"
            [[routes]]
            name = "a"
            path = "/a"
            methods = ["GET"]
            access = "public"
            forward_headers = ["accept", "x_auth_role", "X-Original-URL", "x_forwarded_for"]
            cache = { vary = ["accept-language", "X-HTTP-Method-Override", "x_auth_subject"] }
        "#;
        let got = fields(load(text).unwrap_err());
        let mut want = vec!["routes[0].forward_headers"; 3];
        want.extend(["routes[0].cache.vary"; 2]);
        assert_eq!(got, want);
    }

    #[test]
    fn redis_gets_an_l1_unless_its_bound_is_zero() {
        let with_redis = |extra: &str| {
            let text = format!("{MINIMAL}\n[cache]\nredis_url = \"redis://127.0.0.1:6379/0\"\n{extra}");
            load(&text).unwrap().cache.store
        };
        let url = Secret("redis://127.0.0.1:6379/0".into());
        assert_eq!(
            with_redis(""),
            StoreSettings::Redis {
                url: url.clone(),
                l1_max_bytes: DEFAULT_L1_MAX_BYTES
            }
        );
        assert_eq!(
            with_redis("l1_max_bytes = 0"),
            StoreSettings::Redis { url, l1_max_bytes: 0 }
        );
    }

    #[test]
    fn cache_ttl_sets_the_default_but_not_explicit_route_ttls() {
        let text = r#"
            [upstream]
            url = "http://127.0.0.1:5000"
            [[routes]]
            name = "a"
            path = "/a"
            methods = ["GET"]
            access = "public"
            cache = {}
            [[routes]]
            name = "b"
            path = "/b"
            methods = ["GET"]
            access = "public"
            cache = { ttl = "5s" }
        "#;
        let overrides = Overrides {
            cache_ttl: Some("120".into()),
            ..Overrides::default()
        };
        let cfg = Config::load(text, overrides, Path::new(".")).unwrap();
        let ttl = |name: &str| cfg.routes.by_name(name).unwrap().cache.as_ref().unwrap().ttl;
        assert_eq!(ttl("a"), Duration::from_secs(120));
        assert_eq!(ttl("b"), Duration::from_secs(5));
        let bad = Overrides {
            cache_ttl: Some("soon".into()),
            ..Overrides::default()
        };
        assert_eq!(
            fields(Config::load(text, bad, Path::new(".")).unwrap_err()),
            ["CACHE_TTL"]
        );
    }

    #[test]
    fn scopes_default_by_access_and_shared_must_be_explicit_for_authenticated_routes() {
        let text = r#"
            [upstream]
            url = "http://127.0.0.1:5000"
            [[routes]]
            name = "pub"
            path = "/pub"
            methods = ["GET"]
            access = "public"
            cache = {}
            [[routes]]
            name = "auth"
            path = "/auth"
            methods = ["GET"]
            cache = {}
            [[routes]]
            name = "role"
            path = "/role"
            methods = ["GET"]
            roles = ["admin"]
            cache = { scope = "role" }
        "#;
        let overrides = Overrides {
            jwt_secret: Some(SECRET.into()),
            ..Overrides::default()
        };
        let cfg = Config::load(text, overrides, Path::new(".")).unwrap();
        let scope = |name: &str| cfg.routes.by_name(name).unwrap().cache.as_ref().unwrap().scope;
        assert_eq!(scope("pub"), Scope::Shared);
        assert_eq!(scope("auth"), Scope::User);
        assert_eq!(scope("role"), Scope::Role);
        assert_eq!(
            cfg.routes.by_name("role").unwrap().access,
            Access::Roles(vec!["admin".into()])
        );
    }

    #[test]
    fn authenticated_routes_need_a_secret_from_the_environment() {
        let text = MINIMAL.replace("access = \"public\"", "access = \"authenticated\"");
        assert_eq!(fields(load(&text).unwrap_err()), ["JWT_SECRET_KEY"]);
    }

    #[test]
    fn a_short_hmac_secret_is_named_without_being_shown() {
        let text = MINIMAL.replace("access = \"public\"", "access = \"authenticated\"");
        let short = "thirty-one-bytes-is-one-too-few";
        assert_eq!(short.len(), 31);
        let overrides = Overrides {
            jwt_secret: Some(short.into()),
            ..Overrides::default()
        };
        let err = Config::load(&text, overrides, Path::new(".")).unwrap_err();
        let message = err.to_string();
        assert!(!message.contains(short), "{message}");
        assert_eq!(fields(err), ["JWT_SECRET_KEY"]);
    }

    #[test]
    fn writes_cannot_be_cached_and_reads_cannot_invalidate() {
        let text = r#"
            [upstream]
            url = "http://127.0.0.1:5000"
            [[routes]]
            name = "w"
            path = "/w"
            methods = ["POST"]
            access = "public"
            cache = {}
            [[routes]]
            name = "r"
            path = "/r"
            methods = ["GET"]
            access = "public"
            invalidates = ["x"]
        "#;
        assert_eq!(
            fields(load(text).unwrap_err()),
            ["routes[0].cache", "routes[1].invalidates"]
        );
    }

    #[test]
    fn the_shipped_config_is_valid() {
        let text = include_str!("../../config.toml");
        let overrides = Overrides {
            jwt_secret: Some(SECRET.into()),
            ..Overrides::default()
        };
        let cfg = Config::load(text, overrides, Path::new("..")).unwrap();
        assert!(cfg.jwt.is_some());
        assert!(cfg.routes.by_name("users-list").is_some());
    }

    /// Field names serde accepts in one section, read from its
    /// unknown-field error ("expected one of `a`, `b`").
    fn accepted_fields(section: &str) -> Vec<String> {
        let err = RawConfig::parse(section).unwrap_err().to_string();
        let expected = err
            .split("expected")
            .nth(1)
            .unwrap_or_else(|| panic!("no field list in: {err}"));
        expected.split('`').skip(1).step_by(2).map(str::to_owned).collect()
    }

    #[test]
    fn the_readme_and_the_shipped_config_document_every_field() {
        let readme = include_str!("../../README.md");
        let shipped = include_str!("../../config.toml");
        let documented: HashSet<&str> = readme
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .collect();
        let sections = [
            ("", "zzz = 1"),
            ("server.", "[server]\nzzz = 1"),
            ("upstream.", "[upstream]\nzzz = 1"),
            ("cache.", "[cache]\nzzz = 1"),
            ("jwt.", "[jwt]\nzzz = 1"),
            ("identity.", "[identity]\nzzz = 1"),
            ("routes[].", "[[routes]]\nzzz = 1"),
            ("routes[].cache.", "[[routes]]\ncache = { zzz = 1 }"),
        ];
        let tables = ["server", "upstream", "cache", "jwt", "identity", "routes"];
        let mut checked = 0;
        for (prefix, toml) in sections {
            for field in accepted_fields(toml) {
                if prefix.is_empty() && tables.contains(&field.as_str()) {
                    continue;
                }
                let path = format!("{prefix}{field}");
                assert!(
                    documented.contains(path.as_str()),
                    "README's configuration table lacks `{path}`"
                );
                assert!(
                    shipped.contains(&format!("{field} ")) || shipped.contains(&format!("{field}=")),
                    "config.toml does not document `{field}`"
                );
                checked += 1;
            }
        }
        assert!(checked > 30, "only {checked} fields found: the error format changed?");
        // Lower-case rows are config fields; upper-case ones are variables.
        for row in documented.iter().filter(|r| !r.chars().any(|c| c.is_ascii_uppercase())) {
            let known = sections.iter().any(|(prefix, toml)| {
                row.strip_prefix(prefix)
                    .is_some_and(|f| accepted_fields(toml).iter().any(|a| a == f))
            });
            assert!(known, "README documents `{row}`, which the config does not accept");
        }
    }
}
