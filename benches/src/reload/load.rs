//! The open-loop load both scenarios run: cache hits, misses, writes and
//! rule-dependent requests, as registered users, through one address.
//!
//! Request `i` is due at `start + i / rate` and is sent then on a task of
//! its own whatever earlier ones are doing (as the soak's workload does), so
//! a stalled proxy shows up as latency and requests in flight, never as
//! fewer requests sent. Each request is sent once: a transport error is
//! recorded as a failed request, never retried. (The HTTP client itself
//! resends a request only when a pooled connection closed before any of it
//! was written, which is not a failure of the server.)
//!
//! Owns the users, the HTTP client and the samples; judging them is
//! [`super::judge`]'s business.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::rules::Kind;
use crate::soak::stack;

/// An answer later than this is a failed request (`timeout`). Far above
/// anything the proxy should take here; below the proxy's own 30 s upstream
/// timeout so a hung request is ours to report.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Users whose `GET /users/{id}` are the hot keys.
const HOT_USERS: usize = 4;
/// One write in this many is a registration (each adds a user for good,
/// making the origin's list pages slower); the rest rename a user.
const REGISTER_EVERY: u32 = 5;

/// What the load is asked to do.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LoadSettings {
    /// Offered requests per second.
    pub rate: u64,
    /// Users registered before the load.
    pub users: usize,
    /// Share of writes (PUT, POST /register), percent.
    pub write_percent: u32,
    /// Share of rule-dependent requests (`GET /users`), percent.
    pub rules_percent: u32,
}

/// One registered user.
struct User {
    id: String,
    token: String,
}

/// The users of the load and the bootstrapped admin's token.
pub struct Users {
    users: Vec<User>,
    admin_token: String,
    /// Names registrations and renames uniquely across scenarios.
    serial: AtomicU64,
}

impl Users {
    /// Registers `count` users directly at the origin (the proxy is not
    /// needed for this, nor judged on it) and logs each in, and the admin.
    pub async fn register(origin: SocketAddr, count: usize) -> anyhow::Result<Users> {
        let http = stack::local_client();
        let post = |path: &str, body: Value| {
            let request = http.post(format!("http://{origin}{path}")).json(&body);
            async move {
                let resp = request.send().await?;
                let status = resp.status();
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                anyhow::Ok((status, body))
            }
        };
        let login = |email: String, password: String| {
            let post = &post;
            async move {
                let (status, body) = post("/login", json!({"email": email, "password": password})).await?;
                body["access_token"]
                    .as_str()
                    .map(str::to_owned)
                    .with_context(|| format!("login of {email} answered {status}: {body}"))
            }
        };
        let mut users = Vec::with_capacity(count);
        for i in 0..count {
            let email = format!("r{i}@reload.example.com");
            let password = format!("reload-password-{i}");
            let (status, body) = post(
                "/register",
                json!({"username": format!("user-{i}"), "email": email, "password": password}),
            )
            .await?;
            if status != reqwest::StatusCode::CREATED {
                bail!("registering user {i} answered {status}: {body}");
            }
            let id = body["id"].as_str().context("a registered user has an id")?.to_owned();
            let token = login(email, password).await?;
            users.push(User { id, token });
        }
        let admin_token = login(stack::ADMIN_EMAIL.to_owned(), stack::ADMIN_PASSWORD.to_owned()).await?;
        Ok(Users {
            users,
            admin_token,
            serial: AtomicU64::new(0),
        })
    }

    fn next_serial(&self) -> u64 {
        self.serial.fetch_add(1, Ordering::Relaxed)
    }
}

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Status(u16),
    /// No answer; the class of transport error (see [`classify`]).
    Failed(&'static str),
}

impl Outcome {
    pub fn label(self) -> String {
        match self {
            Outcome::Status(status) => status.to_string(),
            Outcome::Failed(class) => format!("error:{class}"),
        }
    }
}

/// What `Cache-Status` said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheSeen {
    /// `proxy; hit; ttl=N` (N negative when stale).
    Hit { ttl_s: Option<i64> },
    /// `proxy; fwd=miss...`
    Miss,
    /// Anything else, or no header.
    Other,
}

