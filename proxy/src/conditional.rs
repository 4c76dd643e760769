//! Conditional requests (RFC 9110 §13) on cached answers: validators on
//! every stored entry, 304s for clients that already hold it, and the
//! validators an expired entry is revalidated upstream with.

use bytes::Bytes;
use http::header::{
    CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, TRANSFER_ENCODING,
};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use sha2::{Digest, Sha256};

use crate::body;
use crate::upstream::ProxyBody;

/// How an ETag this proxy computed starts: only the origin's own validators
/// are worth sending back to it.
const COMPUTED_ETAG_PREFIX: &[u8] = b"\"cg-";

/// Gives `headers` an `ETag`: the origin's, strong or weak, as it sent it
/// (clients holding a weak tag match it with the weak comparison, and an
/// expired entry is revalidated with it); else a strong one computed from
/// `body` (so equal bodies share it across instances). Returns the value.
pub fn ensure_etag(headers: &mut HeaderMap, body: &Bytes) -> HeaderValue {
    if let Some(etag) = headers.get(ETAG).filter(|v| is_etag(v)) {
        return etag.clone();
    }
    let digest = Sha256::digest(body);
    let etag = HeaderValue::from_str(&format!("\"cg-{}\"", hex::encode(&digest[..16]))).expect("hex is a valid header");
    headers.insert(ETAG, etag.clone());
    etag
}

/// A well-formed entity-tag (RFC 9110 §8.8.3): `"…"`, or `W/"…"` for a
/// weak one, with only visible ASCII other than `"` inside. Anything else
/// an origin sends (junk after the quotes, obs-text) is replaced by a
/// computed tag: a client echoing it back in `If-None-Match` could never
/// match it.
fn is_etag(value: &HeaderValue) -> bool {
    let tag = value.as_bytes().strip_prefix(b"W/").unwrap_or(value.as_bytes());
    match tag {
        [b'"', inner @ .., b'"'] => inner.iter().all(|&c| c == 0x21 || (0x23..=0x7e).contains(&c)),
        _ => false,
    }
}

/// Whether the origin gave `stored` a validator it can revalidate: its
/// own `ETag` or a `Last-Modified`.
pub fn has_origin_validator(stored: &HeaderMap) -> bool {
    stored.contains_key(LAST_MODIFIED) || origin_etag(stored).is_some()
}

fn origin_etag(stored: &HeaderMap) -> Option<&HeaderValue> {
    stored
        .get(ETAG)
        .filter(|v| !v.as_bytes().starts_with(COMPUTED_ETAG_PREFIX))
}

/// The validators to revalidate a stored answer with: the origin's `ETag`
/// as `If-None-Match`, its `Last-Modified` as `If-Modified-Since`.
pub fn add_validators(request: &mut HeaderMap, stored: &HeaderMap) {
    if let Some(etag) = origin_etag(stored) {
        request.insert(IF_NONE_MATCH, etag.clone());
    }
    if let Some(modified) = stored.get(LAST_MODIFIED) {
        request.insert(IF_MODIFIED_SINCE, modified.clone());
    }
}

/// Whether a client sending `request` headers already holds the answer
/// whose headers are `response`: `If-None-Match` (weak comparison, `*`
/// matches), or else `If-Modified-Since` against `Last-Modified`.
pub fn client_has_it(request: &HeaderMap, response: &HeaderMap) -> bool {
    if request.contains_key(IF_NONE_MATCH) {
        let Some(etag) = response.get(ETAG).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        return request
            .get_all(IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(entity_tags)
            .any(|candidate| candidate == "*" || opaque(candidate) == opaque(etag));
    }
    let date = |map: &HeaderMap, name| {
        map.get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
    };
    match (date(request, IF_MODIFIED_SINCE), date(response, LAST_MODIFIED)) {
        (Some(since), Some(modified)) => modified <= since,
        _ => false,
    }
}

/// The members of an `If-None-Match` list (RFC 9110 §8.8.3): `*`, or
/// `"…"` and `W/"…"` separated by commas. A comma inside the quotes belongs
/// to the tag (`etagc` allows it), so the list is not simply split on
/// commas: an origin's `"v1, gzip"` must match itself.
fn entity_tags(list: &str) -> impl Iterator<Item = &str> {
    let mut rest = list;
    std::iter::from_fn(move || {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_ascii_whitespace());
        if rest.is_empty() {
            return None;
        }
        let quoted = rest.strip_prefix("W/").unwrap_or(rest);
        let end = match quoted.strip_prefix('"') {
            // Through the closing quote; an unclosed tag runs to the end.
            Some(inner) => inner
                .find('"')
                .map_or(rest.len(), |at| rest.len() - inner.len() + at + 1),
            None => rest.find(',').unwrap_or(rest.len()),
        };
        let (tag, tail) = rest.split_at(end);
        rest = tail;
        Some(tag.trim_end())
    })
}

