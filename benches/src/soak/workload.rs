//! The soak's requests: an open-loop schedule of reads and writes through
//! either proxy at random, the checker judging every answer, and the
//! resolver finding out what happened to writes with an unknown outcome.
//!
//! Open loop: request `i` is due at `start + i / rate` and is sent then on
//! a task of its own, whatever earlier requests are doing, so a slow or
//! stalled proxy shows up as latency and in-flight requests, never as fewer
//! requests sent. Latency is measured from the due time.
//!
//! Each answer is judged by the rules of [`super::ledger`]; writes whose
//! outcome the client cannot know are resolved by reading the origin
//! directly (`Workload::resolve`), and [`Workload::probe`] makes room for
//! a missing invalidation to show.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use rand::Rng;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::ledger::{self, Floor, Ledger, Verdict};
use super::stack::{self, Stack};

/// An answer later than this is a transport error (`error:timeout`). Far
/// above the proxy's own limits except its 30 s upstream response timeout,
/// which nothing in the soak should come near.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the resolver reads the origin directly.
const RESOLVE_POLL: Duration = Duration::from_millis(100);
/// After the origin shows an unknown write committed, how long before
/// reads must see it. A proxy invalidates as soon as the origin's answer
/// reaches it — milliseconds after the commit — or, while Redis fails,
/// within `invalidation_wait` (1 s in the shipped config). Reads that start
/// earlier may legitimately see the version before, so the floor is raised
/// only after this.
const LEARN_GRACE: Duration = Duration::from_millis(1500);
/// An unknown write the origin still does not show this long after it was
/// sent is taken as lost: the origin commits a PUT within milliseconds, and
/// one cut off by a kill never commits. (The proxy would wait up to its
/// 30 s response timeout for a stuck origin; should a write commit that
/// late, the ledger recognises the version as a late commit, not a stale
/// read.)
const LOST_AFTER: Duration = Duration::from_secs(10);
/// Examples kept of each kind of finding.
const EXAMPLES: usize = 50;
/// How long a probe waits, with new writes paused, for writes in flight to
/// be answered (and their invalidations applied) before its own.
const PROBE_SETTLE: Duration = Duration::from_millis(300);
/// A probe's write is closed (FIN) this many milliseconds after being
/// sent: after the proxy has read it, while it most likely still waits for
/// the origin (a PUT takes the origin several milliseconds on FerretDB).
/// A reset instead could discard the request unread.
const PROBE_LINGER_MS: std::ops::RangeInclusive<u64> = 1..=5;
/// Regular dropped writes are closed (FIN or RST at random) within this
/// many milliseconds of being sent, so the drop lands anywhere from before
/// the proxy forwards to after it invalidated.
const DROP_LINGER_MS: std::ops::RangeInclusive<u64> = 0..=25;
/// How long a probe keeps writes paused waiting for its write's outcome:
/// the origin shows a commit within milliseconds, plus the resolver's
/// grace. A write not seen committed by then is resolved in the background
/// (it takes [`LOST_AFTER`] to be called lost) with writes resumed.
const PROBE_WAIT: Duration = Duration::from_millis(3500);

/// What the workload is asked to do.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WorkloadSettings {
    /// Offered requests per second.
    pub rate: u64,
    pub users: usize,
    /// Share of requests that are writes, percent.
    pub write_percent: u32,
    /// Share of writes whose connection the client drops mid-write, percent.
    pub drop_percent: u32,
}

/// A user of the soak and its token.
struct SoakUser {
    id: String,
    token: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadKind {
    /// `GET /users/{id}`
    User,
    /// `GET /users?per_page=100`: every user on one page.
    ListAll,
    /// `GET /users`: the first page of 20.
    ListFirst,
    /// `GET /users?page=2&per_page=20`
    ListSecond,
    /// `GET /me` with the user's own token.
    Me,
}

impl ReadKind {
    fn label(self) -> &'static str {
        match self {
            ReadKind::User => "get-user",
            ReadKind::ListAll => "list-all",
            ReadKind::ListFirst => "list-page-1",
            ReadKind::ListSecond => "list-page-2",
            ReadKind::Me => "me",
        }
    }
}

/// How a dropped write ends on the client's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DropVariant {
    /// The whole request is sent; the socket is closed 0–25 ms later,
    /// before any answer is read: the drop lands before, during or after
    /// the origin's commit and the proxy's invalidation.
    AfterSend,
    /// The whole request is sent and the socket closed as soon as the
    /// answer starts arriving, unread: the outcome is unknown to the client
    /// although the proxy finished.
    AfterResponse,
    /// Headers and half the body are sent, then the socket is closed: the
    /// proxy must not let a truncated body commit anything.
    MidBody,
}

