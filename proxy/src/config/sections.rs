//! The sections besides routes: upstream, cache store and limits, JWT.

use std::path::Path;

use http::Uri;

use super::defaults::*;
use super::errors::Problems;
use super::fields::{at_least_one_u32, optional_header, positive};
use super::raw::{RawCache, RawUpstream};
use super::tls::certificate_files;
use crate::cache::settings::{Backend, CacheLimits, StoreSettings};
use crate::redis_layer::RedisTarget;
use crate::tls::{BackendTlsFiles, UpstreamTls};
use crate::upstream::{Balance, Http2, UpstreamSettings};

pub(super) fn upstream_settings(
    p: &mut Problems,
    raw: RawUpstream,
    url: Option<String>,
    base_dir: &Path,
) -> Option<(UpstreamSettings, Option<BackendTlsFiles>)> {
    // UPSTREAM_URL / --upstream name one URL, which replaces the file's.
    let named: Vec<(String, String)> = match (url, raw.url, raw.urls) {
        (_, Some(_), Some(_)) => {
            p.add("upstream.urls", "set either upstream.url or upstream.urls, not both");
            return None;
        }
        (Some(url), _, _) | (None, Some(url), None) => vec![("upstream.url".to_owned(), url)],
        (None, None, Some(urls)) if urls.is_empty() => {
            p.add("upstream.urls", "must name at least one URL");
            return None;
        }
        (None, None, Some(urls)) => urls
            .into_iter()
            .enumerate()
            .map(|(i, url)| (format!("upstream.urls[{i}]"), url))
            .collect(),
        (None, None, None) => {
            p.add(
                "upstream.url",
                "is required (or upstream.urls, or set UPSTREAM_URL / --upstream)",
            );
            return None;
        }
    };
    let endpoints: Vec<Uri> = named
        .iter()
        .filter_map(|(field, url)| endpoint_url(p, field, url))
        .collect();
    if endpoints.len() < named.len() {
        return None;
    }
    let base = &endpoints[0];
    if endpoints.iter().any(|e| e.scheme() != base.scheme()) {
        p.add(
            "upstream.urls",
            "mixes http:// and https://: every endpoint of the backend must use one scheme",
        );
        return None;
    }
    for (i, endpoint) in endpoints.iter().enumerate() {
        if let Some(j) = endpoints[..i]
            .iter()
            .position(|e| e.authority() == endpoint.authority())
        {
            p.add(format!("upstream.urls[{i}]"), format!("repeats upstream.urls[{j}]"));
        }
    }
    let https = base.scheme_str() == Some("https");
    let client_certificate = certificate_files(
        p,
        ("upstream.client_cert_file".into(), raw.client_cert_file),
        ("upstream.client_key_file".into(), raw.client_key_file),
        base_dir,
    );
    if let Some(name) = &raw.server_name {
        if rustls_pki_types::ServerName::try_from(name.as_str()).is_err() {
            p.add(
                "upstream.server_name",
                format!("{name:?} is not a DNS name or IP address"),
            );
        }
    }
    let tls_only = [
        ("upstream.ca_file", raw.ca_file.is_some()),
        ("upstream.server_name", raw.server_name.is_some()),
        ("upstream.client_cert_file", client_certificate.is_some()),
    ];
    for (field, set) in tls_only {
        if set && !https {
            p.add(field, "applies only to an https:// upstream");
        }
    }
    let tls = https.then_some(UpstreamTls {
        server_name: raw.server_name,
    });
    let files = https.then(|| BackendTlsFiles {
        ca_file: raw.ca_file.map(|path| base_dir.join(path)),
        client_certificate,
    });
    let http2 = match raw.http2.as_deref() {
        None | Some("auto") => Http2::Auto,
        Some("always") => Http2::Always,
        Some("never") => Http2::Never,
        Some(other) => {
            p.add(
                "upstream.http2",
                format!("{other:?} is not \"auto\", \"always\" or \"never\""),
            );
            Http2::Auto
        }
    };
    let balance = match raw.balance.as_deref() {
        None | Some("round_robin") => Balance::RoundRobin,
        Some("least_outstanding") => Balance::LeastOutstanding,
        Some(other) => {
            p.add(
                "upstream.balance",
                format!("{other:?} is not \"round_robin\" or \"least_outstanding\""),
            );
            Balance::RoundRobin
        }
    };
    let settings = UpstreamSettings {
        balance,
        eject_after: at_least_one_u32(p, "upstream.eject_after", raw.eject_after, DEFAULT_EJECT_AFTER),
        eject_for: positive(p, "upstream.eject_for", raw.eject_for, DEFAULT_EJECT_FOR),
        endpoints,
        tls,
        http2,
        connect_timeout: positive(
            p,
            "upstream.connect_timeout",
            raw.connect_timeout,
            DEFAULT_CONNECT_TIMEOUT,
        ),
        pool_idle_timeout: positive(
            p,
            "upstream.pool_idle_timeout",
            raw.pool_idle_timeout,
            DEFAULT_POOL_IDLE_TIMEOUT,
        ),
        pool_max_idle_per_host: raw.pool_max_idle_per_host.unwrap_or(DEFAULT_POOL_MAX_IDLE_PER_HOST),
        max_concurrent_requests: raw
            .max_concurrent_requests
            .unwrap_or(DEFAULT_UPSTREAM_MAX_CONCURRENT_REQUESTS),
    };
    Some((settings, files))
}