impl CacheSeen {
    /// Parses an RFC 9211 `Cache-Status` value as the proxy writes it.
    pub fn parse(value: &str) -> CacheSeen {
        let params: Vec<&str> = value.split(';').map(str::trim).collect();
        if params.contains(&"hit") {
            let ttl_s = params
                .iter()
                .find_map(|p| p.strip_prefix("ttl="))
                .and_then(|t| t.parse().ok());
            CacheSeen::Hit { ttl_s }
        } else if params.contains(&"fwd=miss") {
            CacheSeen::Miss
        } else {
            CacheSeen::Other
        }
    }
}

/// One finished request.
#[derive(Clone, Debug)]
pub struct Sample {
    pub kind: Kind,
    /// When it was sent and when it ended, since the scenario's start.
    pub start: Duration,
    pub end: Duration,
    /// From its due time to its end (open loop: includes any lateness).
    pub latency_us: u64,
    pub outcome: Outcome,
    pub cache: CacheSeen,
    /// The raw `Cache-Status`, for examples.
    pub cache_status: String,
}

/// The class of a transport error, looked for down the error's sources:
/// what the client saw, not what it might mean.
pub fn classify(err: &reqwest::Error) -> &'static str {
    use std::error::Error as _;
    if err.is_timeout() {
        return "timeout";
    }
    let mut source = err.source();
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return "connect-refused",
                std::io::ErrorKind::ConnectionReset => return "reset",
                std::io::ErrorKind::ConnectionAborted => return "aborted",
                std::io::ErrorKind::BrokenPipe => return "broken-pipe",
                std::io::ErrorKind::TimedOut => return "timeout",
                _ => {}
            }
        }
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>() {
            if hyper.is_incomplete_message() {
                return "closed-before-answer";
            }
        }
        source = cause.source();
    }
    if err.is_connect() {
        "connect"
    } else if err.is_body() || err.is_decode() {
        "body"
    } else {
        "request"
    }
}

/// A request to make.
struct Op {
    kind: Kind,
    method: reqwest::Method,
    path: String,
    token: String,
    body: Option<Value>,
}

/// The load against one address: requests, their samples, counters.
pub struct Load {
    t0: Instant,
    settings: LoadSettings,
    users: Arc<Users>,
    target: SocketAddr,
    http: reqwest::Client,
    samples: Mutex<Vec<Sample>>,
    sent: AtomicU64,
    failed: AtomicU64,
    in_flight: AtomicU64,
    in_flight_max: AtomicU64,
}

impl Load {
    /// `t0` is the scenario's time origin, shared with its rule timeline.
    pub fn new(t0: Instant, settings: LoadSettings, users: Arc<Users>, target: SocketAddr) -> anyhow::Result<Load> {
        // One client: keep-alive, as many connections as requests in flight
        // need, all kept when idle; HTTP/1.1 as most clients speak it.
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .pool_max_idle_per_host(usize::MAX)
            .tcp_nodelay(true)
            .build()
            .context("building the HTTP client")?;
        Ok(Load {
            t0,
            settings,
            users,
            target,
            http,
            samples: Mutex::new(Vec::new()),
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            in_flight_max: AtomicU64::new(0),
        })
    }

    /// Requests sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Most requests in flight at once: far above the rate times the usual
    /// latency, the stack fell behind (failures may then be overload).
    pub fn in_flight_max(&self) -> u64 {
        self.in_flight_max.load(Ordering::Relaxed)
    }

