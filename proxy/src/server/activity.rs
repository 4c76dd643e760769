//! Whether a connection is doing anything, and how long it may do nothing.
//!
//! hyper bounds the phases it knows about (an HTTP/1 request head), but not
//! the time before the protocol is known, nor an HTTP/2 connection that
//! keeps answering pings without opening a stream. So each connection has
//! one watchdog over its whole life: it counts requests in flight (from the
//! moment hyper hands a request to the service until its response body is
//! finished or dropped) and closes the connection when nothing is in flight
//! for too long — `header_read_timeout` before the first request (idle
//! sockets, partial HTTP/2 prefaces), `idle_timeout` after one — and, when
//! configured, when it reaches its maximum age.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Instant;

/// Why a connection's watchdog ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// No request arrived within the header-read timeout of accepting.
    FirstRequest,
    /// No request in flight for the idle timeout.
    Idle,
    /// The connection reached its maximum age.
    Age,
}

impl Expired {
    pub fn label(self) -> &'static str {
        match self {
            Expired::FirstRequest => "first_request_timeout",
            Expired::Idle => "idle_timeout",
            Expired::Age => "max_age",
        }
    }
}

/// The limits one connection lives under.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub first_request: Duration,
    pub idle: Duration,
    pub max_age: Option<Duration>,
}

/// One connection's requests in flight, shared by its service (which
/// counts) and its watchdog (which looks). Counting is a few atomic
/// operations per request and never wakes the watchdog: it sleeps until
/// the earliest moment the connection could expire and then looks again,
/// so a busy connection costs one timer per `idle` period, not per request.
pub struct Activity {
    born: Instant,
    in_flight: AtomicUsize,
    /// Requests ever started: none yet means the first-request limit.
    started: AtomicU64,
    /// When the last request in flight ended, in nanoseconds since `born`.
    last_end: AtomicU64,
    /// The server is draining: HTTP/1 responses say `Connection: close`.
    closing: AtomicBool,
    /// A request came over HTTP/2 (which drains by GOAWAY instead).
    http2: AtomicBool,
}

impl Default for Activity {
    fn default() -> Activity {
        Activity {
            born: Instant::now(),
            in_flight: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            last_end: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            http2: AtomicBool::new(false),
        }
    }
}

impl Activity {
    /// Marks a request as started; it stays in flight until the returned
    /// guard is dropped (move it into the response body).
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.started.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    pub fn saw_http2(&self) {
        self.http2.store(true, Ordering::Release);
    }

    pub fn is_http2(&self) -> bool {
        self.http2.load(Ordering::Acquire)
    }

    /// From now on, each response ends its connection.
    pub fn close_after_response(&self) {
        self.closing.store(true, Ordering::Release);
    }

    fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Resolves when the connection should be closed, and says why.
    pub async fn expired(&self, limits: Limits) -> Expired {
        let age_limit = limits.max_age.map(|age| self.born + age);
        loop {
            let now = Instant::now();
            if age_limit.is_some_and(|at| at <= now) {
                return Expired::Age;
            }
            // `started` before `in_flight`: a request counted in `started`
            // is then seen in flight too (it adds to `in_flight` first).
            let started = self.started.load(Ordering::Acquire);
            let idle = self.in_flight.load(Ordering::Acquire) == 0;
            let (at, why) = match (started, idle) {
                (0, _) => (self.born + limits.first_request, Some(Expired::FirstRequest)),
                (_, true) => {
                    let ended = Duration::from_nanos(self.last_end.load(Ordering::Acquire));
                    (self.born + ended + limits.idle, Some(Expired::Idle))
                }
                // Busy: look again after an idle period at the latest.
                (_, false) => (now + limits.idle, None),
            };
            if let Some(why) = why.filter(|_| at <= now) {
                return why;
            }
            let wake = age_limit.map_or(at, |age| age.min(at));
            tokio::time::sleep_until(wake).await;
        }
    }
}

/// A request in flight; dropping it ends the request for the watchdog.
pub struct InFlight(Arc<Activity>);

impl InFlight {
    /// Whether this request's connection is to close after its response
    /// (the server is draining).
    pub fn connection_closing(&self) -> bool {
        self.0.is_closing()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let since_born = u64::try_from(activity.born.elapsed().as_nanos()).unwrap_or(u64::MAX);
        // Before the count drops: whoever sees it at zero sees this end.
        activity.last_end.fetch_max(since_born, Ordering::AcqRel);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request in flight until hyper has sent
/// it all (or given up on it).
pub struct Tracked<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, in_flight: InFlight) -> Tracked<B> {
        Tracked {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        first_request: Duration::from_secs(10),
        idle: Duration::from_secs(60),
        max_age: None,
    };

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_never_sends_a_request_expires_after_the_first_request_limit() {
        let activity = Arc::new(Activity::default());
        let started = Instant::now();
        assert_eq!(activity.expired(LIMITS).await, Expired::FirstRequest);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_holds_the_connection_open_and_idleness_counts_from_its_end() {
        let activity = Arc::new(Activity::default());
        let watchdog = tokio::spawn({
            let activity = activity.clone();
            async move { activity.expired(LIMITS).await }
        });
        let request = activity.start();
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(!watchdog.is_finished(), "closed with a request in flight");
        let ended = Instant::now();
        drop(request);
        assert_eq!(watchdog.await.unwrap(), Expired::Idle);
        assert_eq!(ended.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn the_age_limit_ends_even_a_busy_connection() {
        let activity = Arc::new(Activity::default());
        let _request = activity.start();
        let limits = Limits {
            max_age: Some(Duration::from_secs(300)),
            ..LIMITS
        };
        assert_eq!(activity.expired(limits).await, Expired::Age);
    }
}
