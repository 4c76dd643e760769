//! A request's identity across hops: its request id and W3C trace
//! context.
//!
//! The request id is the client's `X-Request-Id` when it is a sane token
//! (1 to [`MAX_ID_LEN`] visible ASCII characters from a safe set), else one
//! made here (32 hex digits). It is returned to the client, forwarded to
//! the backend, and never part of a cache key or a stored entry.
//!
//! `traceparent` (W3C Trace Context, version 00) is forwarded with the
//! same trace id and a new parent id: the proxy hop is a span of its own.
//! Until spans are exported, a tracing backend sees the backend's span
//! under a parent it never received (the trace id still joins them).
//! An invalid one is dropped with its `tracestate`, as the
//! recommendation asks; none is made when the client sent none (there is
//! no span export yet: [`RequestTrace::span_id`] is where it would start).

use http::{HeaderMap, HeaderName, HeaderValue};

/// The request id header, read from clients and sent to both sides.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Longest request id accepted from a client.
pub const MAX_ID_LEN: usize = 128;

#[derive(Debug, Clone)]
pub struct RequestTrace {
    /// The request id's header (`log.request_id_header`).
    pub header: HeaderName,
    /// The request id, as sent to the backend and the client.
    pub id: HeaderValue,
    /// The `traceparent` for the backend, with this hop's span id, and the
    /// client's `tracestate`.
    pub context: Option<(HeaderValue, Option<HeaderValue>)>,
}

impl RequestTrace {
    /// The trace of a request with `headers`, its id in `header`.
    pub fn of(headers: &HeaderMap, header: &HeaderName) -> RequestTrace {
        let id = headers
            .get(header)
            .filter(|id| is_valid_id(id.as_bytes()))
            .cloned()
            .unwrap_or_else(new_id);
        // Two traceparents contradict each other: neither is believed. Several
        // tracestate fields are one list (W3C Trace Context §3.3.1).
        let mut parents = headers.get_all(TRACEPARENT).iter();
        let context = match (parents.next(), parents.next()) {
            (Some(parent), None) => next_hop(parent.as_bytes()).map(|parent| (parent, tracestate(headers))),
            _ => None,
        };
        RequestTrace {
            header: header.clone(),
            id,
            context,
        }
    }

    /// The trace id, when the request carries a trace.
    pub fn trace_id(&self) -> Option<&str> {
        let (parent, _) = self.context.as_ref()?;
        parent.to_str().ok()?.get(3..35)
    }

    /// This hop's span id, when the request carries a trace.
    pub fn span_id(&self) -> Option<&str> {
        let (parent, _) = self.context.as_ref()?;
        parent.to_str().ok()?.get(36..52)
    }

    /// Puts the request id and the trace context in headers bound for the
    /// backend, replacing whatever the client sent under those names.
    pub fn forward(&self, headers: &mut HeaderMap) {
        headers.insert(self.header.clone(), self.id.clone());
        headers.remove(TRACEPARENT);
        headers.remove(TRACESTATE);
        if let Some((parent, state)) = &self.context {
            headers.insert(TRACEPARENT, parent.clone());
            if let Some(state) = state {
                headers.insert(TRACESTATE, state.clone());
            }
        }
    }
}

/// Characters of a request id: letters, digits and `-_.:/+=@`; nothing a
/// log line, a header list or a shell would read otherwise.
fn is_valid_id(id: &[u8]) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len()) && id.iter().all(|c| c.is_ascii_alphanumeric() || b"-_.:/+=@".contains(c))
}

fn new_id() -> HeaderValue {
    let bytes: [u8; 16] = rand::random();
    // On the stack: the header value is the one copy a request pays for.
    let mut id = [0u8; 32];
    hex::encode_to_slice(bytes, &mut id).expect("two digits a byte");
    HeaderValue::from_bytes(&id).expect("hex is a valid header value")
}

/// The client's `tracestate` fields as one value.
fn tracestate(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut fields = headers.get_all(TRACESTATE).iter();
    let first = fields.next()?;
    let rest: Vec<&[u8]> = fields.map(HeaderValue::as_bytes).collect();
    if rest.is_empty() {
        return Some(first.clone());
    }
    let joined = std::iter::once(first.as_bytes())
        .chain(rest)
        .collect::<Vec<_>>()
        .join(&b","[..]);
    HeaderValue::from_bytes(&joined).ok()
}

