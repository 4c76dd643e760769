//! Request shaping (DESIGN.md step 4): which client headers reach the
//! backend (all end-to-end ones on uncacheable rules; only the allowlist on
//! cacheable rules, since anything that shapes a response without being in
//! the key can poison it; never the proxy's own headers, their `_` twins or
//! method/URL overrides), the identity and forwarding headers the proxy
//! adds, and hop-by-hop handling (RFC 9110 §7.6.1).

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::auth::Claims;

/// The headers that carry a verified identity to the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentitySettings {
    pub subject_header: HeaderName,
    pub role_header: HeaderName,
}

/// `Via` value added to forwarded requests.
pub const VIA: HeaderValue = HeaderValue::from_static("1.1 proxy");

/// Headers meaningful only for one connection (RFC 9110 §7.6.1), never
/// forwarded in either direction.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

/// Client-supplied headers that claim facts only the proxy may state.
const FORWARDING_HEADERS: [HeaderName; 5] = [
    header::FORWARDED,
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-real-ip"),
];

/// Headers that make many frameworks act on another method or path than
/// the one the proxy matched and authorised (Symfony, Laravel, Rails,
/// ASP.NET, IIS URL rewrite): a `GET` on a public rule must not become a
/// `DELETE`, nor `/public` become `/admin`, behind the proxy's back.
const OVERRIDE_HEADERS: [HeaderName; 5] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
];

/// Whether `name` is a header the proxy sets or strips itself, so a
/// client's value never reaches the origin (and must not key an entry).
///
/// Names are compared with `_` and `-` as one character: CGI, WSGI and Rack
/// turn both into `_` (`HTTP_X_AUTH_ROLE`), so a client's `x_auth_role`
/// would otherwise reach such a backend as the proxy's `x-auth-role`, or
/// shadow it (cf. CVE-2024-45614). The one place that decides this, so
/// both forwarding and config validation follow it.
pub fn is_proxy_owned(name: &HeaderName, identity: &IdentitySettings) -> bool {
    let name = name.as_str();
    let owned = |other: &HeaderName| same_to_cgi(name, other.as_str());
    HOP_BY_HOP.iter().any(owned)
        || FORWARDING_HEADERS.iter().any(owned)
        || OVERRIDE_HEADERS.iter().any(owned)
        || owned(&header::HOST)
        || owned(&identity.subject_header)
        || owned(&identity.role_header)
}

/// Equal once `_` and `-` are folded together; both are lower case
/// (a `HeaderName` always is). Compares in place: this runs for every
/// client header of every forwarded request.
fn same_to_cgi(a: &str, b: &str) -> bool {
    let dash = |c: u8| if c == b'_' { b'-' } else { c };
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| dash(x) == dash(y))
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Which client headers may reach the backend.
pub enum HeaderPolicy<'a> {
    /// Uncacheable rules: every end-to-end header not [`is_proxy_owned`].
    All,
    /// Cacheable rules: only these (the allowlist and the `vary` headers),
    /// plus `Authorization` when the rule is authenticated.
    Only {
        names: &'a [HeaderName],
        vary: &'a [HeaderName],
        authorization: bool,
    },
}

/// What the proxy states about the client in `X-Forwarded-*`.
#[derive(Debug, Clone, Copy)]
pub struct Forwarded {
    /// The client's address (`X-Forwarded-For`).
    pub peer: IpAddr,
    /// The scheme the client used (`X-Forwarded-Proto`).
    pub proto: &'static str,
}

