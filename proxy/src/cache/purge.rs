//! What `POST /purge` asks of a store, and the index that lets a store
//! find entries by path, path prefix or tag without scanning its keys.
//!
//! Every stored entry is indexed under its normalised path (any query,
//! scope or variant), under each segment-aligned prefix of that path up to
//! [`INDEXED_PREFIX_DEPTH`] segments (`/users/42` under `/users/42`,
//! `/users` and `/`), and under each of its rule's tags. Filing under every
//! prefix of an arbitrarily deep path would cost the square of its length
//! (a 16 KB path made 8,012 Redis keys); capped, an entry costs at most
//! its exact path's place, `INDEXED_PREFIX_DEPTH + 2` prefix places and one
//! place per tag, of linear bytes, found in linear time. A purge by a
//! deeper prefix reads its ancestor at the cap, whose places also record
//! each entry's path, and keeps the entries under the prefix. (The memory
//! store files the same places more cheaply: an entry under its
//! ancestors only, a prefix's own path read from the path places, the
//! root's from its record of every entry.) A hard purge removes entries (or, for tags and `all`,
//! replaces generations, which is exact and O(1)); a soft purge marks the
//! entries it finds expired, so they are served only as stale answers
//! (while a refresh runs, or on upstream errors) until replaced.

use http::{HeaderMap, HeaderName};
use serde::Deserialize;

use super::entry::Entry;
use super::{CacheStore, Invalidate, StoreError};

/// Longest tag: enough for real use, and well inside the 16-bit lengths
/// an entry records its tags with.
pub const MAX_TAG_LEN: usize = 256;

/// Whether `tag` can name a tag: a non-empty word of at most
/// [`MAX_TAG_LEN`] bytes without spaces or control characters (tags travel
/// space-separated in surrogate-key headers and pub/sub messages).
pub fn is_valid_tag(tag: &str) -> bool {
    (1..=MAX_TAG_LEN).contains(&tag.len()) && !tag.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The implicit tag every cacheable rule carries: replacing its generation
/// purges every entry at once.
pub const ALL_TAG: &str = "*";

/// A purge request, as `POST /purge` accepts it.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeRequest {
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub prefixes: Vec<String>,
    #[serde(default)]
    pub all: bool,
    /// Mark entries expired instead of removing them.
    #[serde(default)]
    pub soft: bool,
    /// Remove the entries filed under `tags` without giving the tags new
    /// generations: for tags no rule records (an origin's surrogate keys),
    /// whose generation keys would otherwise pile up unread. Never set by
    /// `POST /purge`.
    #[serde(skip)]
    pub entries_only: bool,
}

impl PurgeRequest {
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.paths.is_empty() && self.prefixes.is_empty() && !self.all
    }
}

/// What a purge did: tags whose entries were purged, and entries purged by
/// path and by prefix (`all` counts under prefixes, as the prefix `/`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Purged {
    pub tags: u64,
    pub paths: u64,
    pub prefixes: u64,
}

