//! The access log: one line per request, written when its response has
//! been sent (or abandoned), in a combined-like text format or as JSON
//! (`LOG_FORMAT=json`).
//!
//! What a line never holds: the token, a query parameter named in
//! `log.redact_query` (its value is replaced), request or response bodies,
//! `Set-Cookie`, the `Referer` (it can carry another site's secrets). The
//! subject may be replaced by a keyed hash (`log.hash_subjects`).
//!
//! Lines go to an [`AccessSink`]: the binary's is a writer thread shared
//! with the other logs (so a slow stdout does not stall a request in a
//! `write` call), a test's is a buffer.

mod body;
mod format;
pub mod redact;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderName, Method, Version};

use crate::auth::Claims;

pub use body::Logged;
pub use redact::{SubjectHasher, DEFAULT_REDACTED_PARAMETERS};

/// Where finished lines go.
pub trait AccessSink: Send + Sync {
    /// Writes one line (it ends with `\n`).
    fn write_line(&self, line: &[u8]);

    /// Lines (of every log) dropped so far because the writer fell behind.
    fn dropped_lines(&self) -> u64 {
        0
    }
}

/// Throws lines away.
pub struct Discard;

impl AccessSink for Discard {
    fn write_line(&self, _line: &[u8]) {}
}

/// The line format, fixed at start with the other logs' (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessFormat {
    /// `peer - subject [time] "GET /path HTTP/1.1" status bytes "-" "agent"`
    /// followed by `key=value` fields.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Where and how access lines are written: a process setting.
#[derive(Clone)]
pub struct AccessOutput {
    pub sink: Arc<dyn AccessSink>,
    pub format: AccessFormat,
}

impl AccessOutput {
    /// Lines are formatted (so their cost is paid) and dropped.
    pub fn discard() -> AccessOutput {
        AccessOutput {
            sink: Arc::new(Discard),
            format: AccessFormat::Text,
        }
    }
}

/// The `[log]` table: runtime settings, changed by a reload.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// `log.access`: whether requests are logged at all.
    pub access: bool,
    /// `log.access_sample`: the fraction of requests logged; answers of
    /// 5xx are logged whatever it is.
    pub access_sample: f64,
    /// `log.hash_subjects`: a keyed hash instead of the subject.
    pub hash_subjects: Option<SubjectHasher>,
    /// `log.redact_query`: query parameters whose values are never logged
    /// (compared ASCII case-insensitively, after percent-decoding).
    pub redact_query: Vec<String>,
    /// `log.request_id_header`: the request id's header, read from clients
    /// and sent to both sides.
    pub request_id_header: HeaderName,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            access: true,
            access_sample: 1.0,
            hash_subjects: None,
            redact_query: DEFAULT_REDACTED_PARAMETERS.iter().map(|s| (*s).to_owned()).collect(),
            request_id_header: crate::trace::X_REQUEST_ID,
        }
    }
}

impl LogSettings {
    /// Whether a request starting now is to be logged: `Sampled` ones
    /// always, `Unsampled` ones only if they end in a 5xx.
    pub fn decide(&self) -> Option<Sampling> {
        if !self.access {
            return None;
        }
        let sampled = self.access_sample >= 1.0 || rand::random::<f64>() < self.access_sample;
        Some(if sampled {
            Sampling::Sampled
        } else {
            Sampling::Unsampled
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampling {
    Sampled,
    Unsampled,
}

/// What the backend answered, put on the response by the forwarding step
/// (a response extension, so every path to the backend records it the
/// same way and a waiter served a leader's entry records none).
#[derive(Debug, Clone, Copy)]
pub struct UpstreamSeen {
    pub status: u16,
    pub elapsed: Duration,
}

/// Everything a line says, gathered while the request runs.
#[derive(Debug)]
pub struct Record {
    pub time: SystemTime,
    pub started: Instant,
    pub request_id: http::HeaderValue,
    pub trace_id: Option<String>,
    pub peer: std::net::IpAddr,
    pub method: Method,
    pub version: Version,
    /// Normalised, with redacted parameters' values replaced; the raw
    /// path (cut to [`format::MAX_PATH_LEN`]) when it could not be
    /// normalised.
    pub path: String,
    pub rule: &'static str,
    pub status: u16,
    pub cache: &'static str,
    pub cache_detail: http::HeaderValue,
    pub upstream: Option<UpstreamSeen>,
    pub bytes_in: u64,
    /// The token's claims (its subject and `jti` are logged), shared
    /// with the request rather than copied.
    pub claims: Option<Arc<Claims>>,
    /// A keyed hash of the subject, logged in its place
    /// (`log.hash_subjects`).
    pub subject_hash: Option<String>,
    pub user_agent: Option<http::HeaderValue>,
    /// Why the proxy refused or failed the request, in its own words.
    pub error: Option<String>,
}

/// A record waiting for its response's end, and where its line goes.
pub struct Pending {
    pub record: Record,
    pub output: AccessOutput,
}

impl Record {
    /// The subject as logged: its hash where subjects are hashed.
    fn subject(&self) -> Option<&str> {
        match &self.subject_hash {
            Some(hash) => Some(hash),
            None => self.claims.as_ref().map(|claims| claims.subject.as_str()),
        }
    }

    fn jti(&self) -> Option<&str> {
        self.claims.as_ref()?.jti.as_deref()
    }
}

impl Pending {
    /// Writes the line: `bytes_out` body bytes were sent, and the body was
    /// sent whole or not (`completed`).
    pub fn finish(self, bytes_out: u64, completed: bool) {
        let line = format::line(&self.record, self.output.format, bytes_out, completed);
        self.output.sink.write_line(line.as_bytes());
    }
}
