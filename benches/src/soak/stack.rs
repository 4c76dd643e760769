//! The soak's processes: FerretDB, one Redis, the origin and two proxy
//! instances, each a separate process of the release build on 127.0.0.1.
//!
//! The driver owns them rather than the shell script because the chaos loop
//! kills and restarts Redis and the origin: owning the children, it knows to
//! the millisecond when the origin was down (to tell expected 502/504s from
//! findings) and can restart each on the same port with the same settings.
//! Every child is a [`ManagedChild`] from the e2e harness: killed by pid on
//! drop, and killed by the kernel if the driver dies first
//! (`PR_SET_PDEATHSIG`), so no run leaves a process behind. Each also gets
//! a process group of its own, so a Ctrl-C in the terminal reaches only the
//! driver, which then stops its load and still reports, with its servers
//! intact for the final checks.

use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt;

use anyhow::{anyhow, bail, Context};
use e2e::process::{free_port, ManagedChild};

use crate::programs::Programs;

/// HS256 secret of this run's origin and proxies; only ever on 127.0.0.1.
pub const SECRET: &str = "soak-secret-0123456789abcdef0123456789abcdef";
pub const ADMIN_EMAIL: &str = "soak-admin@example.com";
pub const ADMIN_PASSWORD: &str = "soak-admin-password";
/// How long a server may take to come up (FerretDB and the origin create
/// indexes first; a loaded 2-core machine is slow).
const STARTUP_LIMIT: Duration = Duration::from_secs(30);
/// Fresh ports tried for a first start: a port found free may be taken by
/// someone else before the server binds it.
const START_ATTEMPTS: usize = 5;
/// How long a process gets to exit on SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Where the binaries and the proxies' configuration are.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub programs: Programs,
    /// The proxies' config.toml (the shipped one).
    pub config: PathBuf,
}

/// Redis settings of the soak.
#[derive(Clone, Debug)]
pub struct RedisSettings {
    /// `--maxmemory`, e.g. `64mb`.
    pub maxmemory: String,
}

// === Redis ===

/// The one Redis both proxies share: no persistence (a restart comes back
/// empty, as after a crash), bounded memory, `volatile-lru` so that only
/// keys with a TTL (entries) are evicted and tag generations never are.
pub struct Redis {
    pub port: u16,
    bin: PathBuf,
    settings: RedisSettings,
    dir: PathBuf,
    log: PathBuf,
    child: Option<ManagedChild>,
}

