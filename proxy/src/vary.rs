//! Request headers the origin said, with `Vary`, its answers depend on
//! beyond a rule's own `vary`: learned per URL (rule, path and query) and
//! added to that URL's keys, so its variants stay apart while the rule's
//! other URLs keep their keys (and their entries).
//!
//! Only headers that reach the origin can be learned (the rule's `vary`
//! and `forward_headers`); an answer varying on anything else, or on `*`,
//! is not stored at all (see [`crate::cache::storability`]). Each instance
//! learns on its own: until it has seen an answer's `Vary` it keys on the
//! rule's `vary` alone, and what it stores under that key is only ever an
//! answer that did not vary further. What is learned is bounded
//! ([`MAX_LEARNED_URLS`]); a URL forgotten is learned again from its next
//! answer.

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::{Arc, RwLock};

use http::header::VARY;
use http::{HeaderMap, HeaderName};

/// URLs whose learned names are kept; the least used are forgotten first.
pub const MAX_LEARNED_URLS: u64 = 100_000;

pub struct LearnedVary {
    /// Rules with at least one URL learned: the rest (nearly always all)
    /// are answered without hashing the URL.
    rules: RwLock<HashSet<&'static str>>,
    /// The full list (the rule's `vary`, then learned names) per URL.
    by_url: moka::sync::Cache<u64, Arc<[HeaderName]>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for LearnedVary {
    fn default() -> Self {
        LearnedVary {
            rules: RwLock::default(),
            by_url: moka::sync::Cache::new(MAX_LEARNED_URLS),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }
}

impl LearnedVary {
    /// What keys of `rule` at `path?query` vary on, if anything was learned
    /// beyond its `vary`; `None` means the rule's `vary` alone.
    pub fn names(&self, rule: &'static str, path: &str, query: Option<&str>) -> Option<Arc<[HeaderName]>> {
        if !self.rules.read().expect("vary lock").contains(rule) {
            return None;
        }
        self.by_url.get(&self.url(rule, path, query))
    }

    /// Records the headers `response` (to `path?query` on `rule`) varies on
    /// beyond `keyed` (what its request was keyed on). Returns the new list
    /// to key that URL on, or `None` if the response varies on nothing more.
    pub fn learn(
        &self,
        rule: &'static str,
        path: &str,
        query: Option<&str>,
        keyed: &[HeaderName],
        response: &HeaderMap,
    ) -> Option<Arc<[HeaderName]>> {
        let extra: Vec<HeaderName> = varied_on(response).filter(|n| !keyed.contains(n)).collect();
        if extra.is_empty() {
            return None;
        }
        let url = self.url(rule, path, query);
        let mut names: Vec<HeaderName> = self
            .by_url
            .get(&url)
            .map_or_else(|| keyed.to_vec(), |known| known.to_vec());
        for name in extra {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let names: Arc<[HeaderName]> = names.into();
        self.by_url.insert(url, names.clone());
        self.rules.write().expect("vary lock").insert(rule);
        Some(names)
    }

    fn url(&self, rule: &str, path: &str, query: Option<&str>) -> u64 {
        self.hasher.hash_one((rule, path, query))
    }
}

/// The header names a response's `Vary` lists (`*` and unreadable values
/// are left out: such responses are never stored).
fn varied_on(response: &HeaderMap) -> impl Iterator<Item = HeaderName> + '_ {
    response
        .get_all(VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn varying(on: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(VARY, HeaderValue::from_static(on));
        h
    }

    #[test]
    fn only_what_goes_beyond_the_keyed_names_is_learned_and_only_for_that_url() {
        let learned = LearnedVary::default();
        let configured = [HeaderName::from_static("accept-language")];
        assert!(learned
            .learn("r", "/a", None, &configured, &varying("Accept-Language"))
            .is_none());
        assert!(learned.names("r", "/a", None).is_none());
        let names = learned
            .learn("r", "/a", None, &configured, &varying("accept-language, Accept"))
            .unwrap();
        assert_eq!(&names[..], ["accept-language", "accept"]);
        assert_eq!(learned.names("r", "/a", None).unwrap(), names);
        assert!(learned.names("r", "/b", None).is_none(), "another URL keeps its key");
        assert!(learned.names("r", "/a", Some("x=1")).is_none(), "another query too");
        assert!(learned.names("other", "/a", None).is_none());
        assert!(learned.learn("r", "/a", None, &names, &varying("accept")).is_none());
    }
}
