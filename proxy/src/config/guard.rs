//! `[limits]`, `[[routes]].limits`, `[revocation]`, the revocation headers
//! of `[cache]`, and `[server]`'s trusted proxies.

use super::errors::Problems;
use super::fields::{header_name, optional_header};
use super::raw::{RawCache, RawLimit, RawLimits, RawRevocation, RawServer};
use crate::client_ip::ClientIp;
use crate::guard::limits::{Limit, LimitKey, Limits, Rate};
use crate::guard::revocation::RevokeHeaders;
use crate::guard::{GuardSettings, RevocationSettings, WhenUnavailable};
use crate::upstream::IdentitySettings;

pub const DEFAULT_REVOKE_HEADER: &str = "revoke-subject";
pub const DEFAULT_REVOKE_JTI_HEADER: &str = "revoke-jti";

/// A list of limits at `field`; what is wrong with each is reported there.
pub(super) fn limits(p: &mut Problems, field: &str, raw: &[RawLimit]) -> Limits {
    let mut limits = Vec::with_capacity(raw.len());
    for (i, limit) in raw.iter().enumerate() {
        let at = |name: &str| format!("{field}[{i}].{name}");
        let key = match limit.key.as_deref().map(LimitKey::parse) {
            Some(Ok(key)) => Some(key),
            Some(Err(why)) => {
                p.add(at("key"), why);
                None
            }
            None => {
                p.add(
                    at("key"),
                    "is required (subject, ip, role, route, header:<name> or body:<JSON pointer>)",
                );
                None
            }
        };
        let rate = match limit.rate.as_deref().map(Rate::parse) {
            Some(Ok(rate)) => Some(rate),
            Some(Err(why)) => {
                p.add(at("rate"), why);
                None
            }
            None => {
                p.add(at("rate"), "is required, e.g. \"100/s\" or \"1000/min\"");
                None
            }
        };
        if limit.burst == Some(0) {
            p.add(at("burst"), "must be at least 1 (requests allowed at once)");
        }
        if let (Some(key), Some(rate)) = (key, rate) {
            if rate.period.as_micros() < u128::from(rate.count) {
                p.add(at("rate"), "at most 1000000/s: one request per microsecond");
                continue;
            }
            let built = Limit::new(key, rate, limit.burst);
            // The store's arithmetic is exact to 2^53 µs (Lua numbers).
            if u128::from(built.cell.burst) * u128::from(built.cell.interval_us) > 1 << 53 {
                p.add(
                    at("burst"),
                    "burst times the interval exceeds 285 years; lower one of them",
                );
                continue;
            }
            limits.push(built);
        }
    }
    // Several limits on one key (10/s and 1000/h per address) are named
    // apart by their rates in metrics and the RateLimit fields.
    for i in 0..limits.len() {
        let repeated = limits.iter().filter(|l| l.key == limits[i].key).count() > 1;
        if repeated {
            let label = format!(
                "{} {}/{}s",
                limits[i].key,
                limits[i].rate.count,
                limits[i].rate.period.as_secs()
            );
            limits[i] = limits[i].clone().named(&label);
        }
    }
    Limits::new(limits)
}

/// Whether the limits `raw` (at `field`) can be counted on route `route`:
/// keys that need a token need an authenticated route, a body needs a
/// route that reads one, and a header key must reach the proxy as the
/// client sent it. Keys that do not parse were reported already.
pub(super) fn check_route_limits(
    p: &mut Problems,
    field: &str,
    raw: &[RawLimit],
    route: &str,
    public: bool,
    is_read: bool,
    identity: &IdentitySettings,
) {
    for (i, limit) in raw.iter().enumerate() {
        let Some(Ok(key)) = limit.key.as_deref().map(LimitKey::parse) else {
            continue;
        };
        let at = format!("{field}[{i}].key");
        match &key {
            key if key.needs_token() && public => p.add(
                at,
                format!("{key} needs a verified token; route {route:?} is public (use ip or header:<name>)"),
            ),
            LimitKey::Body(_) if is_read => p.add(
                at,
                format!("a body key needs a write route; route {route:?} is GET/HEAD only"),
            ),
            LimitKey::Header(name) if crate::upstream::is_proxy_owned(name, identity) => p.add(
                at,
                format!("{name:?} is set or dropped by the proxy; a client could not be counted by it"),
            ),
            _ => {}
        }
    }
}

pub(super) fn guard_settings(
    p: &mut Problems,
    limits: &RawLimits,
    revocation: &RawRevocation,
    cache: &RawCache,
) -> GuardSettings {
    if limits.instances == Some(0) {
        p.add(
            "limits.instances",
            "must be at least 1 (the proxy instances sharing the store)",
        );
    }
    let when_unavailable = match revocation.when_unavailable.as_deref() {
        None | Some("open") => WhenUnavailable::Open,
        Some("closed") => WhenUnavailable::Closed,
        Some(other) => {
            p.add(
                "revocation.when_unavailable",
                format!("{other:?} is not \"open\" or \"closed\""),
            );
            WhenUnavailable::Open
        }
    };
    GuardSettings {
        instances: limits.instances.unwrap_or(1).max(1),
        revocation: RevocationSettings {
            check: revocation.check.unwrap_or(true),
            when_unavailable,
            headers: RevokeHeaders {
                subject: optional_header(
                    p,
                    "cache.revoke_header",
                    cache.revoke_header.as_deref(),
                    DEFAULT_REVOKE_HEADER,
                ),
                jti: optional_header(
                    p,
                    "cache.revoke_jti_header",
                    cache.revoke_jti_header.as_deref(),
                    DEFAULT_REVOKE_JTI_HEADER,
                ),
            },
        },
    }
}

pub(super) fn client_ip(p: &mut Problems, server: &RawServer) -> ClientIp {
    let mut trusted_proxies = Vec::new();
    for (i, text) in server.trusted_proxies.iter().flatten().enumerate() {
        // A bare address is its own /32 or /128.
        let parsed = text
            .parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(net) => trusted_proxies.push(net.trunc()),
            Err(_) => p.add(
                format!("server.trusted_proxies[{i}]"),
                format!("{text:?} is not an address or a CIDR network (\"10.0.0.0/8\")"),
            ),
        }
    }
    ClientIp {
        trusted_proxies,
        header: match server.client_ip_header.as_deref() {
            Some(name) => header_name(p, "server.client_ip_header", name),
            None => ClientIp::default().header,
        },
    }
}
