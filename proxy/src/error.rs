//! The proxy's error type and its one mapping to a response.
//!
//! Each step returns its own error; [`ProxyError`] wraps them and
//! [`ProxyError::status`] maps by blame: the client's fault is a 4xx, the
//! upstream's a 502/504. Responses are small synthetic JSON bodies with no
//! internal detail. This module does not log: the handler logs each error
//! once, with context.

use http::header::WWW_AUTHENTICATE;
use http::{HeaderValue, Response, StatusCode};

use crate::auth::AuthError;
use crate::body::{self, RequestBodyError};
use crate::guard::headers::RateLimitFields;
use crate::rbac::AuthzError;
use crate::route::RouteError;
use crate::upstream::{ProxyBody, UpstreamError};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Authz(#[from] AuthzError),
    #[error("request body too large")]
    BodyTooLarge,
    /// The client paused too long while sending its body.
    #[error("request body stalled")]
    BodyTimeout,
    /// The client's body framing was broken or the stream ended early.
    #[error("{0}")]
    BadBody(String),
    /// A bug: the proxy could not finish what it started (a task panicked).
    #[error("internal error: {0}")]
    Internal(String),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The upstream's response body failed while being read.
    #[error("upstream response body failed: {0}")]
    UpstreamBody(String),
    /// `Cache-Control: only-if-cached` and nothing stored to answer with
    /// (RFC 9111 §5.2.1.7).
    #[error("only-if-cached and not in the cache")]
    NotCached,
    /// A rate limit refused the request; the fields say which and when to
    /// come back.
    #[error("rate limited")]
    RateLimited(Option<Box<RateLimitFields>>),
    /// A header a rate limit counts by was sent more than once.
    #[error("{0}")]
    BadHeader(String),
    /// The store cannot say whether the token is revoked, and
    /// `revocation.when_unavailable = "closed"`.
    #[error("revocation list unavailable")]
    RevocationUnavailable,
}

impl From<RequestBodyError> for ProxyError {
    fn from(err: RequestBodyError) -> ProxyError {
        match err {
            RequestBodyError::TooLarge(_) => ProxyError::BodyTooLarge,
            RequestBodyError::Stalled => ProxyError::BodyTimeout,
            RequestBodyError::Broken(why) => ProxyError::BadBody(why),
        }
    }
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::Route(RouteError::BadPath(_)) | ProxyError::BadBody(_) | ProxyError::BadHeader(_) => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::Route(RouteError::NoRule) => StatusCode::NOT_FOUND,
            ProxyError::Route(RouteError::MethodNotAllowed(_)) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::Auth(AuthError::MultipleAuthorization) => StatusCode::BAD_REQUEST,
            ProxyError::Auth(AuthError::KeysUnavailable) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Auth(_) | ProxyError::Authz(AuthzError::Unauthenticated) => StatusCode::UNAUTHORIZED,
            ProxyError::Authz(AuthzError::Forbidden) => StatusCode::FORBIDDEN,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::Upstream(UpstreamError::Timeout | UpstreamError::ConnectTimeout) | ProxyError::NotCached => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ProxyError::Upstream(UpstreamError::Busy) | ProxyError::RevocationUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::Upstream(_) | ProxyError::UpstreamBody(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// What the client is told: short, stable, without internal detail.
    fn client_message(&self) -> &'static str {
        match self {
            ProxyError::Route(RouteError::BadPath(why)) => why,
            ProxyError::Route(RouteError::NoRule) => "not found",
            ProxyError::BadBody(_) => "malformed request body",
            ProxyError::BadHeader(_) => "a rate-limited header sent more than once",
            ProxyError::BodyTimeout => "request body not received in time",
            ProxyError::Internal(_) => "internal error",
            ProxyError::Route(RouteError::MethodNotAllowed(_)) => "method not allowed",
            ProxyError::Auth(AuthError::MultipleAuthorization) => "more than one Authorization header",
            ProxyError::Auth(AuthError::MalformedHeader) => "malformed Authorization header",
            ProxyError::Auth(AuthError::InvalidToken(_) | AuthError::UnknownKid) => "invalid token",
            ProxyError::Auth(AuthError::KeysUnavailable) => "keys unavailable",
            ProxyError::Auth(AuthError::Revoked) => "token revoked",
            ProxyError::RateLimited(_) => "rate limited",
            ProxyError::RevocationUnavailable => "revocation list unavailable",
            ProxyError::Authz(AuthzError::Unauthenticated) => "missing bearer token",
            ProxyError::Authz(AuthzError::Forbidden) => "insufficient role",
            ProxyError::BodyTooLarge => "request body too large",
            ProxyError::Upstream(UpstreamError::Timeout | UpstreamError::ConnectTimeout) => "upstream timed out",
            ProxyError::Upstream(UpstreamError::Busy) => "upstream busy",
            ProxyError::NotCached => "not cached",
            ProxyError::Upstream(_) | ProxyError::UpstreamBody(_) => "upstream unavailable",
        }
    }

