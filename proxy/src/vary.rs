//! Request headers the origin said, with `Vary`, its answers depend on
//! beyond a rule's own `vary`: learned per rule and added to its keys, so
//! variants stay apart.
//!
//! Only headers that reach the origin can be learned (the rule's `vary`
//! and `forward_headers`); an answer varying on anything else, or on `*`,
//! is not stored at all (see [`crate::cache::storability`]). Each instance
//! learns on its own: until it has seen an answer's `Vary` it keys on the
//! rule's `vary` alone, and what it stores under that key is only ever an
//! answer that did not vary further.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use http::header::VARY;
use http::{HeaderMap, HeaderName};

#[derive(Default)]
pub struct LearnedVary {
    /// The full list (the rule's `vary`, then learned names) per rule.
    by_rule: RwLock<HashMap<&'static str, Arc<[HeaderName]>>>,
}

impl LearnedVary {
    /// What keys of `rule` vary on, if anything was learned beyond its
    /// `vary`; `None` means the rule's `vary` alone.
    pub fn names(&self, rule: &str) -> Option<Arc<[HeaderName]>> {
        self.by_rule.read().expect("vary lock").get(rule).cloned()
    }

    /// Records the headers `response` varies on beyond `keyed` (what its
    /// request was keyed on). Returns the new list to key on, or `None` if
    /// the response varies on nothing more.
    pub fn learn(&self, rule: &'static str, keyed: &[HeaderName], response: &HeaderMap) -> Option<Arc<[HeaderName]>> {
        let extra: Vec<HeaderName> = varied_on(response).filter(|n| !keyed.contains(n)).collect();
        if extra.is_empty() {
            return None;
        }
        let mut by_rule = self.by_rule.write().expect("vary lock");
        let mut names: Vec<HeaderName> = by_rule.get(rule).map_or_else(|| keyed.to_vec(), |known| known.to_vec());
        for name in extra {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let names: Arc<[HeaderName]> = names.into();
        by_rule.insert(rule, names.clone());
        Some(names)
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
    fn only_what_goes_beyond_the_keyed_names_is_learned() {
        let learned = LearnedVary::default();
        let configured = [HeaderName::from_static("accept-language")];
        assert!(learned.learn("r", &configured, &varying("Accept-Language")).is_none());
        assert!(learned.names("r").is_none());
        let names = learned
            .learn("r", &configured, &varying("accept-language, Accept"))
            .unwrap();
        assert_eq!(&names[..], ["accept-language", "accept"]);
        assert_eq!(learned.names("r").unwrap(), names);
        assert!(learned.names("other").is_none());
        assert!(learned.learn("r", &names, &varying("accept")).is_none());
    }
}
