//! Connections to one node that the caller's own task writes and reads.
//!
//! The redis client's multiplexed connection runs a task of its own: a
//! pipeline handed to it waits for that task to be scheduled, is written
//! by it, and its replies come back through a channel, two task hand-offs
//! in each hit's round trip, each of which may wake the idle second
//! worker. A lookup's read with nothing to batch it with is sent from its
//! request's own task, and a batch from the batching task
//! ([`crate::cache`]); on a connection of their own they write it in their
//! own poll and are woken by the socket itself.
//!
//! Only plain TCP to one node, RESP2 (what the reads need); anything else
//! (TLS, a Unix socket, RESP3) has no direct connection and its reads go
//! through the client as before. A connection is used by one pipeline at a
//! time and taken out of the pool while it is: if the caller gives up on
//! the replies (its time budget, its client gone), the connection is
//! closed, never reused with a reply still owed. Connections are made in
//! the background, never in a request's time: while none is idle, a read
//! goes through the client. Replies are decoded by the redis crate's own
//! decoder (`ValueCodec`, which it exports for its benches; pinned by
//! Cargo.lock, and a build error, not a silent change, if it goes).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::FutureExt;
use redis::{ConnectionAddr, ConnectionInfo, ProtocolVersion, RedisResult, Value, ValueCodec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::Decoder;

use super::CONNECT_TIMEOUT;

/// Most connections kept: the reads in flight at once at light load (a
/// lone read or a batch, and a second batch).
const MAX_CONNECTIONS: usize = 2;

/// After a failed connection attempt, the next waits this long.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Connection attempts are at least this far apart, failed or not: a
/// read given up on closes its connection, and clients hanging up on
/// their requests one after another must not make the proxy churn
/// through Redis connections (and its own ephemeral ports).
const CONNECT_INTERVAL: Duration = Duration::from_millis(100);

/// The direct connections to one node.
pub struct DirectPool {
    host: String,
    port: u16,
    /// The commands that open a connection (AUTH, SELECT), packed.
    hello: Option<(Vec<u8>, usize)>,
    idle: Mutex<Vec<DirectConnection>>,
    /// Connections made and not dropped, idle or in use.
    open: AtomicUsize,
    connecting: AtomicBool,
    /// No connection attempt before this.
    next_attempt: Mutex<Instant>,
}

impl DirectPool {
    /// A pool for `info`'s node, if it is one a direct connection serves.
    pub fn new(info: &ConnectionInfo) -> Option<Arc<DirectPool>> {
        let ConnectionAddr::Tcp(host, port) = info.addr() else {
            return None;
        };
        let settings = info.redis_settings();
        if settings.protocol() != ProtocolVersion::RESP2 {
            return None;
        }
        let mut hello = redis::pipe();
        if let Some(password) = settings.password() {
            let auth = hello.cmd("AUTH");
            if let Some(username) = settings.username() {
                auth.arg(username);
            }
            auth.arg(password);
        }
        if settings.db() != 0 {
            hello.cmd("SELECT").arg(settings.db());
        }
        let hello = (!hello.is_empty()).then(|| (hello.get_packed_pipeline(), hello.len()));
        Some(Arc::new(DirectPool {
            host: host.clone(),
            port: *port,
            hello,
            idle: Mutex::new(Vec::new()),
            open: AtomicUsize::new(0),
            connecting: AtomicBool::new(false),
            next_attempt: Mutex::new(Instant::now()),
        }))
    }

    /// An idle connection, taken out of the pool; `None` if there is none
    /// (one is then made in the background, if there is room).
    pub fn take(self: &Arc<Self>) -> Option<Lease> {
        loop {
            let idle = self.idle.lock().expect("direct pool lock").pop();
            match idle {
                Some(connection) if connection.is_quiet() => {
                    return Some(Lease {
                        pool: self.clone(),
                        connection: Some(connection),
                    })
                }
                // Closed by Redis while idle (a restart, `CLIENT KILL`, its
                // idle timeout): dropped before a read is lost on it.
                Some(_) => {
                    self.open.fetch_sub(1, Ordering::Relaxed);
                }
                None => {
                    self.grow();
                    return None;
                }
            }
        }
    }

    /// Drops every idle connection: one failed, and the others, made to
    /// the same server, likely went with it.
    fn drop_idle(&self) {
        let dropped = std::mem::take(&mut *self.idle.lock().expect("direct pool lock"));
        self.open.fetch_sub(dropped.len(), Ordering::Relaxed);
    }

    /// Makes one more connection in the background, if there is room and
    /// no attempt is under way or too recent.
    fn grow(self: &Arc<Self>) {
        if self.open.load(Ordering::Relaxed) >= MAX_CONNECTIONS || Instant::now() < self.next_attempt() {
            return;
        }
        if self.connecting.swap(true, Ordering::AcqRel) {
            return;
        }
        self.set_next_attempt(CONNECT_INTERVAL);
        let pool = self.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(CONNECT_TIMEOUT, pool.connect()).await {
                Ok(Ok(connection)) => {
                    pool.open.fetch_add(1, Ordering::Relaxed);
                    pool.idle.lock().expect("direct pool lock").push(connection);
                }
                // The breaker and the Redis client's own connection say
                // that Redis is down; this one only waits to try again.
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "direct Redis connection failed");
                    pool.set_next_attempt(RETRY_AFTER);
                }
                Err(_) => {
                    tracing::debug!("direct Redis connection timed out");
                    pool.set_next_attempt(RETRY_AFTER);
                }
            }
            pool.connecting.store(false, Ordering::Release);
        });
    }

    fn next_attempt(&self) -> Instant {
        *self.next_attempt.lock().expect("direct pool lock")
    }

    fn set_next_attempt(&self, after: Duration) {
        *self.next_attempt.lock().expect("direct pool lock") = Instant::now() + after;
    }

    async fn connect(&self) -> RedisResult<DirectConnection> {
        let stream = TcpStream::connect((self.host.as_str(), self.port)).await?;
        stream.set_nodelay(true)?;
        let mut connection = DirectConnection {
            stream,
            buffer: BytesMut::with_capacity(16 * 1024),
            codec: ValueCodec::default(),
            owed: false,
        };
        if let Some((packed, count)) = &self.hello {
            let replies = connection.send(packed, *count).await?;
            Value::Array(replies).extract_error()?;
        }
        Ok(connection)
    }
}

