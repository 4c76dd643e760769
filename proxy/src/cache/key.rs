//! Cache keys: structured parts, hashed only at the edge.
//!
//! A key is SHA-256 over an unambiguous, versioned encoding of the rule
//! name, normalised path and query, the `vary` header values and the scope.
//! Every part is length-prefixed, so no choice of path, query or subject can
//! make two different requests encode alike, and the version prefix lets a
//! future encoding never collide with this one.

use http::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256};

use super::policy::Scope;

/// Bumped whenever the encoding below changes.
const KEY_VERSION: &[u8] = b"cgw-key-v1";

/// Whose entry this is: the part of the key that keeps users apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeKey<'a> {
    /// One entry per verified subject.
    User(&'a str),
    /// One entry per set of roles (order-insensitive).
    Role(&'a [String]),
    /// One entry for everyone the rule admits.
    Shared,
}

/// A hashed cache key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey([u8; 32]);

/// The parts a key is built from.
pub struct KeyParts<'a> {
    pub rule: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// `(header name, value)` for each of the rule's `vary` headers, in the
    /// rule's order; a missing header is an empty value, and repeated values
    /// are joined by the caller.
    pub vary: &'a [(&'a str, &'a [u8])],
    pub scope: ScopeKey<'a>,
}

/// A request's key, from what the request path has in hand: the rule's
/// cache id and scope, the headers its answers vary on, the normalised
/// target and the verified identity.
pub struct RequestKey<'a> {
    /// The rule's cache id (`route::cache_id`).
    pub rule: &'a str,
    pub scope: Scope,
    pub vary: &'a [HeaderName],
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// The verified subject and roles; `None` on public rules.
    pub identity: Option<(&'a str, &'a [String])>,
}

impl RequestKey<'_> {
    /// Bytes the key is built from: path, query and the values of the
    /// headers it varies on (what `cache.max_key_bytes` bounds).
    pub fn material_len(&self) -> u64 {
        let varied: usize = self
            .vary
            .iter()
            .flat_map(|name| self.headers.get_all(name))
            .map(|value| value.len())
            .sum();
        (self.path.len() + self.query.map_or(0, str::len) + varied) as u64
    }

    pub fn key(&self) -> CacheKey {
        // Repeated header values are joined as a list, as a recipient
        // would read them.
        let joined: Vec<(&str, Vec<u8>)> = self
            .vary
            .iter()
            .map(|name| {
                let mut value = Vec::new();
                for (i, v) in self.headers.get_all(name).iter().enumerate() {
                    if i > 0 {
                        value.extend_from_slice(b", ");
                    }
                    value.extend_from_slice(v.as_bytes());
                }
                (name.as_str(), value)
            })
            .collect();
        let vary: Vec<(&str, &[u8])> = joined.iter().map(|(n, v)| (*n, v.as_slice())).collect();
        // Config guarantees `user`/`role` scopes only on authenticated
        // rules, so an identity is there; `Shared` is the only scope
        // without one.
        let scope = match (self.scope, self.identity) {
            (Scope::User, Some((subject, _))) => ScopeKey::User(subject),
            (Scope::Role, Some((_, roles))) => ScopeKey::Role(roles),
            _ => ScopeKey::Shared,
        };
        CacheKey::build(&KeyParts {
            rule: self.rule,
            path: self.path,
            query: self.query,
            vary: &vary,
            scope,
        })
    }
}

impl CacheKey {
    pub fn build(parts: &KeyParts<'_>) -> CacheKey {
        let mut h = Sha256::new();
        field(&mut h, KEY_VERSION);
        field(&mut h, parts.rule.as_bytes());
        field(&mut h, parts.path.as_bytes());
        match parts.query {
            Some(q) => {
                h.update([1]);
                field(&mut h, q.as_bytes());
            }
            None => h.update([0]),
        }
        h.update((parts.vary.len() as u32).to_be_bytes());
        for (name, value) in parts.vary {
            field(&mut h, name.as_bytes());
            field(&mut h, value);
        }
        match &parts.scope {
            ScopeKey::User(subject) => {
                h.update(b"u");
                field(&mut h, subject.as_bytes());
            }
            ScopeKey::Role(roles) => {
                h.update(b"r");
                let mut sorted: Vec<&String> = roles.iter().collect();
                sorted.sort();
                sorted.dedup();
                h.update((sorted.len() as u32).to_be_bytes());
                for role in sorted {
                    field(&mut h, role.as_bytes());
                }
            }
            ScopeKey::Shared => h.update(b"s"),
        }
        CacheKey(h.finalize().into())
    }

    /// The shared-scope key of `path` on a rule named `r`, for tests.
    #[cfg(test)]
    pub(crate) fn for_test(path: &str) -> CacheKey {
        CacheKey::build(&KeyParts {
            rule: "r",
            path,
            query: None,
            vary: &[],
            scope: ScopeKey::Shared,
        })
    }

