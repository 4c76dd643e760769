//! What a request's own `Cache-Control` (and `Pragma`) asks of the cache
//! (RFC 9111 §5.2.1). `no-store` is always honoured; the rest only on
//! routes with `honour_request_directives`, since on a shared gateway they
//! let any client make every request a miss.

use std::time::Duration;

use http::header::{CACHE_CONTROL, PRAGMA};
use http::HeaderMap;

use super::policy::{directives, seconds};

/// The request directives the cache acts on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RequestDirectives {
    /// Store no part of the answer (§5.2.1.5).
    pub no_store: bool,
    /// Serve nothing stored without revalidating it (§5.2.1.4; also
    /// `Pragma: no-cache` when no `Cache-Control` is sent, §5.4).
    pub no_cache: bool,
    /// Serve nothing stored that is older (§5.2.1.1).
    pub max_age: Option<Duration>,
    /// Serve nothing stored that stays fresh for less (§5.2.1.3).
    pub min_fresh: Option<Duration>,
    /// Accept a stored answer expired for up to this long (§5.2.1.2;
    /// without a value, however long).
    pub max_stale: Option<Duration>,
    /// Answer from the cache or with 504 (§5.2.1.7).
    pub only_if_cached: bool,
}

impl RequestDirectives {
    pub fn parse(headers: &HeaderMap) -> RequestDirectives {
        let mut asked = RequestDirectives::default();
        let mut any_cache_control = false;
        for value in headers.get_all(CACHE_CONTROL) {
            any_cache_control = true;
            let Ok(value) = value.to_str() else { continue };
            for (name, arg) in directives(value) {
                let seconds = || seconds(arg);
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => asked.no_store = true,
                    "no-cache" => asked.no_cache = true,
                    "only-if-cached" => asked.only_if_cached = true,
                    // The first of a repeated directive counts; a malformed
                    // max-age asks for nothing older than now.
                    "max-age" => {
                        asked.max_age.get_or_insert(seconds().unwrap_or(Duration::ZERO));
                    }
                    "max-stale" => {
                        asked.max_stale.get_or_insert(match arg {
                            None => Duration::MAX,
                            Some(_) => seconds().unwrap_or(Duration::ZERO),
                        });
                    }
                    "min-fresh" => {
                        if let Some(fresh) = seconds() {
                            asked.min_fresh.get_or_insert(fresh);
                        }
                    }
                    _ => {}
                }
            }
        }
        if !any_cache_control {
            asked.no_cache = headers
                .get_all(PRAGMA)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|d| d.trim().eq_ignore_ascii_case("no-cache"));
        }
        asked
    }

    /// Whether a fresh entry of `age` with `ttl_left` must not be served
    /// as it is (it must be revalidated or fetched anew).
    pub fn refuses(&self, age: Duration, ttl_left: Duration) -> bool {
        self.no_cache || self.max_age.is_some_and(|max| age > max) || self.min_fresh.is_some_and(|min| ttl_left < min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn parse(pairs: &[(&'static str, &'static str)]) -> RequestDirectives {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        RequestDirectives::parse(&headers)
    }

    #[test]
    fn directives_are_read_as_rfc_9111_5_2_1_says() {
        let asked = parse(&[(
            "cache-control",
            "no-store, max-age=5, max-age=60, min-fresh=10, only-if-cached",
        )]);
        assert!(asked.no_store && asked.only_if_cached && !asked.no_cache);
        assert_eq!(asked.max_age, Some(Duration::from_secs(5)));
        assert_eq!(asked.min_fresh, Some(Duration::from_secs(10)));
        assert!(asked.refuses(Duration::from_secs(6), Duration::from_secs(60)));
        assert!(asked.refuses(Duration::from_secs(1), Duration::from_secs(9)));
        assert!(!asked.refuses(Duration::from_secs(1), Duration::from_secs(60)));
        assert_eq!(
            parse(&[("cache-control", "max-stale=30")]).max_stale,
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse(&[("cache-control", "max-stale")]).max_stale, Some(Duration::MAX));
    }

    #[test]
    fn pragma_no_cache_counts_only_without_cache_control() {
        assert!(parse(&[("pragma", "no-cache")]).no_cache);
        assert!(!parse(&[("pragma", "no-cache"), ("cache-control", "max-age=60")]).no_cache);
        assert_eq!(parse(&[("cache-control", "max-age=abc")]).max_age, Some(Duration::ZERO));
    }
}
