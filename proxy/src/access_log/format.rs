//! An access line, as text or JSON.

use std::fmt::Write as _;

use serde::Serialize;

use super::{AccessFormat, Record};

/// Longest path logged; a longer one is cut (it could only be a client's
/// mistake or an attack, and must not make lines unbounded).
pub const MAX_PATH_LEN: usize = 2048;
/// Longest user agent logged.
const MAX_AGENT_LEN: usize = 256;

/// The line for `record`, ending in `\n`.
pub fn line(record: &Record, format: AccessFormat, bytes_out: u64, completed: bool) -> String {
    match format {
        AccessFormat::Text => text(record, bytes_out, completed),
        AccessFormat::Json => json(record, bytes_out, completed),
    }
}

#[derive(Serialize)]
struct JsonLine<'a> {
    time: String,
    request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<&'a str>,
    peer: std::net::IpAddr,
    method: &'a str,
    path: &'a str,
    protocol: &'static str,
    rule: &'a str,
    status: u16,
    cache: &'a str,
    cache_detail: &'a str,
    upstream_status: Option<u16>,
    upstream_seconds: Option<f64>,
    duration_seconds: f64,
    bytes_in: u64,
    bytes_out: u64,
    completed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject_hash: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jti: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

fn json(r: &Record, bytes_out: u64, completed: bool) -> String {
    let (subject, subject_hash) = match &r.subject_hash {
        Some(hash) => (None, Some(hash.as_str())),
        None => (r.subject(), None),
    };
    let line = JsonLine {
        time: humantime::format_rfc3339_micros(r.time).to_string(),
        request_id: r.request_id.to_str().unwrap_or("-"),
        trace_id: r.trace_id.as_deref(),
        peer: r.peer,
        method: r.method.as_str(),
        path: cut(&r.path, MAX_PATH_LEN),
        protocol: protocol(r.version),
        rule: r.rule,
        status: r.status,
        cache: r.cache,
        cache_detail: cache_detail(r),
        upstream_status: r.upstream.map(|u| u.status),
        upstream_seconds: r.upstream.map(|u| u.elapsed.as_secs_f64()),
        duration_seconds: r.started.elapsed().as_secs_f64(),
        bytes_in: r.bytes_in,
        bytes_out,
        completed,
        subject,
        subject_hash,
        jti: r.jti(),
        user_agent: r.user_agent.as_ref().map(|agent| {
            let mut escaped = String::new();
            escape(&mut escaped, agent.as_bytes(), MAX_AGENT_LEN);
            escaped
        }),
        error: r.error.as_deref(),
    };
    let mut out = serde_json::to_string(&line).expect("an access line serialises");
    out.push('\n');
    out
}

/// Room for a text line besides its path.
const LINE_BYTES: usize = 512;

/// nginx's `combined` first (`peer - user [time] "request" status bytes
/// "referer" "agent"`, the referer always `-`), then this proxy's fields
/// as `key=value`.
fn text(r: &Record, bytes_out: u64, completed: bool) -> String {
    // A hit's line without its path is ~350 bytes (a request id, a
    // subject, a jti, the timings): room for it and a user agent, so the
    // line is one allocation, not two.
    let mut out = String::with_capacity(LINE_BYTES + r.path.len());
    let _ = write!(out, "{} - ", r.peer);
    match r.subject() {
        Some(subject) => escape_word(&mut out, subject.as_bytes()),
        None => out.push('-'),
    }
    let _ = write!(out, " [{}] \"{} ", humantime::format_rfc3339_micros(r.time), r.method);
    escape(&mut out, r.path.as_bytes(), MAX_PATH_LEN);
    let _ = write!(out, " {}\" {} {} \"-\" \"", protocol(r.version), r.status, bytes_out);
    match &r.user_agent {
        Some(agent) => escape(&mut out, agent.as_bytes(), MAX_AGENT_LEN),
        None => out.push('-'),
    }
    out.push('"');
    let _ = write!(
        out,
        " request_id={} rule={} cache={} cache_detail=\"{}\"",
        r.request_id.to_str().unwrap_or("-"),
        r.rule,
        r.cache,
        cache_detail(r)
    );
    match r.upstream {
        Some(u) => {
            let _ = write!(
                out,
                " upstream_status={} upstream_seconds={:.6}",
                u.status,
                u.elapsed.as_secs_f64()
            );
        }
        None => out.push_str(" upstream_status=- upstream_seconds=-"),
    }
    let _ = write!(
        out,
        " duration_seconds={:.6} bytes_in={} completed={} jti=",
        r.started.elapsed().as_secs_f64(),
        r.bytes_in,
        completed,
    );
    match r.jti() {
        Some(jti) => escape_word(&mut out, jti.as_bytes()),
        None => out.push('-'),
    }
    let _ = write!(out, " trace_id={}", r.trace_id.as_deref().unwrap_or("-"));
    if let Some(error) = &r.error {
        out.push_str(" error=\"");
        escape(&mut out, error.as_bytes(), MAX_PATH_LEN);
        out.push('"');
    }
    out.push('\n');
    out
}

/// At most `max` bytes of `text`, on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn protocol(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// The member of `Cache-Status` this proxy added, without its name.
fn cache_detail(r: &Record) -> &str {
    let member = r.cache_detail.to_str().unwrap_or("");
    member.strip_prefix("proxy; ").unwrap_or(member)
}

