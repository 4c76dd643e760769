//! A JWKS fetched from a URL (`jwt.jwks_url`) and kept fresh.
//!
//! Fetched at start and again when the response's `max-age` (bounded by
//! `jwks_min_refresh`/`jwks_max_refresh`) runs out; a token naming an
//! unknown `kid` refetches at once, shared by every request asking at the
//! same time and at most once per `jwks_refetch_interval`. A failed fetch
//! keeps the last good set serving, up to `jwks_max_stale`: a flaky
//! identity provider never makes the proxy fail closed while a known-good
//! set is at hand, and nothing ever makes it fail open (no set, no
//! token accepted: 503 "keys unavailable").

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::header::CACHE_CONTROL;
use http::{StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::Algorithm;

use super::keys::{jwks_keys, KeySet};
use super::settings::RemoteSettings;
use crate::error_chain::error_chain;
use crate::metrics::Metrics;
use crate::problem::Problem;

/// A fetch (connect, headers and body) that takes longer has failed.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Larger documents are refused: a JWKS is a few kilobytes.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// The refresh interval when the response sets no `max-age`, before the
/// configured bounds apply.
const DEFAULT_REFRESH: Duration = Duration::from_secs(300);

/// A key set as fetched.
pub struct Fetched {
    pub keys: KeySet,
    at: Instant,
    refresh_after: Duration,
}

pub struct RemoteKeys {
    settings: RemoteSettings,
    algorithms: Vec<Algorithm>,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    current: ArcSwapOption<Fetched>,
    /// When the last fetch began; held while fetching, which makes
    /// fetches one at a time.
    fetching: tokio::sync::Mutex<Option<Instant>>,
    /// Fetches finished, good or bad: a request that saw the set lacking
    /// its `kid` refetches only if none finished since.
    attempts: AtomicU64,
    /// Fetches that dropped or changed a key: remembered tokens verified
    /// before one are verified again.
    losses: AtomicU64,
    failures_in_a_row: AtomicU32,
    /// The last fetch's error, for `/readyz` without taking the fetch lock.
    last_error: std::sync::Mutex<Option<String>>,
    stale_logged: AtomicBool,
    metrics: Arc<Metrics>,
}

impl RemoteKeys {
    /// Fetches the set once (waiting at most the fetch timeout) and keeps
    /// it fresh from then on. Only an unusable CA file is an error: a URL
    /// that cannot be fetched yet leaves the set empty, tokens answered
    /// "keys unavailable", and the fetch retried.
    pub async fn start(
        settings: RemoteSettings,
        algorithms: Vec<Algorithm>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<RemoteKeys>, Problem> {
        let tls = crate::tls::client::client_config("jwt.jwks", settings.ca_file.as_deref())
            .await
            .map_err(|e| Problem {
                field: "jwt.jwks_ca_file".into(),
                message: e.message,
            })?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(FETCH_TIMEOUT));
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let keys = Arc::new(RemoteKeys {
            settings,
            algorithms,
            client: Client::builder(TokioExecutor::new()).build(connector),
            current: ArcSwapOption::empty(),
            fetching: tokio::sync::Mutex::new(None),
            attempts: AtomicU64::new(0),
            losses: AtomicU64::new(0),
            failures_in_a_row: AtomicU32::new(0),
            last_error: std::sync::Mutex::new(None),
            stale_logged: AtomicBool::new(false),
            metrics,
        });
        {
            let mut last_attempt = keys.fetching.lock().await;
            keys.fetch(&mut last_attempt, "start").await;
        }
        tokio::spawn(keep_fresh(Arc::downgrade(&keys)));
        Ok(keys)
    }

    /// Whether these keys are the ones `settings` and `algorithms` ask
    /// for, so a reload can keep them (and skip a fetch).
    pub fn serves(&self, settings: &RemoteSettings, algorithms: &[Algorithm]) -> bool {
        self.settings == *settings && self.algorithms == algorithms
    }

    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::SeqCst)
    }

    pub fn losses(&self) -> u64 {
        self.losses.load(Ordering::SeqCst)
    }

    /// The set to verify with: the last good one, unless it is older than
    /// `jwks_max_stale`.
    pub fn current(&self) -> Option<Arc<Fetched>> {
        let fetched = self.current.load_full()?;
        if fetched.at.elapsed() > self.settings.max_stale {
            if !self.stale_logged.swap(true, Ordering::SeqCst) {
                tracing::error!(
                    url = %self.settings.url,
                    age = ?fetched.at.elapsed(),
                    max_stale = ?self.settings.max_stale,
                    "JWKS not fetched for longer than jwt.jwks_max_stale: refusing tokens (503) until a fetch succeeds"
                );
            }
            return None;
        }
        Some(fetched)
    }

    /// Why tokens cannot be verified now, if they cannot.
    pub fn unavailable(&self) -> Option<String> {
        if self.current().is_some() {
            return None;
        }
        let error = self.last_error.lock().expect("not poisoned").clone();
        let why = match self.current.load().as_ref() {
            None => "never fetched",
            Some(_) => "older than jwt.jwks_max_stale",
        };
        Some(match error {
            Some(error) => format!("JWKS {}: {why}; last fetch failed: {error}", self.settings.url),
            None => format!("JWKS {}: {why}", self.settings.url),
        })
    }

    /// Refetches for a token whose `kid` the set lacks, unless a fetch
    /// finished since the caller looked (`seen` attempts) or one began
    /// less than `jwks_refetch_interval` ago. Concurrent callers wait for
    /// the one fetch.
    pub async fn refetch(&self, seen: u64) {
        let mut last_attempt = self.fetching.lock().await;
        if self.attempts() != seen {
            return;
        }
        if last_attempt.is_some_and(|at| at.elapsed() < self.settings.refetch_interval) {
            return;
        }
        self.fetch(&mut last_attempt, "unknown kid").await;
    }

    /// One fetch; the caller holds the fetch lock (`last_attempt`).
    async fn fetch(&self, last_attempt: &mut Option<Instant>, why: &'static str) {
        *last_attempt = Some(Instant::now());
        let error = match tokio::time::timeout(FETCH_TIMEOUT, self.download()).await {
            Ok(Ok((keys, refresh_after))) => {
                let count = keys.keys.len();
                let previous = self.current.load_full();
                let lost = previous.as_ref().is_some_and(|p| p.keys.loses_keys_in(&keys));
                // Stored before `losses` moves: a token verified with the
                // old set is then remembered under the old count, and
                // verified again.
                self.current.store(Some(Arc::new(Fetched {
                    keys,
                    at: Instant::now(),
                    refresh_after,
                })));
                if lost {
                    self.losses.fetch_add(1, Ordering::SeqCst);
                }
                if self.failures_in_a_row.swap(0, Ordering::SeqCst) > 0 || previous.is_none() {
                    tracing::info!(url = %self.settings.url, keys = count, why, "JWKS fetched");
                } else {
                    tracing::debug!(url = %self.settings.url, keys = count, why, "JWKS fetched");
                }
                self.stale_logged.store(false, Ordering::SeqCst);
                self.metrics.jwks_fetch(&self.settings.url.to_string(), "ok", count);
                None
            }
            failed => {
                let error = match failed {
                    Ok(Err(error)) => error,
                    _ => format!("no answer within {FETCH_TIMEOUT:?}"),
                };
                self.failures_in_a_row.fetch_add(1, Ordering::SeqCst);
                let serving = if self.current().is_some() {
                    "the last good key set keeps serving"
                } else {
                    "tokens are refused (503) until a fetch succeeds"
                };
                tracing::warn!(url = %self.settings.url, why, %error, "JWKS fetch failed; {serving}");
                let kept = self.current.load().as_ref().map_or(0, |set| set.keys.keys.len());
                self.metrics.jwks_fetch(&self.settings.url.to_string(), "error", kept);
                Some(error)
            }
        };
        *self.last_error.lock().expect("not poisoned") = error;
        self.attempts.fetch_add(1, Ordering::SeqCst);
    }

    /// The key set and how long it may be used before the next refresh.
    async fn download(&self) -> Result<(KeySet, Duration), String> {
        let url = if self.settings.discovery {
            self.discover().await?
        } else {
            self.settings.url.clone()
        };
        let (body, max_age) = self.get(&url).await?;
        let keys = jwks_keys(&self.algorithms, &body)?;
        let refresh = max_age
            .unwrap_or(DEFAULT_REFRESH)
            .clamp(self.settings.min_refresh, self.settings.max_refresh);
        Ok((keys, refresh))
    }

    /// The `jwks_uri` of the issuer's OpenID configuration.
    async fn discover(&self) -> Result<Uri, String> {
        let issuer = self.settings.url.to_string();
        let well_known = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
        let well_known: Uri = well_known.parse().map_err(|e| format!("{well_known}: {e}"))?;
        let (body, _) = self.get(&well_known).await?;
        let document: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("{well_known}: not JSON: {e}"))?;
        let jwks_uri = document["jwks_uri"]
            .as_str()
            .ok_or_else(|| format!("{well_known}: no jwks_uri"))?;
        let uri: Uri = jwks_uri.parse().map_err(|e| format!("jwks_uri {jwks_uri:?}: {e}"))?;
        // The key set must come from where the configuration does, with
        // the same protection: an http:// jwks_uri under an https://
        // issuer would let anyone on the path hand us keys.
        if uri.scheme() != self.settings.url.scheme() {
            return Err(format!("jwks_uri {jwks_uri:?} does not use the issuer's scheme"));
        }
        Ok(uri)
    }

    /// A 200 answer's body (at most [`MAX_DOCUMENT_BYTES`]) and `max-age`.
    async fn get(&self, url: &Uri) -> Result<(Bytes, Option<Duration>), String> {
        let request = http::Request::get(url.clone())
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let response = self.client.request(request).await.map_err(|e| error_chain(&e))?;
        if response.status() != StatusCode::OK {
            return Err(format!("{url} answered {}", response.status()));
        }
        let max_age = response
            .headers()
            .get_all(CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .find_map(|directive| directive.trim().strip_prefix("max-age=")?.parse().ok())
            .map(Duration::from_secs);
        let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
            .collect()
            .await
            .map_err(|e| format!("{url}: reading the body: {e}"))?
            .to_bytes();
        Ok((body, max_age))
    }

    /// How long until the next scheduled fetch: the set's refresh interval
    /// after a success; after failures, 1 s doubling up to
    /// `jwks_min_refresh`, so a cold start recovers quickly without
    /// hammering the identity provider.
    fn next_refresh(&self) -> Duration {
        let failures = self.failures_in_a_row.load(Ordering::SeqCst);
        match self.current.load().as_ref() {
            Some(fetched) if failures == 0 => fetched.refresh_after.saturating_sub(fetched.at.elapsed()),
            _ => Duration::from_secs(1 << failures.saturating_sub(1).min(16)).min(self.settings.min_refresh),
        }
    }
}

/// Refreshes the set for as long as a verifier uses it.
async fn keep_fresh(keys: Weak<RemoteKeys>) {
    loop {
        let wait = match keys.upgrade() {
            Some(keys) => keys.next_refresh(),
            None => return,
        };
        tokio::time::sleep(wait).await;
        let Some(keys) = keys.upgrade() else { return };
        let mut last_attempt = keys.fetching.lock().await;
        keys.fetch(&mut last_attempt, "refresh").await;
    }
}
