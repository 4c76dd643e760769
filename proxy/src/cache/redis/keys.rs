//! Every Redis name the proxy uses, built here and nowhere else.
//!
//! `<prefix>` is `cache.key_prefix` then `cache.namespace` and `:`, so
//! deployments sharing one Redis share nothing unless they say so.
//!
//! | name | holds |
//! |---|---|
//! | `<prefix>e:<hex>` | an entry (stamp + encoded entry), with a TTL |
//! | `<prefix>l:<hex>` | the lease of a miss being fetched |
//! | `<prefix>g:<tag>` | a tag's generation (no TTL) |
//! | `<prefix>ip:<path>`, `ix:<prefix>`, `it:<tag>` | the purge index |
//! | `<prefix>events` | the channel invalidations are announced on |
//!
//! Instances of different versions may share one Redis during a rolling
//! upgrade, so the names are a protocol: [`SCHEMA_VERSION`] changes
//! whenever a name or a value's encoding does. Generations and the purge
//! index are how a write or a purge through one instance reaches every
//! other; as long as their names are unchanged, a write through either
//! version makes both stop serving what it replaced (tests/proxy_upgrade.rs
//! checks this against the previous release's binary). A schema that
//! renames them must write both the old and the new names while the old
//! version may still run.
//!
//! Entry keys hash the rule's cache id (see `route::cache_id`), which this
//! version changed: the previous version's entries are not read by this
//! one (both serve, each fills its own), and expire with their TTL.

use super::CacheKey;

/// Version 1: the names above, unchanged since the store's first release.
pub const SCHEMA_VERSION: u32 = 1;

/// The names under one prefix.
#[derive(Debug, Clone)]
pub struct Names {
    prefix: String,
}

impl Names {
    pub fn new(key_prefix: &str, namespace: &str) -> Names {
        Names {
            prefix: format!("{key_prefix}{namespace}:"),
        }
    }

    pub fn entry(&self, key: &CacheKey) -> String {
        format!("{}e:{}", self.prefix, key.to_hex())
    }

    pub fn lease(&self, key: &CacheKey) -> String {
        format!("{}l:{}", self.prefix, key.to_hex())
    }

    pub fn generation(&self, tag: &str) -> String {
        format!("{}g:{}", self.prefix, tag)
    }

    /// The purge index's set of entries at exactly `path`.
    pub fn path_set(&self, path: &str) -> String {
        format!("{}ip:{}", self.prefix, path)
    }

    /// The purge index's set of entries under the path prefix `prefix`.
    pub fn subtree_set(&self, prefix: &str) -> String {
        format!("{}ix:{}", self.prefix, prefix)
    }

    /// The purge index's set of entries recording `tag`.
    pub fn tag_set(&self, tag: &str) -> String {
        format!("{}it:{}", self.prefix, tag)
    }

    /// The channel invalidations are published on, for other instances'
    /// L1 copies.
    pub fn events(&self) -> String {
        format!("{}events", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names are a protocol between versions: a change here must bump
    /// [`SCHEMA_VERSION`] and keep writing the old names for a while.
    #[test]
    fn names_are_those_of_schema_version_1() {
        assert_eq!(SCHEMA_VERSION, 1);
        let names = Names::new("cgw:", "origin:5000");
        let key = CacheKey::from_hex(&"ab".repeat(32)).unwrap();
        assert_eq!(names.entry(&key), format!("cgw:origin:5000:e:{}", "ab".repeat(32)));
        assert_eq!(names.lease(&key), format!("cgw:origin:5000:l:{}", "ab".repeat(32)));
        assert_eq!(names.generation("users"), "cgw:origin:5000:g:users");
        assert_eq!(names.path_set("/users/1"), "cgw:origin:5000:ip:/users/1");
        assert_eq!(names.subtree_set("/users"), "cgw:origin:5000:ix:/users");
        assert_eq!(names.tag_set("users"), "cgw:origin:5000:it:users");
        assert_eq!(names.events(), "cgw:origin:5000:events");
    }
}
