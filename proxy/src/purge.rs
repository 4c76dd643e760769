//! `POST /purge` on the admin listener: who may purge, what a request may
//! name, and the answer.
//!
//! Authorised by `PROXY_ADMIN_TOKEN` (compared in constant time) or by a
//! JWT the proxy accepts whose roles include `admin`, read by the request
//! path's own bearer parser (`auth::bearer`). The body names tags,
//! paths, prefixes or `all`, optionally `soft`; paths and prefixes are
//! normalised as request paths are, so `/users/%34%32` purges `/users/42`.

use bytes::Bytes;
use http::header::WWW_AUTHENTICATE;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Body;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::auth::{self, AuthError};
use crate::body;
use crate::cache::purge::{is_valid_tag, MAX_TAG_LEN};
use crate::cache::PurgeRequest;
use crate::handler::Proxy;
use crate::route;
use crate::upstream::{BoxError, ProxyBody};

/// A purge request names keys, not content: this is plenty.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// The role a JWT needs to purge.
pub const ADMIN_ROLE: &str = "admin";

pub async fn purge<B>(proxy: &Proxy, request: Request<B>) -> Response<ProxyBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    match authorise(proxy, request.headers()) {
        Ok(()) => {}
        Err(Refusal::Ambiguous) => return error(StatusCode::BAD_REQUEST, "more than one Authorization header"),
        Err(Refusal::Unauthorised) => return unauthorised(),
        Err(Refusal::Forbidden) => return error(StatusCode::FORBIDDEN, "purging needs the admin role"),
    }
    let bytes = match Limited::new(request.into_body(), MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return error(StatusCode::PAYLOAD_TOO_LARGE, "purge request body too large");
        }
        Err(_) => return error(StatusCode::BAD_REQUEST, "could not read the request body"),
    };
    let purge = match parse(&bytes) {
        Ok(purge) => purge,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    match proxy.store.purge(&purge).await {
        Ok(purged) => {
            proxy.metrics.purge(if purge.soft { "soft" } else { "hard" });
            tracing::info!(tags = ?purge.tags, paths = ?purge.paths, prefixes = ?purge.prefixes, all = purge.all, soft = purge.soft, ?purged, "purged");
            body::json_response(StatusCode::OK, &json!({ "purged": purged, "soft": purge.soft }))
        }
        Err(err) => {
            tracing::warn!(error = %err, "purge failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "cache store unavailable; nothing was purged for sure",
            )
        }
    }
}

/// The request, validated, with paths and prefixes normalised.
fn parse(bytes: &[u8]) -> Result<PurgeRequest, String> {
    let mut purge: PurgeRequest = serde_json::from_slice(bytes).map_err(|e| format!("invalid purge request: {e}"))?;
    if purge.is_empty() {
        return Err("name what to purge: tags, paths, prefixes or all".into());
    }
    if let Some(tag) = purge.tags.iter().find(|t| !is_valid_tag(t)) {
        return Err(format!(
            "tag {tag:?} must be a non-empty word of at most {MAX_TAG_LEN} bytes without spaces"
        ));
    }
    for path in purge.paths.iter_mut().chain(purge.prefixes.iter_mut()) {
        *path = route::normalise(path, None)
            .map_err(|e| format!("path {path:?}: {e}"))?
            .path;
    }
    Ok(purge)
}

/// Why a purge was refused.
enum Refusal {
    /// Two `Authorization` headers (400), as on the request path: which
    /// one counts must not depend on who reads them.
    Ambiguous,
    /// No admin token and no valid JWT (401).
    Unauthorised,
    /// A valid JWT without the admin role (403).
    Forbidden,
}

/// The admin token, or a JWT with the admin role.
fn authorise(proxy: &Proxy, headers: &HeaderMap) -> Result<(), Refusal> {
    let token = match auth::bearer(headers) {
        Ok(Some(token)) => token,
        Err(AuthError::MultipleAuthorization) => return Err(Refusal::Ambiguous),
        Ok(None) | Err(_) => return Err(Refusal::Unauthorised),
    };
    if let Some(admin) = &proxy.config.admin_token {
        if bool::from(admin.0.as_bytes().ct_eq(token.as_bytes())) {
            return Ok(());
        }
    }
    match proxy.config.jwt.as_ref().map(|verifier| verifier.verify(token)) {
        Some(Ok(claims)) if claims.roles.iter().any(|r| r == ADMIN_ROLE) => Ok(()),
        Some(Ok(_)) => Err(Refusal::Forbidden),
        _ => Err(Refusal::Unauthorised),
    }
}

fn unauthorised() -> Response<ProxyBody> {
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "purging needs PROXY_ADMIN_TOKEN or an admin JWT as a bearer token",
    );
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    body::json_response(status, &json!({ "error": message }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_prefixes_are_normalised_and_bad_ones_named() {
        let purge = parse(br#"{"paths": ["/users/%34%32"], "prefixes": ["/a/./b/"]}"#).unwrap();
        assert_eq!(purge.paths, ["/users/42"]);
        assert_eq!(purge.prefixes, ["/a/b/"]);
        let err = parse(br#"{"paths": ["users"]}"#).unwrap_err();
        assert!(err.contains("\"users\""), "{err}");
    }

    #[test]
    fn an_empty_or_unknown_request_is_refused() {
        assert!(parse(b"{}").unwrap_err().contains("name what to purge"));
        assert!(parse(br#"{"urls": ["/a"]}"#).unwrap_err().contains("urls"));
        assert!(parse(br#"{"tags": ["a b"]}"#).is_err());
        assert!(parse(b"not json").is_err());
    }
}
