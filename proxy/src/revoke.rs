//! `POST /revoke` on the admin listener: revokes one token (`{"jti": ...,
//! "exp": ...}`) or a subject's tokens issued until a time (`{"subject":
//! ..., "before": ...}`, `before` defaulting to now), for every instance
//! sharing the store. Authorised as `/purge` is ([`crate::operator`]).

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Body;
use serde_json::json;

use crate::body;
use crate::guard::revocation::{self, describe, Revocation};
use crate::handler::Proxy;
use crate::operator;
use crate::purge::{error, read_body};
use crate::upstream::{BoxError, ProxyBody};

/// A revocation names one token or subject.
const MAX_BODY_BYTES: usize = 4 * 1024;

pub async fn revoke<B>(proxy: &Proxy, request: Request<B>) -> Response<ProxyBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if let Err(refused) = operator::authorise(&proxy.runtime.load_full(), request.headers()).await {
        return refused.into_response("revoking");
    }
    let bytes = match read_body(request.into_body(), MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(refused) => return refused,
    };
    let revocation = match revocation::from_request_body(&bytes) {
        Ok(revocation) => revocation,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    match proxy.store.revoke(&revocation).await {
        Ok(()) => {
            proxy.metrics.revocation_written("admin", "applied");
            tracing::info!(revocation = %describe(&revocation), "revoked");
            let answer = match &revocation {
                Revocation::Token { jti, expires_at } => json!({"revoked": {"jti": jti, "exp": expires_at}}),
                Revocation::Subject { subject, before } => {
                    json!({"revoked": {"subject": subject, "before": before}})
                }
            };
            body::json_response(StatusCode::OK, &answer)
        }
        Err(err) => {
            proxy.metrics.revocation_written("admin", "failed");
            tracing::warn!(revocation = %describe(&revocation), error = %err, "revocation failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store unavailable; the revocation was not recorded for sure",
            )
        }
    }
}