/// Appends `bytes` (cut to `max`) with `"`, `\` and anything outside
/// printable ASCII written as `\xHH`, as nginx escapes its variables: a
/// client cannot start a new line or close a quoted field.
fn escape(out: &mut String, bytes: &[u8], max: usize) {
    escape_bytes(out, bytes, max, false);
}

fn escape_bytes(out: &mut String, bytes: &[u8], max: usize, spaces: bool) {
    for &b in bytes.iter().take(max) {
        let plain = match b {
            b'"' | b'\\' => false,
            b' ' => !spaces,
            0x21..=0x7e => true,
            _ => false,
        };
        if plain {
            out.push(b as char);
        } else {
            let _ = write!(out, "\\x{b:02X}");
        }
    }
    if bytes.len() > max {
        out.push_str("...");
    }
}

/// Appends an unquoted field's value (a subject, a `jti`: the token's
/// issuer chose them, and a self-service one lets users choose): as
/// [`escape`], spaces too, so it cannot end early and forge a field.
fn escape_word(out: &mut String, bytes: &[u8]) {
    const MAX_WORD_LEN: usize = 256;
    escape_bytes(out, bytes, MAX_WORD_LEN, true);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access_log::UpstreamSeen;
    use crate::auth::Claims;
    use std::sync::Arc;
    use std::time::{Duration, Instant, SystemTime};

    fn claims(subject: &str, jti: Option<&str>) -> Arc<Claims> {
        Arc::new(Claims {
            subject: subject.into(),
            roles: vec!["user".into()],
            jti: jti.map(str::to_owned),
            issued_at: None,
            expires_at: 0,
        })
    }

    fn record() -> Record {
        Record {
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            started: Instant::now(),
            request_id: http::HeaderValue::from_static("req-1"),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            peer: "10.0.0.7".parse().unwrap(),
            method: http::Method::GET,
            version: http::Version::HTTP_11,
            path: "/users?page=2".into(),
            rule: "users-list",
            status: 200,
            cache: "miss",
            cache_detail: http::HeaderValue::from_static("proxy; fwd=uri-miss; stored"),
            upstream: Some(UpstreamSeen {
                status: 200,
                elapsed: Duration::from_millis(12),
            }),
            bytes_in: 0,
            claims: Some(claims("alice", Some("t-9"))),
            subject_hash: None,
            user_agent: Some(http::HeaderValue::from_bytes(b"evil\"agent\t\xff").unwrap()),
            error: None,
        }
    }

    #[test]
    fn text_starts_like_combined_and_escapes_what_a_client_sent() {
        let line = line(&record(), AccessFormat::Text, 1234, true);
        assert!(
            line.starts_with(
                "10.0.0.7 - alice [2027-01-15T08:00:00.000000Z] \"GET /users?page=2 HTTP/1.1\" 200 1234 \"-\" \"evil\\x22agent\\x09\\xFF\""
            ),
            "{line}"
        );
        assert!(line.contains(" request_id=req-1 rule=users-list cache=miss cache_detail=\"fwd=uri-miss; stored\" upstream_status=200 upstream_seconds=0.012000"), "{line}");
        assert!(
            line.contains(" jti=t-9 trace_id=4bf92f3577b34da6a3ce929d0e0e4736"),
            "{line}"
        );
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        assert!(line.ends_with('\n'));
    }

    #[test]
    fn json_is_one_object_per_line() {
        let line = line(&record(), AccessFormat::Json, 1234, false);
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["request_id"], "req-1");
        assert_eq!(v["peer"], "10.0.0.7");
        assert_eq!(v["path"], "/users?page=2");
        assert_eq!(v["status"], 200);
        assert_eq!(v["upstream_status"], 200);
        assert_eq!(v["bytes_out"], 1234);
        assert_eq!(v["completed"], false);
        assert_eq!(v["subject"], "alice");
        assert_eq!(v["user_agent"], "evil\\x22agent\\x09\\xFF");
        assert!(v.get("subject_hash").is_none());
    }

    #[test]
    fn a_subject_or_jti_cannot_forge_a_field() {
        let mut r = record();
        r.claims = Some(claims(
            "bob\" 200 0 \"-\" \"",
            Some("x trace_id=0af error=\"forged\"\u{2028}"),
        ));
        let line = line(&r, AccessFormat::Text, 0, true);
        assert!(
            line.starts_with("10.0.0.7 - bob\\x22\\x20200\\x200\\x20\\x22-\\x22\\x20\\x22 ["),
            "{line}"
        );
        assert_eq!(line.matches(" trace_id=").count(), 1, "{line}");
        assert!(!line.contains(" error="), "{line}");
        assert!(
            line.contains(" jti=x\\x20trace_id=0af\\x20error=\\x22forged\\x22\\xE2\\x80\\xA8 "),
            "{line}"
        );
    }

    #[test]
    fn a_huge_path_is_cut() {
        let mut r = record();
        r.path = format!("/{}", "a".repeat(10_000));
        for format in [AccessFormat::Text, AccessFormat::Json] {
            let line = line(&r, format, 0, true);
            assert!(line.len() < MAX_PATH_LEN + 1024, "{}", line.len());
        }
    }
}
