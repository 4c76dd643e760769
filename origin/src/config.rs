//! Origin settings, read from environment variables.
//!
//! Owns the names and defaults of every setting and their validation. It
//! does not read `.env` (only `main.rs` does) and never touches the process
//! environment directly: settings come through [`Env`], so tests pass a map.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::password::{default_concurrency, BcryptLimits, DEFAULT_QUEUE_TIMEOUT};

/// Where the origin listens unless `ORIGIN_LISTEN` says otherwise (DESIGN.md's
/// port table).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5000";
/// Database used when neither `MONGO_DB` nor the URI's path names one.
pub const DEFAULT_DATABASE: &str = "origin";
/// bcrypt's recommended work factor; the test harness lowers it to 4.
pub const DEFAULT_BCRYPT_COST: u32 = 12;
/// Issuer and audience the shipped proxy config checks.
pub const DEFAULT_JWT_ISSUER: &str = "origin";
pub const DEFAULT_JWT_AUDIENCE: &str = "api";
/// Short-lived access tokens: a leaked token is useful for 15 minutes.
pub const DEFAULT_JWT_TTL: Duration = Duration::from_secs(900);
/// Most bcrypt operations allowed at once: beyond this there is no limit
/// worth the name (and tokio's semaphore has a ceiling of its own).
pub const MAX_BCRYPT_CONCURRENCY: usize = 1024;
/// Longest wait for a bcrypt slot; clients have given up long before.
pub const MAX_BCRYPT_QUEUE_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest request body accepted; a user document is a few hundred bytes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Below this an HS256 secret is guessable offline (RFC 7518 §3.2).
pub const MIN_RECOMMENDED_SECRET_BYTES: usize = 32;

/// A source of settings by name: the process environment in `main.rs`, a map
/// in tests.
pub trait Env {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
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

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Everything the origin needs to run, validated.
#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub mongo_uri: String,
    /// `None` defers to the database in `mongo_uri`, then [`DEFAULT_DATABASE`].
    pub mongo_database: Option<String>,
    pub jwt: JwtSettings,
    pub bcrypt_cost: u32,
    /// How many bcrypt operations run at once and how long a request waits
    /// for one (`BCRYPT_CONCURRENCY`, `BCRYPT_QUEUE_TIMEOUT`).
    pub bcrypt_limits: BcryptLimits,
    pub max_body_bytes: usize,
    /// Admin to create or promote at start-up (`ADMIN_EMAIL`/`ADMIN_PASSWORD`).
    pub admin: Option<AdminBootstrap>,
}

#[derive(Clone)]
pub struct JwtSettings {
    /// HS256 secret; never logged (see the `Debug` impl).
    pub secret: Vec<u8>,
    pub issuer: String,
    pub audience: String,
    pub ttl: Duration,
}

impl std::fmt::Debug for JwtSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSettings")
            .field("secret", &"<redacted>")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("ttl", &self.ttl)
            .finish()
    }
}

#[derive(Clone)]
pub struct AdminBootstrap {
    pub email: String,
    /// Used only when the admin does not exist yet; an existing user keeps
    /// its password.
    pub password: Option<String>,
    pub username: String,
}

impl Config {
    /// Reads and validates every setting, reporting the first bad one by name.
    pub fn from_env(env: &impl Env) -> Result<Config, ConfigError> {
        let listen = parse_or(env, "ORIGIN_LISTEN", DEFAULT_LISTEN.parse().expect("valid default"))?;
        let mongo_uri = env.get("MONGO_URI").ok_or(ConfigError::Missing("MONGO_URI"))?;
        let secret = env
            .get("JWT_SECRET_KEY")
            .ok_or(ConfigError::Missing("JWT_SECRET_KEY"))?
            .into_bytes();
        let jwt = JwtSettings {
            secret,
            issuer: env.get("JWT_ISSUER").unwrap_or_else(|| DEFAULT_JWT_ISSUER.into()),
            audience: env.get("JWT_AUDIENCE").unwrap_or_else(|| DEFAULT_JWT_AUDIENCE.into()),
            ttl: Duration::from_secs(parse_or(env, "JWT_TTL", DEFAULT_JWT_TTL.as_secs())?),
        };
        if jwt.ttl.is_zero() {
            return Err(invalid("JWT_TTL", "must be at least 1 second"));
        }
        let bcrypt_cost = parse_or(env, "BCRYPT_COST", DEFAULT_BCRYPT_COST)?;
        if !(4..=31).contains(&bcrypt_cost) {
            return Err(invalid("BCRYPT_COST", "must be between 4 and 31"));
        }
        let concurrency = parse_or(env, "BCRYPT_CONCURRENCY", default_concurrency())?;
        if !(1..=MAX_BCRYPT_CONCURRENCY).contains(&concurrency) {
            return Err(invalid(
                "BCRYPT_CONCURRENCY",
                &format!("must be between 1 and {MAX_BCRYPT_CONCURRENCY}"),
            ));
        }
        // Seconds, fractions allowed: a sub-second budget is a sensible choice.
        let queue_secs = parse_or(env, "BCRYPT_QUEUE_TIMEOUT", DEFAULT_QUEUE_TIMEOUT.as_secs_f64())?;
        let queue_timeout = Duration::try_from_secs_f64(queue_secs)
            .ok()
            .filter(|t| *t <= MAX_BCRYPT_QUEUE_TIMEOUT)
            .ok_or_else(|| {
                invalid(
                    "BCRYPT_QUEUE_TIMEOUT",
                    &format!("must be from 0 to {} seconds", MAX_BCRYPT_QUEUE_TIMEOUT.as_secs()),
                )
            })?;
        let max_body_bytes = parse_or(env, "MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)?;
        let admin = match (env.get("ADMIN_EMAIL"), env.get("ADMIN_PASSWORD")) {
            (Some(email), password) => Some(AdminBootstrap {
                email: email.to_lowercase(),
                password,
                username: env.get("ADMIN_USERNAME").unwrap_or_else(|| "admin".into()),
            }),
            (None, Some(_)) => return Err(invalid("ADMIN_PASSWORD", "is set without ADMIN_EMAIL")),
            (None, None) => None,
        };
        Ok(Config {
            listen,
            mongo_uri,
            mongo_database: env.get("MONGO_DB"),
            jwt,
            bcrypt_cost,
            bcrypt_limits: BcryptLimits {
                concurrency,
                queue_timeout,
            },
            max_body_bytes,
            admin,
        })
    }

    /// True when the HS256 secret is shorter than recommended; `main` warns.
    pub fn has_weak_secret(&self) -> bool {
        self.jwt.secret.len() < MIN_RECOMMENDED_SECRET_BYTES
    }
}

fn invalid(name: &'static str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        name,
        reason: reason.into(),
    }
}

