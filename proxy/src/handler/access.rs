//! Step 0 and the last step: what the access log needs from a request,
//! taken as it arrives, and its record attached to the response's body,
//! which writes the line when the response is over.

use std::time::{Instant, SystemTime};

use http::header::USER_AGENT;
use http::{HeaderValue, Method, Request, Response, Uri, Version};
use http_body_util::BodyExt;

use super::RequestCtx;
use crate::access_log::{self, AccessOutput, Logged, Pending, Record, Sampling, Subject, UpstreamSeen};
use crate::cache::CACHE_STATUS;
use crate::metrics::NO_RULE;
use crate::runtime::Snapshot;
use crate::server::Client;
use crate::trace::RequestTrace;
use crate::upstream::ProxyBody;

/// The request's side of its access line, taken before the request is
/// consumed.
pub(super) struct AccessStart {
    sampling: Sampling,
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
        request: &Request<B>,
        client: &Client,
        trace: &RequestTrace,
        started: Instant,
    ) -> Option<AccessStart> {
        let sampling = snap.settings.log.decide()?;
        Some(AccessStart {
            sampling,
            time: SystemTime::now(),
            started,
            method: request.method().clone(),
            version: request.version(),
            uri: request.uri().clone(),
            user_agent: request.headers().get(USER_AGENT).cloned(),
            request_id: trace.id.clone(),
            trace_id: trace.trace_id().map(str::to_owned),
            peer: client.peer.ip(),
        })
    }

    /// The response, its body carrying the record when the line is to be
    /// written (unsampled requests are logged only when they end in a 5xx).
    pub(super) fn attach(
        self,
        response: Response<ProxyBody>,
        ctx: RequestCtx<'_>,
        snap: &Snapshot,
        output: &AccessOutput,
    ) -> Response<ProxyBody> {
        let status = response.status();
        if self.sampling == Sampling::Unsampled && !status.is_server_error() {
            return response;
        }
        let log = &snap.settings.log;
        let path = match &ctx.target {
            Some(target) => {
                access_log::redact::path_and_query(&target.path, target.query.as_deref(), &log.redact_query)
            }
            None => access_log::redact::path_and_query(self.uri.path(), self.uri.query(), &log.redact_query),
        };
        let subject = ctx.claims.as_ref().map(|claims| match &log.hash_subjects {
            Some(hasher) => Subject::Hashed(hasher.hash(&claims.subject)),
            None => Subject::Plain(claims.subject.clone()),
        });
        let record = Record {
            time: self.time,
            started: self.started,
            request_id: self.request_id,
            trace_id: self.trace_id,
            peer: self.peer,
            method: self.method,
            version: self.version,
            path,
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
            subject,
            jti: ctx.claims.as_ref().and_then(|claims| claims.jti.clone()),
            user_agent: self.user_agent,
            error: ctx.error,
        };
        let pending = Pending {
            record,
            output: output.clone(),
        };
        response.map(|body| Logged::new(body, pending).boxed())
    }
}
