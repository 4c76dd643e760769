//! Which changes a reload refuses: those to boot settings, named by field.

use super::errors::ConfigError;
use crate::boot::BootSettings;
use crate::cache::settings::Backend;
use crate::redis_layer::RedisTarget;
use crate::upstream::UpstreamSettings;

/// Every boot field that differs between the running settings and a
/// reloaded file, as an error naming it.
pub fn boot_changes(running: &BootSettings, reloaded: &BootSettings) -> Vec<ConfigError> {
    let (a, b) = (running, reloaded);
    let (sa, sb) = (&a.server, &b.server);
    let (ua, ub) = (&a.upstream, &b.upstream);
    let (ca, cb) = (&a.store, &b.store);
    let (ba, bb) = (backend_fields(&ca.backend), backend_fields(&cb.backend));
    let changed = [
        ("listen", a.listen == b.listen),
        ("admin_listen", a.admin_listen == b.admin_listen),
        (
            "server.header_read_timeout",
            sa.header_read_timeout == sb.header_read_timeout,
        ),
        ("server.max_connections", sa.max_connections == sb.max_connections),
        (
            "server.max_connections_per_ip",
            sa.max_connections_per_ip == sb.max_connections_per_ip,
        ),
        ("server.idle_timeout", sa.idle_timeout == sb.idle_timeout),
        ("server.body_read_timeout", sa.body_read_timeout == sb.body_read_timeout),
        ("server.write_timeout", sa.write_timeout == sb.write_timeout),
        (
            "server.max_connection_age",
            sa.max_connection_age == sb.max_connection_age,
        ),
        (
            "server.max_request_body_bytes",
            sa.max_request_body_bytes == sb.max_request_body_bytes,
        ),
        ("server.shutdown_grace", sa.shutdown_grace == sb.shutdown_grace),
        (
            "server.trusted_proxies",
            sa.client_ip.trusted_proxies == sb.client_ip.trusted_proxies,
        ),
        ("server.client_ip_header", sa.client_ip.header == sb.client_ip.header),
        (endpoints_field(ua, ub), ua.endpoints == ub.endpoints),
        ("upstream.balance", ua.balance == ub.balance),
        ("upstream.eject_after", ua.eject_after == ub.eject_after),
        ("upstream.eject_for", ua.eject_for == ub.eject_for),
        ("upstream.server_name", ua.tls == ub.tls),
        ("upstream.http2", ua.http2 == ub.http2),
        ("upstream.connect_timeout", ua.connect_timeout == ub.connect_timeout),
        (
            "upstream.pool_idle_timeout",
            ua.pool_idle_timeout == ub.pool_idle_timeout,
        ),
        (
            "upstream.pool_max_idle_per_host",
            ua.pool_max_idle_per_host == ub.pool_max_idle_per_host,
        ),
        (
            "upstream.max_concurrent_requests",
            ua.max_concurrent_requests == ub.max_concurrent_requests,
        ),
        (redis_field(ba.0, bb.0), ba.0 == bb.0),
        // Only between two Redis deployments: from memory it is implied.
        ("cache.redis_buckets", ba.3.zip(bb.3).is_none_or(|(a, b)| a == b)),
        ("cache.memory_max_bytes", ba.1 == bb.1),
        ("cache.l1_max_bytes", ba.2 == bb.2),
        ("cache.operation_timeout", ca.operation_timeout == cb.operation_timeout),
        ("cache.invalidation_wait", ca.invalidation_wait == cb.invalidation_wait),
        (
            "cache.revalidation_retention",
            ca.revalidation_retention == cb.revalidation_retention,
        ),
        ("cache.breaker_failures", ca.breaker_failures == cb.breaker_failures),
        ("cache.breaker_open_for", ca.breaker_open_for == cb.breaker_open_for),
        ("cache.key_prefix", ca.key_prefix == cb.key_prefix),
        ("cache.namespace", ca.namespace == cb.namespace),
    ];
    let errors: Vec<ConfigError> = changed
        .into_iter()
        .filter(|(_, same)| !same)
        .map(|(field, _)| {
            ConfigError::new(
                field,
                "changed, and takes effect only on restart; the reload was refused",
            )
        })
        .collect();
    debug_assert!(
        !errors.is_empty() || running == reloaded,
        "a boot field is missing from the list"
    );
    errors
}

/// The field that names the endpoints: `upstream.urls` when either side
/// has several.
fn endpoints_field(a: &UpstreamSettings, b: &UpstreamSettings) -> &'static str {
    if a.endpoints.len() > 1 || b.endpoints.len() > 1 {
        "upstream.urls"
    } else {
        "upstream.url"
    }
}

/// A backend's fields, each `None` where the other backend has it:
/// `(cache.redis_url or cache.redis_cluster, cache.memory_max_bytes,
/// cache.l1_max_bytes, cache.redis_buckets)`.
fn backend_fields(backend: &Backend) -> (Option<&RedisTarget>, Option<u64>, Option<u64>, Option<usize>) {
    match backend {
        Backend::Redis {
            target,
            buckets,
            l1_max_bytes,
        } => (Some(target), None, Some(*l1_max_bytes), Some(*buckets)),
        Backend::Memory { max_bytes } => (None, Some(*max_bytes), None, None),
    }
}

/// The field that names the Redis deployment: `cache.redis_cluster` when
/// either side is a cluster.
fn redis_field(a: Option<&RedisTarget>, b: Option<&RedisTarget>) -> &'static str {
    if [a, b].into_iter().flatten().any(RedisTarget::is_cluster) {
        "cache.redis_cluster"
    } else {
        "cache.redis_url"
    }
}