    pub fn into_response(self) -> Response<ProxyBody> {
        let mut response = body::json_response(self.status(), &serde_json::json!({ "error": self.client_message() }));
        let headers = response.headers_mut();
        match &self {
            ProxyError::Route(RouteError::MethodNotAllowed(allow)) => {
                headers.insert(http::header::ALLOW, allow.clone());
            }
            // RFC 6750 §3: no error code when no credentials were sent.
            ProxyError::Authz(AuthzError::Unauthenticated) => {
                headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ProxyError::Auth(
                AuthError::MalformedHeader | AuthError::InvalidToken(_) | AuthError::UnknownKid | AuthError::Revoked,
            ) => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
            }
            ProxyError::Upstream(UpstreamError::Busy)
            | ProxyError::Auth(AuthError::KeysUnavailable)
            | ProxyError::RevocationUnavailable => {
                headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        if let ProxyError::RateLimited(Some(fields)) = self {
            fields.apply(response.headers_mut());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::CONTENT_TYPE;
    use http_body_util::BodyExt;

    #[test]
    fn blame_decides_the_status() {
        let cases: Vec<(ProxyError, u16)> = vec![
            (RouteError::BadPath("x").into(), 400),
            (RouteError::NoRule.into(), 404),
            (
                RouteError::MethodNotAllowed(HeaderValue::from_static("GET")).into(),
                405,
            ),
            (AuthError::MultipleAuthorization.into(), 400),
            (AuthError::InvalidToken("exp".into()).into(), 401),
            (AuthzError::Unauthenticated.into(), 401),
            (AuthzError::Forbidden.into(), 403),
            (ProxyError::BodyTooLarge, 413),
            (ProxyError::BodyTimeout, 408),
            (ProxyError::BadBody("bad chunk".into()), 400),
            (UpstreamError::Connect("refused".into()).into(), 502),
            (UpstreamError::Timeout.into(), 504),
            (UpstreamError::ConnectTimeout.into(), 504),
            (UpstreamError::Busy.into(), 503),
            (AuthError::Revoked.into(), 401),
            (ProxyError::RateLimited(None), 429),
            (ProxyError::RevocationUnavailable, 503),
        ];
        for (err, status) in cases {
            assert_eq!(err.status().as_u16(), status, "{err:?}");
        }
    }

    #[tokio::test]
    async fn responses_are_json_without_internal_detail() {
        let resp = ProxyError::Auth(AuthError::InvalidToken("InvalidSignature at key 0x55".into())).into_response();
        assert_eq!(resp.headers()[WWW_AUTHENTICATE], "Bearer error=\"invalid_token\"");
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/json");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], br#"{"error":"invalid token"}"#);
    }

    #[test]
    fn method_not_allowed_carries_allow() {
        let resp =
            ProxyError::Route(RouteError::MethodNotAllowed(HeaderValue::from_static("GET, HEAD"))).into_response();
        assert_eq!(resp.headers()[http::header::ALLOW], "GET, HEAD");
    }
}
