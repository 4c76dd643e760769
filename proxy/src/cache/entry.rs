//! A stored response and its compact binary encoding.
//!
//! Hand-written rather than serde-based so decoding borrows the body from
//! the buffer the store returned (`Bytes::slice`, no copy): on a hit the
//! body goes from Redis to the client without being copied again.
//!
//! Layout (all integers big-endian):
//! `"CG" version:u8 status:u16 stored_at_ms:u64 expires_at_ms:u64`
//! `stale_while_revalidate_ms:u64 stale_if_error_ms:u64` (version 2 only;
//! version 1 entries, written before stale serving, decode with both 0)
//! `ngen:u16 { tag_len:u16 tag gen_len:u16 gen }`
//! `nhdr:u16 { name_len:u16 name value_len:u32 value }`
//! `body_len:u32 body`

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::Lifetime;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

const MAGIC: &[u8; 2] = b"CG";
const VERSION: u8 = 2;

/// The tag generations an entry was fetched under, in the rule's tag order.
/// The entry is valid only while every generation is still current.
pub type Generations = Vec<(String, String)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub status: StatusCode,
    /// End-to-end response headers; hop-by-hop, `Set-Cookie` and the
    /// proxy's own headers are never stored.
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Milliseconds since the Unix epoch; `Age` is computed from it.
    pub stored_at_ms: u64,
    pub expires_at_ms: u64,
    /// How long past `expires_at_ms` the entry may still be served while
    /// a refresh runs in the background (RFC 5861).
    pub stale_while_revalidate_ms: u64,
    /// How long past `expires_at_ms` the entry may still be served when
    /// the upstream fails (RFC 5861).
    pub stale_if_error_ms: u64,
    pub generations: Generations,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("corrupt cache entry: {0}")]
