//! How the cache took part in a request, as the client is told it:
//! `X-Cache` and `Cache-Status` (RFC 9211).

use std::io::Write;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// The longest hit member: `proxy; hit; ttl=` and a u64's 20 digits.
const HIT_VALUE_MAX: usize = 36;

/// Why a request did not use the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bypass {
    /// Writes and other non-GET/HEAD methods (`fwd=method`).
    Method,
    /// The rule has no cache policy (`fwd=bypass`).
    Uncacheable,
    /// No rule matched (`fwd=uri-miss`).
    NoRule,
    /// The store failed or its circuit breaker is open.
    StoreUnavailable,
    /// The request's key material exceeds `cache.max_key_bytes`.
    KeyTooLarge,
    /// The proxy answered itself (an error) before any cache step.
    Error,
}

/// Why an expired entry was served (RFC 5861).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleReason {
    WhileRevalidate,
    IfError,
    /// The client said it accepts an answer this stale (`max-stale`).
    MaxStale,
}

/// How the cache took part in a request; becomes `X-Cache` and
/// `Cache-Status` on the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit {
        ttl_left: Duration,
    },
    /// Served past expiry: while a background refresh runs, or because the
    /// upstream failed.
    Stale {
        expired_for: Duration,
        reason: StaleReason,
    },
    /// Expired, revalidated upstream (304) and served from the cache.
    Revalidated {
        stored: bool,
    },
    Miss {
        stored: bool,
    },
    Bypass(Bypass),
}

impl CacheStatus {
    pub fn x_cache(&self) -> HeaderValue {
        HeaderValue::from_static(match self {
            CacheStatus::Hit { .. } => "HIT",
            CacheStatus::Stale { .. } => "STALE",
            CacheStatus::Revalidated { .. } => "HIT",
            CacheStatus::Miss { .. } => "MISS",
            CacheStatus::Bypass(_) => "BYPASS",
        })
    }

    /// This cache's member of `Cache-Status` (RFC 9211); it names itself
    /// `proxy`.
    pub fn cache_status(&self) -> HeaderValue {
        match self {
            CacheStatus::Hit { ttl_left } => {
                // Every hit makes one: written in place, not in a `String`
                // that the header value would then copy.
                let mut value = [0u8; HIT_VALUE_MAX];
                let mut unwritten = &mut value[..];
                write!(unwritten, "proxy; hit; ttl={}", ttl_left.as_secs()).expect("a u64 fits");
                let len = HIT_VALUE_MAX - unwritten.len();
                HeaderValue::from_bytes(&value[..len]).expect("ascii")
            }
            CacheStatus::Stale { expired_for, reason } => {
                let detail = match reason {
                    StaleReason::WhileRevalidate => "stale-while-revalidate",
                    StaleReason::IfError => "stale-if-error",
                    StaleReason::MaxStale => "max-stale",
                };
                HeaderValue::from_str(&format!("proxy; hit; ttl=-{}; detail={detail}", expired_for.as_secs()))
                    .expect("ascii")
            }
            CacheStatus::Revalidated { stored: true } => {
                HeaderValue::from_static("proxy; fwd=stale; fwd-status=304; stored")
            }
            CacheStatus::Revalidated { stored: false } => HeaderValue::from_static("proxy; fwd=stale; fwd-status=304"),
            CacheStatus::Miss { stored: true } => HeaderValue::from_static("proxy; fwd=miss; stored"),
            CacheStatus::Miss { stored: false } => HeaderValue::from_static("proxy; fwd=miss"),
            CacheStatus::Bypass(Bypass::Method) => HeaderValue::from_static("proxy; fwd=method"),
            CacheStatus::Bypass(Bypass::Uncacheable) => HeaderValue::from_static("proxy; fwd=bypass"),
            CacheStatus::Bypass(Bypass::NoRule) => HeaderValue::from_static("proxy; fwd=uri-miss"),
            CacheStatus::Bypass(Bypass::KeyTooLarge) => {
                HeaderValue::from_static("proxy; fwd=bypass; detail=key-too-large")
            }
            CacheStatus::Bypass(Bypass::StoreUnavailable) => {
                HeaderValue::from_static("proxy; fwd=bypass; detail=store-unavailable")
            }
            CacheStatus::Bypass(Bypass::Error) => HeaderValue::from_static("proxy; fwd=bypass; detail=error"),
        }
    }

    /// Label for the cache-outcome metric.
    pub fn outcome(&self) -> &'static str {
        match self {
            CacheStatus::Hit { .. } => "hit",
            CacheStatus::Stale { .. } => "stale",
            CacheStatus::Revalidated { .. } => "revalidated",
            CacheStatus::Miss { .. } => "miss",
            CacheStatus::Bypass(_) => "bypass",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_status_headers_follow_rfc_9211() {
        assert_eq!(
            CacheStatus::Hit {
                ttl_left: Duration::from_millis(42_900)
            }
            .cache_status(),
            "proxy; hit; ttl=42"
        );
        assert_eq!(
            CacheStatus::Hit {
                ttl_left: Duration::from_secs(u64::MAX)
            }
            .cache_status(),
            "proxy; hit; ttl=18446744073709551615"
        );
        assert_eq!(
            CacheStatus::Miss { stored: true }.cache_status(),
            "proxy; fwd=miss; stored"
        );
        assert_eq!(
            CacheStatus::Bypass(Bypass::NoRule).cache_status(),
            "proxy; fwd=uri-miss"
        );
        assert_eq!(CacheStatus::Bypass(Bypass::StoreUnavailable).x_cache(), "BYPASS");
        let stale = CacheStatus::Stale {
            expired_for: Duration::from_secs(3),
            reason: StaleReason::IfError,
        };
        assert_eq!(stale.x_cache(), "STALE");
        assert_eq!(stale.cache_status(), "proxy; hit; ttl=-3; detail=stale-if-error");
    }
}