    /// Failed requests so far (transport errors).
    pub fn failed_so_far(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// The samples, once every request has ended.
    pub fn take_samples(&self) -> Vec<Sample> {
        std::mem::take(&mut *self.samples.lock().expect("samples lock"))
    }

    /// Sends requests at the offered rate from `start` until `until` (or
    /// until `stop` turns true); returns the requests still in flight.
    pub async fn drive(self: &Arc<Self>, start: Instant, until: Instant, stop: watch::Receiver<bool>) -> JoinSet<()> {
        crate::programs::open_loop(self.settings.rate, start, until, stop, |due| {
            let (op, me) = (self.choose(), self.clone());
            async move { me.execute(op, due).await }
        })
        .await
    }

    fn choose(&self) -> Op {
        let mut rng = rand::rng();
        let users = &self.users.users;
        let any = |rng: &mut rand::rngs::ThreadRng| &users[rng.random_range(0..users.len())];
        let roll = rng.random_range(0..100);
        let writes = self.settings.write_percent;
        let rules = self.settings.rules_percent;
        if roll < writes {
            let serial = self.users.next_serial();
            if rng.random_range(0..REGISTER_EVERY) == 0 {
                return Op {
                    kind: Kind::Register,
                    method: reqwest::Method::POST,
                    path: "/register".into(),
                    token: String::new(),
                    body: Some(json!({
                        "username": format!("new-{serial}"),
                        "email": format!("n{serial}@reload.example.com"),
                        "password": format!("reload-password-n{serial}"),
                    })),
                };
            }
            let me = any(&mut rng);
            return Op {
                kind: Kind::Put,
                method: reqwest::Method::PUT,
                path: format!("/users/{}", me.id),
                token: me.token.clone(),
                body: Some(json!({"username": format!("put-{serial}")})),
            };
        }
        if roll < writes + rules {
            // Two in three as a user (the answer depends on the rules), one
            // as the admin (200 under both).
            return if rng.random_range(0..3) < 2 {
                Op {
                    kind: Kind::RulesUser,
                    method: reqwest::Method::GET,
                    path: "/users".into(),
                    token: any(&mut rng).token.clone(),
                    body: None,
                }
            } else {
                Op {
                    kind: Kind::RulesAdmin,
                    method: reqwest::Method::GET,
                    path: "/users?per_page=5".into(),
                    token: self.users.admin_token.clone(),
                    body: None,
                }
            };
        }
        // The rest: 60 % hot keys, 40 % any user.
        let (kind, target) = if rng.random_range(0..10) < 6 {
            (Kind::Hot, &users[rng.random_range(0..HOT_USERS.min(users.len()))])
        } else {
            (Kind::Cold, any(&mut rng))
        };
        Op {
            kind,
            method: reqwest::Method::GET,
            path: format!("/users/{}", target.id),
            token: any(&mut rng).token.clone(),
            body: None,
        }
    }

    async fn execute(&self, op: Op, due: Instant) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        let in_flight = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.in_flight_max.fetch_max(in_flight, Ordering::Relaxed);
        let start = self.t0.elapsed();
        let mut request = self
            .http
            .request(op.method, format!("http://{}{}", self.target, op.path));
        if !op.token.is_empty() {
            request = request.bearer_auth(&op.token);
        }
        if let Some(body) = &op.body {
            request = request.json(body);
        }
        let result = async {
            let resp = request.send().await?;
            let status = resp.status().as_u16();
            let cache_status = resp
                .headers()
                .get("cache-status")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            // Read to the end: an answer cut off mid-body is a failure.
            resp.bytes().await?;
            Ok::<_, reqwest::Error>((status, cache_status))
        }
        .await;
        let end = self.t0.elapsed();
        let (outcome, cache_status) = match result {
            Ok((status, cache_status)) => (Outcome::Status(status), cache_status),
            Err(err) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                (Outcome::Failed(classify(&err)), String::new())
            }
        };
        let sample = Sample {
            kind: op.kind,
            start,
            end,
            latency_us: due.elapsed().as_micros() as u64,
            outcome,
            cache: CacheSeen::parse(&cache_status),
            cache_status,
        };
        self.samples.lock().expect("samples lock").push(sample);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Waits for the requests still in flight (each ends within
/// [`REQUEST_TIMEOUT`]); returns how many had to be abandoned.
pub async fn drain(mut in_flight: JoinSet<()>) -> u64 {
    let limit = REQUEST_TIMEOUT + Duration::from_secs(5);
    let drained = tokio::time::timeout(limit, async { while in_flight.join_next().await.is_some() {} }).await;
    if drained.is_ok() {
        return 0;
    }
    let left = in_flight.len() as u64;
    in_flight.abort_all();
    while in_flight.join_next().await.is_some() {}
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_status_values_as_the_proxy_writes_them() {
        assert_eq!(
            CacheSeen::parse("proxy; hit; ttl=42"),
            CacheSeen::Hit { ttl_s: Some(42) }
        );
        assert_eq!(
            CacheSeen::parse("proxy; hit; ttl=-3; detail=stale-if-error"),
            CacheSeen::Hit { ttl_s: Some(-3) }
        );
        assert_eq!(CacheSeen::parse("proxy; fwd=miss; stored"), CacheSeen::Miss);
        assert_eq!(CacheSeen::parse("proxy; fwd=bypass"), CacheSeen::Other);
        assert_eq!(CacheSeen::parse(""), CacheSeen::Other);
    }
}