impl DropVariant {
    const ALL: [DropVariant; 3] = [DropVariant::AfterSend, DropVariant::AfterResponse, DropVariant::MidBody];

    fn label(self) -> &'static str {
        match self {
            DropVariant::AfterSend => "after-send",
            DropVariant::AfterResponse => "after-response",
            DropVariant::MidBody => "mid-body",
        }
    }
}

enum Op {
    Read {
        kind: ReadKind,
        user: usize,
        /// Whose token is sent (always `user` for `Me`).
        token_of: usize,
    },
    Write {
        user: usize,
        version: u64,
        as_admin: bool,
        dropped: Option<DropVariant>,
    },
}

// === findings ===

/// A read that returned a version older than its floor.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StaleRead {
    pub op: &'static str,
    pub instance: &'static str,
    pub path: String,
    pub user: usize,
    pub seen: u64,
    pub floor: Floor,
    pub start_s: f64,
    pub end_s: f64,
    pub x_cache: String,
    pub cache_status: String,
    pub age: String,
    /// The chaos event before the read and the seconds since it ended,
    /// filled in by the report.
    pub after_chaos: Option<String>,
}

/// An answer that cannot be right whatever the timing: a version never
/// sent, another user's data, an unparseable body.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Anomaly {
    pub kind: &'static str,
    pub op: &'static str,
    pub instance: &'static str,
    pub path: String,
    pub detail: String,
    pub start_s: f64,
}

/// A 5xx answer, to be classified against the origin's down windows.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FiveXx {
    pub status: u16,
    pub op: &'static str,
    pub instance: &'static str,
    pub path: String,
    pub start_s: f64,
    pub end_s: f64,
    pub x_cache: String,
    pub error: String,
}

/// An answer that is neither 2xx nor 5xx (the workload only sends valid
/// requests), or a dropped-write's connection failure.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Unexpected {
    pub status: String,
    pub op: &'static str,
    pub instance: &'static str,
    pub path: String,
    pub start_s: f64,
    pub detail: String,
}

/// One of the slowest answers, for finding out what made it slow.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Slow {
    pub ms: f64,
    pub op: &'static str,
    pub instance: &'static str,
    pub path: String,
    pub status: u16,
    pub start_s: f64,
    pub x_cache: String,
    /// The chaos event before it, filled in by the report.
    pub after_chaos: Option<String>,
}

/// Slowest answers kept.
const SLOWEST: usize = 10;

/// What happened to the writes.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct WriteTally {
    pub acknowledged: u64,
    /// Answered with something other than 2xx and this user's new version.
    pub unknown_answer: u64,
    /// No answer: transport error or timeout.
    pub unknown_error: u64,
    /// Dropped on purpose, by variant and by close (`fin`/`rst`).
    pub dropped: BTreeMap<String, u64>,
    /// Unknown outcomes the origin showed committed.
    pub resolved_committed: u64,
    /// Unknown outcomes the origin never showed.
    pub resolved_lost: u64,
    /// Writes turned into reads because every user had a write unresolved.
    pub skipped_all_users_busy: u64,
    /// Writes turned into reads because a probe had writes paused.
    pub paused_for_probe: u64,
}

/// What the dropped-write probes found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ProbeTally {
    pub run: u64,
    /// The probe's write committed: a missed invalidation would show.
    pub conclusive: u64,
    /// The probe's write was not seen committed in time (the drop came
    /// before the proxy forwarded it, or the origin was down).
    pub write_lost: u64,
    /// No user was free for a write.
    pub skipped: u64,
    /// Stale reads counted while a probe ran (its own reads and any other).
    pub stale_reads: u64,
}

/// Everything counted while the soak runs.
pub struct Tally {
    /// Requests of the open-loop schedule.
    pub offered: u64,
    /// Every request made, probes and the final sweep included (counted
    /// when it ends, with its status).
    pub sent: u64,
    /// By status code, or `error:<kind>` for no answer.
    pub statuses: BTreeMap<String, u64>,
    pub by_op: BTreeMap<&'static str, BTreeMap<String, u64>>,
    pub by_instance: BTreeMap<&'static str, BTreeMap<String, u64>>,
    /// Versions judged (one per user per answer).
    pub checks: u64,
    pub stale: u64,
    pub late_commits: u64,
    pub stale_examples: Vec<StaleRead>,
    pub anomalies: BTreeMap<&'static str, u64>,
    pub anomaly_examples: Vec<Anomaly>,
    pub five_xx: Vec<FiveXx>,
    pub unexpected: u64,
    pub unexpected_examples: Vec<Unexpected>,
    pub writes: WriteTally,
    pub probes: ProbeTally,
    /// Microseconds from due time to the end of the answer, overall and
    /// by operation.
    pub latency_us: Histogram<u64>,
    pub latency_by_op: BTreeMap<&'static str, Histogram<u64>>,
    /// The slowest answers, slowest first.
    pub slowest: Vec<Slow>,
    pub in_flight_max: u64,
}

