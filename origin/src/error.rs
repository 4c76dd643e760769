//! The origin's error type and its one mapping to an HTTP response.
//!
//! Every handler returns `Result<_, ApiError>`. The response body is always
//! `{"error": "<message>"}` and never carries internal detail: a
//! [`ApiError::Internal`] is logged here, once, with its cause, and the client
//! sees only "internal error".

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field is missing, of the wrong type or fails validation; the message
    /// names it.
    #[error("{0}")]
    BadRequest(String),
    /// Missing, malformed, expired or otherwise unacceptable credentials.
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("not found")]
    NotFound,
    /// A unique index refused the write; names the field that clashed.
    #[error("{0} is already taken")]
    Conflict(&'static str),
    /// The value is set aside by configuration (the bootstrap admin's
    /// email) and nobody may take it; names the field.
    #[error("{0} is reserved")]
    Reserved(&'static str),
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// Every bcrypt slot stayed taken for the whole queue budget; the client
    /// should retry shortly (503 with `Retry-After`).
    #[error("too many logins and registrations in progress; retry shortly")]
    Busy,
    /// Our fault or the database's; the cause is logged, never sent.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) | ApiError::Reserved(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn internal(err: impl Into<anyhow::Error>) -> ApiError {
        ApiError::Internal(err.into())
    }
}

impl From<mongodb::error::Error> for ApiError {
    fn from(err: mongodb::error::Error) -> Self {
        ApiError::Internal(err.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Internal(cause) => tracing::error!(error = %format!("{cause:#}"), "request failed"),
            other => tracing::debug!(%status, error = %other, "request rejected"),
        }
        let mut response = (status, Json(serde_json::json!({ "error": self.to_string() }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let ApiError::Busy = self {
            // A slot frees as soon as one bcrypt finishes, well within a
            // second at any sane cost.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::to_bytes;

    async fn body_of(err: ApiError) -> (StatusCode, serde_json::Value) {
        let resp = err.into_response();
        let status = resp.status();
        let bytes = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn internal_errors_hide_their_cause() {
        let (status, body) = body_of(ApiError::internal(anyhow::anyhow!("db password=hunter2"))).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body, serde_json::json!({"error": "internal error"}));
    }

    #[tokio::test]
    async fn conflicts_name_the_field() {
        let (status, body) = body_of(ApiError::Conflict("email")).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["error"], "email is already taken");
        let (status, body) = body_of(ApiError::Reserved("email")).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["error"], "email is reserved");
    }

    #[tokio::test]
    async fn busy_is_503_with_retry_after() {
        let resp = ApiError::Busy.into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers().get(header::RETRY_AFTER).unwrap(), "1");
        let bytes = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert!(body["error"].as_str().is_some_and(|e| e.contains("retry")), "{body}");
    }
}
