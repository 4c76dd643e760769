//! The two rule sets the reload scenario switches between, the invalid
//! file it slips in once, and what each request of the load must be
//! answered under each set.
//!
//! Owns the config files' text and the expected statuses; it does no I/O
//! beyond writing a rendered file, and knows nothing of processes or load.
//!
//! A and B are full proxy configurations modelled on the shipped
//! `config.toml`, identical in everything a reload may not change
//! (listeners, upstream, store). They differ where a reload may:
//! - `users-list` (`GET /users`): roles `admin` and `user` under A,
//!   `admin` only under B. A user's token gets the origin's 200 under
//!   A and the proxy's 403 under B; an admin's gets 200 under both.
//! - `user` (`GET /users/{id}`): `ttl = "30s"` under A, `"5s"` under B, so
//!   no hit may report more than 30 s left.
//!
//! The invalid file is A with `ttl = "0s"` on `user`: valid TOML that the
//! proxy's validation must refuse, naming the field (`routes[3].cache.ttl`).

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;

/// A rule set the proxy may be running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum RuleSet {
    A,
    B,
}

/// A file the harness may install as the proxy's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConfigFile {
    Valid(RuleSet),
    /// Refused by validation; the running rules must stay as they are.
    Invalid,
}

impl ConfigFile {
    pub fn label(self) -> &'static str {
        match self {
            ConfigFile::Valid(RuleSet::A) => "A",
            ConfigFile::Valid(RuleSet::B) => "B",
            ConfigFile::Invalid => "invalid",
        }
    }
}

/// The `user` route's TTL under A, and the longest TTL a hit may report.
pub const USER_TTL_A_S: u64 = 30;
/// The `user` route's TTL under B.
pub const USER_TTL_B_S: u64 = 5;
/// What the proxy's answer to the invalid file must name (lenient: found
/// anywhere in the 400's body, normally an `errors[].field`).
pub const INVALID_FIELD_HINT: &str = "ttl";

/// The addresses every rendered file carries. The proxy is also given them
/// as flags; writing them into the file too means a reload that re-reads
/// the file without the flags' overlay still sees the same boot settings.
#[derive(Clone, Debug)]
pub struct Addresses {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub upstream: SocketAddr,
    pub redis_url: String,
}

/// One request kind of the load; its expected statuses depend on the rule
/// set for [`Kind::RulesUser`] only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// `GET /users/{id}` of a few hot users: mostly hits.
    Hot,
    /// `GET /users/{id}` of any user: mostly misses.
    Cold,
    /// `PUT /users/{own id}`, renaming: invalidates `users`.
    Put,
    /// `POST /register`: invalidates `users`.
    Register,
    /// `GET /users` with a user's token: 200 under A, 403 under B.
    RulesUser,
    /// `GET /users?per_page=5` with an admin's token: 200 under both.
    RulesAdmin,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Hot,
        Kind::Cold,
        Kind::Put,
        Kind::Register,
        Kind::RulesUser,
        Kind::RulesAdmin,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Hot => "hot",
            Kind::Cold => "cold",
            Kind::Put => "put",
            Kind::Register => "register",
            Kind::RulesUser => "rules-user",
            Kind::RulesAdmin => "rules-admin",
        }
    }

    /// The statuses a correct proxy may answer under `set`. Only valid
    /// requests are sent, so anything else is a finding.
    pub fn allowed(self, set: RuleSet) -> &'static [u16] {
        match (self, set) {
            (Kind::Hot | Kind::Cold | Kind::Put | Kind::RulesAdmin, _) => &[200],
            (Kind::Register, _) => &[201],
            (Kind::RulesUser, RuleSet::A) => &[200],
            (Kind::RulesUser, RuleSet::B) => &[403],
        }
    }

    /// True when the answer differs between A and B.
    pub fn depends_on_rules(self) -> bool {
        self.allowed(RuleSet::A) != self.allowed(RuleSet::B)
    }

    /// Whether this kind's route is cacheable in both sets (its answers
    /// carry a meaningful `Cache-Status`).
    pub fn cacheable(self) -> bool {
        matches!(self, Kind::Hot | Kind::Cold | Kind::RulesUser | Kind::RulesAdmin)
    }

    /// The longest `ttl=` a hit of this kind may report under either set.
    pub fn max_hit_ttl_s(self) -> Option<u64> {
        matches!(self, Kind::Hot | Kind::Cold).then_some(USER_TTL_A_S.max(USER_TTL_B_S))
    }
}

/// `users-list` under A: the origin's two roles, so every user.
const ROLES_A: &str = r#"roles = ["admin", "user"]"#;
/// `users-list` under B: admins only.
const ROLES_B: &str = r#"roles = ["admin"]"#;

/// The text of `file` for these addresses.
pub fn render(file: ConfigFile, addrs: &Addresses) -> String {
    let (users_list_roles, user_ttl) = match file {
        ConfigFile::Valid(RuleSet::A) => (ROLES_A, format!("{USER_TTL_A_S}s")),
        ConfigFile::Valid(RuleSet::B) => (ROLES_B, format!("{USER_TTL_B_S}s")),
        ConfigFile::Invalid => (ROLES_A, "0s".to_owned()),
    };
    TEMPLATE
        .replace("{label}", file.label())
        .replace("{listen}", &addrs.listen.to_string())
        .replace("{admin_listen}", &addrs.admin.to_string())
        .replace("{upstream}", &format!("http://{}", addrs.upstream))
        .replace("{redis_url}", &addrs.redis_url)
        .replace("{users_list_roles}", users_list_roles)
        .replace("{user_ttl}", &user_ttl)
}

