//! The rules requests run under, swapped whole on reload.
//!
//! A request loads one [`Snapshot`] at its start and keeps it to its end,
//! so a reload never changes the rules under a request in flight: it
//! finishes under the rules it started with, and the next request sees the
//! new ones. A reload builds the next snapshot completely (key files read,
//! verifier built) before it swaps, so it takes effect whole or not at all.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use serde_json::{json, Value};

use crate::access_log::LogSettings;
use crate::auth::{Issuers, JwtSettings, KeySetting};
use crate::cache::settings::CacheLimits;
use crate::concurrency::RuleSlots;
use crate::metrics::Metrics;
pub use crate::problem::Problem;
use crate::route::RuleSet;
use crate::secret::Secret;
use crate::tls::backend::{BackendTls, Material};
use crate::tls::server::ServerTls;
use crate::tls::{BackendTlsFiles, TlsSettings};
use crate::upstream::IdentitySettings;

/// What may change without a restart.
#[derive(Debug)]
pub struct RuntimeSettings {
    pub routes: RuleSet,
    /// The `[jwt]` table, or each of `[[jwt.issuers]]`; empty when every
    /// route is public.
    pub jwt: Vec<JwtSettings>,
    pub identity: IdentitySettings,
    pub cache: CacheLimits,
    /// How long the backend may take to send response headers, and then
    /// to send each part of the body.
    pub response_timeout: Duration,
    /// Authorises the admin endpoints besides an admin-role JWT; `None`:
    /// JWT only.
    pub admin_token: Option<Secret>,
    /// Asked of the status page and `/metrics` when set (the admin token
    /// is accepted too); `None`: they are open, like `/healthz`.
    pub status_token: Option<Secret>,
    pub log: Arc<LogSettings>,
    /// Rate limits' fallback and revocation.
    pub guard: crate::guard::GuardSettings,
    pub tls: ListenerTls,
    /// What TLS to an `https://` backend verifies with and presents.
    pub backend_tls: Option<BackendTlsFiles>,
}

impl RuntimeSettings {
    /// Every file these settings read: certificates, keys, CAs, key sets.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for tls in [&self.tls.clients, &self.tls.admin].into_iter().flatten() {
            let named = tls.certificates.iter().map(|c| &c.files);
            for pair in tls.default.iter().chain(named) {
                files.extend([pair.cert_file.clone(), pair.key_file.clone()]);
            }
            files.extend(tls.client_ca_file.clone());
        }
        if let Some(backend) = &self.backend_tls {
            files.extend(backend.ca_file.clone());
            if let Some(pair) = &backend.client_certificate {
                files.extend([pair.cert_file.clone(), pair.key_file.clone()]);
            }
        }
        for jwt in &self.jwt {
            match &jwt.keys {
                KeySetting::PemFile(path) | KeySetting::JwksFile(path) => files.push(path.clone()),
                KeySetting::JwksUrl(remote) => files.extend(remote.ca_file.clone()),
                KeySetting::SecretFile { file, previous } => {
                    files.extend(std::iter::once(file).chain(previous).cloned())
                }
                KeySetting::Secret(_) => {}
            }
        }
        files
    }
}

/// Each listener's TLS; `None`: plain text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerTls {
    pub clients: Option<TlsSettings>,
    pub admin: Option<TlsSettings>,
}

/// Each listener's TLS, put to use: certificates read, keys checked.
#[derive(Debug, Default)]
pub struct ServingTls {
    pub clients: Option<ServerTls>,
    pub admin: Option<ServerTls>,
}

/// One version of the runtime settings, put to use.
#[derive(Debug)]
pub struct Snapshot {
    /// Names the settings: the same file and overrides give the same
    /// version on every instance.
    pub version: Arc<str>,
    pub settings: RuntimeSettings,
    /// `None` when every route is public.
    pub jwt: Option<Arc<Issuers>>,
    pub rule_slots: RuleSlots,
    pub tls: ServingTls,
    /// Shared by every snapshot: the connection pool asks it at each
    /// handshake, and a new snapshot installs its files into it.
    pub backend_tls: Option<Arc<BackendTls>>,
}