/// One endpoint's URL: `http://host:port` or `https://host:port`, no path
/// or query.
fn endpoint_url(p: &mut Problems, field: &str, url: &str) -> Option<Uri> {
    match url.parse::<Uri>() {
        Ok(uri)
            if matches!(uri.scheme_str(), Some("http" | "https"))
                && uri.authority().is_some()
                && matches!(uri.path(), "" | "/")
                && uri.query().is_none() =>
        {
            Some(uri)
        }
        Ok(_) => {
            p.add(
                field,
                format!("{url:?} must be http://host:port or https://host:port, with no path or query"),
            );
            None
        }
        Err(e) => {
            p.add(field, format!("{url:?}: {e}"));
            None
        }
    }
}

/// A namespace travels in Redis key and channel names.
fn is_valid_namespace(namespace: &str) -> bool {
    (1..=256).contains(&namespace.len()) && !namespace.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Most buckets entries may be spread over: a cluster's hash slots.
const MAX_REDIS_BUCKETS: usize = 16384;

/// The Redis deployment named by `cache.redis_url` (or its override from
/// the environment or the command line, which wins) or
/// `cache.redis_cluster`; `None` for the memory store.
fn redis_target(p: &mut Problems, raw: &RawCache, redis_url: Option<String>) -> Option<RedisTarget> {
    if raw.redis_url.is_some() && raw.redis_cluster.is_some() {
        p.add(
            "cache.redis_cluster",
            "set either cache.redis_url (one node or Sentinel) or cache.redis_cluster, not both",
        );
    }
    match (redis_url.or_else(|| raw.redis_url.clone()), &raw.redis_cluster) {
        (Some(url), _) => match RedisTarget::from_url(&url) {
            Ok(target) => Some(target),
            Err(e) => {
                p.add("cache.redis_url", format!("not a usable Redis URL: {e}"));
                None
            }
        },
        (None, Some(seeds)) => match RedisTarget::cluster(seeds) {
            Ok(target) => Some(target),
            Err(e) => {
                p.add("cache.redis_cluster", e);
                None
            }
        },
        (None, None) => None,
    }
}

/// Where entries live. The namespace defaults to the upstream's authority
/// (the first endpoint's, when there are several).
pub(super) fn store_settings(
    p: &mut Problems,
    raw: &RawCache,
    redis_url: Option<String>,
    upstream: Option<&UpstreamSettings>,
) -> StoreSettings {
    let backend = match redis_target(p, raw, redis_url) {
        Some(target) => {
            let buckets = raw.redis_buckets.unwrap_or(0);
            if raw.redis_buckets.is_some() && !(1..=MAX_REDIS_BUCKETS).contains(&buckets) {
                p.add(
                    "cache.redis_buckets",
                    format!("must be from 1 to {MAX_REDIS_BUCKETS} (the hash slots of a cluster)"),
                );
            }
            if target.is_cluster() || buckets > 1 {
                // The bucket's hash tag must be the first `{…}` of a name.
                for (field, value) in [
                    ("cache.key_prefix", &raw.key_prefix),
                    ("cache.namespace", &raw.namespace),
                ] {
                    if value.as_deref().is_some_and(|v| v.contains(['{', '}'])) {
                        p.add(
                            field,
                            "must not contain { or } when entries are spread over buckets (a cluster)",
                        );
                    }
                }
            }
            Backend::Redis {
                target,
                buckets,
                l1_max_bytes: raw.l1_max_bytes.unwrap_or(DEFAULT_L1_MAX_BYTES),
            }
        }
        None => Backend::Memory {
            max_bytes: raw.memory_max_bytes.unwrap_or(DEFAULT_MEMORY_MAX_BYTES),
        },
    };
    let namespace = match (&raw.namespace, upstream) {
        (Some(explicit), _) => {
            if !is_valid_namespace(explicit) {
                p.add(
                    "cache.namespace",
                    "must be 1 to 256 characters without spaces or control characters",
                );
            }
            explicit.clone()
        }
        (None, Some(upstream)) => upstream
            .authorities()
            .next()
            .map(|a| a.as_str().to_ascii_lowercase())
            .unwrap_or_default(),
        (None, None) => String::new(),
    };
    StoreSettings {
        backend,
        operation_timeout: positive(
            p,
            "cache.operation_timeout",
            raw.operation_timeout,
            DEFAULT_CACHE_OPERATION_TIMEOUT,
        ),
        invalidation_wait: raw.invalidation_wait.unwrap_or(DEFAULT_INVALIDATION_WAIT),
        revalidation_retention: raw.revalidation_retention.unwrap_or(DEFAULT_REVALIDATION_RETENTION),
        breaker_failures: at_least_one_u32(
            p,
            "cache.breaker_failures",
            raw.breaker_failures,
            DEFAULT_BREAKER_FAILURES,
        ),
        breaker_open_for: positive(
            p,
            "cache.breaker_open_for",
            raw.breaker_open_for,
            DEFAULT_BREAKER_OPEN_FOR,
        ),
        key_prefix: raw.key_prefix.clone().unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned()),
        namespace,
    }
}

