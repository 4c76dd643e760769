//! The query normaliser (sorting parameters by name, decoding unreserved
//! escapes).
//!
//! Input: the query string as UTF-8, without the `?`.
//!
//! Invariants: the normal form normalises to itself; and it means the same
//! to a back end as the original: decoded as `application/x-www-form-
//! urlencoded` (as the origin and most frameworks read queries), every name
//! has the same values in the same order. Sorting may move different names
//! past each other, never the values of one name.

use std::collections::BTreeMap;

use proxy::route::normalise;

pub fn query(data: &[u8]) {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(target) = normalise("/", Some(query)) else {
        return;
    };
    let again = normalise("/", target.query.as_deref()).expect("a normal form is a valid query");
    assert_eq!(again.query, target.query, "normalise is idempotent");
    let normal = target.query.as_deref().unwrap_or("");
    assert_eq!(
        values_by_name(normal),
        values_by_name(query),
        "{query:?} normalised to {normal:?} means something else to a back end"
    );
}

/// Each name's values, in order, as a form decoder reads them.
fn values_by_name(query: &str) -> BTreeMap<String, Vec<String>> {
    let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        by_name.entry(name.into_owned()).or_default().push(value.into_owned());
    }
    by_name
}