impl Redis {
    pub async fn start(bin: &Path, settings: &RedisSettings, dir: &Path, logs: &Path) -> anyhow::Result<Redis> {
        let mut last_error = anyhow!("no attempt made");
        for _ in 0..START_ATTEMPTS {
            let mut redis = Redis {
                port: free_port(),
                bin: bin.to_owned(),
                settings: settings.clone(),
                dir: dir.to_owned(),
                log: logs.join("redis.log"),
                child: None,
            };
            match redis.spawn().await {
                Ok(()) => return Ok(redis),
                Err(err) => last_error = err,
            }
        }
        Err(last_error.context(format!("redis-server did not start in {START_ATTEMPTS} attempts")))
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new(&self.bin);
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args([
                "--maxmemory",
                &self.settings.maxmemory,
                "--maxmemory-policy",
                "volatile-lru",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&self.log)
            .env_clear()
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = spawn("redis-server", command)?;
        let port = self.port;
        let deadline = Instant::now() + STARTUP_LIMIT;
        while !redis_answers_ping(port).await {
            if child.has_exited() {
                bail!(
                    "redis-server exited during start-up on port {port}; see {}",
                    self.log.display()
                );
            }
            if Instant::now() > deadline {
                bail!("redis-server did not answer PING within {STARTUP_LIMIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(ManagedChild::pid)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// kill -9, then a new, empty server on the same port. Returns the old
    /// and new pids.
    pub async fn kill_and_restart(&mut self) -> anyhow::Result<(u32, u32)> {
        let old = self.pid().unwrap_or_default();
        // Dropping the child is SIGKILL and reap.
        self.child = None;
        // The port is ours: retry only for the moment the kernel may need
        // to release it.
        let mut last_error = anyhow!("no attempt made");
        for _ in 0..START_ATTEMPTS {
            match self.spawn().await {
                Ok(()) => return Ok((old, self.pid().unwrap_or_default())),
                Err(err) => last_error = err,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(last_error.context(format!("restarting redis-server on port {}", self.port)))
    }

    /// SIGSTOP: Redis keeps its data and its socket but answers nothing.
    pub fn pause(&self) {
        if let Some(child) = &self.child {
            child.signal(libc::SIGSTOP);
        }
    }

    pub fn resume(&self) {
        if let Some(child) = &self.child {
            child.signal(libc::SIGCONT);
        }
    }
}

async fn redis_answers_ping(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).await.ok()?;
        Some(&reply == b"+PONG\r\n")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Some(true))
    )
}

// === FerretDB ===

/// FerretDB on its SQLite backend, as DESIGN.md runs it, data under the
/// soak's folder (emptied first). Like the e2e harness's `MongoServer`,
/// but in a process group of its own (see the module docs).
pub struct FerretDb {
    port: u16,
    _child: ManagedChild,
}

impl FerretDb {
    pub async fn start(bin: &Path, dir: &Path, logs: &Path) -> anyhow::Result<FerretDb> {
        let log = logs.join("ferretdb.log");
        let mut last_error = anyhow!("no attempt made");
        for _ in 0..START_ATTEMPTS {
            let _ = std::fs::remove_dir_all(dir);
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let port = free_port();
            let mut command = Command::new(bin);
            command
                .arg("--handler=sqlite")
                .arg(format!("--sqlite-url=file:{}/", dir.display()))
                .arg(format!("--state-dir={}", dir.display()))
                .arg(format!("--listen-addr=127.0.0.1:{port}"))
                // Without this every instance binds the debug port 8088.
                .arg("--debug-addr=-")
                .arg("--telemetry=disable")
                .arg("--log-level=error")
                .env_clear()
                .stdout(Stdio::from(append(&log)?))
                .stderr(Stdio::from(append(&log)?));
            let mut child = spawn("ferretdb", command)?;
            let deadline = Instant::now() + STARTUP_LIMIT;
            let ready = loop {
                if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                    break Ok(());
                }
                if child.has_exited() {
                    break Err(anyhow!("ferretdb exited during start-up; see {}", log.display()));
                }
                if Instant::now() > deadline {
                    break Err(anyhow!("ferretdb did not listen within {STARTUP_LIMIT:?}"));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            match ready {
                Ok(()) => return Ok(FerretDb { port, _child: child }),
                Err(err) => last_error = err,
            }
        }
        Err(last_error.context(format!("ferretdb did not start in {START_ATTEMPTS} attempts")))
    }

    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/", self.port)
    }
}

// === Origin ===

/// The reference origin on FerretDB; restarted on the same port.
pub struct Origin {
    pub addr: SocketAddr,
    bin: PathBuf,
    mongo_uri: String,
    log: PathBuf,
    cwd: PathBuf,
    child: Option<ManagedChild>,
}

impl Origin {
    pub async fn start(bin: &Path, mongo_uri: String, logs: &Path, cwd: &Path) -> anyhow::Result<Origin> {
        let mut last_error = anyhow!("no attempt made");
        for _ in 0..START_ATTEMPTS {
            let mut origin = Origin {
                addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
                bin: bin.to_owned(),
                mongo_uri: mongo_uri.clone(),
                log: logs.join("origin.log"),
                cwd: cwd.to_owned(),
                child: None,
            };
            match origin.spawn().await {
                Ok(()) => return Ok(origin),
                Err(err) => last_error = err,
            }
        }
        Err(last_error.context(format!("the origin did not start in {START_ATTEMPTS} attempts")))
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new(&self.bin);
        command
            .env_clear()
            .env("ORIGIN_LISTEN", self.addr.to_string())
            .env("MONGO_URI", &self.mongo_uri)
            .env("MONGO_DB", "soak")
            .env("JWT_SECRET_KEY", SECRET)
            // Registration and login of the soak's users stay cheap.
            .env("BCRYPT_COST", "4")
            // Tokens outlive any soak; expiry is not what is being tested.
            .env("JWT_TTL", "86400")
            .env("ADMIN_EMAIL", ADMIN_EMAIL)
            .env("ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("LOG", "warn,mongodb=warn")
            .env("RUST_BACKTRACE", "1")
            // The binaries read `.env` from their working directory: run them
            // where none is, so a developer's `.env` cannot change the soak.
            .current_dir(&self.cwd)
            .stdout(Stdio::from(append(&self.log)?))
            .stderr(Stdio::from(append(&self.log)?));
        let mut child = spawn("origin", command)?;
        let url = format!("http://{}/healthz", self.addr);
        let client = local_client();
        let deadline = Instant::now() + STARTUP_LIMIT;
        loop {
            if let Ok(resp) = client.get(&url).send().await {
                if resp.status().is_success() {
                    break;
                }
            }
            if child.has_exited() {
                bail!("the origin exited during start-up; see {}", self.log.display());
            }
            if Instant::now() > deadline {
                bail!("the origin was not healthy within {STARTUP_LIMIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(ManagedChild::pid)
    }

    /// kill -9: in-flight requests are cut off; the port refuses until
    /// [`start_again`](Self::start_again).
    pub fn kill(&mut self) -> Option<u32> {
        let pid = self.pid();
        self.child = None;
        pid
    }

    /// Starts the origin again on the same port, returning once it is
    /// healthy.
    pub async fn start_again(&mut self) -> anyhow::Result<u32> {
        let mut last_error = anyhow!("no attempt made");
        for _ in 0..START_ATTEMPTS {
            match self.spawn().await {
                Ok(()) => return Ok(self.pid().unwrap_or_default()),
                Err(err) => last_error = err,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(last_error.context(format!("restarting the origin on {}", self.addr)))
    }

    fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_gracefully(child);
        }
    }
}

// === Proxy ===

/// One proxy instance: the shipped config, `REDIS_URL` to the shared Redis.
pub struct ProxyProcess {
    /// `a` or `b`.
    pub name: &'static str,
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub log: PathBuf,
    child: std::sync::Mutex<Option<ManagedChild>>,
    pid: u32,
}

impl ProxyProcess {
    async fn start(
        name: &'static str,
        binaries: &Binaries,
        upstream: SocketAddr,
        redis_url: &str,
        logs: &Path,
        cwd: &Path,
    ) -> anyhow::Result<ProxyProcess> {
        let log = logs.join(format!("proxy-{name}.log"));
        let mut last_error = anyhow!("no attempt made");
        for _ in 0..START_ATTEMPTS {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let admin_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let mut command = Command::new(&binaries.programs.proxy);
            command
                .arg("--config")
                .arg(&binaries.config)
                .args(["--listen", &addr.to_string(), "--admin-listen", &admin_addr.to_string()])
                .args(["--upstream", &format!("http://{upstream}")])
                .env_clear()
                .env("REDIS_URL", redis_url)
                .env("JWT_SECRET_KEY", SECRET)
                .env("LOG", "warn")
                .env("RUST_BACKTRACE", "1")
                .current_dir(cwd)
                .stdout(Stdio::from(append(&log)?))
                .stderr(Stdio::from(append(&log)?));
            let mut child = spawn("proxy", command)?;
            match wait_ready(&mut child, admin_addr).await {
                Ok(()) => {
                    return Ok(ProxyProcess {
                        name,
                        addr,
                        admin_addr,
                        log,
                        pid: child.pid(),
                        child: std::sync::Mutex::new(Some(child)),
                    })
                }
                Err(err) => last_error = err,
            }
        }
        Err(last_error.context(format!("proxy {name} did not start; see {}", log.display())))
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// False once the process has exited (a crash: nothing stops it
    /// before the end of the soak).
    pub fn is_running(&self) -> bool {
        let mut child = self.child.lock().expect("proxy child lock");
        child.as_mut().is_some_and(|c| !c.has_exited())
    }

    /// The proxy's resident set size, kB, from `/proc/<pid>/status`.
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid)
    }

    /// Its admin `/metrics` page.
    pub async fn metrics(&self) -> Option<String> {
        let url = format!("http://{}/metrics", self.admin_addr);
        local_client().get(url).send().await.ok()?.text().await.ok()
    }

    fn stop(&self) -> bool {
        let child = self.child.lock().expect("proxy child lock").take();
        child.is_some_and(stop_gracefully)
    }
}

/// Until `/readyz` answers 200: the upstream and Redis are reachable.
async fn wait_ready(child: &mut ManagedChild, admin: SocketAddr) -> anyhow::Result<()> {
    let client = local_client();
    let url = format!("http://{admin}/readyz");
    let deadline = Instant::now() + STARTUP_LIMIT;
    loop {
        if let Ok(resp) = client.get(&url).send().await {
            if resp.status().is_success() {
                return Ok(());
            }
        }
        if child.has_exited() {
            bail!("the proxy exited during start-up");
        }
        if Instant::now() > deadline {
            bail!("the proxy was not ready within {STARTUP_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// === Stack ===

/// Everything the soak runs against.
pub struct Stack {
    pub redis: tokio::sync::Mutex<Redis>,
    pub origin: tokio::sync::Mutex<Origin>,
    /// The origin's address (it never changes across restarts).
    pub origin_addr: SocketAddr,
    pub proxies: [ProxyProcess; 2],
    mongo: FerretDb,
}

impl Stack {
    /// Starts every process; logs go to `out/logs/`.
    pub async fn start(binaries: &Binaries, redis: &RedisSettings, out: &Path) -> anyhow::Result<Stack> {
        // Absolute, because redis-server moves into its `--dir` before it
        // opens its `--logfile`: a relative log path would not exist there.
        let out = &std::path::absolute(out).with_context(|| format!("resolving {}", out.display()))?;
        let logs = out.join("logs");
        let redis_dir = out.join("redis");
        for dir in [&logs, &redis_dir] {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        // Each run starts its logs afresh.
        for name in ["ferretdb.log", "redis.log", "origin.log", "proxy-a.log", "proxy-b.log"] {
            let _ = std::fs::remove_file(logs.join(name));
        }
        let mongo = FerretDb::start(&binaries.programs.ferretdb, &out.join("ferretdb"), &logs).await?;
        let redis = Redis::start(&binaries.programs.redis, redis, &redis_dir, &logs).await?;
        let origin = Origin::start(&binaries.programs.origin, mongo.uri(), &logs, out).await?;
        let redis_url = redis.url();
        let a = ProxyProcess::start("a", binaries, origin.addr, &redis_url, &logs, out).await?;
        let b = ProxyProcess::start("b", binaries, origin.addr, &redis_url, &logs, out).await?;
        Ok(Stack {
            origin_addr: origin.addr,
            redis: tokio::sync::Mutex::new(redis),
            origin: tokio::sync::Mutex::new(origin),
            proxies: [a, b],
            mongo,
        })
    }

    /// Stops the proxies and the origin with SIGTERM (then SIGKILL after a
    /// grace period); Redis and FerretDB are killed by pid when dropped.
    /// Returns the names of proxies that did not exit on SIGTERM in time.
    pub async fn stop(self) -> Vec<&'static str> {
        let Stack {
            redis,
            origin,
            proxies,
            mongo,
            ..
        } = self;
        let mut origin = origin.into_inner();
        let redis = redis.into_inner();
        // Resumed first, in case a fault left it paused (SIGKILL would end
        // it anyway).
        redis.resume();
        tokio::task::spawn_blocking(move || {
            let slow = proxies.iter().filter(|p| !p.stop()).map(|p| p.name).collect();
            origin.stop();
            drop((redis, mongo));
            slow
        })
        .await
        .unwrap_or_default()
    }
}

/// SIGTERM, then SIGKILL if the process is still there after
/// [`STOP_GRACE`]. True when it exited on SIGTERM.
fn stop_gracefully(mut child: ManagedChild) -> bool {
    child.signal(libc::SIGTERM);
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if child.has_exited() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
    // Dropping `child` kills and reaps it.
}

/// Spawns `command` as a [`ManagedChild`] in a process group of its own.
pub fn spawn(name: &'static str, mut command: Command) -> anyhow::Result<ManagedChild> {
    command.process_group(0);
    ManagedChild::spawn(name, command).with_context(|| format!("running {name}"))
}

pub fn append(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// `VmRSS` of `pid` in kB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// An HTTP client for 127.0.0.1 only: no proxy from the environment may
/// stand between the soak and its servers.
pub fn local_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("a plain HTTP client builds")
}
