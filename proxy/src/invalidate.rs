//! Invalidation on writes (DESIGN.md step 7): when a write through a rule
//! that lists tags should bump them.
//!
//! A 4xx means the backend refused the write, and a request that never
//! reached the backend changed nothing; every other outcome — success, 5xx,
//! a timeout or a connection lost after sending — may have committed, so it
//! invalidates. Invalidating too often costs a miss; too rarely, stale data.

use http::StatusCode;

use crate::upstream::UpstreamError;

/// Decides from the upstream outcome whether the write's tags are bumped.
pub fn should_invalidate(outcome: Result<StatusCode, &UpstreamError>) -> bool {
    match outcome {
        Ok(status) => !status.is_client_error(),
        Err(err) => err.may_have_reached_upstream(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_but_a_4xx_or_an_unsent_request_invalidates() {
        for status in [200, 201, 204, 302, 500, 502, 503] {
            assert!(should_invalidate(Ok(StatusCode::from_u16(status).unwrap())), "{status}");
        }
        for status in [400, 401, 403, 404, 409, 413, 422] {
            assert!(
                !should_invalidate(Ok(StatusCode::from_u16(status).unwrap())),
                "{status}"
            );
        }
        assert!(should_invalidate(Err(&UpstreamError::Timeout)));
        assert!(should_invalidate(Err(&UpstreamError::Failed("reset".into()))));
        assert!(!should_invalidate(Err(&UpstreamError::Connect("refused".into()))));
        assert!(!should_invalidate(Err(&UpstreamError::ConnectTimeout)));
        assert!(!should_invalidate(Err(&UpstreamError::BodyTooLarge)));
    }
}
