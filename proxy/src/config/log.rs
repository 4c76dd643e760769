//! The `[log]` table.

use std::sync::OnceLock;

use super::errors::Problems;
use super::fields::header_name;
use super::raw::RawLog;
use crate::access_log::{LogSettings, SubjectHasher, DEFAULT_REDACTED_PARAMETERS};
use crate::upstream::IdentitySettings;

/// Headers the request id must not be carried in, besides those the proxy
/// sets or drops itself ([`crate::upstream::is_proxy_owned`]): the id is
/// written over them on the way to the backend and back, so it must not
/// stand in for credentials, framing, caching or trace context.
const NOT_A_REQUEST_ID: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "content-range",
    "transfer-encoding",
    "location",
    "cache-control",
    "pragma",
    "expires",
    "etag",
    "last-modified",
    "vary",
    "age",
    "x-cache",
    "cache-status",
    "traceparent",
    "tracestate",
    "www-authenticate",
    "retry-after",
];

pub(super) fn log_settings(
    p: &mut Problems,
    raw: RawLog,
    hash_key: Option<String>,
    identity: &IdentitySettings,
) -> LogSettings {
    let defaults = LogSettings::default();
    let access_sample = raw.access_sample.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&access_sample) {
        p.add(
            "log.access_sample",
            "must be between 0 and 1 (the fraction of requests logged)",
        );
    }
    let request_id_header = match raw.request_id_header {
        Some(name) => {
            let header = header_name(p, "log.request_id_header", &name);
            if NOT_A_REQUEST_ID.contains(&header.as_str()) || crate::upstream::is_proxy_owned(&header, identity) {
                p.add(
                    "log.request_id_header",
                    format!("{name:?} means something else to the proxy or the backend; choose a header of its own"),
                );
            }
            header
        }
        None => defaults.request_id_header,
    };
    let hash_subjects = raw
        .hash_subjects
        .unwrap_or(false)
        .then(|| match hash_key.filter(|k| !k.is_empty()) {
            Some(key) => SubjectHasher::new(key.as_bytes()),
            None => process_hasher().clone(),
        });
    LogSettings {
        access: raw.access.unwrap_or(true),
        access_sample,
        hash_subjects,
        redact_query: raw
            .redact_query
            .unwrap_or_else(|| DEFAULT_REDACTED_PARAMETERS.iter().map(|s| (*s).to_owned()).collect()),
        request_id_header,
    }
}

/// Without `LOG_HASH_KEY`, a key drawn once per process: hashes then match
/// across reloads but not across instances or restarts.
fn process_hasher() -> &'static SubjectHasher {
    static HASHER: OnceLock<SubjectHasher> = OnceLock::new();
    HASHER.get_or_init(|| SubjectHasher::new(&rand::random::<[u8; 32]>()))
}
