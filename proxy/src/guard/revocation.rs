//! Token revocation: what may be revoked, how it is asked for, and when a
//! token is revoked.
//!
//! Two kinds, both kept in the store every instance reads: one token by
//! its `jti`, until its `exp` (after which it is refused anyway); and
//! every token of a subject issued at or before a time, in whole seconds
//! (logout everywhere, a password change, a deletion, a demotion). They
//! are written by the admin listener's `POST /revoke` and by the backend,
//! in response headers of writes it answers (`cache.revoke_header` and
//! `cache.revoke_jti_header`).

use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName};
use serde::Deserialize;

use crate::auth::Claims;

/// How long a revoked `jti` is kept when nobody said when its token
/// expires: longer than any access token should live.
pub const UNKNOWN_EXPIRY_SECS: u64 = 86_400;
/// Longest `jti` accepted (as the verifier keeps only those).
const MAX_JTI_LEN: usize = 128;
/// Longest subject accepted in a revocation.
const MAX_SUBJECT_LEN: usize = 1024;

/// One revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// The token with this `jti`, until `expires_at` (seconds since the
    /// epoch).
    Token { jti: String, expires_at: u64 },
    /// Every token of `subject` whose `iat` is at or before `before`.
    Subject { subject: String, before: u64 },
}

/// What the store holds about one caller's token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Standing {
    /// Its `jti` is revoked.
    pub token_revoked: bool,
    /// Its subject's tokens issued at or before this are revoked.
    pub subject_revoked_before: Option<u64>,
}

impl Standing {
    /// Whether `claims` name a revoked token. A token without `iat` cannot
    /// show it was issued after its subject's revocation, so it is revoked
    /// with the rest.
    pub fn revokes(&self, claims: &Claims) -> bool {
        self.token_revoked
            || self
                .subject_revoked_before
                .is_some_and(|before| claims.issued_at.is_none_or(|iat| iat <= before))
    }
}

/// A revocation for the log: the subject or the `jti` is how an operator
/// finds it; neither is a credential.
pub fn describe(revocation: &Revocation) -> String {
    match revocation {
        Revocation::Token { jti, expires_at } => format!("jti {jti:?} (exp {expires_at})"),
        Revocation::Subject { subject, before } => format!("subject {subject:?} (tokens issued until {before})"),
    }
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `POST /revoke`'s body: `{"jti": ..., "exp": ...}` or
/// `{"subject": ..., "before": ...}` (`before` defaults to now).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    jti: Option<String>,
    exp: Option<u64>,
    subject: Option<String>,
    before: Option<u64>,
}

/// Reads `POST /revoke`'s body; the error says what is wrong.
pub fn from_request_body(body: &[u8]) -> Result<Revocation, String> {
    let body: RevokeBody = serde_json::from_slice(body).map_err(|e| format!("invalid body: {e}"))?;
    match body {
        RevokeBody {
            jti: Some(jti),
            exp: Some(exp),
            subject: None,
            before: None,
        } => {
            check_name("jti", &jti, MAX_JTI_LEN)?;
            Ok(Revocation::Token { jti, expires_at: exp })
        }
        RevokeBody {
            jti: Some(_),
            exp: None,
            subject: None,
            before: None,
        } => Err("\"exp\" is required with \"jti\" (the token's exp: how long to keep it)".into()),
        RevokeBody {
            jti: None,
            exp: None,
            subject: Some(subject),
            before,
        } => {
            check_name("subject", &subject, MAX_SUBJECT_LEN)?;
            Ok(Revocation::Subject {
                subject,
                before: before.unwrap_or_else(now_secs),
            })
        }
        _ => Err("expected {\"jti\": ..., \"exp\": ...} or {\"subject\": ..., \"before\": ...}".into()),
    }
}

fn check_name(field: &str, value: &str, max_len: usize) -> Result<(), String> {
    if value.is_empty() || value.len() > max_len || value.chars().any(char::is_control) {
        return Err(format!(
            "\"{field}\" must be 1 to {max_len} characters, without control characters"
        ));
    }
    Ok(())
}

/// The names of the response headers a backend revokes with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeHeaders {
    /// Subjects: `Revoke-Subject: 42` or `42; before=1700000000`.
    pub subject: Option<HeaderName>,
    /// Tokens: `Revoke-Jti: <jti>; exp=1700000000` (without `exp`: the
    /// caller's token's when it is that token, else a day).
    pub jti: Option<HeaderName>,
}

impl RevokeHeaders {
    /// The revocations a backend's answer asks for, `caller` being who sent
    /// the write: one per header line (a subject or `jti` may hold commas
    /// and semicolons, so only a trailing `; before=<n>` or `; exp=<n>` is
    /// read as a parameter). A line that is not text is skipped and logged.
    pub fn read(&self, headers: &HeaderMap, caller: Option<&Claims>) -> Vec<Revocation> {
        let mut found = Vec::new();
        for (name, is_subject) in [(&self.subject, true), (&self.jti, false)] {
            let Some(name) = name else { continue };
            for value in headers.get_all(name) {
                match value.to_str().ok().and_then(|v| line_of(v, is_subject, caller)) {
                    Some(revocation) => found.push(revocation),
                    None => tracing::warn!(header = %name, "ignoring an unreadable revocation header"),
                }
            }
        }
        found
    }

