//! The cached read path: lookup, coalescing (in this instance and across
//! instances by lease), stale serving and background refresh, revalidation,
//! and storing what the upstream answered.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{HeaderName, AGE, CONTENT_LENGTH, ETAG, RANGE};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::BodyExt;

use super::{content_length, Admitted, Proxy, RequestCtx};
use crate::auth::Claims;
use crate::body::{self, Buffered};
use crate::cache::entry::now_ms;
use crate::cache::purge::surrogate_keys;
use crate::cache::{
    storability, storable_headers, Bypass, CacheKey, CachePolicy, CacheStatus, Entry, Generations, IndexInfo, Lookup,
    RequestDirectives, RequestKey, StaleReason,
};
use crate::coalesce::plan::{Coalescer, LeaseGuard, Miss, MissPlan};
use crate::coalesce::{Leader, Outcome};
use crate::conditional;
use crate::error::ProxyError;
use crate::range;
use crate::route::{Rule, Target};
use crate::runtime::Snapshot;
use crate::upstream::{self, HeaderPolicy, Outbound, ProxyBody, UpstreamError};

/// An upstream fetch for a cacheable rule, owned so that it can outlive
/// the request that started it (a background refresh; a leader's fetch
/// that its waiters depend on).
struct Fetch {
    /// The rules the request started under: a fetch that outlives its
    /// request stores under them, whatever a reload did since.
    snap: Arc<Snapshot>,
    /// The rule, by name: looked up in `snap` where the fetch runs.
    rule: &'static str,
    headers: HeaderMap,
    key: CacheKey,
    is_head: bool,
    /// An expired entry to revalidate: its validators go upstream, and an
    /// upstream 304 refreshes it.
    stale: Option<Arc<Entry>>,
    /// What `key` was built from, to build another if the answer varies on
    /// more headers than `vary`.
    target: Target,
    claims: Option<Arc<Claims>>,
    vary: Option<Arc<[HeaderName]>>,
    /// The request said `Cache-Control: no-store`: its answer is not
    /// stored (RFC 9111 §5.2.1.5).
    no_store: bool,
}

impl Proxy {
    /// GET/HEAD on a cacheable rule, answering 304 to a client that
    /// already holds the answer.
    pub(super) async fn cached_read(
        &self,
        req: &Admitted<'_>,
        policy: &CachePolicy,
        ctx: &mut RequestCtx<'_>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let response = self.cached_answer(req, policy, ctx).await?;
        if response.status() == StatusCode::OK && conditional::client_has_it(&req.parts.headers, response.headers()) {
            self.metrics.conditional("not_modified");
            return Ok(conditional::not_modified(response));
        }
        let answered_whole = matches!(
            ctx.cache_status,
            CacheStatus::Hit { .. }
                | CacheStatus::Stale { .. }
                | CacheStatus::Revalidated { .. }
                | CacheStatus::Miss { stored: true }
        );
        if req.parts.headers.contains_key(RANGE)
            && req.parts.method == Method::GET
            && response.status() == StatusCode::OK
            && answered_whole
        {
            // The body is the stored one, in memory: collecting it is a
            // move, not a wait.
            let (head, whole) = response.into_parts();
            let bytes = whole
                .collect()
                .await
                .map_err(|err| ProxyError::Internal(format!("stored body: {err}")))?
                .to_bytes();
            let asked = range::asked(&req.parts.headers, &head.headers, bytes.len() as u64);
            return Ok(range::narrow(Response::from_parts(head, body::empty()), bytes, asked));
        }
        Ok(response)
    }