/// Builds the headers sent upstream from the client's.
pub fn upstream_headers(
    client: &HeaderMap,
    policy: HeaderPolicy<'_>,
    claims: Option<&Claims>,
    identity: &IdentitySettings,
    forwarded: Forwarded,
) -> Result<HeaderMap, InvalidIdentity> {
    let mut out = HeaderMap::with_capacity(client.len() + 4);
    match policy {
        HeaderPolicy::All => {
            let connection_listed = connection_listed(client);
            for (name, value) in client {
                let dropped = is_proxy_owned(name, identity) || connection_listed.contains(name);
                if !dropped {
                    out.append(name.clone(), value.clone());
                }
            }
        }
        HeaderPolicy::Only {
            names,
            vary,
            authorization,
        } => {
            let authorization = authorization.then_some(&header::AUTHORIZATION);
            for name in names.iter().chain(vary).chain(authorization) {
                if is_proxy_owned(name, identity) || out.contains_key(name) {
                    continue;
                }
                for value in client.get_all(name) {
                    out.append(name.clone(), value.clone());
                }
            }
        }
    }
    out.insert(
        X_FORWARDED_FOR,
        HeaderValue::from_str(&forwarded.peer.to_string()).expect("an IP is a valid header value"),
    );
    out.insert(X_FORWARDED_PROTO, HeaderValue::from_static(forwarded.proto));
    out.append(header::VIA, VIA);
    if let Some(claims) = claims {
        let subject = HeaderValue::from_str(&claims.subject).map_err(|_| InvalidIdentity)?;
        let roles = HeaderValue::from_str(&claims.roles.join(",")).map_err(|_| InvalidIdentity)?;
        out.insert(identity.subject_header.clone(), subject);
        out.insert(identity.role_header.clone(), roles);
    }
    Ok(out)
}

/// A verified claim that cannot be carried in a header (control
/// characters): the token is refused rather than forwarded without identity.
#[derive(Debug, PartialEq, Eq)]
pub struct InvalidIdentity;

fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}