pub struct DecodeError(&'static str);

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Entry {
    /// An answer stored at `now_ms` for `lifetime`; it was already
    /// `lifetime.initial_age` old, which its `Age` goes on from.
    pub fn new(
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        now_ms: u64,
        lifetime: &Lifetime,
        generations: Generations,
    ) -> Entry {
        Entry {
            status,
            headers,
            body,
            stored_at_ms: now_ms.saturating_sub(millis(lifetime.initial_age)),
            expires_at_ms: now_ms.saturating_add(millis(lifetime.ttl)),
            stale_while_revalidate_ms: millis(lifetime.stale_while_revalidate),
            stale_if_error_ms: millis(lifetime.stale_if_error),
            generations,
        }
    }

    /// Its age in seconds (the `Age` header): the age it arrived with and
    /// its time here since.
    pub fn age_secs(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.stored_at_ms) / 1000
    }

    /// Time left before expiry.
    pub fn ttl_left(&self, now_ms: u64) -> Duration {
        Duration::from_millis(self.expires_at_ms.saturating_sub(now_ms))
    }

    pub fn is_fresh(&self, now_ms: u64) -> bool {
        now_ms < self.expires_at_ms
    }

    /// Expired, but still to be served while a background refresh runs.
    pub fn may_serve_while_revalidating(&self, now_ms: u64) -> bool {
        now_ms < self.expires_at_ms.saturating_add(self.stale_while_revalidate_ms)
    }

    /// Expired, but still to be served if the upstream fails.
    pub fn may_serve_on_error(&self, now_ms: u64) -> bool {
        now_ms < self.expires_at_ms.saturating_add(self.stale_if_error_ms)
    }

    /// Time left before no use of the entry remains: how long stores keep
    /// it. An entry with the origin's validators is kept past expiry for as
    /// long again, to be revalidated upstream (a 304) rather than fetched
    /// whole.
    pub fn retention_left(&self, now_ms: u64, revalidation: Duration) -> Duration {
        // "As long again" as it was fresh, up to a day (a year-long
        // max-age must not keep an expired entry a year), and at least
        // `revalidation`.
        const LONGEST_AS_LONG_AGAIN_MS: u64 = 24 * 60 * 60 * 1000;
        let revalidation = if crate::conditional::has_origin_validator(&self.headers) {
            self.expires_at_ms
                .saturating_sub(self.stored_at_ms)
                .min(LONGEST_AS_LONG_AGAIN_MS)
                .max(millis(revalidation))
        } else {
            0
        };
        let stale = self
            .stale_while_revalidate_ms
            .max(self.stale_if_error_ms)
            .max(revalidation);
        Duration::from_millis(self.expires_at_ms.saturating_add(stale).saturating_sub(now_ms))
    }

    /// Bytes the encoding takes; also the memory store's weight.
    pub fn encoded_len(&self) -> usize {
        let gens: usize = self.generations.iter().map(|(t, g)| 4 + t.len() + g.len()).sum();
        let headers: usize = self.headers.iter().map(|(n, v)| 6 + n.as_str().len() + v.len()).sum();
        2 + 1 + 2 + 8 + 8 + 8 + 8 + 2 + gens + 2 + headers + 4 + self.body.len()
    }

    /// A copy for a store in this process that shares no buffer with the
    /// response it came from. The body and header values of an answer
    /// just received are slices of hyper's read buffer (8 KiB and up):
    /// kept for hours, a 1 KiB entry would hold the whole buffer, ten
    /// times its weight, unseen by `memory_max_bytes`.
    pub fn detached(&self) -> Entry {
        let mut headers = HeaderMap::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            let mut copy = HeaderValue::from_bytes(value.as_bytes()).expect("copied from a valid value");
            copy.set_sensitive(value.is_sensitive());
            headers.append(name.clone(), copy);
        }
        Entry {
            headers,
            body: Bytes::copy_from_slice(&self.body),
            generations: self.generations.clone(),
            ..*self
        }
    }

    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out.freeze()
    }

    /// Appends the encoding to `out`, after whatever a store put there.
    pub fn encode_into(&self, out: &mut BytesMut) {
        out.put_slice(MAGIC);
        out.put_u8(VERSION);
        out.put_u16(self.status.as_u16());
        out.put_u64(self.stored_at_ms);
        out.put_u64(self.expires_at_ms);
        out.put_u64(self.stale_while_revalidate_ms);
        out.put_u64(self.stale_if_error_ms);
        out.put_u16(self.generations.len() as u16);
        for (tag, generation) in &self.generations {
            put_str16(out, tag.as_bytes());
            put_str16(out, generation.as_bytes());
        }
        out.put_u16(self.headers.len() as u16);
        for (name, value) in &self.headers {
            put_str16(out, name.as_str().as_bytes());
            out.put_u32(value.len() as u32);
            out.put_slice(value.as_bytes());
        }
        out.put_u32(self.body.len() as u32);
        out.put_slice(&self.body);
    }

    pub fn decode(mut buf: Bytes) -> Result<Entry, DecodeError> {
        let original = buf.clone();
        need(&buf, 3)?;
        let version = buf[2];
        if &buf[..2] != MAGIC || !(1..=VERSION).contains(&version) {
            return Err(DecodeError("unknown format or version"));
        }
        buf.advance(3);
        need(&buf, 2 + 8 + 8 + 2)?;
        let status = StatusCode::from_u16(buf.get_u16()).map_err(|_| DecodeError("status"))?;
        let stored_at_ms = buf.get_u64();
        let expires_at_ms = buf.get_u64();
        let (stale_while_revalidate_ms, stale_if_error_ms) = if version >= 2 {
            need(&buf, 8 + 8 + 2)?;
            (buf.get_u64(), buf.get_u64())
        } else {
            (0, 0)
        };
        // Counts come from the stored bytes: capacity is bounded by what the
        // rest of the buffer could hold, not taken on trust.
        let ngen = buf.get_u16() as usize;
        let mut generations = Vec::with_capacity(ngen.min(buf.len() / 4));
        for _ in 0..ngen {
            let tag = take_str16(&mut buf)?;
            let generation = take_str16(&mut buf)?;
            generations.push((tag, generation));
        }
        need(&buf, 2)?;
        let nhdr = buf.get_u16() as usize;
        // `HeaderMap` panics past 32,768 entries; each header takes at
        // least 7 bytes (lengths and a one-byte name).
        let mut headers =
            HeaderMap::try_with_capacity(nhdr.min(buf.len() / 7)).map_err(|_| DecodeError("header count"))?;
        for _ in 0..nhdr {
            need(&buf, 2)?;
            let len = buf.get_u16() as usize;
            need(&buf, len)?;
            let name = HeaderName::from_bytes(&buf[..len]).map_err(|_| DecodeError("header name"))?;
            buf.advance(len);
            need(&buf, 4)?;
            let len = buf.get_u32() as usize;
            need(&buf, len)?;
            let value = HeaderValue::from_maybe_shared(buf.split_to(len)).map_err(|_| DecodeError("header value"))?;
            headers
                .try_append(name, value)
                .map_err(|_| DecodeError("header count"))?;
        }
        need(&buf, 4)?;
        let len = buf.get_u32() as usize;
        if buf.len() != len {
            return Err(DecodeError("body length"));
        }
        let start = original.len() - len;
        Ok(Entry {
            status,
            headers,
            body: original.slice(start..),
            stored_at_ms,
            expires_at_ms,
            stale_while_revalidate_ms,
            stale_if_error_ms,
            generations,
        })
    }
}

