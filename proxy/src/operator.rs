//! Who may use the operator's endpoints on the admin listener (`/purge`,
//! `/reload`, `/config`): `PROXY_ADMIN_TOKEN` (compared in constant time)
//! or a JWT the proxy accepts whose roles include `admin`, read by the
//! request path's own bearer parser (`auth::bearer`), under the rules in
//! use when the request arrived.

use http::header::WWW_AUTHENTICATE;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::auth::{self, AuthError};
use crate::body;
use crate::runtime::Snapshot;
use crate::upstream::ProxyBody;

/// The role a JWT needs.
pub const ADMIN_ROLE: &str = "admin";

/// Why an operator request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Two `Authorization` headers (400): which one counts must not depend
    /// on who reads them.
    Ambiguous,
    /// No admin token and no valid JWT (401).
    Unauthorised,
    /// A valid JWT without the admin role (403).
    Forbidden,
}

impl Refusal {
    /// The answer, saying what `doing` (e.g. "purging") needs.
    pub fn into_response(self, doing: &str) -> Response<ProxyBody> {
        match self {
            Refusal::Ambiguous => error(StatusCode::BAD_REQUEST, "more than one Authorization header"),
            Refusal::Forbidden => error(StatusCode::FORBIDDEN, &format!("{doing} needs the admin role")),
            Refusal::Unauthorised => {
                let mut response = error(
                    StatusCode::UNAUTHORIZED,
                    &format!("{doing} needs PROXY_ADMIN_TOKEN or an admin JWT as a bearer token"),
                );
                response
                    .headers_mut()
                    .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                response
            }
        }
    }
}

/// `Ok` when the bearer may use the operator's endpoints under `snap`.
pub async fn authorise(snap: &Snapshot, headers: &HeaderMap) -> Result<(), Refusal> {
    let token = match auth::bearer(headers) {
        Ok(Some(token)) => token,
        Err(AuthError::MultipleAuthorization) => return Err(Refusal::Ambiguous),
        Ok(None) | Err(_) => return Err(Refusal::Unauthorised),
    };
    if let Some(admin) = &snap.settings.admin_token {
        if bool::from(admin.0.as_bytes().ct_eq(token.as_bytes())) {
            return Ok(());
        }
    }
    let Some(issuers) = &snap.jwt else {
        return Err(Refusal::Unauthorised);
    };
    match issuers.verify(token).await {
        Ok(claims) if claims.roles.iter().any(|r| r == ADMIN_ROLE) => Ok(()),
        Ok(_) => Err(Refusal::Forbidden),
        Err(_) => Err(Refusal::Unauthorised),
    }
}

fn error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    body::json_response(status, &json!({ "error": message }))
}