/// `version-traceid-parentid-flags` with a new parent id, if `parent` is a
/// valid `traceparent`: version 00 exactly, or a later one whose first four
/// fields are read as 00's (W3C Trace Context §3.2.4); lower-case hex, ids
/// not all zero, version not `ff`.
fn next_hop(parent: &[u8]) -> Option<HeaderValue> {
    let text = std::str::from_utf8(parent).ok()?;
    let head = text.get(..55)?;
    let rest = &text[55..];
    let mut fields = head.split('-');
    let (version, trace_id, parent_id, flags) = (fields.next()?, fields.next()?, fields.next()?, fields.next()?);
    let hex =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace_id, 32)
        && hex(parent_id, 16)
        && hex(flags, 2)
        && trace_id.bytes().any(|c| c != b'0')
        && parent_id.bytes().any(|c| c != b'0')
        && (if version == "00" {
            rest.is_empty()
        } else {
            rest.is_empty() || rest.starts_with('-')
        });
    if !valid {
        return None;
    }
    let span: u64 = loop {
        let span: u64 = rand::random();
        if span != 0 {
            break span;
        }
    };
    HeaderValue::from_str(&format!("00-{trace_id}-{span:016x}-{flags}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_str(v).unwrap()))
            .collect()
    }

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_sane_client_id_is_kept_and_anything_else_replaced() {
        assert_eq!(
            RequestTrace::of(&headers(&[("x-request-id", "abc-123_x.y:z")]), &X_REQUEST_ID).id,
            "abc-123_x.y:z"
        );
        for bad in ["", "has space", "quote\"d", "a,b", &"x".repeat(MAX_ID_LEN + 1)] {
            let id = RequestTrace::of(&headers(&[("x-request-id", bad)]), &X_REQUEST_ID).id;
            assert_ne!(id, bad);
            assert_eq!(id.len(), 32, "made here: {id:?}");
        }
        let (a, b) = (
            RequestTrace::of(&HeaderMap::new(), &X_REQUEST_ID).id,
            RequestTrace::of(&HeaderMap::new(), &X_REQUEST_ID).id,
        );
        assert_ne!(a, b, "each request gets its own");
    }

    #[test]
    fn traceparent_keeps_the_trace_id_and_flags_with_a_new_parent_id() {
        let trace = RequestTrace::of(
            &headers(&[("traceparent", PARENT), ("tracestate", "congo=t61rcWkgMzE")]),
            &X_REQUEST_ID,
        );
        let (parent, state) = trace.context.clone().unwrap();
        let parent = parent.to_str().unwrap().to_owned();
        assert!(parent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{parent}");
        assert!(parent.ends_with("-01"));
        assert_ne!(&parent[36..52], "00f067aa0ba902b7", "a new span for this hop");
        assert_eq!(trace.span_id(), Some(&parent[36..52]));
        assert_eq!(trace.trace_id(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(state.unwrap(), "congo=t61rcWkgMzE");
    }

    #[test]
    fn an_invalid_traceparent_is_dropped_with_its_tracestate() {
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            let trace = RequestTrace::of(&headers(&[("traceparent", bad), ("tracestate", "a=b")]), &X_REQUEST_ID);
            assert!(trace.context.is_none(), "{bad}");
            let mut out = headers(&[("traceparent", bad), ("tracestate", "a=b")]);
            trace.forward(&mut out);
            assert!(out.get(TRACEPARENT).is_none() && out.get(TRACESTATE).is_none(), "{bad}");
        }
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future";
        assert!(RequestTrace::of(&headers(&[("traceparent", later)]), &X_REQUEST_ID)
            .context
            .is_some());
    }

    #[test]
    fn two_traceparents_are_none_and_tracestates_join() {
        let mut two = headers(&[("traceparent", PARENT)]);
        two.append(TRACEPARENT, HeaderValue::from_static(PARENT));
        assert!(RequestTrace::of(&two, &X_REQUEST_ID).context.is_none());
        let mut states = headers(&[("traceparent", PARENT), ("tracestate", "a=1")]);
        states.append(TRACESTATE, HeaderValue::from_static("b=2"));
        let (_, state) = RequestTrace::of(&states, &X_REQUEST_ID).context.unwrap();
        assert_eq!(state.unwrap(), "a=1,b=2");
    }

    #[test]
    fn forwarding_replaces_the_clients_values() {
        let client = headers(&[("x-request-id", "bad id"), ("traceparent", PARENT)]);
        let trace = RequestTrace::of(&client, &X_REQUEST_ID);
        let mut out = client.clone();
        trace.forward(&mut out);
        assert_eq!(out[X_REQUEST_ID], trace.id);
        assert_ne!(out[TRACEPARENT], PARENT);
    }
}
