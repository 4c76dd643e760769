//! Checks shared by every section: addresses, durations, header names.

use std::net::SocketAddr;
use std::time::Duration;

use http::HeaderName;

use super::errors::Problems;

pub(super) fn socket_addr(p: &mut Problems, field: &str, value: Option<String>, default: &str) -> Option<SocketAddr> {
    let value = value.unwrap_or_else(|| default.to_owned());
    match value.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            p.add(field, format!("{value:?} is not an address like 127.0.0.1:8080"));
            None
        }
    }
}

pub(super) fn positive(p: &mut Problems, field: &str, value: Option<Duration>, default: Duration) -> Duration {
    let value = value.unwrap_or(default);
    if value.is_zero() {
        p.add(field, "must be greater than zero");
    }
    value
}

pub(super) fn at_least_one(p: &mut Problems, field: &str, value: Option<usize>, default: usize) -> usize {
    let value = value.unwrap_or(default);
    if value == 0 {
        p.add(field, "must be at least 1");
    }
    value
}

pub(super) fn at_least_one_u32(p: &mut Problems, field: &str, value: Option<u32>, default: u32) -> u32 {
    at_least_one(p, field, value.map(|v| v as usize), default as usize) as u32
}

pub(super) fn header_name(p: &mut Problems, field: &str, value: &str) -> HeaderName {
    HeaderName::from_bytes(value.as_bytes()).unwrap_or_else(|_| {
        p.add(field, format!("{value:?} is not a valid header name"));
        HeaderName::from_static("invalid")
    })
}

pub(super) fn header_names(p: &mut Problems, field: &str, values: &[String]) -> Vec<HeaderName> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| header_name(p, &format!("{field}[{i}]"), v))
        .collect()
}

/// A header name at `field`: `default` when unset, none when set to ""
/// (how a header the proxy reads from the backend is turned off).
pub(super) fn optional_header(p: &mut Problems, field: &str, value: Option<&str>, default: &str) -> Option<HeaderName> {
    match value {
        Some("") => None,
        name => Some(header_name(p, field, name.unwrap_or(default))),
    }
}
