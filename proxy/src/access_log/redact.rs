//! What the access log leaves out or disguises: secret query parameters'
//! values and, when asked, subjects.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Query parameters whose values the access log replaces unless
/// `log.redact_query` says otherwise: the usual names of credentials in
/// URLs (OAuth tokens, API keys, passwords, signed-URL signatures).
pub const DEFAULT_REDACTED_PARAMETERS: &[&str] = &[
    "access_token",
    "token",
    "api_key",
    "apikey",
    "key",
    "password",
    "passwd",
    "secret",
    "client_secret",
    "refresh_token",
    "id_token",
    "signature",
    "sig",
    "x-amz-signature",
];

/// What a redacted value becomes.
pub const REDACTED: &str = "REDACTED";

/// `path?query` with the values of `redacted` parameters replaced. Pairs
/// are split at `&` and at `;` (which some frameworks also split at).
/// Names are compared as the frameworks that read them would: after
/// percent-decoding (`Tok%65n`), ASCII case-insensitively, without an
/// array suffix (`token[]`, `password[0]`), and with ` `, `.` and `[` read
/// as `_` (PHP reads `api.key` and `api+key` as `api_key`). Either
/// reading matching the list redacts the value. The query is written
/// onto `path`'s own buffer: a normalised path handed over whole is not
/// copied.
pub fn path_and_query(path: impl Into<String>, query: Option<&str>, redacted: &[String]) -> String {
    let mut out = path.into();
    let Some(query) = query else { return out };
    out.reserve(query.len() + 1);
    out.push('?');
    let mut rest = query;
    loop {
        let end = rest.find(['&', ';']).unwrap_or(rest.len());
        let pair = &rest[..end];
        let (name, value) = match pair.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (pair, None),
        };
        out.push_str(name);
        if let Some(value) = value {
            out.push('=');
            out.push_str(if is_redacted(name, redacted) { REDACTED } else { value });
        }
        match rest[end..].chars().next() {
            Some(separator) => {
                out.push(separator);
                rest = &rest[end + 1..];
            }
            None => return out,
        }
    }
}

fn is_redacted(name: &str, redacted: &[String]) -> bool {
    let decoded: String = form_urlencoded::parse(name.as_bytes())
        .next()
        .map(|(name, _)| name.into_owned())
        .unwrap_or_default();
    let base = match decoded.find('[') {
        Some(at) if decoded.ends_with(']') && at > 0 => &decoded[..at],
        _ => decoded.as_str(),
    };
    let php: String = base
        .chars()
        .map(|c| if matches!(c, ' ' | '.' | '[') { '_' } else { c })
        .collect();
    redacted
        .iter()
        .any(|r| r.eq_ignore_ascii_case(&decoded) || r.eq_ignore_ascii_case(base) || r.eq_ignore_ascii_case(&php))
}

/// HMAC-SHA256 of subjects under a key: the same subject logs the same
/// hash (requests of one user can be followed) without naming them.
#[derive(Clone)]
pub struct SubjectHasher {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for SubjectHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubjectHasher(<key redacted>)")
    }
}

impl SubjectHasher {
    pub fn new(key: &[u8]) -> SubjectHasher {
        SubjectHasher {
            mac: Hmac::new_from_slice(key).expect("HMAC takes a key of any length"),
        }
    }

    /// The first 64 bits of the MAC, in hex: enough to tell a site's users
    /// apart, too short to be worth brute-forcing against the key.
    pub fn hash(&self, subject: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(subject.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Vec<String> {
        DEFAULT_REDACTED_PARAMETERS.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn secret_parameters_lose_their_values_and_keep_their_names() {
        let logged = path_and_query(
            "/users",
            Some("a=1&access_token=abc&API_KEY=k&page=2&flag"),
            &defaults(),
        );
        assert_eq!(logged, "/users?a=1&access_token=REDACTED&API_KEY=REDACTED&page=2&flag");
    }

    #[test]
    fn percent_encoded_names_are_caught() {
        let logged = path_and_query("/x", Some("tok%65n=abc"), &defaults());
        assert_eq!(logged, "/x?tok%65n=REDACTED");
    }

    #[test]
    fn other_spellings_frameworks_read_as_a_listed_name_are_caught() {
        for (query, logged) in [
            ("page=1;access_token=S", "page=1;access_token=REDACTED"),
            ("api.key=S&api+key=S", "api.key=REDACTED&api+key=REDACTED"),
            ("token[]=S&password[0]=S", "token[]=REDACTED&password[0]=REDACTED"),
            ("client.secret=S", "client.secret=REDACTED"),
            ("tokens=ok&[token]=ok", "tokens=ok&[token]=ok"),
        ] {
            assert_eq!(
                path_and_query("/x", Some(query), &defaults()),
                format!("/x?{logged}"),
                "{query}"
            );
        }
    }

    #[test]
    fn the_list_is_the_operators() {
        let only = vec!["session".to_owned()];
        assert_eq!(
            path_and_query("/x", Some("session=s&token=t"), &only),
            "/x?session=REDACTED&token=t"
        );
        assert_eq!(path_and_query("/x", None, &only), "/x");
    }

    #[test]
    fn subjects_hash_stably_per_key() {
        let (a, b) = (SubjectHasher::new(b"one"), SubjectHasher::new(b"two"));
        assert_eq!(a.hash("alice"), a.hash("alice"));
        assert_ne!(a.hash("alice"), a.hash("bob"));
        assert_ne!(a.hash("alice"), b.hash("alice"));
        assert_eq!(a.hash("alice").len(), 16);
        assert!(!a.hash("alice").contains("alice"));
    }
}
