//! Waiting for a condition a test cannot be notified of (a metric, a key
//! in Redis, an answer changing), by polling it with a deadline.

use std::future::Future;
use std::time::Duration;

/// How long any awaited condition may take before the test fails.
pub const LIMIT: Duration = Duration::from_secs(20);

/// Polls `holds` every 20 ms until it is true; fails the test, naming
/// `what` was awaited, after [`LIMIT`].
pub async fn eventually<F, Fut>(what: &str, mut holds: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !holds().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
