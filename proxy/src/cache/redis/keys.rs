//! Every Redis name the proxy uses, built here and nowhere else.
//!
//! `<prefix>` is `cache.key_prefix` then `cache.namespace` and `:`, so
//! deployments sharing one Redis share nothing unless they say so.
//!
//! | name | holds |
//! |---|---|
//! | `<scope>e:<hex>` | an entry (stamp + encoded entry), with a TTL |
//! | `<scope>l:<hex>` | the lease of a miss being fetched |
//! | `<scope>g:<tag>` | a tag's generation (no TTL) |
//! | `<scope>ip:<path>`, `ix:<prefix>`, `it:<tag>` | the purge index |
//! | `<scope0>events` | the channel invalidations are announced on |
//! | `<scope>rl:<hex>` | a rate limit cell's TAT (µs), with a TTL |
//! | `<scope>rt` | revoked tokens: a sorted set of `jti`s by `exp` (no TTL) |
//! | `<scope>rs` | revoked subjects: a hash of subject → time (no TTL) |
//!
//! **Buckets** (schema version 2). With `cache.redis_buckets = 1` (the
//! default on one node or a Sentinel group) `<scope>` is `<prefix>`: the
//! names of version 1, unchanged since the store's first release. With
//! K > 1 buckets (the default, 64, on a cluster) every entry falls in one
//! bucket ([`CacheKey::bucket`]) and `<scope>` is `<prefix>{b<N>}:`: the
//! hash tag puts everything a hit, a store or a lease touches for that
//! entry (the entry, the bucket's copy of each generation, its index
//! sets, its lease) in one hash slot, so each of those is one command or
//! one pipeline to one node, while the K buckets spread a hot route's
//! entries over the cluster. A write replaces its tags' generations in
//! every bucket; a purge reads the index sets of every bucket.
//!
//! Instances of different versions may share one Redis during a rolling
//! upgrade, so the names are a protocol: [`SCHEMA_VERSION`] changes
//! whenever a name or a value's encoding does. Generations and the purge
//! index are how a write or a purge through one instance reaches every
//! other; as long as their names are unchanged, a write through either
//! version makes both stop serving what it replaced (tests/proxy_upgrade.rs
//! checks this against the previous release's binary). Version 2 keeps
//! version 1's names wherever version 1 could run (one node, Sentinel);
//! the bucketed names exist only where it could not (a cluster, where its
//! multi-key commands fail), so no deployment mixes the two.

use std::fmt::Write;

use super::CacheKey;

/// The longest bucket tag a name carries: `{b`, a usize's 20 digits, `}:`.
const BUCKET_TAG_MAX: usize = 24;

/// A bucket's hash tag text, written where it is needed: into a name
/// without a `String` of its own.
struct HashTag(usize);

impl std::fmt::Display for HashTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "b{}", self.0)
    }
}

/// Version 2: version 1's names, and hash-tagged buckets on a cluster.
pub const SCHEMA_VERSION: u32 = 2;

/// The default number of buckets on a cluster: a power of two several
/// times the number of primaries of most clusters, so buckets spread
/// evenly over nodes, and few enough that a write's K generation copies
/// stay cheap.
pub const CLUSTER_BUCKETS: usize = 64;

/// The names under one prefix, spread over `buckets`.
#[derive(Debug, Clone)]
pub struct Names {
    prefix: String,
    buckets: usize,
}

impl Names {
    pub fn new(key_prefix: &str, namespace: &str, buckets: usize) -> Names {
        Names {
            prefix: format!("{key_prefix}{namespace}:"),
            buckets: buckets.max(1),
        }
    }

    pub fn buckets(&self) -> usize {
        self.buckets
    }

    /// The bucket `key`'s entry, lease and index members live in.
    pub fn bucket_of(&self, key: &CacheKey) -> usize {
        key.bucket(self.buckets)
    }

    /// What Redis Cluster hashes of `bucket`'s names: the text of their
    /// hash tag.
    pub fn hash_tag(bucket: usize) -> String {
        HashTag(bucket).to_string()
    }

    fn name(&self, bucket: usize, kind: &str, rest: &str) -> String {
        // Sized once: a lookup builds several names, and `format!` grew
        // each from empty, one reallocation a piece.
        let mut name = String::with_capacity(self.prefix.len() + BUCKET_TAG_MAX + kind.len() + rest.len());
        name.push_str(&self.prefix);
        if self.buckets > 1 {
            write!(name, "{{{}}}:", HashTag(bucket)).expect("writing to a String");
        }
        name.push_str(kind);
        name.push_str(rest);
        name
    }