fn parse_or<T: std::str::FromStr>(env: &impl Env, name: &'static str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match env.get(name) {
        None => Ok(default),
        Some(raw) => raw.trim().parse().map_err(|e: T::Err| ConfigError::Invalid {
            name,
            reason: format!("{raw:?}: {e}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    const BASE: [(&str, &str); 2] = [("MONGO_URI", "mongodb://127.0.0.1:27017"), ("JWT_SECRET_KEY", "s")];

    #[test]
    fn defaults_apply_when_only_required_settings_are_given() {
        let cfg = Config::from_env(&env(&BASE)).unwrap();
        assert_eq!(cfg.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(cfg.bcrypt_cost, DEFAULT_BCRYPT_COST);
        assert_eq!(cfg.bcrypt_limits, BcryptLimits::default());
        assert!(cfg.bcrypt_limits.concurrency >= 1);
        assert_eq!(cfg.bcrypt_limits.queue_timeout, Duration::from_secs(2));
        assert_eq!(cfg.jwt.ttl, DEFAULT_JWT_TTL);
        assert_eq!(cfg.jwt.issuer, "origin");
        assert_eq!(cfg.jwt.audience, "api");
        assert_eq!(cfg.max_body_bytes, 1 << 20);
        assert!(cfg.admin.is_none());
        assert!(cfg.has_weak_secret());
    }

    #[test]
    fn refuses_to_start_without_a_secret_or_mongo_uri() {
        let no_secret = env(&BASE[..1]);
        assert_eq!(
            Config::from_env(&no_secret).err(),
            Some(ConfigError::Missing("JWT_SECRET_KEY"))
        );
        let no_uri = env(&BASE[1..]);
        assert_eq!(Config::from_env(&no_uri).err(), Some(ConfigError::Missing("MONGO_URI")));
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (name, value) in [
            ("BCRYPT_COST", "3"),
            ("BCRYPT_COST", "x"),
            ("BCRYPT_CONCURRENCY", "0"),
            ("BCRYPT_CONCURRENCY", "99999999999999999999"),
            ("BCRYPT_CONCURRENCY", "1025"),
            ("BCRYPT_QUEUE_TIMEOUT", "-1"),
            ("BCRYPT_QUEUE_TIMEOUT", "NaN"),
            ("BCRYPT_QUEUE_TIMEOUT", "inf"),
            ("BCRYPT_QUEUE_TIMEOUT", "61"),
            ("BCRYPT_QUEUE_TIMEOUT", "soon"),
            ("JWT_TTL", "0"),
            ("ORIGIN_LISTEN", "nope"),
        ] {
            let mut e = env(&BASE);
            e.insert(name.into(), value.into());
            let err = Config::from_env(&e).err().expect("must fail").to_string();
            assert!(err.starts_with(name), "{err}");
        }
    }

    #[test]
    fn bcrypt_limits_are_read_in_seconds_and_slots() {
        let mut e = env(&BASE);
        e.insert("BCRYPT_CONCURRENCY".into(), "3".into());
        e.insert("BCRYPT_QUEUE_TIMEOUT".into(), "0.25".into());
        let limits = Config::from_env(&e).unwrap().bcrypt_limits;
        assert_eq!(limits.concurrency, 3);
        assert_eq!(limits.queue_timeout, Duration::from_millis(250));
        e.insert("BCRYPT_QUEUE_TIMEOUT".into(), "0".into());
        assert!(Config::from_env(&e).unwrap().bcrypt_limits.queue_timeout.is_zero());
    }

    #[test]
    fn admin_email_is_lower_cased_and_password_needs_an_email() {
        let mut e = env(&BASE);
        e.insert("ADMIN_EMAIL".into(), "Root@Example.COM".into());
        assert_eq!(Config::from_env(&e).unwrap().admin.unwrap().email, "root@example.com");
        let mut e = env(&BASE);
        e.insert("ADMIN_PASSWORD".into(), "x".into());
        assert!(Config::from_env(&e).is_err());
    }

    #[test]
    fn debug_output_redacts_the_secret() {
        let cfg = Config::from_env(&env(&BASE)).unwrap();
        assert!(!format!("{:?}", cfg.jwt).contains("\"s\""));
    }
}
