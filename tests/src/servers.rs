//! Real Redis and real FerretDB (a MongoDB wire-protocol server), one per
//! caller, on free ports, with data in a temp folder, stopped on drop.
//!
//! No mock stands in for either. Each start retries on a fresh port when the
//! server does not come up, since a port that was free when picked may be
//! taken before the server binds it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::process::{find_binary, free_port, wait_until, ManagedChild};

/// How long a server may take to answer after it was spawned.
const STARTUP_LIMIT: Duration = Duration::from_secs(20);
/// Fresh ports tried before a start is declared failed.
const START_ATTEMPTS: usize = 5;

pub const FERRETDB_INSTALL_HINT: &str = "scripts/install-ferretdb (FerretDB 1.24.2 built with `go`; needs Go on PATH)";
pub const REDIS_INSTALL_HINT: &str = "apt-get install -y redis-server";

// === RedisServer ===

/// A `redis-server` of our own: no persistence, bound to loopback.
pub struct RedisServer {
    port: u16,
    child: Option<ManagedChild>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir for redis");
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            match spawn_redis(port, &dir, &[]) {
                Ok(child) => {
                    return RedisServer {
                        port,
                        child: Some(child),
                        dir,
                    }
                }
                Err(err) => last_error = err,
            }
        }
        panic!("redis-server did not start after {START_ATTEMPTS} attempts: {last_error}");
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `redis://127.0.0.1:<port>/0`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(ManagedChild::pid)
    }

    /// Kills the server; its port stays reserved for [`RedisServer::restart`].
    pub fn stop(&mut self) {
        self.child = None;
    }

    /// Starts a new, empty server on the same port (a restart that lost
    /// every key, as after a crash without persistence).
    pub fn restart(&mut self) {
        self.stop();
        let child = spawn_redis(self.port, &self.dir, &[]).unwrap_or_else(|e| panic!("redis restart failed: {e}"));
        self.child = Some(child);
    }

    /// SIGSTOP: the server keeps its data and its socket but answers nothing.
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

/// A `redis-server` on `port` with its files in `dir`, and `extra`
/// arguments (cluster mode, for one).
pub(crate) fn spawn_redis(port: u16, dir: &tempfile::TempDir, extra: &[&str]) -> Result<ManagedChild, String> {
    let binary = find_binary("redis-server", "REDIS_SERVER_BIN", &[], REDIS_INSTALL_HINT);
    let mut command = Command::new(binary);
    command
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            // As in production: bounded, and evicting only keys with a TTL
            // (entries, index sets, leases), never tag generations.
            "--maxmemory",
            "256mb",
            "--maxmemory-policy",
            "volatile-lru",
            // A replica syncs at once rather than after the default 5 s,
            // so a failover test's replica is ready to take over sooner.
            "--repl-diskless-sync-delay",
            "0",
        ])
        .args(["--dir".as_ref(), dir.path().as_os_str()])
        .args([
            "--logfile".as_ref(),
            dir.path().join(format!("redis-{port}.log")).as_os_str(),
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = ManagedChild::spawn("redis-server", command).map_err(|e| e.to_string())?;
    wait_until(&mut child, STARTUP_LIMIT, || redis_answers_ping(port))?;
    Ok(child)
}

/// `redis-cli <args>` run to its end.
pub(crate) fn redis_cli(args: &[&str]) -> std::process::Output {
    let binary = find_binary("redis-cli", "REDIS_CLI_BIN", &[], REDIS_INSTALL_HINT);
    Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli runs")
}

/// `redis-cli -p <port> <args>`'s output.
pub(crate) fn redis_cli_at(port: u16, args: &[&str]) -> String {
    let port = port.to_string();
    let args: Vec<&str> = ["-p", port.as_str()].into_iter().chain(args.iter().copied()).collect();
    String::from_utf8_lossy(&redis_cli(&args).stdout).into_owned()
}

/// Whether the node on `port` is a primary, or a replica whose link to
/// its primary is up (it holds a copy it may take over with).
pub(crate) fn redis_replication_ready(port: u16) -> bool {
    let info = redis_cli_at(port, &["info", "replication"]);
    info.contains("role:master") || info.contains("master_link_status:up")
}

pub(crate) fn redis_answers_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

// === MongoServer ===

/// FerretDB 1.24.2 on its SQLite backend, data in a temp folder.
pub struct MongoServer {
    port: u16,
    child: ManagedChild,
    _dir: tempfile::TempDir,
}

impl MongoServer {
    pub fn start() -> MongoServer {
        let binary = ferretdb_binary();
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            let dir = tempfile::tempdir().expect("temp dir for ferretdb");
            let port = free_port();
            let mut command = Command::new(&binary);
            command
                .arg("--handler=sqlite")
                .arg(format!("--sqlite-url=file:{}/", dir.path().display()))
                .arg(format!("--state-dir={}", dir.path().display()))
                .arg(format!("--listen-addr=127.0.0.1:{port}"))
                // Without this every instance binds the debug port 8088 and
                // a second one exits.
                .arg("--debug-addr=-")
                .arg("--telemetry=disable")
                .arg("--log-level=error")
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let mut child = match ManagedChild::spawn("ferretdb", command) {
                Ok(child) => child,
                Err(err) => panic!("could not run {}: {err}", binary.display()),
            };
            match wait_until(&mut child, STARTUP_LIMIT, || {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            }) {
                Ok(()) => return MongoServer { port, child, _dir: dir },
                Err(err) => last_error = err,
            }
        }
        panic!("ferretdb did not start after {START_ATTEMPTS} attempts: {last_error}");
    }

    /// `mongodb://127.0.0.1:<port>/`
    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// A database name no other test in this process uses.
    pub fn unique_database(prefix: &str) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        format!(
            "{prefix}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
    }
}

fn ferretdb_binary() -> PathBuf {
    let mut extra = Vec::new();
    if let Ok(out) = Command::new("go").args(["env", "GOPATH"]).output() {
        let gopath = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !gopath.is_empty() {
            extra.push(PathBuf::from(gopath).join("bin"));
        }
    }
    if let Some(home) = std::env::var_os("HOME") {
        extra.push(PathBuf::from(home).join("go/bin"));
    }
    find_binary("ferretdb", "FERRETDB_BIN", &extra, FERRETDB_INSTALL_HINT)
}