impl Snapshot {
    /// Puts `settings` to use: reads key files and builds the verifier.
    /// `previous` lends what may carry over (per-rule backend slots).
    pub async fn build(
        settings: RuntimeSettings,
        version: Arc<str>,
        previous: Option<&Snapshot>,
        metrics: &Arc<Metrics>,
    ) -> Result<Snapshot, Problem> {
        let jwt = match settings.jwt.as_slice() {
            [] => None,
            issuers => {
                let previous = previous.and_then(|p| p.jwt.as_deref());
                let loaded = Issuers::load(issuers, previous, metrics).await?;
                Some(Arc::new(loaded))
            }
        };
        let rule_slots = RuleSlots::new(settings.routes.iter(), previous.map(|p| &p.rule_slots));
        let previous_tls = previous.map(|p| &p.tls);
        let tls = ServingTls {
            clients: listener_tls(
                "tls",
                &settings.tls.clients,
                previous_tls.and_then(|t| t.clients.as_ref()),
            )
            .await?,
            admin: listener_tls(
                "admin_tls",
                &settings.tls.admin,
                previous_tls.and_then(|t| t.admin.as_ref()),
            )
            .await?,
        };
        // Last: installing is the one step that acts on shared state, so
        // nothing may fail after it.
        let backend_tls = match &settings.backend_tls {
            None => None,
            Some(files) => {
                let material = Material::load(files).await?;
                Some(match previous.and_then(|p| p.backend_tls.clone()) {
                    Some(shared) => {
                        shared.install(material);
                        shared
                    }
                    None => BackendTls::new(material),
                })
            }
        };
        Ok(Snapshot {
            version,
            settings,
            jwt,
            rule_slots,
            tls,
            backend_tls,
        })
    }

    /// The settings as `GET /config` shows them: secrets redacted.
    pub fn describe(&self) -> Value {
        let s = &self.settings;
        let routes: Vec<Value> = s
            .routes
            .iter()
            .map(|rule| {
                json!({
                    "name": rule.name,
                    "cache_id": rule.cache_id,
                    "path": rule.pattern.canonical(),
                    "methods": rule.methods.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
                    "access": format!("{:?}", rule.access),
                    "cache": rule.cache.as_ref().map(|c| json!({
                        "scope": format!("{:?}", c.scope),
                        "ttl_secs": c.ttl.as_secs_f64(),
                        "statuses": c.statuses,
                        "vary": c.vary.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
                        "tags": c.tags,
                        "stale_while_revalidate_secs": c.stale_while_revalidate.as_secs_f64(),
                        "stale_if_error_secs": c.stale_if_error.as_secs_f64(),
                    })),
                    "invalidates": rule.invalidates,
                    "forward_headers": rule.forward_headers.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
                    "max_concurrent_requests": rule.max_concurrent_requests,
                })
            })
            .collect();
        json!({
            "version": &*self.version,
            "routes": routes,
            "jwt": s.jwt.iter().map(|j| json!({
                "algorithms": j.algorithms.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>(),
                "keys": match &j.keys {
                    KeySetting::Secret(_) => "JWT_SECRET_KEY (redacted)".to_owned(),
                    KeySetting::SecretFile { file, .. } => format!("secret_file {} (redacted)", file.display()),
                    KeySetting::PemFile(path) => format!("public_key_file {}", path.display()),
                    KeySetting::JwksFile(path) => format!("jwks_file {}", path.display()),
                    KeySetting::JwksUrl(remote) if remote.discovery => format!("discovery {}", remote.url),
                    KeySetting::JwksUrl(remote) => format!("jwks_url {}", remote.url),
                },
                "issuer": j.issuer,
                "audience": j.audience,
                "leeway_secs": j.leeway.as_secs(),
                "role_claim": j.role_claim,
                "previous_secret": j.previous_secret.as_ref().map(|_| "JWT_SECRET_KEY_PREVIOUS (redacted)"),
            })).collect::<Vec<_>>(),
            "identity": {
                "subject_header": s.identity.subject_header.as_str(),
                "role_header": s.identity.role_header.as_str(),
            },
            "cache": {
                "max_entry_bytes": s.cache.max_entry_bytes,
                "max_key_bytes": s.cache.max_key_bytes,
                "lease_ttl_secs": s.cache.lease_ttl.as_secs_f64(),
                "surrogate_key_header": s.cache.surrogate_key_header.as_ref().map(|h| h.as_str()),
            },
            "upstream": {
                "response_timeout_secs": s.response_timeout.as_secs_f64(),
                "ca_file": s.backend_tls.as_ref().and_then(|b| b.ca_file.as_ref()),
                "client_cert_file": s.backend_tls.as_ref().and_then(|b| b.client_certificate.as_ref()).map(|c| &c.cert_file),
            },
            "admin_token": s.admin_token.as_ref().map(|_| "(redacted)"),
            "status_token": s.status_token.as_ref().map(|_| "(redacted)"),
            "log": {
                "access": s.log.access,
                "access_sample": s.log.access_sample,
                "hash_subjects": s.log.hash_subjects.is_some(),
                "redact_query": s.log.redact_query,
                "request_id_header": s.log.request_id_header.as_str(),
            },
            "tls": {
                "clients": s.tls.clients.as_ref().map(describe_tls),
                "admin": s.tls.admin.as_ref().map(describe_tls),
            },
        })
    }
}

fn describe_tls(tls: &TlsSettings) -> Value {
    let files = |f: &crate::tls::CertificateFiles| json!({ "cert_file": f.cert_file, "key_file": f.key_file });
    json!({
        "default": tls.default.as_ref().map(files),
        "certificates": tls.certificates.iter().map(|c| json!({
            "files": files(&c.files),
            "server_names": c.server_names,
        })).collect::<Vec<_>>(),
        "client_ca_file": tls.client_ca_file,
        "client_auth": format!("{:?}", tls.client_auth),
    })
}