    /// Lookup, else forward (once per key for concurrent misses), store,
    /// answer.
    async fn cached_answer(
        &self,
        req: &Admitted<'_>,
        policy: &CachePolicy,
        ctx: &mut RequestCtx<'_>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let (rule, is_head) = (req.rule, req.parts.method == Method::HEAD);
        let asked = RequestDirectives::parse(&req.parts.headers);
        // no-store always; the rest where the route lets clients decide.
        let honoured = if policy.honour_request_directives {
            asked
        } else {
            RequestDirectives {
                no_store: asked.no_store,
                ..RequestDirectives::default()
            }
        };
        let learned_vary = self
            .learned_vary
            .names(rule.cache_id, &req.target.path, req.target.query.as_deref());
        let vary = learned_vary.as_deref().unwrap_or(&policy.vary);
        let request_key = request_key(
            rule,
            policy,
            vary,
            &req.target,
            &req.parts.headers,
            req.claims.as_deref(),
        );
        let key = request_key.key();
        if request_key.material_len() > req.snap.settings.cache.max_key_bytes {
            // Not cached at all: a huge URL must cost the shared store and
            // its index nothing.
            ctx.cache_status = CacheStatus::Bypass(Bypass::KeyTooLarge);
            ctx.rate_limit = self.guard_alone(req, None).await?;
            if honoured.only_if_cached {
                return Err(ProxyError::NotCached);
            }
            let fetch = Fetch {
                snap: req.snap.clone(),
                rule: rule.name,
                headers: self.cache_headers(req, policy)?,
                key,
                is_head,
                stale: None,
                target: req.target.clone(),
                claims: req.claims.clone(),
                vary: learned_vary.clone(),
                no_store: asked.no_store,
            };
            let mut status = ctx.cache_status;
            return Ok(Box::pin(self.fetch_and_store(&fetch, None, &mut status)).await?.0);
        }

        let check = req.guard_check(&self.guard, None)?;
        let lookup = if check.is_empty() {
            self.store.lookup(&key, &policy.tags).await
        } else {
            // One round trip: the entry, and the request's limits and
            // token standing, settled before anything is served.
            let (lookup, verdict) = self.store.lookup_checked(&key, &policy.tags, &check).await;
            ctx.rate_limit = self
                .guard
                .settle(rule.name, &rule.limits, &req.snap.settings.guard, &check, verdict)?;
            lookup
        };
        let (generations, stale) = match lookup {
            Ok(Lookup::Hit(entry)) => {
                let now = now_ms();
                let age = Duration::from_secs(entry.age_secs(now));
                if !honoured.refuses(age, entry.ttl_left(now)) {
                    return Ok(serve_hit(entry, is_head, ctx));
                }
                // Too old for this client, or it asked for revalidation:
                // fetched with the entry's validators, as if expired.
                (Some(entry.generations.clone()), Some(entry))
            }
            Ok(Lookup::Stale(entry)) => {
                if entry.may_serve_while_revalidating(now_ms()) {
                    self.refresh_in_background(req, policy, key, entry.clone());
                    return Ok(self.serve_stale(entry, StaleReason::WhileRevalidate, is_head, ctx));
                }
                let expired_for = Duration::from_millis(now_ms().saturating_sub(entry.expires_at_ms));
                if honoured.max_stale.is_some_and(|accepted| expired_for <= accepted)
                    && !crate::cache::must_revalidate(&entry.headers)
                {
                    return Ok(self.serve_stale(entry, StaleReason::MaxStale, is_head, ctx));
                }
                // Kept for stale-if-error; fetched under current generations.
                (Some(entry.generations.clone()), Some(entry))
            }
            Ok(Lookup::Miss(generations)) => (Some(generations), None),
            Err(err) => {
                self.metrics.store_error("lookup");
                tracing::debug!(rule = %rule.name, error = %err, "cache lookup failed; bypassing");
                (None, None)
            }
        };
        if honoured.only_if_cached {
            return Err(ProxyError::NotCached);
        }
        // Misses coalesce only when the store answered: the generations it
        // read are what proves a leader's entry may be served to a waiter.
        // The miss path's futures are boxed (here, and the fetch below):
        // a miss is worth an allocation, and unboxed they would make every
        // hit's future larger, which each request moves as it starts.
        let plan = match &generations {
            Some(generations) => {
                let miss = Miss {
                    key,
                    generations,
                    tags: &policy.tags,
                    stale: stale.as_deref(),
                    wait_limit: req.snap.settings.response_timeout,
                    lease_ttl: req.snap.settings.cache.lease_ttl,
                };
                Box::pin(self.coalescer().plan(miss)).await
            }
            None => MissPlan::FetchOwn,
        };
        let (leader, lease) = match plan {
            MissPlan::Serve(entry) => return Ok(serve_hit(entry, is_head, ctx)),
            MissPlan::ServeStale => {
                let entry = stale.expect("a miss with a stale entry to serve");
                return Ok(self.serve_stale(entry, StaleReason::IfError, is_head, ctx));
            }
            MissPlan::Lead(leader, lease) => (Some(leader), lease),
            MissPlan::FetchOwn => (None, None),
        };

        let fetch = Fetch {
            snap: req.snap.clone(),
            rule: rule.name,
            headers: self.cache_headers(req, policy)?,
            key,
            is_head,
            stale: stale.clone(),
            target: req.target.clone(),
            claims: req.claims.clone(),
            vary: learned_vary.clone(),
            no_store: asked.no_store,
        };
        let result = match leader {
            Some(leader) => Box::pin(self.lead(fetch, generations, leader, lease, &mut ctx.cache_status)).await,
            None => Box::pin(self.fetch_and_store(&fetch, generations, &mut ctx.cache_status)).await,
        };
        if fetch_failed(&result) {
            if let Some(entry) = stale.filter(|e| e.may_serve_on_error(now_ms())) {
                tracing::debug!(rule = %rule.name, "upstream failed; serving the stale entry");
                return Ok(self.serve_stale(entry, StaleReason::IfError, is_head, ctx));
            }
        }
        Ok(result?.0)
    }