    /// Removes the headers from an answer: they are for this proxy.
    pub fn strip(&self, headers: &mut HeaderMap) {
        for name in [&self.subject, &self.jti].into_iter().flatten() {
            headers.remove(name);
        }
    }
}

/// One header line: a name, then optionally `; before=N` (subjects) or
/// `; exp=N` (tokens).
fn line_of(line: &str, is_subject: bool, caller: Option<&Claims>) -> Option<Revocation> {
    let parameter = if is_subject { "before" } else { "exp" };
    let line = line.trim();
    let (name, seconds) = match line.rsplit_once(';') {
        Some((name, tail)) => match tail.trim().strip_prefix(parameter).map(str::trim_start) {
            Some(value) => match value.strip_prefix('=').map(|v| v.trim().parse::<u64>()) {
                Some(Ok(seconds)) => (name.trim_end(), Some(seconds)),
                _ => return None,
            },
            None => (line, None),
        },
        None => (line, None),
    };
    if name.is_empty() {
        return None;
    }
    if is_subject {
        return Some(Revocation::Subject {
            subject: name.to_owned(),
            before: seconds.unwrap_or_else(now_secs),
        });
    }
    if name.len() > MAX_JTI_LEN {
        return None;
    }
    let expires_at = seconds.unwrap_or_else(|| match caller {
        Some(claims) if claims.jti.as_deref() == Some(name) => claims.expires_at,
        _ => now_secs() + UNKNOWN_EXPIRY_SECS,
    });
    Some(Revocation::Token {
        jti: name.to_owned(),
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(iat: Option<u64>) -> Claims {
        Claims {
            subject: "42".into(),
            roles: vec![],
            jti: Some("j1".into()),
            issued_at: iat,
            expires_at: 2_000,
        }
    }

    #[test]
    fn a_subject_revocation_covers_tokens_issued_at_or_before_it() {
        let standing = Standing {
            token_revoked: false,
            subject_revoked_before: Some(1_000),
        };
        assert!(standing.revokes(&claims(Some(999))));
        assert!(standing.revokes(&claims(Some(1_000))), "the same second");
        assert!(!standing.revokes(&claims(Some(1_001))));
        assert!(standing.revokes(&claims(None)), "no iat cannot prove it is newer");
        assert!(!Standing::default().revokes(&claims(None)));
    }

    #[test]
    fn request_bodies_name_a_token_with_its_expiry_or_a_subject() {
        assert_eq!(
            from_request_body(br#"{"jti":"abc","exp":1700000000}"#).unwrap(),
            Revocation::Token {
                jti: "abc".into(),
                expires_at: 1_700_000_000
            }
        );
        assert_eq!(
            from_request_body(br#"{"subject":"42","before":5}"#).unwrap(),
            Revocation::Subject {
                subject: "42".into(),
                before: 5
            }
        );
        let Revocation::Subject { before, .. } = from_request_body(br#"{"subject":"42"}"#).unwrap() else {
            panic!("a subject")
        };
        assert!(before.abs_diff(now_secs()) <= 1);
        for bad in [
            &br#"{"jti":"abc"}"#[..],
            br#"{"jti":"a","exp":1,"subject":"b"}"#,
            br#"{}"#,
            br#"{"subject":""}"#,
            br#"{"subject":"42","extra":1}"#,
            b"nope",
        ] {
            assert!(from_request_body(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn response_headers_name_one_subject_or_token_per_line() {
        let names = RevokeHeaders {
            subject: Some(HeaderName::from_static("revoke-subject")),
            jti: Some(HeaderName::from_static("revoke-jti")),
        };
        let mut headers = HeaderMap::new();
        headers.append("revoke-subject", "42".parse().unwrap());
        headers.append("revoke-subject", "a,b; before=7".parse().unwrap());
        headers.append("revoke-subject", "43; before=soon".parse().unwrap());
        headers.append("revoke-jti", "j1".parse().unwrap());
        headers.append("revoke-jti", "j;2; exp=9".parse().unwrap());
        let found = names.read(&headers, Some(&claims(Some(1))));
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(matches!(&found[0], Revocation::Subject { subject, .. } if subject == "42"));
        // Commas and semicolons belong to the name; only the trailing
        // parameter is read.
        assert_eq!(
            found[1],
            Revocation::Subject {
                subject: "a,b".into(),
                before: 7
            }
        );
        // The caller's own token: its exp.
        assert_eq!(
            found[2],
            Revocation::Token {
                jti: "j1".into(),
                expires_at: 2_000
            }
        );
        assert_eq!(
            found[3],
            Revocation::Token {
                jti: "j;2".into(),
                expires_at: 9
            }
        );
        names.strip(&mut headers);
        assert!(headers.is_empty());
    }
}
