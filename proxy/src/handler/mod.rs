//! The request pipeline: each DESIGN.md step, in order.
//!
//! `handle` is the outer layer: it logs once, records metrics, turns errors
//! into responses and stamps `X-Cache`/`Cache-Status`/`Age` on every answer.
//! `handle_inner` runs the steps with early returns: normalise and match,
//! authenticate, authorise, then either the cached read path or the
//! pass-through path (with invalidation for writes). The steps themselves
//! live in their own modules and take explicit inputs; the cached read
//! path (coalescing, stale serving, revalidation, storing) is in [`cached`].

mod access;
mod cached;

use self::access::AccessStart;

use std::net::IpAddr;
use std::sync::{Arc, Weak};
use std::time::Instant;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::request::Parts;
use http::{HeaderMap, Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};

use crate::access_log::{AccessOutput, UpstreamSeen};
use crate::auth::{self, Claims};
use crate::body;
use crate::boot::BootSettings;
use crate::cache::purge::surrogate_keys;
use crate::cache::{Bypass, CacheStatus, PurgeRequest, Store};
use crate::coalesce::Flights;
use crate::concurrency::UpstreamSlots;
use crate::error::ProxyError;
use crate::guard::headers::RateLimitFields;
use crate::guard::limits::Caller;
use crate::guard::revocation::{describe, Revocation};
use crate::guard::{Guard, GuardCheck};
use crate::invalidate::{should_invalidate, WritesInFlight};
use crate::metrics::{Metrics, NO_RULE};
use crate::rbac;
use crate::route::{self, Rule, Target};
use crate::runtime::{Runtime, Snapshot};
use crate::server::Client;
use crate::trace::RequestTrace;
use crate::upstream::{self, BoxError, HeaderPolicy, Outbound, ProxyBody, Upstream, UpstreamError};
use crate::vary::LearnedVary;

pub use crate::cache::{CACHE_STATUS, X_CACHE};

/// Everything a request needs, built once at start-up and shared. The
/// rules live in `runtime`, which a reload swaps.
pub struct Proxy {
    pub boot: BootSettings,
    pub runtime: Runtime,
    pub store: Arc<dyn Store>,
    pub flights: Arc<Flights>,
    pub learned_vary: LearnedVary,
    /// This proxy, for background refreshes that outlive their request.
    pub me: Weak<Proxy>,
    pub upstream: Upstream,
    pub metrics: Arc<Metrics>,
    /// Writes whose invalidation has not finished, for shutdown to wait on.
    pub writes: Arc<WritesInFlight>,
    /// Limits on requests at the backend at once.
    pub upstream_slots: UpstreamSlots,
    /// Where access lines go, and in which format.
    pub access_output: AccessOutput,
    /// What the status page shows.
    pub status: Arc<crate::status::Status>,
    /// Rate limits and revocation: what a request asks of the store, and
    /// what the answer means.
    pub guard: Guard,
}

/// A request that passed steps 1–3: where it goes and who sent it.
struct Admitted<'a> {
    /// The rules this request runs under, to its end.
    snap: &'a Arc<Snapshot>,
    parts: Parts,
    target: Target,
    rule: &'a Rule,
    claims: Option<Arc<Claims>>,
    client: Client,
    /// The client's address (the peer's, or the one trusted proxies name).
    client_ip: IpAddr,
    /// Its request id and trace context, for the backend.
    trace: RequestTrace,
}

impl Admitted<'_> {
    /// What this request offers its limits' keys.
    fn caller<'b>(&'b self, body: Option<&'b [u8]>) -> Caller<'b> {
        Caller {
            rule: self.rule.name,
            claims: self.claims.as_deref(),
            ip: self.client_ip,
            headers: &self.parts.headers,
            body,
        }
    }

    /// What this request asks of the store: its limits' cells, and its
    /// token's standing.
    fn guard_check(&self, guard: &Guard, body: Option<&[u8]>) -> Result<GuardCheck, ProxyError> {
        guard
            .check_for(
                &self.rule.limits,
                &self.snap.settings.guard,
                &self.caller(body),
                self.claims.as_ref(),
            )
            .map_err(|repeated| ProxyError::BadHeader(repeated.to_string()))
    }
}