/// A place in the purge index.
#[derive(Debug, Clone, Copy)]
pub enum Filed<'a> {
    /// Entries of this normalised path, any query, scope or variant.
    Path(&'a str),
    /// Entries of this path and every path below it (segment-aligned).
    Prefix(&'a str),
    /// Entries whose rule or origin named this tag.
    Tag(&'a str),
}

/// Carries out `request` on `store`: the one reading of a purge request
/// both stores share. Hard tag and `all` purges replace generations (exact,
/// and reaching every instance at once); entries are also removed through
/// the index, which is what reaches tags only the origin named.
pub async fn run<S: CacheStore + Invalidate + ?Sized>(store: &S, request: &PurgeRequest) -> Result<Purged, StoreError> {
    let mut purged = Purged::default();
    if !request.soft && !request.entries_only {
        store.invalidate(&request.tags).await?;
    }
    for tag in &request.tags {
        store.remove(store.filed(Filed::Tag(tag)).await?, request.soft).await?;
    }
    purged.tags = request.tags.len() as u64;
    for path in &request.paths {
        purged.paths += store
            .remove(store.filed(Filed::Path(path)).await?, request.soft)
            .await?;
    }
    let mut prefixes: Vec<&str> = request.prefixes.iter().map(|p| index_prefix(p)).collect();
    if request.all && request.soft {
        prefixes.push("/");
    }
    for prefix in prefixes {
        purged.prefixes += store
            .remove(store.filed(Filed::Prefix(prefix)).await?, request.soft)
            .await?;
    }
    if request.all && !request.soft {
        purged.prefixes += store.filed(Filed::Prefix("/")).await?.len() as u64;
        store.invalidate(&[ALL_TAG.to_owned()]).await?;
    }
    Ok(purged)
}

/// Where an entry is indexed: its normalised path and its rule's tags.
#[derive(Debug, Clone, Copy)]
pub struct IndexInfo<'a> {
    pub path: &'a str,
    pub tags: &'a [String],
}

/// Deepest prefix, in segments, an entry is filed under: API paths are
/// rarely deeper, and purges by deeper prefixes still work (see the module
/// doc), only a little slower.
pub const INDEXED_PREFIX_DEPTH: usize = 4;

/// Segments in a normalised path: `/` has none, `/a/b` two.
pub fn depth(path: &str) -> usize {
    path.split('/').filter(|s| !s.is_empty()).count()
}

/// The path itself and each of its segment-aligned prefixes, longest
/// first, none deeper than [`INDEXED_PREFIX_DEPTH`]: `/a/b` gives `/a/b`,
/// `/a`, `/`. At most `INDEXED_PREFIX_DEPTH + 2` places (one more than the
/// depth only for a trailing `/`), found in one pass over the path.
pub fn prefixes_of(path: &str) -> impl Iterator<Item = &str> {
    let cuts = path.match_indices('/').map(|(i, _)| i).filter(|&i| i > 0);
    let mut places: Vec<&str> = cuts.take(INDEXED_PREFIX_DEPTH).map(|i| &path[..i]).collect();
    if path != "/" && depth(path) <= INDEXED_PREFIX_DEPTH {
        places.push(path);
    }
    places.into_iter().rev().chain(std::iter::once("/"))
}

/// Whether the places filed under `prefix` also record each entry's path:
/// those at the depth cap, which deeper purges read and filter.
pub fn records_paths(prefix: &str) -> bool {
    depth(prefix) == INDEXED_PREFIX_DEPTH
}

/// Where a purge by `prefix` reads: the prefix's own place, or (deeper
/// than the cap) its ancestor at the cap, whose entries must then be kept
/// only if their path is under `prefix`.
pub fn place_of_prefix(prefix: &str) -> (&str, bool) {
    if depth(prefix) <= INDEXED_PREFIX_DEPTH {
        return (prefix, false);
    }
    let cut = prefix
        .match_indices('/')
        .map(|(i, _)| i)
        .nth(INDEXED_PREFIX_DEPTH)
        .unwrap_or(prefix.len());
    (&prefix[..cut], true)
}

/// Whether `path` is `prefix` or below it, segment-aligned (`/usersx` is
/// not under `/users`).
pub fn is_under(path: &str, prefix: &str) -> bool {
    prefix == "/" || path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

/// A prefix as the index stores it: no trailing `/` except the root.
fn index_prefix(prefix: &str) -> &str {
    match prefix.trim_end_matches('/') {
        "" => "/",
        trimmed => trimmed,
    }
}

/// Most tags one answer's surrogate-key header may name: enough for real
/// use, bounded against a hostile origin.
const MAX_SURROGATE_KEYS: usize = 64;

/// The tags an answer names in its surrogate-key header (space separated,
/// as Fastly and Varnish read it).
pub fn surrogate_keys(headers: &HeaderMap, name: &HeaderName) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for value in headers.get_all(name) {
        let Ok(value) = value.to_str() else { continue };
        for key in value.split_ascii_whitespace() {
            if is_valid_tag(key) && key != ALL_TAG && !keys.iter().any(|k| k == key) {
                keys.push(key.to_owned());
            }
        }
    }
    keys.truncate(MAX_SURROGATE_KEYS);
    keys
}

/// `entry` marked expired as of `now_ms`, keeping its stale windows.
pub fn softly_expired(entry: &Entry, now_ms: u64) -> Entry {
    let mut marked = entry.clone();
    marked.expires_at_ms = marked.expires_at_ms.min(now_ms);
    marked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_indexed_under_itself_and_each_segment_aligned_prefix() {
        assert_eq!(
            prefixes_of("/users/42").collect::<Vec<_>>(),
            ["/users/42", "/users", "/"]
        );
        assert_eq!(prefixes_of("/users/").collect::<Vec<_>>(), ["/users/", "/users", "/"]);
        assert_eq!(prefixes_of("/").collect::<Vec<_>>(), ["/"]);
    }

    #[test]
    fn the_index_stops_at_the_depth_cap_and_deeper_purges_read_the_ancestor_there() {
        let deep = "/a/b/c/d/e/f";
        assert_eq!(
            prefixes_of(deep).collect::<Vec<_>>(),
            ["/a/b/c/d", "/a/b/c", "/a/b", "/a", "/"]
        );
        assert_eq!(place_of_prefix("/a/b"), ("/a/b", false));
        assert_eq!(place_of_prefix("/a/b/c/d"), ("/a/b/c/d", false));
        assert_eq!(place_of_prefix("/a/b/c/d/e"), ("/a/b/c/d", true));
        assert!(records_paths("/a/b/c/d") && !records_paths("/a/b/c"));
        assert!(is_under("/a/b/c/d/e/f", "/a/b/c/d/e"));
        assert!(!is_under("/a/b/c/d/ex", "/a/b/c/d/e"));
        assert!(is_under("/anything", "/"));
    }

    #[test]
    fn a_huge_path_costs_a_bounded_number_of_places_of_linear_size() {
        let path = "/x".repeat(8 * 1024);
        let places: Vec<&str> = prefixes_of(&path).collect();
        assert_eq!(places.len(), INDEXED_PREFIX_DEPTH + 1);
        assert_eq!(
            prefixes_of("/a/b/c/d/").count(),
            INDEXED_PREFIX_DEPTH + 2,
            "a trailing slash"
        );
        assert!(places.iter().map(|p| p.len()).sum::<usize>() < 64);
    }

    #[test]
    fn tags_are_bounded_words() {
        assert!(is_valid_tag("user:42"));
        assert!(is_valid_tag(&"t".repeat(MAX_TAG_LEN)));
        // Longer tags would not fit the 16-bit lengths an entry records.
        assert!(!is_valid_tag(&"t".repeat(MAX_TAG_LEN + 1)));
        assert!(!is_valid_tag("") && !is_valid_tag("a b") && !is_valid_tag("a\u{7}"));
    }

    #[test]
    fn surrogate_keys_are_read_once_each_and_never_name_everything() {
        let name = HeaderName::from_static("surrogate-key");
        let mut headers = HeaderMap::new();
        headers.append(&name, "users  user:42 *".parse().unwrap());
        headers.append(&name, "user:42 posts".parse().unwrap());
        assert_eq!(surrogate_keys(&headers, &name), ["users", "user:42", "posts"]);
    }

    #[test]
    fn prefixes_lose_their_trailing_slash_except_the_root() {
        assert_eq!(index_prefix("/users/"), "/users");
        assert_eq!(index_prefix("/users"), "/users");
        assert_eq!(index_prefix("/"), "/");
    }

    #[test]
    fn a_request_names_what_to_purge_and_nothing_else() {
        let parsed: PurgeRequest = serde_json::from_str(r#"{"paths": ["/a"], "soft": true}"#).unwrap();
        assert_eq!(parsed.paths, ["/a"]);
        assert!(parsed.soft && !parsed.is_empty());
        assert!(serde_json::from_str::<PurgeRequest>(r#"{"path": "/a"}"#).is_err());
        assert!(serde_json::from_str::<PurgeRequest>("{}").unwrap().is_empty());
    }
}