/// Microseconds, 1 µs to 10 minutes, 3 significant digits.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

impl Default for Tally {
    fn default() -> Tally {
        Tally {
            offered: 0,
            sent: 0,
            statuses: BTreeMap::new(),
            by_op: BTreeMap::new(),
            by_instance: BTreeMap::new(),
            checks: 0,
            stale: 0,
            late_commits: 0,
            stale_examples: Vec::new(),
            anomalies: BTreeMap::new(),
            anomaly_examples: Vec::new(),
            five_xx: Vec::new(),
            unexpected: 0,
            unexpected_examples: Vec::new(),
            writes: WriteTally::default(),
            probes: ProbeTally::default(),
            latency_us: latency_histogram(),
            latency_by_op: BTreeMap::new(),
            slowest: Vec::new(),
            in_flight_max: 0,
        }
    }
}

impl Tally {
    fn status(&mut self, op: &'static str, instance: &'static str, status: &str) {
        self.sent += 1;
        for map in [
            &mut self.statuses,
            self.by_op.entry(op).or_default(),
            self.by_instance.entry(instance).or_default(),
        ] {
            *map.entry(status.to_owned()).or_default() += 1;
        }
    }

    /// Records the latency of an answer, which is `slow` with the time
    /// filled in.
    fn latency(&mut self, due: Instant, mut slow: Slow) {
        let us = due.elapsed().as_micros() as u64;
        self.latency_us.saturating_record(us);
        self.latency_by_op
            .entry(slow.op)
            .or_insert_with(latency_histogram)
            .saturating_record(us);
        slow.ms = us as f64 / 1000.0;
        if self.slowest.len() < SLOWEST || self.slowest.last().is_some_and(|s| s.ms < slow.ms) {
            let at = self.slowest.partition_point(|s| s.ms >= slow.ms);
            self.slowest.insert(at, slow);
            self.slowest.truncate(SLOWEST);
        }
    }

    fn anomaly(&mut self, anomaly: Anomaly) {
        *self.anomalies.entry(anomaly.kind).or_default() += 1;
        if self.anomaly_examples.len() < EXAMPLES {
            self.anomaly_examples.push(anomaly);
        }
    }

    fn unexpected(&mut self, unexpected: Unexpected) {
        self.unexpected += 1;
        if self.unexpected_examples.len() < EXAMPLES {
            self.unexpected_examples.push(unexpected);
        }
    }
}

/// An answer read to the end.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: bytes::Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// This answer as a [`Slow`] candidate (its time is filled in later).
    fn slow(&self, op: &'static str, instance: &'static str, path: &str, start_s: f64) -> Slow {
        Slow {
            ms: 0.0,
            op,
            instance,
            path: path.to_owned(),
            status: self.status,
            start_s,
            x_cache: self.header("x-cache"),
            after_chaos: None,
        }
    }
}

fn error_kind(err: &reqwest::Error) -> &'static str {
    if err.is_timeout() {
        "error:timeout"
    } else if err.is_connect() {
        "error:connect"
    } else if err.is_body() || err.is_decode() {
        "error:body"
    } else {
        "error:request"
    }
}

// === Workload ===

