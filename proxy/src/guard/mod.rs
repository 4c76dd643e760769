//! Abuse control: rate limits and token revocation, checked on every
//! request that has any, after authentication and before the cache.
//!
//! What a request asks ([`GuardCheck`]: a GCRA cell per limit, its
//! token's standing) goes to the store, which answers it in the round trip
//! a cache hit already takes ([`Guards::lookup_checked`]), or in one of
//! its own where there is no lookup ([`Guards::check`]). While the store
//! cannot answer, [`Guard::settle`] counts the limits in this process,
//! each divided among `limits.instances`, and treats revocation as
//! `revocation.when_unavailable` says.
//!
//! - `gcra`: the limiter's arithmetic; `limits`: limits and their keys;
//! - `revocation`: what is revoked and how it is asked for;
//! - `local`: both in process memory; `headers`: the RateLimit fields.

pub mod gcra;
pub mod headers;
pub mod limits;
pub mod local;
pub mod revocation;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use self::gcra::{Cell, Decision};
use self::headers::RateLimitFields;
use self::limits::{cell_id, Caller, Limit, Limits, RepeatedHeader};
use self::local::{LocalLimiter, LocalRevocations};
use self::revocation::{Revocation, RevokeHeaders, Standing};
use crate::auth::{AuthError, Claims};
use crate::cache::{CacheKey, CacheStore, Lookup, Store, StoreError};
use crate::error::ProxyError;
use crate::metrics::Metrics;

/// What the store is asked for one request.
#[derive(Debug, Default)]
pub struct GuardCheck {
    /// One cell per limit, in the rule's order.
    pub cells: Vec<LimitCell>,
    /// The caller's token, when revocation is checked.
    pub token: Option<Arc<Claims>>,
}

impl GuardCheck {
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty() && self.token.is_none()
    }
}

/// Names a GCRA cell: a hash of the rule, the limit and the key's value.
pub type CellId = [u8; 16];

/// One limit's cell for this request.
#[derive(Debug, Clone)]
pub struct LimitCell {
    /// Which of the rule's limits it counts for.
    pub limit: usize,
    pub id: CellId,
    pub cell: Cell,
}

/// The store's answer.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Each cell's decision, in order.
    pub decisions: Vec<Decision>,
    pub standing: Standing,
}

/// Rate limits and revocations, kept in the store every instance shares.
#[async_trait]
pub trait Guards: CacheStore {
    /// Counts the request in its cells and reads its token's standing, in
    /// one round trip.
    async fn check(&self, check: &GuardCheck) -> Result<Verdict, StoreError>;

    /// A cache lookup and `check`, in the round trip of the lookup.
    async fn lookup_checked(
        &self,
        key: &CacheKey,
        tags: &[String],
        check: &GuardCheck,
    ) -> (Result<Lookup, StoreError>, Result<Verdict, StoreError>);

    /// Records `revocation` where every instance reads it.
    async fn revoke(&self, revocation: &Revocation) -> Result<(), StoreError>;
}

/// What to do with authenticated requests while the store cannot say
/// whether their token is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenUnavailable {
    /// Serve them (counted and logged): an outage of the cache's Redis
    /// must not become an outage of every authenticated route, and tokens
    /// still expire.
    Open,
    /// Refuse them with 503, for deployments where a revoked token must
    /// never pass.
    Closed,
}

/// The reloadable settings of revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationSettings {
    /// Whether authenticated requests are checked at all.
    pub check: bool,
    pub when_unavailable: WhenUnavailable,
    /// The response headers a backend revokes with.
    pub headers: RevokeHeaders,
}

/// Rate limits' and revocation's runtime settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardSettings {
    /// Instances sharing the store: each counts this share of a limit on
    /// its own while the store is unreachable.
    pub instances: u32,
    pub revocation: RevocationSettings,
}

/// The proxy's side of the guard: what a request asks, and what its
/// answer means, with the store or without it.
pub struct Guard {
    fallback: LocalLimiter,
    metrics: Arc<Metrics>,
    /// Whether the last check fell back, to log an outage once.
    degraded: AtomicBool,
    /// Revocations the store did not take (while it was unreachable):
    /// enforced here, since this instance asked for them, and written to
    /// the store when it answers again.
    unrecorded: LocalRevocations,
    pending: Mutex<Vec<Revocation>>,
}

impl Guard {
    pub fn new(metrics: Arc<Metrics>) -> Guard {
        Guard {
            fallback: LocalLimiter::default(),
            metrics,
            degraded: AtomicBool::new(false),
            unrecorded: LocalRevocations::default(),
            pending: Mutex::new(Vec::new()),
        }
    }

