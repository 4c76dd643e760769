//! The IETF rate-limit fields (draft-ietf-httpapi-ratelimit-headers):
//! `RateLimit-Policy` names each limit with its quota (`q`, the count) and
//! window (`w`, seconds); `RateLimit` says what is left of each now (`r`,
//! requests that may come at once) and when it is whole again (`t`,
//! seconds). A refused request also gets `Retry-After`.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::gcra::Decision;
use super::limits::Limit;

pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// The fields of one request's limits, ready to be set on its answer.
#[derive(Debug, Clone)]
pub struct RateLimitFields {
    policy: HeaderValue,
    state: HeaderValue,
    /// Whole seconds until the request would have been allowed, when it
    /// was not.
    pub retry_after: Option<u64>,
}

impl RateLimitFields {
    /// The fields for the limits a request counted in, each with the
    /// decision it made; `full_policy`, the policy value of them all when
    /// it counted in every limit of its rule.
    pub fn new(counted: &[(&Limit, &Decision)], full_policy: Option<&HeaderValue>) -> Option<RateLimitFields> {
        let (mut policy, mut state) = (String::new(), String::with_capacity(64));
        let mut retry_after = None;
        let mut numbers = itoa::Buffer::new();
        for (limit, decision) in counted {
            if !state.is_empty() {
                state.push_str(", ");
                if full_policy.is_none() {
                    policy.push_str(", ");
                }
            }
            if full_policy.is_none() {
                policy.push_str(&limit.policy_item);
            }
            state.push_str(&limit.state_item);
            state.push_str(numbers.format(decision.remaining));
            state.push_str(";t=");
            state.push_str(numbers.format(decision.reset_us.div_ceil(1_000_000)));
            if !decision.allowed {
                let wait = decision.retry_after_us.div_ceil(1_000_000).max(1);
                retry_after = Some(retry_after.map_or(wait, |w: u64| w.max(wait)));
            }
        }
        Some(RateLimitFields {
            policy: match full_policy {
                Some(all) => all.clone(),
                None => HeaderValue::try_from(policy).ok()?,
            },
            state: HeaderValue::try_from(state).ok()?,
            retry_after,
        })
    }

    pub fn apply(self, headers: &mut HeaderMap) {
        headers.insert(RATELIMIT_POLICY, self.policy);
        headers.insert(RATELIMIT, self.state);
        if let Some(seconds) = self.retry_after {
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::limits::{LimitKey, Rate};

    #[test]
    fn fields_name_every_limit_and_retry_after_the_longest_wait() {
        let limits = [
            Limit::new(LimitKey::Subject, Rate::parse("10/s").unwrap(), Some(5)),
            Limit::new(
                LimitKey::parse("header:x-api-key").unwrap(),
                Rate::parse("100/min").unwrap(),
                None,
            ),
        ];
        let decisions = [
            Decision {
                allowed: false,
                remaining: 0,
                reset_us: 500_000,
                retry_after_us: 100_000,
            },
            Decision {
                allowed: false,
                remaining: 0,
                reset_us: 60_000_000,
                retry_after_us: 2_500_000,
            },
        ];
        let counted: Vec<(&Limit, &Decision)> = limits.iter().zip(&decisions).collect();
        let fields = RateLimitFields::new(&counted, None).unwrap();
        let mut headers = HeaderMap::new();
        fields.apply(&mut headers);
        assert_eq!(
            headers["ratelimit-policy"],
            r#""subject";q=10;w=1, "header:x-api-key";q=100;w=60"#
        );
        assert_eq!(
            headers["ratelimit"],
            r#""subject";r=0;t=1, "header:x-api-key";r=0;t=60"#
        );
        assert_eq!(headers["retry-after"], "3");
    }
}