/// The soak's users, the ledger and the tallies, shared by every request.
pub struct Workload {
    t0: Instant,
    settings: WorkloadSettings,
    users: Vec<SoakUser>,
    admin_token: String,
    /// User id → index.
    index: HashMap<String, usize>,
    proxies: [(&'static str, SocketAddr); 2],
    origin: SocketAddr,
    http: reqwest::Client,
    pub ledger: Mutex<Ledger>,
    pub tally: Mutex<Tally>,
    in_flight: AtomicU64,
    drops: AtomicU64,
    /// A probe is running: new writes are turned into reads.
    quiet: AtomicBool,
}

impl Workload {
    /// Registers `settings.users` users, logs each in, and logs the
    /// bootstrapped admin in, all at the origin itself: the shipped config
    /// limits `/register` and `/login` per client address (30 at once), which
    /// one address registering 50 users would meet; set-up is not under test.
    pub async fn setup(stack: &Stack, settings: WorkloadSettings, t0: Instant) -> anyhow::Result<Workload> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("building the HTTP client")?;
        let [a, b] = [&stack.proxies[0], &stack.proxies[1]];
        let origin = stack.origin_addr;
        let post = |addr: SocketAddr, path: &str, body: Value| {
            let request = http.post(format!("http://{addr}{path}")).json(&body);
            async move {
                let resp = request.send().await?;
                let status = resp.status();
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                anyhow::Ok((status, body))
            }
        };
        let mut users = Vec::with_capacity(settings.users);
        for i in 0..settings.users {
            let email = format!("u{i}@soak.example.com");
            let password = format!("soak-password-{i}");
            let (status, body) = post(
                origin,
                "/register",
                json!({"username": ledger::username(i, 0), "email": email, "password": password}),
            )
            .await?;
            if status != reqwest::StatusCode::CREATED {
                bail!("registering user {i} answered {status}: {body}");
            }
            let id = body["id"].as_str().context("a registered user has an id")?.to_owned();
            let (status, body) = post(origin, "/login", json!({"email": email, "password": password})).await?;
            let token = body["access_token"]
                .as_str()
                .with_context(|| format!("login of user {i} answered {status}: {body}"))?
                .to_owned();
            users.push(SoakUser { id, token });
        }
        let (status, body) = post(
            origin,
            "/login",
            json!({"email": stack::ADMIN_EMAIL, "password": stack::ADMIN_PASSWORD}),
        )
        .await?;
        let admin_token = body["access_token"]
            .as_str()
            .with_context(|| format!("admin login answered {status}: {body}"))?
            .to_owned();
        let index = users.iter().enumerate().map(|(i, u)| (u.id.clone(), i)).collect();
        Ok(Workload {
            t0,
            ledger: Mutex::new(Ledger::new(users.len())),
            settings,
            users,
            admin_token,
            index,
            proxies: [("a", a.addr), ("b", b.addr)],
            origin: stack.origin_addr,
            http,
            tally: Mutex::new(Tally::default()),
            in_flight: AtomicU64::new(0),
            drops: AtomicU64::new(0),
            quiet: AtomicBool::new(false),
        })
    }

    fn now_s(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
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

    /// Picks the next request. Writes go to a user with no write
    /// unresolved, reserving its next version.
    fn choose(&self) -> Op {
        let mut rng = rand::rng();
        let users = self.users.len();
        let write = rng.random_range(0..100) < self.settings.write_percent;
        if write && self.quiet.load(Ordering::Relaxed) {
            self.tally.lock().expect("tally lock").writes.paused_for_probe += 1;
        } else if write {
            let mut ledger = self.ledger.lock().expect("ledger lock");
            let first = rng.random_range(0..users);
            if let Some((user, version)) = (0..users)
                .map(|k| (first + k) % users)
                .find_map(|u| ledger.try_begin_write(u).map(|v| (u, v)))
            {
                let dropped = (rng.random_range(0..100) < self.settings.drop_percent).then(|| {
                    let n = self.drops.fetch_add(1, Ordering::Relaxed);
                    DropVariant::ALL[(n % DropVariant::ALL.len() as u64) as usize]
                });
                return Op::Write {
                    user,
                    version,
                    as_admin: rng.random_bool(0.5),
                    dropped,
                };
            }
            drop(ledger);
            self.tally.lock().expect("tally lock").writes.skipped_all_users_busy += 1;
        }
        let kind = match rng.random_range(0..100) {
            0..35 => ReadKind::User,
            35..50 => ReadKind::ListAll,
            50..60 => ReadKind::ListFirst,
            60..70 => ReadKind::ListSecond,
            _ => ReadKind::Me,
        };
        let user = rng.random_range(0..users);
        let token_of = if kind == ReadKind::Me {
            user
        } else {
            rng.random_range(0..users)
        };
        Op::Read { kind, user, token_of }
    }

    async fn execute(&self, op: Op, due: Instant) {
        let in_flight = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        {
            let mut tally = self.tally.lock().expect("tally lock");
            tally.offered += 1;
            tally.in_flight_max = tally.in_flight_max.max(in_flight);
        }
        let instance = self.proxies[rand::rng().random_range(0..2)];
        match op {
            Op::Read { kind, user, token_of } => self.read(instance, kind.label(), kind, user, token_of, due).await,
            Op::Write {
                user,
                version,
                as_admin,
                dropped,
            } => {
                let op = if dropped.is_some() { "put-dropped" } else { "put" };
                self.write(instance, op, user, version, as_admin, dropped, due).await
            }
        }
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    fn read_path(&self, kind: ReadKind, user: usize) -> String {
        match kind {
            ReadKind::User => format!("/users/{}", self.users[user].id),
            ReadKind::ListAll => "/users?per_page=100".into(),
            ReadKind::ListFirst => "/users".into(),
            ReadKind::ListSecond => "/users?page=2&per_page=20".into(),
            ReadKind::Me => "/me".into(),
        }
    }

    async fn get(&self, addr: SocketAddr, path: &str, token: &str) -> Result<Answer, reqwest::Error> {
        let resp = self
            .http
            .get(format!("http://{addr}{path}"))
            .bearer_auth(token)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await?;
        Ok(Answer { status, headers, body })
    }

    #[allow(clippy::too_many_arguments)]
    async fn read(
        &self,
        (instance, addr): (&'static str, SocketAddr),
        op: &'static str,
        kind: ReadKind,
        user: usize,
        token_of: usize,
        due: Instant,
    ) {
        let path = self.read_path(kind, user);
        // The floors are taken before the request leaves: every write
        // acknowledged before this point must be visible in the answer.
        let floors = self.ledger.lock().expect("ledger lock").floors();
        let start_s = self.now_s();
        let result = self.get(addr, &path, &self.users[token_of].token).await;
        let end_s = self.now_s();
        let answer = match result {
            Ok(answer) => answer,
            Err(err) => {
                self.tally
                    .lock()
                    .expect("tally lock")
                    .status(op, instance, error_kind(&err));
                return;
            }
        };
        {
            let mut tally = self.tally.lock().expect("tally lock");
            tally.status(op, instance, &answer.status.to_string());
            tally.latency(due, answer.slow(op, instance, &path, start_s));
        }
        if answer.status == 200 {
            let expect_id = matches!(kind, ReadKind::User | ReadKind::Me).then_some(user);
            let context = ReadContext {
                op,
                instance,
                path: &path,
                start_s,
                end_s,
            };
            self.judge(&context, &answer, expect_id, &floors);
        } else {
            self.record_failure(op, instance, &path, start_s, end_s, &answer);
        }
    }

    /// Records a non-2xx answer: 5xx for classification, anything else as
    /// unexpected.
    fn record_failure(
        &self,
        op: &'static str,
        instance: &'static str,
        path: &str,
        start_s: f64,
        end_s: f64,
        answer: &Answer,
    ) {
        let body = answer.json();
        let error = body["error"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&answer.body).chars().take(200).collect());
        let mut tally = self.tally.lock().expect("tally lock");
        if answer.status >= 500 {
            tally.five_xx.push(FiveXx {
                status: answer.status,
                op,
                instance,
                path: path.to_owned(),
                start_s,
                end_s,
                x_cache: answer.header("x-cache"),
                error,
            });
        } else {
            tally.unexpected(Unexpected {
                status: answer.status.to_string(),
                op,
                instance,
                path: path.to_owned(),
                start_s,
                detail: error,
            });
        }
    }

    /// Judges every soak user in a 200 answer against the floors its read
    /// started with. `expect_id`: the one user the answer must be about.
    fn judge(&self, cx: &ReadContext<'_>, answer: &Answer, expect_id: Option<usize>, floors: &[Floor]) {
        let body = answer.json();
        let objects: Vec<&Value> = match expect_id {
            Some(_) => vec![&body],
            None => body["users"].as_array().map(|a| a.iter().collect()).unwrap_or_default(),
        };
        let anomaly = |kind: &'static str, detail: String| Anomaly {
            kind,
            op: cx.op,
            instance: cx.instance,
            path: cx.path.to_owned(),
            detail,
            start_s: cx.start_s,
        };
        if objects.is_empty() {
            let detail = String::from_utf8_lossy(&answer.body).chars().take(200).collect();
            self.tally
                .lock()
                .expect("tally lock")
                .anomaly(anomaly("unparseable", detail));
            return;
        }
        let ledger = self.ledger.lock().expect("ledger lock");
        let mut tally = self.tally.lock().expect("tally lock");
        for object in objects {
            let id = object["id"].as_str().unwrap_or_default();
            let name = object["username"].as_str().unwrap_or_default();
            let Some(&user) = self.index.get(id) else {
                // The admin, in lists; an item or /me must be the user asked for.
                if expect_id.is_some() {
                    tally.anomaly(anomaly(
                        "wrong-user",
                        format!("asked for user {expect_id:?}, got id {id:?}"),
                    ));
                }
                continue;
            };
            if expect_id.is_some_and(|want| want != user) {
                tally.anomaly(anomaly(
                    "wrong-user",
                    format!("asked for user {expect_id:?}, got user {user} ({name})"),
                ));
                continue;
            }
            let seen = match ledger::parse_username(name) {
                Some((named, version)) if named == user => version,
                _ => {
                    tally.anomaly(anomaly("mismatch", format!("user {user} (id {id}) named {name:?}")));
                    continue;
                }
            };
            tally.checks += 1;
            let floor = floors[user];
            match ledger.judge(user, seen, floor.version) {
                Verdict::Fresh => {}
                Verdict::LateCommit => tally.late_commits += 1,
                Verdict::Phantom => tally.anomaly(anomaly("phantom", format!("user {user} at v{seen}, never sent"))),
                Verdict::Stale => {
                    tally.stale += 1;
                    if tally.stale_examples.len() < EXAMPLES {
                        tally.stale_examples.push(StaleRead {
                            op: cx.op,
                            instance: cx.instance,
                            path: cx.path.to_owned(),
                            user,
                            seen,
                            floor,
                            start_s: cx.start_s,
                            end_s: cx.end_s,
                            x_cache: answer.header("x-cache"),
                            cache_status: answer.header("cache-status"),
                            age: answer.header("age"),
                            after_chaos: None,
                        });
                    }
                }
            }
        }
    }

    /// Sends `user` its next `version` (reserved by the caller), then
    /// acknowledges it in the ledger or, if its outcome is unknown, resolves
    /// it from the origin. Returns once the user is free for its next write.
    #[allow(clippy::too_many_arguments)]
    async fn write(
        &self,
        instance: (&'static str, SocketAddr),
        op: &'static str,
        user: usize,
        version: u64,
        as_admin: bool,
        dropped: Option<DropVariant>,
        due: Instant,
    ) {
        let sent = Instant::now();
        let path = format!("/users/{}", self.users[user].id);
        let token = if as_admin {
            &self.admin_token
        } else {
            &self.users[user].token
        };
        let body = json!({"username": ledger::username(user, version)}).to_string();
        let unknown = match dropped {
            Some(variant) => {
                self.write_dropped(instance, op, variant, &path, token, &body).await;
                if op == "probe-write" {
                    "probe"
                } else {
                    variant.label()
                }
            }
            None => match self.write_answered(instance, op, &path, token, body, due).await {
                Ok(named) if named == (user, version) => {
                    // Acknowledged: reads sent from now on must see it.
                    self.ledger
                        .lock()
                        .expect("ledger lock")
                        .acknowledge(user, version, self.now_s());
                    self.tally.lock().expect("tally lock").writes.acknowledged += 1;
                    return;
                }
                Ok(named) => {
                    // An answer about another user or version: mixed up.
                    self.tally.lock().expect("tally lock").anomaly(Anomaly {
                        kind: "wrong-user",
                        op,
                        instance: instance.0,
                        path: path.clone(),
                        detail: format!("PUT of user {user} v{version} answered with {named:?}"),
                        start_s: self.now_s(),
                    });
                    "2xx-other-version"
                }
                Err(unknown) => unknown,
            },
        };
        self.resolve(user, version, sent, unknown).await;
    }

    /// A PUT whose answer is read. Returns `(user, version)` named by a 2xx
    /// answer; anything else is recorded and gives why the outcome is
    /// unknown (`5xx-answer`, `error:timeout`, ...).
    async fn write_answered(
        &self,
        (instance, addr): (&'static str, SocketAddr),
        op: &'static str,
        path: &str,
        token: &str,
        body: String,
        due: Instant,
    ) -> Result<(usize, u64), &'static str> {
        let start_s = self.now_s();
        let result = self
            .http
            .put(format!("http://{addr}{path}"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        let answer = match result {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let headers = resp.headers().clone();
                resp.bytes().await.map(|body| Answer { status, headers, body })
            }
            Err(err) => Err(err),
        };
        let end_s = self.now_s();
        let answer = match answer {
            Ok(answer) => answer,
            Err(err) => {
                let mut tally = self.tally.lock().expect("tally lock");
                tally.status(op, instance, error_kind(&err));
                tally.writes.unknown_error += 1;
                return Err(error_kind(&err));
            }
        };
        {
            let mut tally = self.tally.lock().expect("tally lock");
            tally.status(op, instance, &answer.status.to_string());
            tally.latency(due, answer.slow(op, instance, path, start_s));
        }
        if (200..300).contains(&answer.status) {
            let named = answer.json()["username"].as_str().and_then(ledger::parse_username);
            if named.is_none() {
                self.tally.lock().expect("tally lock").writes.unknown_answer += 1;
            }
            return named.ok_or("2xx-unparseable");
        }
        self.record_failure(op, instance, path, start_s, end_s, &answer);
        self.tally.lock().expect("tally lock").writes.unknown_answer += 1;
        Err(if answer.status >= 500 {
            "5xx-answer"
        } else {
            "non-2xx-answer"
        })
    }

    /// A PUT whose connection is dropped mid-write (see [`DropVariant`]).
    async fn write_dropped(
        &self,
        (instance, addr): (&'static str, SocketAddr),
        op: &'static str,
        variant: DropVariant,
        path: &str,
        token: &str,
        body: &str,
    ) {
        let start_s = self.now_s();
        let style = {
            let mut rng = rand::rng();
            if op == "probe-write" {
                (rng.random_range(PROBE_LINGER_MS), false)
            } else {
                (rng.random_range(DROP_LINGER_MS), rng.random_bool(0.5))
            }
        };
        let close = self.drop_write(addr, variant, style, path, token, body).await;
        let mut tally = self.tally.lock().expect("tally lock");
        tally.status(op, instance, "dropped");
        match close {
            Ok(close) => {
                *tally
                    .writes
                    .dropped
                    .entry(format!("{}/{close}", variant.label()))
                    .or_default() += 1
            }
            Err(err) => tally.unexpected(Unexpected {
                status: "dropped-write-failed".into(),
                op,
                instance,
                path: path.to_owned(),
                start_s,
                detail: format!("{err:#}"),
            }),
        }
    }

    /// Sends a PUT on a connection of its own and drops it mid-write as
    /// `variant` says: `linger_ms` after sending (for the variants that
    /// wait), with a reset if `rst`, else a FIN. Returns `fin` or `rst`.
    async fn drop_write(
        &self,
        addr: SocketAddr,
        variant: DropVariant,
        (linger_ms, rst): (u64, bool),
        path: &str,
        token: &str,
        body: &str,
    ) -> anyhow::Result<&'static str> {
        let head = format!(
            "PUT {path} HTTP/1.1\r\nhost: soak\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let linger = Duration::from_millis(linger_ms);
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        match variant {
            DropVariant::AfterSend => {
                stream.write_all(format!("{head}{body}").as_bytes()).await?;
                tokio::time::sleep(linger).await;
            }
            DropVariant::AfterResponse => {
                stream.write_all(format!("{head}{body}").as_bytes()).await?;
                let mut first = [0u8; 1];
                tokio::time::timeout(REQUEST_TIMEOUT, stream.read(&mut first)).await??;
            }
            DropVariant::MidBody => {
                stream
                    .write_all(format!("{head}{}", &body[..body.len() / 2]).as_bytes())
                    .await?;
                tokio::time::sleep(linger).await;
            }
        }
        // A client that vanishes (reset) or one that hangs up (FIN).
        if rst {
            stream.set_zero_linger()?;
        }
        drop(stream);
        Ok(if rst { "rst" } else { "fin" })
    }

    /// Finds out, from the origin directly, whether the write of `attempted`
    /// committed, and updates the ledger (which frees the user for its next
    /// write). Until then the user's floor stays where it was, which both
    /// outcomes satisfy.
    async fn resolve(&self, user: usize, attempted: u64, sent: Instant, cause: &'static str) {
        loop {
            tokio::time::sleep(RESOLVE_POLL).await;
            match self.direct_version(user).await {
                Ok(observed) if observed >= attempted => {
                    tokio::time::sleep(LEARN_GRACE).await;
                    self.ledger
                        .lock()
                        .expect("ledger lock")
                        .resolve(user, attempted, observed, cause, self.now_s());
                    self.tally.lock().expect("tally lock").writes.resolved_committed += 1;
                    return;
                }
                Ok(observed) if sent.elapsed() >= LOST_AFTER => {
                    self.ledger
                        .lock()
                        .expect("ledger lock")
                        .resolve(user, attempted, observed, cause, self.now_s());
                    self.tally.lock().expect("tally lock").writes.resolved_lost += 1;
                    return;
                }
                // Not committed yet, or the origin is down: ask again.
                _ => {}
            }
        }
    }

    /// The version of `user` the origin holds, read directly (no proxy).
    pub async fn direct_version(&self, user: usize) -> anyhow::Result<u64> {
        let answer = self
            .get(
                self.origin,
                &format!("/users/{}", self.users[user].id),
                &self.admin_token,
            )
            .await?;
        if answer.status != 200 {
            bail!("origin answered {}", answer.status);
        }
        match answer.json()["username"].as_str().and_then(ledger::parse_username) {
            Some((named, version)) if named == user => Ok(version),
            other => bail!("origin holds an unexpected username for user {user}: {other:?}"),
        }
    }

    /// A dropped-write probe. With one tag for every route (the shipped
    /// config), any write flushes every cached answer, so at the soak's
    /// write rate a write whose invalidation went missing is covered up by
    /// the next one long before the resolver may raise the floor. A probe
    /// makes room for it to show: it pauses new writes, caches one user's
    /// item, list and `/me` on both proxies, sends that user a write whose
    /// connection it drops within milliseconds (while the proxy waits for
    /// the origin), and once the origin shows it committed (and the grace
    /// for the proxy's invalidation has passed) reads them all again.
    pub async fn probe(&self) {
        self.quiet.store(true, Ordering::Relaxed);
        tokio::time::sleep(PROBE_SETTLE).await;
        let picked = {
            let mut ledger = self.ledger.lock().expect("ledger lock");
            let users = self.users.len();
            let first = rand::rng().random_range(0..users);
            (0..users)
                .map(|k| (first + k) % users)
                .find_map(|u| ledger.try_begin_write(u).map(|v| (u, v)))
        };
        let Some((user, version)) = picked else {
            self.quiet.store(false, Ordering::Relaxed);
            self.tally.lock().expect("tally lock").probes.skipped += 1;
            return;
        };
        let reads = async |op: &'static str| {
            for instance in self.proxies {
                for kind in [ReadKind::User, ReadKind::ListAll, ReadKind::Me] {
                    self.read(instance, op, kind, user, user, Instant::now()).await;
                }
            }
        };
        reads("probe-read").await;
        let stale_before = self.tally.lock().expect("tally lock").stale;
        let instance = self.proxies[rand::rng().random_range(0..2)];
        // Resolves once the outcome is known: committed (after the grace)
        // or, much later, lost.
        let write = self.write(
            instance,
            "probe-write",
            user,
            version,
            false,
            Some(DropVariant::AfterSend),
            Instant::now(),
        );
        tokio::pin!(write);
        let decided = tokio::time::timeout(PROBE_WAIT, &mut write).await.is_ok();
        let committed = decided && self.ledger.lock().expect("ledger lock").floor(user) >= version;
        if committed {
            reads("probe-read").await;
        }
        self.quiet.store(false, Ordering::Relaxed);
        if !decided {
            write.await;
        }
        let mut tally = self.tally.lock().expect("tally lock");
        tally.probes.run += 1;
        if committed {
            tally.probes.conclusive += 1;
        } else {
            tally.probes.write_lost += 1;
        }
        tally.probes.stale_reads += tally.stale - stale_before;
    }

    /// Requests in flight right now.
    /// What was counted; the rest, the HTTP client and its connections
    /// included, is dropped.
    pub fn into_tally(self) -> Tally {
        self.tally.into_inner().expect("tally lock")
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The end-of-run check, with no write in flight and no fault active:
    /// every user read through both proxies (item, `/me`, the full list)
    /// is judged against the ledger, and the ledger is compared with the
    /// origin itself. Returns `(reads, stale, ledger disagreements)`;
    /// stale reads and anomalies also go to the tally.
    pub async fn final_sweep(&self) -> FinalSweep {
        let stale_before = self.tally.lock().expect("tally lock").stale;
        let mut sweep = FinalSweep::default();
        for instance in self.proxies {
            for user in 0..self.users.len() {
                for kind in [ReadKind::User, ReadKind::Me] {
                    self.read(instance, "final-sweep", kind, user, user, Instant::now())
                        .await;
                    sweep.reads += 1;
                }
            }
            self.read(instance, "final-sweep", ReadKind::ListAll, 0, 0, Instant::now())
                .await;
            sweep.reads += 1;
        }
        for user in 0..self.users.len() {
            let (floor, writing) = {
                let ledger = self.ledger.lock().expect("ledger lock");
                (ledger.floor(user), ledger.is_writing(user))
            };
            if writing {
                // Its last write was abandoned unresolved (the run was cut
                // short): the origin may hold either version.
                sweep.unresolved += 1;
                continue;
            }
            match self.direct_version(user).await {
                Ok(version) if version == floor => {}
                Ok(version) => sweep
                    .ledger_disagreements
                    .push(format!("user {user}: ledger v{floor}, origin v{version}")),
                Err(err) => sweep.ledger_disagreements.push(format!("user {user}: {err:#}")),
            }
        }
        sweep.stale = self.tally.lock().expect("tally lock").stale - stale_before;
        sweep
    }
}

/// The end-of-run check's figures.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FinalSweep {
    pub reads: u64,
    pub stale: u64,
    /// Users whose version at the origin is not the ledger's floor: the
    /// checker's own consistency check (expected empty).
    pub ledger_disagreements: Vec<String>,
    /// Users left out of that check: their last write was abandoned
    /// unresolved when the run ended.
    pub unresolved: u64,
}

struct ReadContext<'a> {
    op: &'static str,
    instance: &'static str,
    path: &'a str,
    start_s: f64,
    end_s: f64,
}