    /// Runs a coalesced miss's fetch in a task of its own and hands its
    /// outcome to the waiters: if the leader's client goes away, the fetch
    /// goes on, rather than turning every waiter into a fetch of its own.
    async fn lead(
        &self,
        fetch: Fetch,
        generations: Option<Generations>,
        leader: Leader,
        lease: Option<LeaseGuard>,
        cache_status: &mut CacheStatus,
    ) -> Result<(Response<ProxyBody>, Option<Arc<Entry>>), ProxyError> {
        let proxy = self
            .me
            .upgrade()
            .ok_or_else(|| ProxyError::Internal("proxy shut down".into()))?;
        let task = tokio::spawn(async move {
            let mut status = CacheStatus::Miss { stored: false };
            let result = proxy.fetch_and_store(&fetch, generations, &mut status).await;
            leader.finish(match &result {
                _ if fetch_failed(&result) => Outcome::UpstreamFailed,
                Ok((_, Some(entry))) => Outcome::Entry(entry.clone()),
                _ => Outcome::Uncacheable,
            });
            drop(lease);
            (result, status)
        });
        let (result, status) = task
            .await
            .map_err(|err| ProxyError::Internal(format!("fetch task failed: {err}")))?;
        *cache_status = status;
        result
    }

    /// Refreshes an entry served stale, once: unless this instance is
    /// already fetching the key, or another instance holds its lease.
    fn refresh_in_background(&self, req: &Admitted<'_>, policy: &CachePolicy, key: CacheKey, stale: Arc<Entry>) {
        let (Some(proxy), Ok(headers)) = (self.me.upgrade(), self.cache_headers(req, policy)) else {
            return;
        };
        let rule_name = req.rule.name;
        let (snap, target, claims, vary) = (
            req.snap.clone(),
            req.target.clone(),
            req.claims.clone(),
            self.learned_vary
                .names(req.rule.cache_id, &req.target.path, req.target.query.as_deref()),
        );
        tokio::spawn(async move {
            let Some((leader, lease)) = proxy.coalescer().lead_refresh(key, snap.settings.cache.lease_ttl).await else {
                return;
            };
            let fetch = Fetch {
                snap,
                rule: rule_name,
                headers,
                key,
                is_head: false,
                stale: Some(stale.clone()),
                target,
                claims,
                vary,
                no_store: false,
            };
            let mut status = CacheStatus::Miss { stored: false };
            match proxy
                .fetch_and_store(&fetch, Some(stale.generations.clone()), &mut status)
                .await
            {
                Ok((_, Some(entry))) => {
                    proxy.metrics.stale("refreshed");
                    leader.finish(Outcome::Entry(entry));
                }
                Ok((response, None)) => {
                    proxy.metrics.stale("refresh_failed");
                    tracing::debug!(rule = rule_name, status = %response.status(), "background refresh not stored");
                }
                Err(err) => {
                    proxy.metrics.stale("refresh_failed");
                    tracing::debug!(rule = rule_name, error = %err, "background refresh failed");
                }
            }
            drop(lease);
        });
    }