/// The tag without its weakness marker, for the weak comparison.
fn opaque(etag: &str) -> &str {
    etag.strip_prefix("W/").unwrap_or(etag)
}

/// `response` as a 304: same headers minus those describing the body
/// (RFC 9110 §15.4.5), no body.
pub fn not_modified(response: Response<ProxyBody>) -> Response<ProxyBody> {
    let (mut head, _) = response.into_parts();
    head.status = StatusCode::NOT_MODIFIED;
    for name in [CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING] {
        head.headers.remove(name);
    }
    Response::from_parts(head, body::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (http::HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn an_entry_keeps_the_origin_etag_strong_or_weak_and_otherwise_gets_one_from_its_body() {
        let body = Bytes::from_static(b"{}");
        let mut origin = headers(&[("etag", "\"v1\"")]);
        assert_eq!(ensure_etag(&mut origin, &body), "\"v1\"");
        let mut weak = headers(&[("etag", "W/\"v1\"")]);
        assert_eq!(ensure_etag(&mut weak, &body), "W/\"v1\"", "kept as the origin sent it");
        assert!(has_origin_validator(&weak));
        let mut revalidate = HeaderMap::new();
        add_validators(&mut revalidate, &weak);
        assert_eq!(revalidate["if-none-match"], "W/\"v1\"", "revalidated with it");
        let mut junk = headers(&[("etag", "\"v1\"junk")]);
        let computed = ensure_etag(&mut junk, &body);
        assert!(computed.to_str().unwrap().starts_with("\"cg-"));
        assert!(!has_origin_validator(&junk), "a computed tag is not the origin's");
        let mut revalidate = HeaderMap::new();
        add_validators(&mut revalidate, &junk);
        assert!(revalidate.is_empty(), "the origin never issued it");
        assert_eq!(
            computed,
            ensure_etag(&mut HeaderMap::new(), &body),
            "same body, same tag"
        );
        assert_ne!(computed, ensure_etag(&mut HeaderMap::new(), &Bytes::from_static(b"[]")));
    }

    #[test]
    fn if_none_match_uses_the_weak_comparison_and_wins_over_if_modified_since() {
        let stored = headers(&[("etag", "\"v1\""), ("last-modified", "Tue, 01 Jan 2030 00:00:00 GMT")]);
        assert!(client_has_it(
            &headers(&[("if-none-match", "\"v0\", W/\"v1\"")]),
            &stored
        ));
        assert!(client_has_it(&headers(&[("if-none-match", "*")]), &stored));
        assert!(!client_has_it(&headers(&[("if-none-match", "\"v0\"")]), &stored));
        let both = headers(&[
            ("if-none-match", "\"v0\""),
            ("if-modified-since", "Wed, 02 Jan 2030 00:00:00 GMT"),
        ]);
        assert!(
            !client_has_it(&both, &stored),
            "If-Modified-Since is ignored with If-None-Match"
        );
    }

    #[test]
    fn a_comma_inside_an_entity_tag_is_part_of_it() {
        let stored = headers(&[("etag", "\"v1, gzip\"")]);
        assert!(client_has_it(&headers(&[("if-none-match", "\"v1, gzip\"")]), &stored));
        assert!(client_has_it(
            &headers(&[("if-none-match", "\"x\",W/\"v1, gzip\" , \"y\"")]),
            &stored
        ));
        assert!(!client_has_it(
            &headers(&[("if-none-match", "\"v1\", \"gzip\"")]),
            &stored
        ));
        assert_eq!(
            entity_tags(" *, \"a,b\",W/\"c\", \"open").collect::<Vec<_>>(),
            ["*", "\"a,b\"", "W/\"c\"", "\"open"]
        );
    }

    #[test]
    fn if_modified_since_compares_dates_and_ignores_garbage() {
        let stored = headers(&[("last-modified", "Tue, 01 Jan 2030 00:00:00 GMT")]);
        assert!(client_has_it(
            &headers(&[("if-modified-since", "Tue, 01 Jan 2030 00:00:00 GMT")]),
            &stored
        ));
        assert!(!client_has_it(
            &headers(&[("if-modified-since", "Mon, 31 Dec 2029 00:00:00 GMT")]),
            &stored
        ));
        assert!(!client_has_it(&headers(&[("if-modified-since", "yesterday")]), &stored));
        assert!(!client_has_it(&HeaderMap::new(), &stored));
    }
}
