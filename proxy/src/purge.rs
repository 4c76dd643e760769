//! `POST /purge` on the admin listener: who may purge, what a request may
//! name, and the answer.
//!
//! Authorised as every operator endpoint is ([`crate::operator`]). The body names tags,
//! paths, prefixes or `all`, optionally `soft`; paths and prefixes are
//! normalised as request paths are, so `/users/%34%32` purges `/users/42`.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Body;
use serde_json::json;

use crate::body;
use crate::cache::purge::{is_valid_tag, MAX_TAG_LEN};
use crate::cache::PurgeRequest;
use crate::handler::Proxy;
use crate::operator;
use crate::route;
use crate::upstream::{BoxError, ProxyBody};

/// A purge request names keys, not content: this is plenty.
const MAX_BODY_BYTES: usize = 64 * 1024;

pub async fn purge<B>(proxy: &Proxy, request: Request<B>) -> Response<ProxyBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if let Err(refused) = operator::authorise(&proxy.runtime.load_full(), request.headers()).await {
        return refused.into_response("purging");
    }
    let bytes = match read_body(request.into_body(), MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(refused) => return refused,
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

/// An operator request's body, at most `limit` bytes; else the answer
/// saying why not.
pub(crate) async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, Response<ProxyBody>>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"))
        }
        Err(_) => Err(error(StatusCode::BAD_REQUEST, "could not read the request body")),
    }
}

pub(crate) fn error(status: StatusCode, message: &str) -> Response<ProxyBody> {
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