    /// The key whose [`to_hex`](Self::to_hex) is `hex`, if it is one.
    pub fn from_hex(hex: &str) -> Option<CacheKey> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex, &mut bytes).ok()?;
        Some(CacheKey(bytes))
    }

    /// Lower-case hex, as used in store keys.
    pub fn to_hex(&self) -> String {
        self.with_hex(str::to_owned)
    }

    /// Calls `f` with the key's lower-case hex, written on the stack: for
    /// names built around it, with no `String` of its own.
    pub fn with_hex<T>(&self, f: impl FnOnce(&str) -> T) -> T {
        let mut digits = [0u8; 64];
        hex::encode_to_slice(self.0, &mut digits).expect("two digits a byte");
        f(std::str::from_utf8(&digits).expect("hex digits are ASCII"))
    }

    /// Which of `count` buckets the key falls in: its first eight bytes
    /// (a SHA-256, so evenly spread) modulo `count`.
    pub fn bucket(&self, count: usize) -> usize {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        (u64::from_be_bytes(first) % count.max(1) as u64) as usize
    }
}

fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_key_keeps_users_apart_only_where_its_scope_says() {
        let mut headers = HeaderMap::new();
        headers.insert("accept-language", "fr".parse().unwrap());
        let vary = [HeaderName::from_static("accept-language")];
        let roles = ["user".to_owned()];
        let key = |scope: Scope, subject: &str| {
            RequestKey {
                rule: "r@1",
                scope,
                vary: &vary,
                path: "/items",
                query: Some("a=1"),
                headers: &headers,
                identity: Some((subject, &roles)),
            }
            .key()
        };
        assert_ne!(key(Scope::User, "alice"), key(Scope::User, "bob"));
        assert_eq!(key(Scope::Role, "alice"), key(Scope::Role, "bob"));
        assert_eq!(key(Scope::Shared, "alice"), key(Scope::Shared, "bob"));
        assert_ne!(key(Scope::Shared, "alice"), key(Scope::Role, "alice"));
        let request = RequestKey {
            rule: "r@1",
            scope: Scope::Shared,
            vary: &vary,
            path: "/items",
            query: Some("a=1"),
            headers: &headers,
            identity: None,
        };
        assert_eq!(
            request.material_len(),
            ("/items".len() + "a=1".len() + "fr".len()) as u64
        );
    }

    fn key(rule: &str, path: &str, query: Option<&str>, scope: ScopeKey<'_>) -> CacheKey {
        CacheKey::build(&KeyParts {
            rule,
            path,
            query,
            vary: &[],
            scope,
        })
    }

    #[test]
    fn a_key_round_trips_through_hex_and_other_text_is_no_key() {
        let k = key("r", "/a", None, ScopeKey::Shared);
        assert_eq!(CacheKey::from_hex(&k.to_hex()), Some(k));
        assert_eq!(CacheKey::from_hex("not hex"), None);
        assert_eq!(CacheKey::from_hex("abcd"), None);
    }

    #[test]
    fn same_parts_same_key() {
        assert_eq!(
            key("r", "/a", Some("x=1"), ScopeKey::Shared),
            key("r", "/a", Some("x=1"), ScopeKey::Shared)
        );
    }

    #[test]
    fn every_part_changes_the_key() {
        let base = key("r", "/a", Some("x=1"), ScopeKey::Shared);
        assert_ne!(base, key("r2", "/a", Some("x=1"), ScopeKey::Shared));
        assert_ne!(base, key("r", "/b", Some("x=1"), ScopeKey::Shared));
        assert_ne!(base, key("r", "/a", Some("x=2"), ScopeKey::Shared));
        assert_ne!(base, key("r", "/a", None, ScopeKey::Shared));
        assert_ne!(base, key("r", "/a", Some("x=1"), ScopeKey::User("u1")));
        let vary = CacheKey::build(&KeyParts {
            rule: "r",
            path: "/a",
            query: Some("x=1"),
            vary: &[("accept-language", b"fr")],
            scope: ScopeKey::Shared,
        });
        assert_ne!(base, vary);
    }

    #[test]
    fn users_and_roles_get_their_own_entries() {
        assert_ne!(
            key("r", "/me", None, ScopeKey::User("u1")),
            key("r", "/me", None, ScopeKey::User("u2"))
        );
        let (a, b) = (vec!["admin".to_string()], vec!["user".to_string()]);
        assert_ne!(
            key("r", "/x", None, ScopeKey::Role(&a)),
            key("r", "/x", None, ScopeKey::Role(&b))
        );
        let (ab, ba) = (
            vec!["a".to_string(), "b".to_string()],
            vec!["b".to_string(), "a".to_string()],
        );
        assert_eq!(
            key("r", "/x", None, ScopeKey::Role(&ab)),
            key("r", "/x", None, ScopeKey::Role(&ba))
        );
    }

    #[test]
    fn boundaries_between_parts_cannot_be_forged() {
        // Without length prefixes these would concatenate to the same bytes.
        assert_ne!(
            key("ab", "/c", None, ScopeKey::Shared),
            key("a", "b/c", None, ScopeKey::Shared)
        );
        assert_ne!(
            key("r", "/a", None, ScopeKey::User("")),
            key("r", "/a", None, ScopeKey::Shared)
        );
        assert_ne!(
            key("r", "/a", Some(""), ScopeKey::Shared),
            key("r", "/a", None, ScopeKey::Shared)
        );
        let r1 = vec!["a\u{0}b".to_string()];
        let r2 = vec!["a".to_string(), "b".to_string()];
        assert_ne!(
            key("r", "/", None, ScopeKey::Role(&r1)),
            key("r", "/", None, ScopeKey::Role(&r2))
        );
    }
}
