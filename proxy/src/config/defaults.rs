//! Defaults, each with its reason.

use std::time::Duration;

/// DESIGN.md's port table.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
/// Long enough for a slow mobile client, short enough that a slowloris
/// client cannot hold a connection slot for long. Also the keep-alive idle
/// limit (see [`ServerSettings::header_read_timeout`]).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Beyond this, new connections wait in the kernel backlog instead of
/// exhausting file descriptors.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Connections one client address may hold: far above what a browser or a
/// load generator opens, far below `DEFAULT_MAX_CONNECTIONS`, so one
/// address cannot take every slot.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1024;
/// A connection with no request in flight is closed after this (nginx's
/// `keepalive_timeout` is 75 s; HTTP/1 keep-alive is also bounded by the
/// header-read timeout, which hyper starts while waiting for a head).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest pause between two pieces of a request body (nginx's
/// `client_body_timeout` is 60 s).
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a response write may make no progress because the client does
/// not read (nginx's `send_timeout` is 60 s).
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Same limit as the origin: JSON API requests are small.
pub const DEFAULT_MAX_REQUEST_BODY_BYTES: u64 = 1024 * 1024;
/// In-flight requests get this long to finish on shutdown.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// A loopback or LAN backend that takes longer than this to accept is down.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time to the upstream's response headers before answering 504.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Below common backend keep-alive timeouts (60 s+), so we close first and
/// rarely reuse a connection the backend is closing.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);
pub const DEFAULT_POOL_MAX_IDLE_PER_HOST: usize = 256;
/// Requests at the backend at once: far above what a healthy backend
/// behind one proxy has in flight, low enough that a stalled backend does
/// not collect every client's request.
pub const DEFAULT_UPSTREAM_MAX_CONCURRENT_REQUESTS: usize = 1024;
/// Consecutive failures (refused, reset before sending, connect or response
/// timeout) that eject one of several endpoints: one failure is noise, three
/// in a row with no answer between them is an endpoint gone.
pub const DEFAULT_EJECT_AFTER: u32 = 3;
/// How long an ejected endpoint is left alone before one request probes
/// it: long enough that a dead endpoint costs a probe every few seconds,
/// short enough that a restarted one is back soon.
pub const DEFAULT_EJECT_FOR: Duration = Duration::from_secs(10);
/// The seed's Redis TTL default; `CACHE_TTL` overrides it.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(60);
/// Larger responses are streamed through and not stored.
pub const DEFAULT_MAX_ENTRY_BYTES: u64 = 1024 * 1024;
/// Bound of the in-process store when no Redis is configured.
/// Largest key material (path, query, `vary` values) of a cached request:
/// nginx's default request-line buffer is 8 KiB; longer URLs are rare in
/// APIs and, cached, would bloat every index place they are filed under.
pub const DEFAULT_MAX_KEY_BYTES: u64 = 8 * 1024;
/// Cap on the stale windows an origin asks for: an origin sending
/// `stale-if-error=31536000` would otherwise keep every entry a year.
pub const DEFAULT_MAX_STALE: Duration = Duration::from_secs(3600);
pub const DEFAULT_MEMORY_MAX_BYTES: u64 = 64 * 1024 * 1024;
pub const DEFAULT_L1_MAX_BYTES: u64 = 32 * 1024 * 1024;
/// A cache operation slower than this is abandoned and the request served
/// from upstream: Redis on loopback answers in well under a millisecond.
pub const DEFAULT_CACHE_OPERATION_TIMEOUT: Duration = Duration::from_millis(50);
/// How long a write's response waits for its invalidation to be
/// acknowledged while Redis is failing, before it is released anyway (and
/// the invalidation kept for later).
pub const DEFAULT_INVALIDATION_WAIT: Duration = Duration::from_secs(1);
/// How long past expiry, at least, an entry with the origin's validators
/// is kept to be revalidated (a 304) rather than fetched whole.
pub const DEFAULT_REVALIDATION_RETENTION: Duration = Duration::from_secs(60);
/// Consecutive failures that open the circuit breaker.
pub const DEFAULT_BREAKER_FAILURES: u32 = 3;
/// How long the breaker stays open before one probe is let through.
pub const DEFAULT_BREAKER_OPEN_FOR: Duration = Duration::from_secs(1);
pub const DEFAULT_KEY_PREFIX: &str = "cgw:";
pub const DEFAULT_SURROGATE_KEY_HEADER: &str = "surrogate-key";
/// Shorter admin tokens are refused: they guard cache-wide purges.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;
/// How long one instance may fetch a missing entry while the others sharing
/// its Redis wait for it instead of fetching too.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);
/// Tolerated clock skew between token issuer and proxy.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
pub const DEFAULT_ROLE_CLAIM: &str = "role";
pub const DEFAULT_JWKS_MIN_REFRESH: Duration = Duration::from_secs(60);
pub const DEFAULT_JWKS_MAX_REFRESH: Duration = Duration::from_secs(3600);
pub const DEFAULT_JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_JWKS_MAX_STALE: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_SUBJECT_HEADER: &str = "x-auth-subject";
pub const DEFAULT_ROLE_HEADER: &str = "x-auth-role";
/// Response statuses stored when a rule does not list its own.
pub const DEFAULT_CACHE_STATUSES: [u16; 1] = [200];