    /// What `caller` asks of the store under `limits` (and the token check
    /// `settings` asks for).
    pub fn check_for(
        &self,
        limits: &[Limit],
        settings: &GuardSettings,
        caller: &Caller<'_>,
        claims: Option<&Arc<Claims>>,
    ) -> Result<GuardCheck, RepeatedHeader> {
        let mut cells = Vec::with_capacity(limits.len());
        for (i, limit) in limits.iter().enumerate() {
            if let Some(id) = cell_id(limit, caller)? {
                cells.push(LimitCell {
                    limit: i,
                    id,
                    cell: limit.cell,
                });
            }
        }
        Ok(GuardCheck {
            cells,
            token: claims.filter(|_| settings.revocation.check).cloned(),
        })
    }

    /// Keeps a revocation the store would not take: this instance enforces
    /// it from now on, and [`Guard::retry_unrecorded`] writes it to the
    /// store once it answers, for every other instance.
    pub fn remember_unrecorded(&self, revocation: Revocation) {
        self.unrecorded.revoke(&revocation);
        self.pending.lock().expect("pending revocations").push(revocation);
    }

    /// Writes the revocations kept by [`Guard::remember_unrecorded`] that
    /// the store now takes; the others stay for the next try.
    pub async fn retry_unrecorded(&self, store: &dyn Store) {
        let waiting = std::mem::take(&mut *self.pending.lock().expect("pending revocations"));
        for revocation in waiting {
            match store.revoke(&revocation).await {
                Ok(()) => {
                    self.metrics.revocation_written("backend", "applied");
                    tracing::info!(revocation = %revocation::describe(&revocation), "recorded a revocation kept while the store was unreachable");
                }
                Err(_) => self.pending.lock().expect("pending revocations").push(revocation),
            }
        }
    }

    /// Turns the store's answer (or its failure) into the request's fate:
    /// refused as revoked (401) or rate limited (429), or let through with
    /// the RateLimit fields for its answer.
    pub fn settle(
        &self,
        rule: &'static str,
        limits: &Limits,
        settings: &GuardSettings,
        check: &GuardCheck,
        answer: Result<Verdict, StoreError>,
    ) -> Result<Option<RateLimitFields>, ProxyError> {
        let verdict = match answer {
            Ok(verdict) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    tracing::info!("rate limits and revocations shared again");
                }
                verdict
            }
            Err(err) => self.fallback(limits, settings, check, &err)?,
        };
        if let Some(claims) = &check.token {
            if verdict.standing.revokes(claims) || self.unrecorded.standing(claims).revokes(claims) {
                self.metrics.revoked(rule);
                return Err(AuthError::Revoked.into());
            }
        }
        if check.cells.is_empty() {
            return Ok(None);
        }
        let counted: Vec<(&Limit, &Decision)> = check
            .cells
            .iter()
            .zip(&verdict.decisions)
            .map(|(cell, decision)| (&limits[cell.limit], decision))
            .collect();
        let every_limit = (check.cells.len() == limits.len()).then(|| limits.policy()).flatten();
        let fields = RateLimitFields::new(&counted, every_limit);
        for (limit, decision) in &counted {
            if !decision.allowed {
                self.metrics.rate_limited(rule, &limit.label);
            }
        }
        if verdict.decisions.iter().any(|d| !d.allowed) {
            return Err(ProxyError::RateLimited(fields.map(Box::new)));
        }
        Ok(fields)
    }

    /// The verdict without the store: each limit counted here, at this
    /// instance's share; the token passed or refused by policy.
    fn fallback(
        &self,
        limits: &[Limit],
        settings: &GuardSettings,
        check: &GuardCheck,
        err: &StoreError,
    ) -> Result<Verdict, ProxyError> {
        if !self.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %err, instances = settings.instances, "rate limits and revocations unreachable in the store: limits counted per instance, revocation {}", match settings.revocation.when_unavailable {
                WhenUnavailable::Open => "not checked (when_unavailable = \"open\")",
                WhenUnavailable::Closed => "failing closed (when_unavailable = \"closed\")",
            });
        }
        if check.token.is_some() {
            match settings.revocation.when_unavailable {
                WhenUnavailable::Open => self.metrics.guard_fallback("revocation", "open"),
                WhenUnavailable::Closed => {
                    self.metrics.guard_fallback("revocation", "closed");
                    return Err(ProxyError::RevocationUnavailable);
                }
            }
        }
        if !check.cells.is_empty() {
            self.metrics.guard_fallback("limits", "local");
        }
        let decisions = check
            .cells
            .iter()
            .map(|cell| {
                let share = limits[cell.limit].per_instance(settings.instances);
                self.fallback.decide(&cell.id, share)
            })
            .collect();
        Ok(Verdict {
            decisions,
            standing: Standing::default(),
        })
    }
}
