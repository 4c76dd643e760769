//! Settings from outside the file: the environment and the CLI.

use std::collections::HashMap;

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
/// from here, never from the file; `Debug` shows whether each is set, not
/// its value.
#[derive(Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub upstream: Option<String>,
    pub redis_url: Option<String>,
    /// Default TTL in whole seconds (`CACHE_TTL`, the seed's name).
    pub cache_ttl: Option<String>,
    pub jwt_secret: Option<String>,
    /// `JWT_SECRET_KEY_PREVIOUS`: the HMAC secret before the current one,
    /// still accepted while a rotation's old tokens expire.
    pub jwt_secret_previous: Option<String>,
    /// `JWT_ISSUER`/`JWT_AUDIENCE`: the names the origin reads, so one
    /// `.env` keeps issuer and verifier in agreement.
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    /// `PROXY_ADMIN_TOKEN`: a bearer token for `POST /purge`.
    pub admin_token: Option<String>,
    /// `PROXY_STATUS_TOKEN`: when set, the status page and `/metrics` ask
    /// for it (or the admin token).
    pub status_token: Option<String>,
    /// `LOG_HASH_KEY`: the key of `log.hash_subjects`' hashes.
    pub log_hash_key: Option<String>,
}

impl std::fmt::Debug for Overrides {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = |value: &Option<String>| value.as_ref().map(|_| "<redacted>");
        f.debug_struct("Overrides")
            .field("listen", &self.listen)
            .field("admin_listen", &self.admin_listen)
            .field("upstream", &self.upstream)
            // A Redis URL may carry a password.
            .field("redis_url", &secret(&self.redis_url))
            .field("cache_ttl", &self.cache_ttl)
            .field("jwt_secret", &secret(&self.jwt_secret))
            .field("jwt_secret_previous", &secret(&self.jwt_secret_previous))
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("admin_token", &secret(&self.admin_token))
            .field("status_token", &secret(&self.status_token))
            .field("log_hash_key", &secret(&self.log_hash_key))
            .finish()
    }
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
            jwt_secret_previous: env.get("JWT_SECRET_KEY_PREVIOUS"),
            jwt_issuer: env.get("JWT_ISSUER"),
            jwt_audience: env.get("JWT_AUDIENCE"),
            admin_token: env.get("PROXY_ADMIN_TOKEN"),
            status_token: env.get("PROXY_STATUS_TOKEN"),
            log_hash_key: env.get("LOG_HASH_KEY"),
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
            jwt_secret_previous: higher.jwt_secret_previous.or(self.jwt_secret_previous),
            jwt_issuer: higher.jwt_issuer.or(self.jwt_issuer),
            jwt_audience: higher.jwt_audience.or(self.jwt_audience),
            admin_token: higher.admin_token.or(self.admin_token),
            status_token: higher.status_token.or(self.status_token),
            log_hash_key: higher.log_hash_key.or(self.log_hash_key),
        }
    }
}