    fn coalescer(&self) -> Coalescer<'_> {
        Coalescer {
            flights: &self.flights,
            store: &self.store,
            metrics: &self.metrics,
        }
    }

    /// Answers from an expired entry, recording why.
    fn serve_stale(
        &self,
        entry: Arc<Entry>,
        reason: StaleReason,
        is_head: bool,
        ctx: &mut RequestCtx<'_>,
    ) -> Response<ProxyBody> {
        let now = now_ms();
        self.metrics.stale(match reason {
            StaleReason::WhileRevalidate => "while_revalidate",
            StaleReason::IfError => "if_error",
            StaleReason::MaxStale => "max_stale",
        });
        ctx.cache_status = CacheStatus::Stale {
            expired_for: Duration::from_millis(now.saturating_sub(entry.expires_at_ms)),
            reason,
        };
        response_from_entry(entry, now, is_head)
    }

    /// The upstream answered 304 to a revalidation: the stored answer with
    /// the 304's headers, stored afresh (RFC 9111 §4.3.4).
    #[allow(clippy::too_many_arguments)]
    async fn revalidated(
        &self,
        fetch: &Fetch,
        rule: &Rule,
        policy: &CachePolicy,
        stale: &Entry,
        update: &HeaderMap,
        generations: Generations,
        index: &IndexInfo<'_>,
        cache_status: &mut CacheStatus,
    ) -> (Response<ProxyBody>, Option<Arc<Entry>>) {
        self.metrics.conditional("revalidated");
        let mut headers = stale.headers.clone();
        for name in update.keys() {
            if *name != CONTENT_LENGTH {
                headers.remove(name);
                for value in update.get_all(name) {
                    headers.append(name.clone(), value.clone());
                }
            }
        }
        let headers = storable_headers(&headers, &fetch.snap.settings.log.request_id_header);
        let now = now_ms();
        let credentialed = is_credentialed(rule, &fetch.headers);
        let lifetime = storability(
            policy,
            &rule.forward_headers,
            stale.status,
            &headers,
            SystemTime::now(),
            credentialed,
        )
        .ok();
        let entry = Entry::new(
            stale.status,
            headers,
            stale.body.clone(),
            now,
            &lifetime.unwrap_or_default(),
            generations,
        );
        // Not storable any more, or the request said no-store: answered,
        // and the stored entry left as it was.
        if lifetime.is_none() || fetch.no_store {
            return (response_from_entry(Arc::new(entry), now, fetch.is_head), None);
        }
        let entry = Arc::new(entry);
        *cache_status = CacheStatus::Revalidated {
            stored: self.store.store(&fetch.key, &entry, index).await.is_ok(),
        };
        (response_from_entry(entry.clone(), now, fetch.is_head), Some(entry))
    }

    /// Step 4 for a cacheable rule: only the allowlisted headers, the
    /// rule's `vary` headers and, on authenticated rules, `Authorization`.
    fn cache_headers(&self, req: &Admitted<'_>, policy: &CachePolicy) -> Result<HeaderMap, ProxyError> {
        self.upstream_headers(
            req,
            HeaderPolicy::Only {
                names: &req.rule.forward_headers,
                vary: &policy.vary,
                authorization: !req.rule.access.is_public(),
            },
        )
    }

    /// Forwards a miss and stores the answer if it may be. Returns the
    /// response and, when the answer was storable, the entry made of it.
    async fn fetch_and_store(
        &self,
        fetch: &Fetch,
        generations: Option<Generations>,
        cache_status: &mut CacheStatus,
    ) -> Result<(Response<ProxyBody>, Option<Arc<Entry>>), ProxyError> {
        let is_head = fetch.is_head;
        let settings = &fetch.snap.settings;
        let (rule, policy) = settings
            .routes
            .by_name(fetch.rule)
            .and_then(|rule| Some((rule, rule.cache.as_ref()?)))
            .ok_or_else(|| ProxyError::Internal(format!("no cacheable rule {}", fetch.rule)))?;
        let mut headers = fetch.headers.clone();
        if let Some(stale) = &fetch.stale {
            conditional::add_validators(&mut headers, &stale.headers);
        }
        // HEAD is fetched as GET so its answer can fill the entry GET uses.
        let outbound = Outbound {
            method: Method::GET,
            path_and_query: fetch.target.path_and_query(),
            headers,
            body: body::empty(),
            replayable: true,
            response_timeout: settings.response_timeout,
        };
        let response = self.forward(&fetch.snap, outbound, rule.name).await?;
        let (mut head, upstream_body) = response.into_parts();
        upstream::strip_hop_by_hop(&mut head.headers);
        let mut tags = policy.tags.clone();
        if let Some(name) = &settings.cache.surrogate_key_header {
            tags.extend(surrogate_keys(&head.headers, name));
            head.headers.remove(name);
        }

        let Some(generations) = generations else {
            *cache_status = CacheStatus::Bypass(Bypass::StoreUnavailable);
            return Ok((
                self.streamed(head, upstream_body, is_head, settings.response_timeout),
                None,
            ));
        };
        *cache_status = CacheStatus::Miss { stored: false };
        if let (StatusCode::NOT_MODIFIED, Some(stale)) = (head.status, &fetch.stale) {
            let index = IndexInfo {
                path: &fetch.target.path,
                tags: &tags,
            };
            let (mut response, entry) = self
                .revalidated(
                    fetch,
                    rule,
                    policy,
                    stale,
                    &head.headers,
                    generations,
                    &index,
                    cache_status,
                )
                .await;
            response.extensions_mut().extend(head.extensions);
            return Ok((response, entry));
        }
        let credentialed = is_credentialed(rule, &fetch.headers);
        let lifetime = match storability(
            policy,
            &rule.forward_headers,
            head.status,
            &head.headers,
            SystemTime::now(),
            credentialed,
        ) {
            Ok(lifetime) => lifetime,
            Err(reason) => {
                tracing::debug!(rule = %rule.name, ?reason, "response not stored");
                return Ok((
                    self.streamed(head, upstream_body, is_head, settings.response_timeout),
                    None,
                ));
            }
        };
        let max_entry = settings.cache.max_entry_bytes;
        if fetch.no_store || content_length(&head.headers).is_some_and(|len| len > max_entry) {
            return Ok((
                self.streamed(head, upstream_body, is_head, settings.response_timeout),
                None,
            ));
        }
        // An answer varying on more than it was keyed on is stored under a
        // key that includes those headers, and not handed to waiters, whose
        // values may differ.
        let keyed = fetch.vary.as_deref().unwrap_or(&policy.vary);
        let target = &fetch.target;
        let learned = self.learned_vary.learn(
            rule.cache_id,
            &target.path,
            target.query.as_deref(),
            keyed,
            &head.headers,
        );
        let (key, shareable) = match learned {
            None => (fetch.key, true),
            Some(vary) => (
                request_key(
                    rule,
                    policy,
                    &vary,
                    &fetch.target,
                    &fetch.headers,
                    fetch.claims.as_deref(),
                )
                .key(),
                false,
            ),
        };
        // Buffering is bounded by the response timeout, like the headers
        // were: nothing has been sent to the client yet, so a stall is a 504.
        let buffered = tokio::time::timeout(settings.response_timeout, body::buffer_up_to(upstream_body, max_entry));
        let bytes = match buffered.await {
            Ok(Ok(Buffered::Complete(bytes))) => bytes,
            Ok(Ok(Buffered::TooLarge(rest))) => {
                let body = if is_head {
                    body::empty()
                } else {
                    self.idle_limited(rest, settings.response_timeout)
                };
                return Ok((Response::from_parts(head, body), None));
            }
            Ok(Err(err)) => return Err(ProxyError::UpstreamBody(err.to_string())),
            Err(_) => return Err(ProxyError::Upstream(UpstreamError::Timeout)),
        };

        let mut stored_headers = storable_headers(&head.headers, &settings.log.request_id_header);
        let etag = conditional::ensure_etag(&mut stored_headers, &bytes);
        head.headers.insert(ETAG, etag);
        let now = now_ms();
        let entry = Arc::new(Entry::new(
            head.status,
            stored_headers,
            bytes.clone(),
            now,
            &lifetime,
            generations,
        ));
        let index = IndexInfo {
            path: &fetch.target.path,
            tags: &tags,
        };
        match self.store.store(&key, &entry, &index).await {
            Ok(()) => *cache_status = CacheStatus::Miss { stored: true },
            Err(err) => {
                self.metrics.store_error("store");
                tracing::debug!(rule = %rule.name, error = %err, "cache store failed");
            }
        }
        let body = if is_head { body::empty() } else { body::full(bytes) };
        Ok((Response::from_parts(head, body), shareable.then_some(entry)))
    }
}