/// A connection taken from its pool, and given back when the lease is
/// dropped, unless a pipeline sent on it had replies left unread (the
/// caller gave up on them): the connection is then closed.
pub struct Lease {
    pool: Arc<DirectPool>,
    connection: Option<DirectConnection>,
}

impl Lease {
    /// Sends `packed` (`count` commands) and reads their replies.
    pub async fn send(mut self, packed: &[u8], count: usize) -> RedisResult<Vec<Value>> {
        let connection = self
            .connection
            .as_mut()
            .expect("a lease holds its connection until dropped");
        let replies = connection.send(packed, count).await;
        if replies.is_err() {
            self.pool.drop_idle();
        }
        replies
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(connection) = self.connection.take() else {
            return;
        };
        if connection.owed {
            self.pool.open.fetch_sub(1, Ordering::Relaxed);
        } else {
            self.pool.idle.lock().expect("direct pool lock").push(connection);
        }
    }
}

struct DirectConnection {
    stream: TcpStream,
    buffer: BytesMut,
    codec: ValueCodec,
    /// A pipeline was sent and not all its replies read (or it failed):
    /// the connection's stream is out of step, never to be reused.
    owed: bool,
}

impl DirectConnection {
    /// Whether nothing came from Redis since the last reply was read:
    /// an idle connection with something to read was closed (or is out of
    /// step). Costs a read only when the socket's readiness says there may
    /// be something.
    fn is_quiet(&self) -> bool {
        if self.stream.readable().now_or_never().is_none() {
            return true;
        }
        matches!(self.stream.try_read(&mut [0; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    async fn send(&mut self, packed: &[u8], count: usize) -> RedisResult<Vec<Value>> {
        self.owed = true;
        self.stream.write_all(packed).await?;
        let mut replies = Vec::with_capacity(count);
        while replies.len() < count {
            if let Some(value) = self.codec.decode(&mut self.buffer)? {
                replies.push(value);
                continue;
            }
            if self.stream.read_buf(&mut self.buffer).await? == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
        }
        self.owed = false;
        Ok(replies)
    }
}
