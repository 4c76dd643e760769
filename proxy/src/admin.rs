//! The admin listener: liveness, readiness, metrics, the status page, and
//! the operator's endpoints (purge, reload, the settings in use).
//!
//! Served on its own address (`admin_listen`, never the client listener),
//! so operators can firewall it separately.

use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use serde_json::json;

use hyper::body::Body;

use crate::body;
use crate::handler::Proxy;
use crate::operator;
use crate::purge;
use crate::revoke;
use crate::status;
use crate::upstream::{BoxError, ProxyBody};

/// Answers one admin request.
pub async fn handle<B>(proxy: Arc<Proxy>, request: Request<B>) -> Response<ProxyBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    match (request.method(), request.uri().path()) {
        (&Method::POST, "/purge") => purge::purge(&proxy, request).await,
        (&Method::POST, "/revoke") => revoke::revoke(&proxy, request).await,
        (&Method::POST, "/reload") => reload(&proxy, request.headers()).await,
        (&Method::GET, "/config") => active_config(&proxy, request.headers()).await,
        (&Method::GET, "/healthz") => body::json_response(StatusCode::OK, &json!({"status": "ok"})),
        (&Method::GET, "/readyz") => readiness(&proxy).await,
        (&Method::GET, "/" | "/status" | "/status.json" | "/metrics")
            if !status::may_read(&proxy.runtime.load(), request.headers()) =>
        {
            status::refused()
        }
        (&Method::GET, "/" | "/status") => status::page(),
        (&Method::GET, "/status.json") => status::json(&proxy.status, &proxy.runtime, &proxy.runtime.load()),
        (&Method::GET, "/metrics") => metrics(&proxy, request.headers()),
        (
            _,
            "/" | "/status" | "/status.json" | "/healthz" | "/readyz" | "/metrics" | "/purge" | "/revoke" | "/reload"
            | "/config",
        ) => body::json_response(StatusCode::METHOD_NOT_ALLOWED, &json!({"error": "method not allowed"})),
        _ => body::json_response(StatusCode::NOT_FOUND, &json!({"error": "not found"})),
    }
}

/// `GET /metrics`: OpenMetrics when the scraper asks for it (Prometheus
/// does), else the Prometheus text format.
fn metrics(proxy: &Proxy, headers: &HeaderMap) -> Response<ProxyBody> {
    let openmetrics = headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|accept| accept.contains("application/openmetrics-text"));
    let (text, content_type) = if openmetrics {
        (
            proxy.metrics.encode(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    } else {
        (
            proxy.metrics.encode_prometheus_text(),
            "text/plain; version=0.0.4; charset=utf-8",
        )
    };
    let mut response = Response::new(body::full(Bytes::from(text)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Ready when the upstream (one of its endpoints, when there are several)
/// accepts a connection, the cache store answers and every JWKS URL's
/// keys can be used; 503 naming what is not. Keys that cannot be used make
/// authenticated routes answer 503 too, while public routes keep working.
async fn readiness(proxy: &Proxy) -> Response<ProxyBody> {
    let upstream = &proxy.boot.upstream;
    let accepts = |authority: &http::uri::Authority| {
        let authority = authority.as_str().to_owned();
        async move {
            matches!(
                tokio::time::timeout(upstream.connect_timeout, tokio::net::TcpStream::connect(&authority)).await,
                Ok(Ok(_))
            )
        }
    };
    let endpoints: Vec<bool> = futures_util::future::join_all(upstream.authorities().map(accepts)).await;
    let upstream_ok = endpoints.contains(&true);
    let store_ok = proxy.store.ping().await.is_ok();
    let keys_unavailable = proxy
        .runtime
        .load()
        .jwt
        .as_ref()
        .map(|issuers| issuers.keys_unavailable())
        .unwrap_or_default();
    let keys_ok = keys_unavailable.is_empty();
    let status = if upstream_ok && store_ok && keys_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    let mut answer = json!({
        "upstream": word(upstream_ok),
        "cache": word(store_ok),
        "keys": word(keys_ok),
        "keys_unavailable": keys_unavailable,
        "cache_store": proxy.store.kind(),
        "cache_namespace": proxy.boot.store.namespace,
        "warnings": proxy.store.warnings().await,
    });
    if endpoints.len() > 1 {
        let each: serde_json::Map<String, serde_json::Value> = upstream
            .authorities()
            .zip(&endpoints)
            .map(|(authority, ok)| (authority.to_string(), word(*ok).into()))
            .collect();
        answer["upstream_endpoints"] = each.into();
    }
    body::json_response(status, &answer)
}

/// `POST /reload`: the config file read anew and swapped in whole, or the
/// running rules kept and every problem named (400).
async fn reload(proxy: &Proxy, headers: &HeaderMap) -> Response<ProxyBody> {
    if let Err(refused) = operator::authorise(&proxy.runtime.load_full(), headers).await {
        return refused.into_response("reloading");
    }
    match proxy.runtime.reload().await {
        Ok(version) => body::json_response(StatusCode::OK, &json!({"reloaded": true, "version": &*version})),
        Err(problems) => {
            let errors: Vec<_> = problems
                .iter()
                .map(|p| json!({"field": p.field, "message": p.message}))
                .collect();
            body::json_response(
                StatusCode::BAD_REQUEST,
                &json!({"reloaded": false, "error": "invalid configuration; the running rules are unchanged", "errors": errors}),
            )
        }
    }
}

/// `GET /config`: the runtime settings in use (secrets redacted), their
/// version and the cache namespace.
async fn active_config(proxy: &Proxy, headers: &HeaderMap) -> Response<ProxyBody> {
    let snap = proxy.runtime.load_full();
    if let Err(refused) = operator::authorise(&snap, headers).await {
        return refused.into_response("reading the config");
    }
    let mut described = snap.describe();
    described["cache_namespace"] = json!(proxy.boot.store.namespace);
    described["cache_store"] = json!(proxy.boot.store.backend.kind());
    body::json_response(StatusCode::OK, &described)
}