/// What later steps and the outer handler need to know about a request.
struct RequestCtx<'a> {
    rule: Option<&'a Rule>,
    cache_status: CacheStatus,
    /// Who sent it, once verified.
    claims: Option<Arc<Claims>>,
    /// Its normalised target, kept only when the request is sampled.
    target: Option<Target>,
    /// Request body bytes: as declared, or as read when forwarded.
    bytes_in: u64,
    /// Why it was refused or failed, kept only when the request is logged.
    error: Option<String>,
    /// Whether the request may be logged (if only for a 5xx answer).
    logged: bool,
    /// Whether it is logged whatever its answer.
    sampled: bool,
    /// The RateLimit fields of its limits, for its answer.
    rate_limit: Option<RateLimitFields>,
}

impl Proxy {
    /// Answers one request; never fails (errors become responses).
    pub async fn handle<B>(&self, request: Request<B>, client: Client) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        let started = Instant::now();
        let snap = self.runtime.load();
        let trace = RequestTrace::of(request.headers(), &snap.settings.log.request_id_header);
        let (id_header, request_id) = (trace.header.clone(), trace.id.clone());
        // The client behind trusted proxies: what limits count, the access
        // line and the backend's X-Forwarded-For name.
        let client_ip = self.boot.server.client_ip.of(client.peer.ip(), request.headers());
        let access = AccessStart::of(&snap, &self.access_output, &request, client_ip, &trace, started);
        let method = request.method().clone();
        let mut ctx = RequestCtx {
            rule: None,
            cache_status: CacheStatus::Bypass(Bypass::Error),
            claims: None,
            target: None,
            bytes_in: content_length(request.headers()).unwrap_or(0),
            error: None,
            logged: access.is_some(),
            sampled: access.as_ref().is_some_and(AccessStart::sampled),
            rate_limit: None,
        };
        let result = self
            .handle_inner(&snap, request, client, client_ip, trace, &mut ctx)
            .await;
        let mut response = match result {
            Ok(response) => response,
            Err(err) => {
                let status = err.status();
                let rule = ctx.rule.map(|r| r.name);
                if status.is_server_error() {
                    tracing::warn!(%method, rule, %status, error = %err, "request failed");
                } else {
                    tracing::debug!(%method, rule, %status, error = %err, "request refused");
                }
                if matches!(err, ProxyError::Route(route::RouteError::NoRule)) {
                    ctx.cache_status = CacheStatus::Bypass(Bypass::NoRule);
                }
                if ctx.logged {
                    ctx.error = Some(err.to_string());
                }
                err.into_response()
            }
        };
        if let Some(name) = &snap.settings.cache.surrogate_key_header {
            // The origin's tags are for caches, not clients.
            response.headers_mut().remove(name);
        }
        snap.settings.guard.revocation.headers.strip(response.headers_mut());
        if let Some(fields) = ctx.rate_limit.take() {
            fields.apply(response.headers_mut());
        }
        stamp_cache_headers(response.headers_mut(), &ctx.cache_status);
        // Per response, whatever answered: the backend's echo of another
        // request's id is not this request's.
        response.headers_mut().insert(id_header, request_id);
        let rule = ctx.rule.map_or(NO_RULE, |r| r.name);
        self.metrics.request(
            rule,
            response.status().as_u16(),
            ctx.cache_status.outcome(),
            started.elapsed(),
        );
        match access {
            Some(access) => access.attach(response, ctx),
            None => response,
        }
    }

    async fn handle_inner<'a, B>(
        &'a self,
        snap: &'a Arc<Snapshot>,
        request: Request<B>,
        client: Client,
        client_ip: IpAddr,
        trace: RequestTrace,
        ctx: &mut RequestCtx<'a>,
    ) -> Result<Response<ProxyBody>, ProxyError>
    where
        B: Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = request.into_parts();
        let target = route::normalise(parts.uri.path(), parts.uri.query())?;
        if ctx.sampled {
            ctx.target = Some(target.clone());
        }
        let rule = snap.settings.routes.match_rule(&parts.method, &target)?;
        ctx.rule = Some(rule);

        // A token on a public rule is ignored, not verified: public routes
        // must keep working for clients holding an expired token.
        let claims = match (&snap.jwt, rule.access.is_public()) {
            (Some(issuers), false) => issuers.authenticate(&parts.headers).await?,
            _ => None,
        };
        ctx.claims.clone_from(&claims);
        rbac::authorize(&rule.access, claims.as_deref())?;

        let declared_length = content_length(&parts.headers);
        if declared_length.is_some_and(|len| len > self.boot.server.max_request_body_bytes) {
            return Err(ProxyError::BodyTooLarge);
        }

        let is_read = parts.method == Method::GET || parts.method == Method::HEAD;
        let admitted = Admitted {
            snap,
            parts,
            target,
            rule,
            claims,
            client,
            client_ip,
            trace,
        };
        match &rule.cache {
            // Its limits and revocation ride the lookup's round trip.
            Some(policy) if is_read => self.cached_read(&admitted, policy, ctx).await,
            _ => {
                if !rule.limits.read_body() {
                    ctx.rate_limit = self.guard_alone(&admitted, None).await?;
                }
                ctx.cache_status = CacheStatus::Bypass(if is_read { Bypass::Uncacheable } else { Bypass::Method });
                // Boxed, like the miss path in `cached_answer`: a request
                // to the backend is worth an allocation, and its future
                // would otherwise make every hit's future larger, which
                // each request moves (memcpy) as it starts.
                Box::pin(self.pass_through(admitted, body, ctx)).await
            }
        }
    }

    /// Counts `req` in its limits and checks its token, in a round trip of
    /// its own (where no lookup carries them); the RateLimit fields for its
    /// answer, or why it is refused.
    async fn guard_alone(
        &self,
        req: &Admitted<'_>,
        body: Option<&[u8]>,
    ) -> Result<Option<RateLimitFields>, ProxyError> {
        let check = req.guard_check(&self.guard, body)?;
        if check.is_empty() {
            return Ok(None);
        }
        let answer = self.store.check(&check).await;
        self.guard.settle(
            req.rule.name,
            &req.rule.limits,
            &req.snap.settings.guard,
            &check,
            answer,
        )
    }

    /// Uncacheable rules and writes: the request body is read whole, then
    /// forwarded; the response streams back. Writes invalidate their tags
    /// before the response is released.
    async fn pass_through<B>(
        &self,
        req: Admitted<'_>,
        body: B,
        ctx: &mut RequestCtx<'_>,
    ) -> Result<Response<ProxyBody>, ProxyError>
    where
        B: Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        let rule = req.rule;
        let headers = self.upstream_headers(&req, HeaderPolicy::All)?;
        let server = &self.boot.server;
        let bytes = body::read_request_body(body, server.max_request_body_bytes, server.body_read_timeout).await?;
        ctx.bytes_in = bytes.len() as u64;
        if rule.limits.read_body() {
            // Bounded by max_request_body_bytes, like every body: read
            // whole before anything is forwarded anyway.
            ctx.rate_limit = self.guard_alone(&req, Some(&bytes)).await?;
        }
        let response_timeout = req.snap.settings.response_timeout;
        let outbound = Outbound {
            response_timeout,
            replayable: is_idempotent(&req.parts.method) && bytes.is_empty(),
            method: req.parts.method,
            path_and_query: req.target.path_and_query(),
            headers,
            body: body::full(bytes),
        };
        let response = if outbound.method == Method::GET || outbound.method == Method::HEAD {
            self.forward(req.snap, outbound, rule.name).await?
        } else {
            self.write_detached(req.snap, outbound, rule, req.target.path.clone(), req.claims.clone())
                .await?
        };
        let (mut head, upstream_body) = response.into_parts();
        upstream::strip_hop_by_hop(&mut head.headers);
        Ok(self.streamed(head, upstream_body, false, response_timeout))
    }

    /// Forwards a write and invalidates what it may have changed, in a task
    /// of its own: once the request is complete, neither a client hanging
    /// up nor one resetting its stream can cancel the invalidation of a
    /// write that may have reached the backend. Besides the rule's tags and
    /// the backend's surrogate keys, the entries of the written path (and
    /// of the answer's `Location` and `Content-Location`) are removed
    /// (RFC 9111 §4.4), so a write route without `invalidates` still empties
    /// its own URL: best effort, since a read racing the write may store the
    /// old answer again, which only the rule's tags prevent.
    async fn write_detached(
        &self,
        snap: &Arc<Snapshot>,
        outbound: Outbound,
        rule: &Rule,
        path: String,
        caller: Option<Arc<Claims>>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let proxy = self
            .me
            .upgrade()
            .ok_or_else(|| ProxyError::Internal("proxy shut down".into()))?;
        let (name, tags) = (rule.name, rule.invalidates.clone());
        let in_flight = self.writes.register(&tags);
        let snap = snap.clone();
        let write = tokio::spawn(async move {
            let result = proxy.forward(&snap, outbound, name).await;
            if let Ok(response) = &result {
                // Whatever the status: the backend decides what it revokes.
                let asked = snap
                    .settings
                    .guard
                    .revocation
                    .headers
                    .read(response.headers(), caller.as_deref());
                proxy.apply_revocations(name, asked).await;
            }
            if should_invalidate(result.as_ref().map(|r| r.status())) {
                let named = match (&snap.settings.cache.surrogate_key_header, &result) {
                    (Some(header), Ok(response)) => surrogate_keys(response.headers(), header),
                    _ => Vec::new(),
                };
                proxy.invalidate(&snap, name, &tags, named).await;
                let mut paths = vec![path];
                if let Ok(response) = &result {
                    paths.extend(written_elsewhere(response.headers()));
                }
                proxy.invalidate_paths(name, paths).await;
            }
            drop(in_flight);
            result
        });
        match write.await {
            Ok(result) => Ok(result?),
            Err(err) => Err(ProxyError::Internal(format!("write task failed: {err}"))),
        }
    }

    /// Step 4: the headers sent upstream for an admitted request.
    fn upstream_headers(&self, req: &Admitted<'_>, policy: HeaderPolicy<'_>) -> Result<HeaderMap, ProxyError> {
        let mut headers = upstream::upstream_headers(
            &req.parts.headers,
            policy,
            req.claims.as_deref(),
            &req.snap.settings.identity,
            upstream::Forwarded {
                peer: req.client_ip,
                proto: req.client.scheme(),
            },
        )
        .map_err(|_| {
            ProxyError::from(auth::AuthError::InvalidToken(
                "identity not representable as a header".into(),
            ))
        })?;
        // On every rule, cacheable ones too: never part of a cache key.
        req.trace.forward(&mut headers);
        Ok(headers)
    }

    /// Streams an upstream body to the client, failing it (the client sees
    /// a truncated response) if the upstream stalls for the response timeout.
    fn streamed(
        &self,
        head: http::response::Parts,
        body: Incoming,
        is_head: bool,
        idle_limit: std::time::Duration,
    ) -> Response<ProxyBody> {
        let body = if is_head {
            body::empty()
        } else {
            self.idle_limited(body, idle_limit)
        };
        Response::from_parts(head, body)
    }

    fn idle_limited<B>(&self, body: B, idle_limit: std::time::Duration) -> ProxyBody
    where
        B: Body<Data = Bytes> + Unpin + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        body::IdleTimeout::new(body, idle_limit).boxed()
    }

    async fn forward(
        &self,
        snap: &Snapshot,
        outbound: Outbound,
        rule: &'static str,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let _slots = self.upstream_slots.try_hold(&snap.rule_slots, rule).map_err(|full| {
            self.metrics.upstream_rejected(rule);
            tracing::debug!(rule, ?full, "upstream concurrency limit reached");
            UpstreamError::Busy
        })?;
        let started = Instant::now();
        let result = self.upstream.send(outbound).await;
        let elapsed = started.elapsed();
        self.metrics.upstream_latency(rule, elapsed);
        let mut response = result?;
        let status = response.status().as_u16();
        response.extensions_mut().insert(UpstreamSeen { status, elapsed });
        Ok(response)
    }

    /// Records the revocations a backend's answer asked for before the
    /// answer is released, so the next request through any instance sees
    /// them. One the store cannot take within `cache.invalidation_wait` is
    /// enforced by this instance and retried until the store takes it
    /// (logged as an error: other instances let the token through until
    /// then).
    async fn apply_revocations(&self, rule: &'static str, revocations: Vec<Revocation>) {
        for revocation in revocations {
            match self.store.revoke(&revocation).await {
                Ok(()) => {
                    self.metrics.revocation_written("backend", "applied");
                    tracing::info!(rule, revocation = %describe(&revocation), "revoked, as the backend asked");
                }
                Err(err) => {
                    self.metrics.revocation_written("backend", "failed");
                    tracing::error!(rule, revocation = %describe(&revocation), error = %err, "a revocation the backend asked for could not be recorded: this instance enforces it and retries; others do not see it until then");
                    self.guard.remember_unrecorded(revocation);
                }
            }
        }
    }

    /// Removes the entries of `paths` (every query, scope and variant),
    /// after a write to them. Best effort, like surrogate keys: the rule's
    /// `invalidates` tags are what guarantees a racing read cannot put old
    /// data back.
    async fn invalidate_paths(&self, rule: &'static str, paths: Vec<String>) {
        let purge = PurgeRequest {
            paths,
            ..PurgeRequest::default()
        };
        // Within the write's own wait: an unreachable store must not hold
        // the answer for a purge's longer budget (the tags' failure is
        // what the log reports then).
        let wait = self.boot.store.invalidation_wait;
        match tokio::time::timeout(wait, self.store.purge(&purge)).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => {
                self.metrics.store_error("invalidate");
                tracing::debug!(rule, paths = ?purge.paths, error = %err, "invalidating the written paths failed");
            }
            Err(_) => {
                self.metrics.store_error("invalidate");
                tracing::debug!(rule, paths = ?purge.paths, "invalidating the written paths timed out");
            }
        }
    }

    /// Bumps the rule's tags and waits for the store to acknowledge. On
    /// failure the store has recorded them and pauses caching until they
    /// are applied, so the write is still answered. Tags the origin named
    /// in its answer (surrogate keys) are purged too, before the answer is
    /// released.
    async fn invalidate(&self, snap: &Snapshot, rule: &'static str, tags: &[String], named: Vec<String>) {
        if !tags.is_empty() {
            match self.store.invalidate(tags).await {
                Ok(()) => self.metrics.invalidation("applied"),
                Err(err) => {
                    self.metrics.invalidation("deferred");
                    self.metrics.store_error("invalidate");
                    tracing::warn!(rule, ?tags, error = %err, "invalidation deferred until the cache store is reachable");
                }
            }
        }
        // Tags some rule records get new generations, which also protects
        // reads in flight; the rest (surrogate keys only) just lose their
        // entries, so their generation keys do not pile up unread.
        let (recorded, surrogate_only): (Vec<String>, Vec<String>) =
            named.into_iter().partition(|tag| snap.settings.routes.records_tag(tag));
        for (tags, entries_only) in [(recorded, false), (surrogate_only, true)] {
            if tags.is_empty() {
                continue;
            }
            let purge = PurgeRequest {
                tags,
                entries_only,
                ..PurgeRequest::default()
            };
            match self.store.purge(&purge).await {
                Ok(_) => self.metrics.invalidation("applied"),
                Err(err) => {
                    self.metrics.store_error("invalidate");
                    tracing::warn!(rule, tags = ?purge.tags, error = %err, "surrogate-key invalidation failed");
                }
            }
        }
    }
}

/// The paths an answer to a write says it changed besides its target:
/// `Location` and `Content-Location` (RFC 9111 §4.4), normalised like a
/// request's; a full URL gives its path (the backend is trusted to name
/// its own resources).
fn written_elsewhere(headers: &HeaderMap) -> Vec<String> {
    [http::header::LOCATION, http::header::CONTENT_LOCATION]
        .iter()
        .filter_map(|name| headers.get(name)?.to_str().ok())
        .filter_map(|value| value.parse::<http::Uri>().ok())
        .filter_map(|uri| route::normalise(uri.path(), None).ok())
        .map(|target| target.path)
        .collect()
}

/// Sets `X-Cache` and appends this cache's `Cache-Status` member (RFC 9211
/// keeps upstream caches' members before ours). `Age` is left as it is:
/// an answer from the cache carries its own, and one from the backend the
/// backend's (RFC 9111 §5.1: caches downstream need it to judge freshness).
fn stamp_cache_headers(headers: &mut HeaderMap, status: &CacheStatus) {
    headers.insert(X_CACHE, status.x_cache());
    headers.append(CACHE_STATUS, status.cache_status());
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}