/// Milliseconds, saturating: an origin's `stale-if-error=18446744073709552`
/// is "for ever", where `as u64` would wrap it to 384 ms.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn need(buf: &Bytes, n: usize) -> Result<(), DecodeError> {
    if buf.len() < n {
        Err(DecodeError("truncated"))
    } else {
        Ok(())
    }
}

fn put_str16(out: &mut BytesMut, bytes: &[u8]) {
    out.put_u16(bytes.len() as u16);
    out.put_slice(bytes);
}

fn take_str16(buf: &mut Bytes) -> Result<String, DecodeError> {
    need(buf, 2)?;
    let len = buf.get_u16() as usize;
    need(buf, len)?;
    let s = std::str::from_utf8(&buf[..len])
        .map_err(|_| DecodeError("utf-8"))?
        .to_owned();
    buf.advance(len);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detached_copy_shares_no_buffer_with_the_response() {
        // As hyper hands them over: body and values slices of one buffer.
        let buffer = Bytes::from(vec![b'x'; 8192]);
        let mut entry = sample();
        entry.body = buffer.slice(..1024);
        let mut secret = HeaderValue::from_maybe_shared(buffer.slice(2000..2010)).unwrap();
        secret.set_sensitive(true);
        entry.headers.insert("x-from-buffer", secret);
        let copy = entry.detached();
        assert_eq!(copy, entry);
        assert!(copy.headers["x-from-buffer"].is_sensitive());
        let within = |p: *const u8| buffer.as_ptr_range().contains(&p);
        assert!(!within(copy.body.as_ptr()), "the body still points into the buffer");
        assert!(!within(copy.headers["x-from-buffer"].as_bytes().as_ptr()));
    }

    fn sample() -> Entry {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        Entry {
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(br#"{"users":[]}"#),
            stored_at_ms: 1_700_000_000_000,
            expires_at_ms: 1_700_000_060_000,
            stale_while_revalidate_ms: 30_000,
            stale_if_error_ms: 300_000,
            generations: vec![("users".into(), "3f2a".into())],
        }
    }

    #[test]
    fn round_trips_every_field() {
        let entry = sample();
        let encoded = entry.encode();
        assert_eq!(encoded.len(), entry.encoded_len());
        assert_eq!(Entry::decode(encoded).unwrap(), entry);
    }

    #[test]
    fn the_body_is_borrowed_from_the_input_buffer() {
        let encoded = sample().encode();
        let decoded = Entry::decode(encoded.clone()).unwrap();
        let tail = &encoded[encoded.len() - decoded.body.len()..];
        assert_eq!(decoded.body.as_ptr(), tail.as_ptr());
    }

    #[test]
    fn truncated_or_foreign_input_is_an_error_not_a_panic() {
        let encoded = sample().encode();
        for cut in 0..encoded.len() {
            assert!(Entry::decode(encoded.slice(..cut)).is_err(), "cut at {cut}");
        }
        assert!(Entry::decode(Bytes::from_static(b"{\"json\": true}")).is_err());
        let mut longer = BytesMut::from(&encoded[..]);
        longer.put_u8(0);
        assert!(Entry::decode(longer.freeze()).is_err());
    }

    #[test]
    fn a_header_count_beyond_what_a_header_map_holds_is_an_error() {
        let mut bytes = BytesMut::from(&sample().encode()[..]);
        // The header count sits after magic, version, status, four times,
        // and the one generation ("users", "3f2a").
        let at = 3 + 2 + 32 + 2 + (2 + 5 + 2 + 4);
        assert_eq!(&bytes[at..at + 2], &[0, 3]);
        bytes[at..at + 2].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(Entry::decode(bytes.freeze()).is_err());
    }

    #[test]
    fn version_1_entries_still_decode_with_no_stale_use() {
        let mut v1 = BytesMut::new();
        v1.put_slice(b"CG\x01");
        v1.put_u16(200);
        v1.put_u64(1_700_000_000_000);
        v1.put_u64(1_700_000_060_000);
        v1.put_u16(0);
        v1.put_u16(0);
        v1.put_u32(2);
        v1.put_slice(b"{}");
        let entry = Entry::decode(v1.freeze()).unwrap();
        assert_eq!((entry.stale_while_revalidate_ms, entry.stale_if_error_ms), (0, 0));
        assert_eq!(&entry.body[..], b"{}");
    }

    #[test]
    fn stale_windows_extend_past_expiry_and_set_the_retention() {
        let e = sample();
        let expired = e.expires_at_ms + 1;
        assert!(!e.is_fresh(expired));
        assert!(e.may_serve_while_revalidating(expired));
        assert!(!e.may_serve_while_revalidating(e.expires_at_ms + 30_000));
        assert!(e.may_serve_on_error(e.expires_at_ms + 30_000));
        assert!(!e.may_serve_on_error(e.expires_at_ms + 300_000));
        assert_eq!(
            e.retention_left(e.stored_at_ms, Duration::ZERO),
            Duration::from_secs(360)
        );
    }

    #[test]
    fn huge_lifetimes_saturate_instead_of_wrapping() {
        let forever = Duration::from_secs(u64::MAX / 1000 + 1);
        let lifetime = Lifetime {
            ttl: forever,
            initial_age: Duration::ZERO,
            stale_while_revalidate: forever,
            stale_if_error: Duration::from_secs(u64::MAX),
        };
        let e = Entry::new(StatusCode::OK, HeaderMap::new(), Bytes::new(), 5, &lifetime, vec![]);
        assert_eq!(e.expires_at_ms, u64::MAX);
        assert_eq!(e.stale_while_revalidate_ms, u64::MAX);
        assert_eq!(e.stale_if_error_ms, u64::MAX);
    }

    #[test]
    fn age_and_ttl_follow_the_clock() {
        let e = sample();
        assert_eq!(e.age_secs(e.stored_at_ms + 2_500), 2);
        assert_eq!(e.ttl_left(e.stored_at_ms + 10_000), Duration::from_secs(50));
        assert!(e.is_fresh(e.expires_at_ms - 1));
        assert!(!e.is_fresh(e.expires_at_ms));
    }
}
