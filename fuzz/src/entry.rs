//! Cache entry decoding (format versions 1 and 2) and encoding.
//!
//! Entries come back from Redis, which other proxy versions (or anything
//! else with access) may have written, so decoding must refuse, never
//! panic on, any bytes.
//!
//! Input: a mode byte, then
//! - even mode: bytes to decode as an entry;
//! - odd mode: an entry described field by field (status, up to 7
//!   headers, up to 3 tag generations, the four times, then the body),
//!   which is encoded and decoded.
//!
//! Invariants: a decoded entry re-encodes to bytes that decode to the same
//! entry, of the length `encoded_len` predicts; its body is borrowed from
//! the input; its time arithmetic does not overflow; and encode then
//! decode gives back any entry.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use proxy::cache::Entry;

use crate::Input;

pub fn entry(data: &[u8]) {
    let mut input = Input::new(data);
    if input.byte() & 1 == 0 {
        decoded(input.rest());
    } else if let Some(entry) = described(&mut input) {
        let encoded = entry.encode();
        assert_eq!(encoded.len(), entry.encoded_len());
        assert_eq!(Entry::decode(encoded).as_ref(), Ok(&entry), "encode then decode");
        use_times(&entry);
    }
}

fn decoded(bytes: &[u8]) {
    let input = Bytes::copy_from_slice(bytes);
    let Ok(entry) = Entry::decode(input.clone()) else {
        return;
    };
    assert_eq!(
        entry.body.as_ptr(),
        input[input.len() - entry.body.len()..].as_ptr(),
        "the body is borrowed"
    );
    let encoded = entry.encode();
    assert_eq!(encoded.len(), entry.encoded_len());
    assert_eq!(
        Entry::decode(encoded).as_ref(),
        Ok(&entry),
        "re-encoding changed the entry"
    );
    use_times(&entry);
}

fn described(input: &mut Input<'_>) -> Option<Entry> {
    let status = StatusCode::from_u16(input.u16()).ok()?;
    let mut headers = HeaderMap::new();
    for _ in 0..input.byte() % 8 {
        let name = HeaderName::from_bytes(input.chunk());
        let value = HeaderValue::from_bytes(input.chunk());
        if let (Ok(name), Ok(value)) = (name, value) {
            headers.append(name, value);
        }
    }
    let mut generations = Vec::new();
    for _ in 0..input.byte() % 4 {
        let tag = String::from_utf8_lossy(input.chunk()).into_owned();
        let generation = String::from_utf8_lossy(input.chunk()).into_owned();
        generations.push((tag, generation));
    }
    Some(Entry {
        status,
        headers,
        stored_at_ms: input.u64(),
        expires_at_ms: input.u64(),
        stale_while_revalidate_ms: input.u64(),
        stale_if_error_ms: input.u64(),
        generations,
        body: Bytes::copy_from_slice(input.rest()),
    })
}

/// Every question a store or the handler asks of an entry, at the times
/// where arithmetic could overflow.
fn use_times(entry: &Entry) {
    for now in [0, entry.stored_at_ms, entry.expires_at_ms, u64::MAX] {
        let _ = entry.age_secs(now);
        let _ = entry.ttl_left(now);
        let _ = entry.is_fresh(now);
        let _ = entry.may_serve_while_revalidating(now);
        let _ = entry.may_serve_on_error(now);
        let _ = entry.retention_left(now, std::time::Duration::from_secs(60));
        let _ = proxy::cache::purge::softly_expired(entry, now);
    }
}