/// The default TTL routes inherit: `CACHE_TTL` (whole seconds, the seed's
/// name) over `cache.default_ttl`.
pub(super) fn default_ttl(p: &mut Problems, raw: &RawCache, cache_ttl: Option<String>) -> std::time::Duration {
    match cache_ttl {
        Some(secs) => match secs.trim().parse::<u64>() {
            Ok(s) if s > 0 => std::time::Duration::from_secs(s),
            _ => {
                p.add(
                    "CACHE_TTL",
                    format!("{secs:?} must be a whole number of seconds above 0"),
                );
                DEFAULT_CACHE_TTL
            }
        },
        None => positive(p, "cache.default_ttl", raw.default_ttl, DEFAULT_CACHE_TTL),
    }
}

/// What the request path may store and how long a miss's leader leads.
pub(super) fn cache_limits(p: &mut Problems, raw: &RawCache) -> CacheLimits {
    CacheLimits {
        max_entry_bytes: raw.max_entry_bytes.unwrap_or(DEFAULT_MAX_ENTRY_BYTES),
        max_key_bytes: raw.max_key_bytes.unwrap_or(DEFAULT_MAX_KEY_BYTES),
        lease_ttl: positive(p, "cache.lease_ttl", raw.lease_ttl, DEFAULT_LEASE_TTL),
        surrogate_key_header: optional_header(
            p,
            "cache.surrogate_key_header",
            raw.surrogate_key_header.as_deref(),
            DEFAULT_SURROGATE_KEY_HEADER,
        ),
    }
}