async fn listener_tls(
    section: &str,
    settings: &Option<TlsSettings>,
    previous: Option<&ServerTls>,
) -> Result<Option<ServerTls>, Problem> {
    let Some(settings) = settings else { return Ok(None) };
    ServerTls::load(section, settings, previous).await.map(Some)
}

/// Where new runtime settings come from: the config file (and `.env`) in
/// the binary, a temporary file in tests.
#[async_trait]
pub trait SettingsSource: Send + Sync {
    /// Reads and validates the settings anew. Every problem is returned,
    /// including a change to a boot setting, which needs a restart.
    async fn read(&self) -> Result<(RuntimeSettings, Arc<str>), Vec<Problem>>;
}

/// The snapshot in use, and how to replace it.
pub struct Runtime {
    current: ArcSwap<Snapshot>,
    source: Option<Box<dyn SettingsSource>>,
    /// One reload at a time: two racing would each build from the same
    /// previous snapshot, and the slower would win whatever the file says.
    reloading: tokio::sync::Mutex<()>,
    metrics: Arc<Metrics>,
    /// The last [`RELOADS_KEPT`] reloads, newest last, for the status page.
    reloads: std::sync::Mutex<std::collections::VecDeque<Reload>>,
}

/// How many reloads the status page lists.
pub const RELOADS_KEPT: usize = 10;

/// One reload, as the status page lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reload {
    /// Seconds since the Unix epoch.
    pub at: u64,
    /// The version now in use (the same as before when refused).
    pub version: String,
    pub ok: bool,
    /// The fields a refused reload found wrong (their messages are in the
    /// log and in `POST /reload`'s answer, which need credentials).
    pub fields: Vec<String>,
}

impl Runtime {
    /// `source`: `None` when the proxy was given settings, not a file to
    /// read them from; reloads are then refused.
    pub fn new(first: Snapshot, source: Option<Box<dyn SettingsSource>>, metrics: Arc<Metrics>) -> Runtime {
        metrics.config_version(&first.version);
        Runtime {
            current: ArcSwap::from_pointee(first),
            source,
            reloading: tokio::sync::Mutex::new(()),
            metrics,
            reloads: Default::default(),
        }
    }

    /// The last reloads, oldest first.
    pub fn reloads(&self) -> Vec<Reload> {
        self.reloads
            .lock()
            .expect("reload list poisoned")
            .iter()
            .cloned()
            .collect()
    }

    fn record(&self, ok: bool, fields: Vec<String>) {
        let reload = Reload {
            at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            version: self.current.load().version.to_string(),
            ok,
            fields,
        };
        let mut reloads = self.reloads.lock().expect("reload list poisoned");
        if reloads.len() == RELOADS_KEPT {
            reloads.pop_front();
        }
        reloads.push_back(reload);
    }

    /// The snapshot a request starting now runs under. A guard, not a
    /// clone: the common case touches only this thread's slots, not the
    /// snapshot's shared reference count (which both cores would otherwise
    /// bounce on every request); arc-swap falls back to a clone by itself
    /// when a thread holds many guards at once.
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The snapshot of the moment as an owned reference, for work that
    /// awaits while holding it (a guard must not be held across an await).
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Reads the settings anew and swaps them in, or leaves the running
    /// ones untouched and says why. Logged once either way.
    pub async fn reload(&self) -> Result<Arc<str>, Vec<Problem>> {
        let _one_at_a_time = self.reloading.lock().await;
        let result = self.build_next().await;
        match &result {
            Ok(version) => {
                self.metrics.config_reload("ok");
                self.metrics.config_version(version);
                self.record(true, Vec::new());
                tracing::info!(%version, "configuration reloaded");
            }
            Err(problems) => {
                self.metrics.config_reload("invalid");
                self.record(false, problems.iter().map(|p| p.field.to_string()).collect());
                let problems: Vec<String> = problems.iter().map(|p| format!("{}: {}", p.field, p.message)).collect();
                tracing::warn!(
                    ?problems,
                    "configuration reload refused; the running rules are unchanged"
                );
            }
        }
        result
    }

    async fn build_next(&self) -> Result<Arc<str>, Vec<Problem>> {
        let Some(source) = &self.source else {
            return Err(vec![Problem {
                field: "config".into(),
                message: "this proxy was started without a config file to reload".into(),
            }]);
        };
        let (settings, version) = source.read().await?;
        let previous = self.current.load_full();
        let next = Snapshot::build(settings, version.clone(), Some(&previous), &self.metrics)
            .await
            .map_err(|problem| vec![problem])?;
        self.current.store(Arc::new(next));
        Ok(version)
    }
}