/// Removes hop-by-hop headers from an upstream response before it is sent
/// to the client or stored.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in connection_listed(headers) {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> IdentitySettings {
        IdentitySettings {
            subject_header: HeaderName::from_static("x-auth-subject"),
            role_header: HeaderName::from_static("x-auth-role"),
        }
    }

    fn forwarded(peer: &str) -> Forwarded {
        Forwarded {
            peer: peer.parse().unwrap(),
            proto: "http",
        }
    }

    fn client_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("host", "evil.example"),
            ("accept", "application/json"),
            ("authorization", "Bearer t"),
            ("x-auth-subject", "admin"),
            ("x-auth-role", "admin"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-host", "evil.example"),
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "s"),
            ("upgrade", "websocket"),
            ("x-custom", "c"),
            ("accept-language", "fr"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    fn shape(policy: HeaderPolicy<'_>, claims: Option<&Claims>) -> HeaderMap {
        upstream_headers(&client_headers(), policy, claims, &identity(), forwarded("10.0.0.9")).unwrap()
    }

    #[test]
    fn uncacheable_rules_forward_end_to_end_headers_only() {
        let h = shape(HeaderPolicy::All, None);
        assert!(
            !h.contains_key("host"),
            "the client's Host forwarded: the endpoint's is set as it is sent"
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["via"], "1.1 proxy");
        assert_eq!(h["x-custom"], "c");
        assert_eq!(h["authorization"], "Bearer t");
        for gone in [
            "x-auth-subject",
            "x-auth-role",
            "x-forwarded-host",
            "connection",
            "x-secret",
            "upgrade",
        ] {
            assert!(!h.contains_key(gone), "{gone} forwarded");
        }
    }

    #[test]
    fn cacheable_rules_forward_only_the_allowlist_and_vary_headers() {
        let names = [
            HeaderName::from_static("accept"),
            HeaderName::from_static("x-forwarded-host"),
        ];
        let vary = [HeaderName::from_static("accept-language")];
        let h = shape(
            HeaderPolicy::Only {
                names: &names,
                vary: &vary,
                authorization: false,
            },
            None,
        );
        assert_eq!(h["accept"], "application/json");
        assert_eq!(h["accept-language"], "fr");
        for gone in ["x-custom", "authorization", "x-forwarded-host", "x-auth-subject"] {
            assert!(!h.contains_key(gone), "{gone} forwarded");
        }
        let with_auth = shape(
            HeaderPolicy::Only {
                names: &names,
                vary: &vary,
                authorization: true,
            },
            None,
        );
        assert_eq!(with_auth["authorization"], "Bearer t");
    }

    #[test]
    fn verified_identity_replaces_client_claims() {
        let claims = Claims {
            subject: "u42".into(),
            roles: vec!["user".into(), "editor".into()],
            jti: None,
            ..Claims::default()
        };
        let h = shape(HeaderPolicy::All, Some(&claims));
        assert_eq!(h["x-auth-subject"], "u42");
        assert_eq!(h["x-auth-role"], "user,editor");
        assert_eq!(h.get_all("x-auth-subject").iter().count(), 1);
    }

    /// Underscore twins of proxy-owned headers, and method/URL overrides:
    /// none may reach the backend, whatever the rule forwards.
    const SPOOFS: [&str; 14] = [
        "x_auth_subject",
        "x_auth_role",
        "x-auth_role",
        "x_forwarded_for",
        "x_forwarded_proto",
        "x_real_ip",
        "transfer_encoding",
        "proxy_authorization",
        "x-http-method-override",
        "x_http_method_override",
        "x-method-override",
        "x-http-method",
        "x-original-url",
        "x_rewrite_url",
    ];

    #[test]
    fn underscore_twins_and_override_headers_never_reach_the_backend() {
        let mut client = HeaderMap::new();
        for name in SPOOFS.iter().chain(&["x-rewrite-url", "x_custom", "accept"]) {
            client.append(HeaderName::from_static(name), HeaderValue::from_static("admin"));
        }
        let claims = Claims {
            subject: "u42".into(),
            roles: vec!["user".into()],
            jti: None,
            ..Claims::default()
        };
        let names: Vec<HeaderName> = SPOOFS.iter().map(|n| HeaderName::from_static(n)).collect();
        let shaped =
            |policy| upstream_headers(&client, policy, Some(&claims), &identity(), forwarded("10.0.0.9")).unwrap();
        let all = shaped(HeaderPolicy::All);
        let only = shaped(HeaderPolicy::Only {
            names: &names,
            vary: &names,
            authorization: true,
        });
        for h in [&all, &only] {
            for gone in SPOOFS.iter().chain(&["x-rewrite-url"]) {
                assert!(!h.contains_key(*gone), "{gone} forwarded");
            }
            assert_eq!(h["x-auth-subject"], "u42");
            assert_eq!(h["x-auth-role"], "user");
            assert_eq!(h["x-forwarded-for"], "10.0.0.9");
        }
        // Underscores alone are not suspicious: only twins of owned names.
        assert_eq!(all["x_custom"], "admin");
        assert_eq!(all["accept"], "admin");
    }

    #[test]
    fn configured_identity_headers_are_owned_in_either_spelling() {
        let identity = IdentitySettings {
            subject_header: HeaderName::from_static("x_user"),
            role_header: HeaderName::from_static("x-user-roles"),
        };
        for name in ["x_user", "x-user", "x-user-roles", "x_user_roles", "x-user_roles"] {
            assert!(is_proxy_owned(&HeaderName::from_static(name), &identity), "{name}");
        }
        for name in ["x-auth-subject", "x-users", "x-user-role", "accept", "x_custom"] {
            assert!(!is_proxy_owned(&HeaderName::from_static(name), &identity), "{name}");
        }
    }

    #[test]
    fn identities_that_cannot_be_headers_are_refused() {
        let claims = Claims {
            subject: "a\nb".into(),
            roles: vec![],
            jti: None,
            ..Claims::default()
        };
        let result = upstream_headers(
            &HeaderMap::new(),
            HeaderPolicy::All,
            Some(&claims),
            &identity(),
            forwarded("127.0.0.1"),
        );
        assert_eq!(result.unwrap_err(), InvalidIdentity);
    }

    #[test]
    fn hop_by_hop_response_headers_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("x-internal"));
        h.insert("x-internal", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("content-type"));
    }
}
