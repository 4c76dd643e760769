//! Byte ranges served from a complete stored answer (RFC 9110 §14): one
//! range of a `200` the cache holds whole becomes a `206` with its
//! `Content-Range`; a range past the end is a `416`. Several ranges, other
//! units, or an `If-Range` that does not match the stored `ETag` get the
//! whole answer, as RFC 9110 allows. Nothing partial is ever stored: a
//! `206` cannot be listed in a route's `statuses`.

use bytes::Bytes;
use http::header::{ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_RANGE, RANGE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use crate::body;
use crate::upstream::ProxyBody;

/// One satisfiable range of a body of `len` bytes: `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// No single byte range to serve: the whole answer.
    Whole,
    Part {
        first: u64,
        last: u64,
    },
    /// Every position lies past the end.
    Unsatisfiable,
}

/// What `request` asks of a stored answer of `len` bytes whose headers are
/// `stored`.
pub fn asked(request: &HeaderMap, stored: &HeaderMap, len: u64) -> Asked {
    let mut ranges = request.get_all(RANGE).iter();
    let (Some(range), None) = (ranges.next(), ranges.next()) else {
        return Asked::Whole;
    };
    if let Some(if_range) = request.get(IF_RANGE) {
        // Only a strong ETag validates a range (§13.1.5); a date is not
        // compared here, so the whole answer is sent.
        let strong_match = stored
            .get(ETAG)
            .is_some_and(|etag| etag == if_range && !etag.as_bytes().starts_with(b"W/"));
        if !strong_match {
            return Asked::Whole;
        }
    }
    let Some(spec) = range.to_str().ok().and_then(|r| r.trim().strip_prefix("bytes=")) else {
        return Asked::Whole;
    };
    if spec.contains(',') {
        return Asked::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Asked::Whole;
    };
    let number = |s: &str| s.trim().parse::<u64>().ok();
    if !last.trim().is_empty() && number(last).is_none() {
        return Asked::Whole;
    }
    match (first.trim().is_empty(), number(first), number(last)) {
        // bytes=-N: the last N bytes.
        (true, _, Some(suffix)) if suffix > 0 => match len {
            0 => Asked::Unsatisfiable,
            _ => Asked::Part {
                first: len.saturating_sub(suffix),
                last: len - 1,
            },
        },
        (false, Some(first), last) if last.is_none_or(|last| last >= first) => {
            if first >= len {
                Asked::Unsatisfiable
            } else {
                Asked::Part {
                    first,
                    last: last.map_or(len - 1, |last| last.min(len - 1)),
                }
            }
        }
        _ => Asked::Whole,
    }
}

/// `whole`'s answer narrowed to what was `asked`.
pub fn narrow(mut whole: Response<ProxyBody>, bytes: Bytes, asked: Asked) -> Response<ProxyBody> {
    let len = bytes.len() as u64;
    let headers = whole.headers_mut();
    headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    match asked {
        Asked::Whole => {
            *whole.body_mut() = body::full(bytes);
            whole
        }
        Asked::Part { first, last } => {
            let part = bytes.slice(first as usize..=last as usize);
            headers.insert(
                CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {first}-{last}/{len}")).expect("ascii"),
            );
            headers.insert(CONTENT_LENGTH, HeaderValue::from(part.len()));
            *whole.status_mut() = StatusCode::PARTIAL_CONTENT;
            *whole.body_mut() = body::full(part);
            whole
        }
        Asked::Unsatisfiable => {
            headers.insert(
                CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{len}")).expect("ascii"),
            );
            headers.insert(CONTENT_LENGTH, HeaderValue::from(0));
            *whole.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            *whole.body_mut() = body::empty();
            whole
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(range: &str, if_range: Option<&str>, etag: Option<&str>) -> Asked {
        let mut request = HeaderMap::new();
        request.insert(RANGE, HeaderValue::from_str(range).unwrap());
        if let Some(value) = if_range {
            request.insert(IF_RANGE, HeaderValue::from_str(value).unwrap());
        }
        let mut stored = HeaderMap::new();
        if let Some(value) = etag {
            stored.insert(ETAG, HeaderValue::from_str(value).unwrap());
        }
        asked(&request, &stored, 11)
    }

    #[test]
    fn one_byte_range_of_the_stored_body() {
        assert_eq!(ask("bytes=0-1", None, None), Asked::Part { first: 0, last: 1 });
        assert_eq!(ask("bytes=5-", None, None), Asked::Part { first: 5, last: 10 });
        assert_eq!(ask("bytes=-3", None, None), Asked::Part { first: 8, last: 10 });
        assert_eq!(ask("bytes=9-100", None, None), Asked::Part { first: 9, last: 10 });
        assert_eq!(ask("bytes=11-", None, None), Asked::Unsatisfiable);
    }

    #[test]
    fn anything_else_gets_the_whole_answer() {
        for range in [
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=5-2",
            "bytes=x-1",
            "bytes=-0",
            "bytes=5-x",
        ] {
            assert_eq!(ask(range, None, None), Asked::Whole, "{range}");
        }
        assert_eq!(ask("bytes=0-1", Some("\"a\""), Some("\"b\"")), Asked::Whole);
        assert_eq!(ask("bytes=0-1", Some("W/\"a\""), Some("W/\"a\"")), Asked::Whole, "weak");
        assert_eq!(
            ask("bytes=0-1", Some("\"a\""), Some("\"a\"")),
            Asked::Part { first: 0, last: 1 }
        );
    }
}
