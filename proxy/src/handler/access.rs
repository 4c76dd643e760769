//! Step 0 and the last step: what the access log needs from a request,
//! taken as it arrives, and its record attached to the response's body,
//! which writes the line when the response is over. A request dropped
//! before it has a response (the client went away while the backend was
//! still thinking) is logged as 499, as nginx does.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header::USER_AGENT;
use http::{HeaderValue, Method, Request, Response, Uri, Version};
use http_body_util::BodyExt;

use super::RequestCtx;
use crate::access_log::{self, AccessOutput, LogSettings, Logged, Pending, Record, Sampling, UpstreamSeen};
use crate::cache::CACHE_STATUS;
use crate::metrics::NO_RULE;
use crate::route::Target;
use crate::runtime::Snapshot;
use crate::trace::RequestTrace;
use crate::upstream::ProxyBody;

/// The status logged for a request whose client went away before its
/// response (nginx's "client closed request").
const CLIENT_GONE: u16 = 499;

/// The request's side of its access line, taken before the request is
/// consumed; writes a 499 line if dropped before [`AccessStart::attach`].
pub(super) struct AccessStart {
    started: Option<Started>,
    output: AccessOutput,
}

struct Started {
    sampling: Sampling,
    log: Arc<LogSettings>,
    time: SystemTime,
    started: Instant,
    method: Method,
    version: Version,
    uri: Uri,
    user_agent: Option<HeaderValue>,
    request_id: HeaderValue,
    trace_id: Option<String>,
    peer: std::net::IpAddr,
}

impl AccessStart {
    /// `None` when this request is not to be logged at all.
    pub(super) fn of<B>(
        snap: &Snapshot,
        output: &AccessOutput,
        request: &Request<B>,
        client_ip: std::net::IpAddr,
        trace: &RequestTrace,
        started: Instant,
    ) -> Option<AccessStart> {
        let log = &snap.settings.log;
        let sampling = log.decide()?;
        Some(AccessStart {
            started: Some(Started {
                sampling,
                log: log.clone(),
                time: SystemTime::now(),
                started,
                method: request.method().clone(),
                version: request.version(),
                uri: request.uri().clone(),
                user_agent: request.headers().get(USER_AGENT).cloned(),
                request_id: trace.id.clone(),
                trace_id: trace.trace_id().map(str::to_owned),
                peer: client_ip,
            }),
            output: output.clone(),
        })
    }

    /// Whether every request is to be logged, not only 5xx answers: only
    /// then is the normalised target kept for the line.
    pub(super) fn sampled(&self) -> bool {
        self.started.as_ref().is_some_and(|s| s.sampling == Sampling::Sampled)
    }

    /// The response, its body carrying the record when the line is to be
    /// written (unsampled requests are logged only when they end in a 5xx).
    pub(super) fn attach(mut self, response: Response<ProxyBody>, ctx: RequestCtx<'_>) -> Response<ProxyBody> {
        let Some(start) = self.started.take() else {
            return response;
        };
        let status = response.status();
        if start.sampling == Sampling::Unsampled && !status.is_server_error() {
            return response;
        }
        let log = &start.log;
        let path = match ctx.target {
            Some(Target { path, query, .. }) => {
                access_log::redact::path_and_query(path, query.as_deref(), &log.redact_query)
            }
            None => start.raw_path(),
        };
        let subject_hash = match (&ctx.claims, &log.hash_subjects) {
            (Some(claims), Some(hasher)) => Some(hasher.hash(&claims.subject)),
            _ => None,
        };
        let record = Record {
            rule: ctx.rule.map_or(NO_RULE, |r| r.name),
            status: status.as_u16(),
            cache: ctx.cache_status.outcome(),
            // This proxy's member, appended last (made once, for the header).
            cache_detail: response
                .headers()
                .get_all(CACHE_STATUS)
                .iter()
                .next_back()
                .cloned()
                .unwrap_or_else(|| ctx.cache_status.cache_status()),
            upstream: response.extensions().get::<UpstreamSeen>().copied(),
            bytes_in: ctx.bytes_in,
            claims: ctx.claims,
            subject_hash,
            error: ctx.error,
            ..start.record(path)
        };
        let pending = Pending {
            record,
            output: self.output.clone(),
        };
        response.map(|body| Logged::new(body, pending).boxed())
    }
}

impl Started {
    /// The path as the client sent it, redacted: for requests that never
    /// had a normalised target (refused as malformed, unsampled, dropped).
    fn raw_path(&self) -> String {
        access_log::redact::path_and_query(self.uri.path(), self.uri.query(), &self.log.redact_query)
    }

    /// The record of what is known before a response: the rest as if the
    /// proxy never answered.
    fn record(self, path: String) -> Record {
        Record {
            time: self.time,
            started: self.started,
            request_id: self.request_id,
            trace_id: self.trace_id,
            peer: self.peer,
            method: self.method,
            version: self.version,
            path,
            rule: "-",
            status: CLIENT_GONE,
            cache: "-",
            cache_detail: HeaderValue::from_static("-"),
            upstream: None,
            bytes_in: 0,
            claims: None,
            subject_hash: None,
            user_agent: self.user_agent,
            error: Some("the client went away before the response".into()),
        }
    }
}

impl Drop for AccessStart {
    fn drop(&mut self) {
        let Some(start) = self.started.take() else { return };
        if start.sampling == Sampling::Sampled {
            let path = start.raw_path();
            let pending = Pending {
                record: start.record(path),
                output: self.output.clone(),
            };
            pending.finish(0, false);
        }
    }
}