/// Writes `text` to `path` by renaming a sibling over it, so the proxy,
/// reading at any moment, sees the old file or the new one, never half.
pub fn install(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// Modelled on the shipped `config.toml` (see its comments for each field);
/// `{...}` are filled in by [`render`].
const TEMPLATE: &str = r#"# Written by the reload harness (benches/src/reload/rules.rs): rule set {label}.
listen = "{listen}"
admin_listen = "{admin_listen}"

[server]
header_read_timeout = "10s"
idle_timeout = "60s"
body_read_timeout = "30s"
write_timeout = "30s"
max_connections = 10000
max_connections_per_ip = 1024
max_request_body_bytes = 1048576
shutdown_grace = "10s"

[upstream]
url = "{upstream}"
connect_timeout = "2s"
response_timeout = "30s"
pool_idle_timeout = "50s"
pool_max_idle_per_host = 256
max_concurrent_requests = 1024

[cache]
redis_url = "{redis_url}"
default_ttl = "60s"
max_entry_bytes = 1048576
max_key_bytes = 8192
max_stale = "1h"
memory_max_bytes = 67108864
l1_max_bytes = 33554432
operation_timeout = "50ms"
invalidation_wait = "1s"
breaker_failures = 3
breaker_open_for = "1s"
key_prefix = "cgw:"
lease_ttl = "5s"
surrogate_key_header = "surrogate-key"
forward_headers = ["accept"]

[jwt]
algorithm = "HS256"
issuer = "origin"
audience = "api"
leeway = "30s"
role_claim = "role"

[identity]
subject_header = "x-auth-subject"
role_header = "x-auth-role"

[[routes]]
name = "register"
path = "/register"
methods = ["POST"]
access = "public"
invalidates = ["users"]

[[routes]]
name = "login"
path = "/login"
methods = ["POST"]
access = "public"

# Differs between A and B: who may list users.
[[routes]]
name = "users-list"
path = "/users"
methods = ["GET"]
access = "roles"
{users_list_roles}
cache = { scope = "shared", tags = ["users"] }

# Differs between A and B: the TTL (the invalid file sets "0s").
[[routes]]
name = "user"
path = "/users/{id}"
methods = ["GET"]
access = "authenticated"
cache = { scope = "shared", tags = ["users"], ttl = "{user_ttl}" }

[[routes]]
name = "user-write"
path = "/users/{id}"
methods = ["PUT", "DELETE"]
access = "authenticated"
invalidates = ["users"]

[[routes]]
name = "me"
path = "/me"
methods = ["GET"]
access = "authenticated"
cache = { scope = "user", tags = ["users"] }

[[routes]]
name = "admin"
path = "/admin"
methods = ["GET"]
access = "roles"
roles = ["admin"]

[[routes]]
name = "healthz"
path = "/healthz"
methods = ["GET"]
access = "public"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> Addresses {
        Addresses {
            listen: "127.0.0.1:1".parse().unwrap(),
            admin: "127.0.0.1:2".parse().unwrap(),
            upstream: "127.0.0.1:3".parse().unwrap(),
            redis_url: "redis://127.0.0.1:4/0".into(),
        }
    }

    #[test]
    fn every_placeholder_is_filled() {
        for file in [
            ConfigFile::Valid(RuleSet::A),
            ConfigFile::Valid(RuleSet::B),
            ConfigFile::Invalid,
        ] {
            let text = render(file, &addrs());
            for placeholder in [
                "{label}",
                "{listen}",
                "{admin_listen}",
                "{upstream}",
                "{redis_url}",
                "{users_list_roles}",
                "{user_ttl}",
            ] {
                assert!(!text.contains(placeholder), "{placeholder} left in {}", file.label());
            }
            // `{id}` is the route pattern's, not a placeholder.
            assert!(text.contains(r#"path = "/users/{id}""#));
        }
    }

    #[test]
    fn the_sets_differ_only_where_a_reload_may_change_things() {
        let a = render(ConfigFile::Valid(RuleSet::A), &addrs());
        let b = render(ConfigFile::Valid(RuleSet::B), &addrs());
        let differing: Vec<_> = a.lines().zip(b.lines()).filter(|(x, y)| x != y).collect();
        assert_eq!(a.lines().count(), b.lines().count());
        assert_eq!(differing.len(), 3, "{differing:?}");
        assert!(differing.iter().all(|(x, _)| x.starts_with("# Written")
            || x.starts_with("roles = ")
            || x.starts_with("cache = { scope = \"shared\", tags = [\"users\"], ttl")));
        assert!(b.contains("roles = [\"admin\"]\ncache"));
    }

    #[test]
    fn only_rules_user_depends_on_the_set() {
        let dependent: Vec<_> = Kind::ALL.into_iter().filter(|k| k.depends_on_rules()).collect();
        assert_eq!(dependent, [Kind::RulesUser]);
    }
}