/// Whether a request on `rule` took credentials to the backend that the
/// proxy did not verify: `Authorization` or `Cookie` forwarded on a public
/// route. (On an authenticated route the verified token and the rule's
/// scope key the entry.)
fn is_credentialed(rule: &Rule, forwarded: &HeaderMap) -> bool {
    rule.access.is_public()
        && (forwarded.contains_key(http::header::AUTHORIZATION) || forwarded.contains_key(http::header::COOKIE))
}

/// Whether a fetch's upstream failed (an error, or a 5xx): waiters and the
/// request itself may then serve a stale entry instead.
fn fetch_failed(result: &Result<(Response<ProxyBody>, Option<Arc<Entry>>), ProxyError>) -> bool {
    match result {
        Ok((response, _)) => response.status().is_server_error(),
        Err(_) => true,
    }
}

/// Answers from `entry`, recording the hit.
fn serve_hit(entry: Arc<Entry>, is_head: bool, ctx: &mut RequestCtx<'_>) -> Response<ProxyBody> {
    let now = now_ms();
    ctx.cache_status = CacheStatus::Hit {
        ttl_left: entry.ttl_left(now),
    };
    response_from_entry(entry, now, is_head)
}

/// What the key of a request for `rule` is built from, keyed on the
/// `vary` headers' values.
fn request_key<'a>(
    rule: &'a Rule,
    policy: &CachePolicy,
    vary: &'a [HeaderName],
    target: &'a Target,
    headers: &'a HeaderMap,
    claims: Option<&'a Claims>,
) -> RequestKey<'a> {
    RequestKey {
        rule: rule.cache_id,
        scope: policy.scope,
        vary,
        path: &target.path,
        query: target.query.as_deref(),
        headers,
        identity: claims.map(|c| (c.subject.as_str(), c.roles.as_slice())),
    }
}

/// Headers every answer from the cache may gain after its stored ones:
/// `Age`, `X-Cache`, `Cache-Status`, the request id and the two RateLimit
/// fields.
const HEADERS_ADDED_TO_A_HIT: usize = 6;

fn response_from_entry(entry: Arc<Entry>, now: u64, is_head: bool) -> Response<ProxyBody> {
    let age = entry.age_secs(now);
    let body = if is_head {
        body::empty()
    } else {
        body::full(entry.body.clone())
    };
    // Copied into a map sized for the headers still to come: a clone is
    // exactly as large as the stored map, and the headers added to it
    // made it grow (three reallocations a hit).
    let mut headers = HeaderMap::with_capacity(entry.headers.len() + HEADERS_ADDED_TO_A_HIT);
    for (name, value) in &entry.headers {
        headers.append(name.clone(), value.clone());
    }
    headers.insert(AGE, HeaderValue::from(age));
    let mut response = Response::new(body);
    *response.status_mut() = entry.status;
    *response.headers_mut() = headers;
    response
}