    pub fn entry(&self, key: &CacheKey) -> String {
        key.with_hex(|hex| self.name(self.bucket_of(key), "e:", hex))
    }

    pub fn lease(&self, key: &CacheKey) -> String {
        key.with_hex(|hex| self.name(self.bucket_of(key), "l:", hex))
    }

    /// `bucket`'s copy of `tag`'s generation.
    pub fn generation(&self, bucket: usize, tag: &str) -> String {
        self.name(bucket, "g:", tag)
    }

    /// The purge index's set of `bucket`'s entries at exactly `path`.
    pub fn path_set(&self, bucket: usize, path: &str) -> String {
        self.name(bucket, "ip:", path)
    }

    /// The purge index's set of `bucket`'s entries under the path prefix
    /// `prefix`.
    pub fn subtree_set(&self, bucket: usize, prefix: &str) -> String {
        self.name(bucket, "ix:", prefix)
    }

    /// The purge index's set of `bucket`'s entries recording `tag`.
    pub fn tag_set(&self, bucket: usize, tag: &str) -> String {
        self.name(bucket, "it:", tag)
    }

    /// A rate limit cell, in the bucket its id falls in.
    pub fn limit(&self, bucket: usize, id: &str) -> String {
        self.name(bucket, "rl:", id)
    }

    /// `bucket`'s copy of the revoked tokens (every bucket holds them all,
    /// so a hit reads them beside its entry).
    pub fn revoked_tokens(&self, bucket: usize) -> String {
        self.name(bucket, "rt", "")
    }

    /// `bucket`'s copy of the revoked subjects.
    pub fn revoked_subjects(&self, bucket: usize) -> String {
        self.name(bucket, "rs", "")
    }

    /// The channel invalidations are published on, for other instances'
    /// L1 copies (in bucket 0's slot: one shard carries it).
    pub fn events(&self) -> String {
        self.name(0, "events", "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names are a protocol between versions: a change here must bump
    /// [`SCHEMA_VERSION`] and keep writing the old names for a while.
    #[test]
    fn unbucketed_names_are_those_of_schema_version_1() {
        let names = Names::new("cgw:", "origin:5000", 1);
        let key = CacheKey::from_hex(&"ab".repeat(32)).unwrap();
        assert_eq!(names.entry(&key), format!("cgw:origin:5000:e:{}", "ab".repeat(32)));
        assert_eq!(names.lease(&key), format!("cgw:origin:5000:l:{}", "ab".repeat(32)));
        assert_eq!(names.generation(0, "users"), "cgw:origin:5000:g:users");
        assert_eq!(names.path_set(0, "/users/1"), "cgw:origin:5000:ip:/users/1");
        assert_eq!(names.subtree_set(0, "/users"), "cgw:origin:5000:ix:/users");
        assert_eq!(names.tag_set(0, "users"), "cgw:origin:5000:it:users");
        assert_eq!(names.events(), "cgw:origin:5000:events");
    }

    #[test]
    fn bucketed_names_of_schema_version_2_keep_an_entry_and_its_bucket_in_one_slot() {
        assert_eq!(SCHEMA_VERSION, 2);
        let names = Names::new("cgw:", "origin:5000", 64);
        let key = CacheKey::from_hex(&"ab".repeat(32)).unwrap();
        let bucket = names.bucket_of(&key);
        assert_eq!(bucket, (0xabab_abab_abab_abab_u64 % 64) as usize);
        let tag = format!("{{b{bucket}}}");
        for name in [
            names.entry(&key),
            names.lease(&key),
            names.generation(bucket, "users"),
            names.path_set(bucket, "/users/1"),
            names.subtree_set(bucket, "/users"),
            names.tag_set(bucket, "users"),
        ] {
            // The first `{…}` of a name is what Redis Cluster hashes.
            assert!(name.starts_with(&format!("cgw:origin:5000:{tag}:")), "{name}");
            assert_eq!(name.find('{'), Some("cgw:origin:5000:".len()));
        }
        assert_eq!(names.events(), "cgw:origin:5000:{b0}:events");
    }
}
