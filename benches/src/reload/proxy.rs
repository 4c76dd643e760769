//! One proxy process of the release build, started with a config file and
//! fixed addresses, and the admin API the harness drives it through.
//!
//! `soak::stack::ProxyProcess` picks its own ports, passes no admin token
//! and hides its child; the scenarios here need a fixed client address
//! shared by two processes, a config file they rewrite, signals, and the
//! exit status. The child is an e2e [`ManagedChild`] like every other
//! server of the benches: killed by pid when dropped, and by the kernel if
//! the harness dies.
//!
//! What the harness assumes of the proxy's admin listener (the interface
//! the reload work is to provide) is spelt out on [`AdminApi`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::bail;
use e2e::process::ManagedChild;
use serde_json::Value;

use crate::soak::stack;

/// `PROXY_ADMIN_TOKEN` of every proxy the harness starts (the proxy wants
/// 16 characters at least); only ever on 127.0.0.1.
pub const ADMIN_TOKEN: &str = "reload-harness-admin-token-0123456789";
/// How long a proxy may take to answer `/readyz` with 200.
const STARTUP_LIMIT: Duration = Duration::from_secs(30);
/// Polling interval of every wait on a process or an endpoint.
pub const POLL: Duration = Duration::from_millis(20);
/// Lines of a proxy's log quoted when it fails to start.
const LOG_TAIL_LINES: usize = 5;

/// How to start one proxy.
pub struct ProxySpec<'a> {
    pub bin: &'a Path,
    pub config: &'a Path,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub upstream: SocketAddr,
    pub redis_url: &'a str,
    pub log: PathBuf,
    /// Working directory: one without a `.env`, which the proxy would read.
    pub cwd: &'a Path,
}

/// A running proxy.
pub struct ProxyInstance {
    pub name: String,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub log: PathBuf,
    pub api: AdminApi,
    pid: u32,
    /// `None` once killed.
    child: Mutex<Option<ManagedChild>>,
}

impl ProxyInstance {
    /// Starts the proxy and waits until its `/readyz` answers 200. The
    /// error says how it ended and quotes its log if it exited.
    pub async fn start(name: impl Into<String>, spec: ProxySpec<'_>) -> anyhow::Result<ProxyInstance> {
        let name = name.into();
        let mut command = Command::new(spec.bin);
        command
            .arg("--config")
            .arg(spec.config)
            .args(["--listen", &spec.listen.to_string()])
            .args(["--admin-listen", &spec.admin.to_string()])
            .args(["--upstream", &format!("http://{}", spec.upstream)])
            .args(["--redis-url", spec.redis_url])
            .env_clear()
            .env("JWT_SECRET_KEY", stack::SECRET)
            .env("PROXY_ADMIN_TOKEN", ADMIN_TOKEN)
            // Start-up, reload and shutdown lines; nothing per request.
            .env("LOG", "info")
            // Plain text in the log file, quoted in reports.
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "1")
            .current_dir(spec.cwd)
            .stdout(Stdio::from(stack::append(&spec.log)?))
            .stderr(Stdio::from(stack::append(&spec.log)?));
        let child = stack::spawn("proxy", command)?;
        let proxy = ProxyInstance {
            name,
            listen: spec.listen,
            admin: spec.admin,
            log: spec.log,
            api: AdminApi::new(spec.admin),
            pid: child.pid(),
            child: Mutex::new(Some(child)),
        };
        let deadline = Instant::now() + STARTUP_LIMIT;
        loop {
            if proxy.api.ready().await {
                return Ok(proxy);
            }
            if let Some(status) = proxy.exit_status() {
                bail!(
                    "proxy {} (pid {}) exited during start-up ({}); {}",
                    proxy.name,
                    proxy.pid,
                    describe(status),
                    see_log(&proxy.log)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "proxy {} was not ready on http://{}/readyz within {STARTUP_LIMIT:?}; see {}",
                    proxy.name,
                    proxy.admin,
                    proxy.log.display()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// How it ended, once it has; `None` while it runs.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.child.lock().expect("proxy child lock").as_mut()?.exit_status()
    }

    /// Sends `signal` to this process (and no other: by its own pid).
    pub fn signal(&self, signal: libc::c_int) {
        if let Some(child) = self.child.lock().expect("proxy child lock").as_ref() {
            child.signal(signal);
        }
    }

    /// Polls until the process exits or `limit` passes.
    pub async fn wait_exit(&self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGTERM, then SIGKILL after `grace`. Returns how it ended, and
    /// whether it had to be killed.
    pub async fn stop(&self, grace: Duration) -> (Option<ExitStatus>, bool) {
        if let Some(status) = self.exit_status() {
            return (Some(status), false);
        }
        self.signal(libc::SIGTERM);
        match self.wait_exit(grace).await {
            Some(status) => (Some(status), false),
            None => {
                self.kill();
                (None, true)
            }
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&self) {
        drop(self.child.lock().expect("proxy child lock").take());
    }
}

/// `exit 0`, `exit 1`, `signal 1 (SIGHUP)`.
pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("signal {signal} ({})", signal_name(signal)),
        (None, None) => format!("{status}"),
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGPIPE => "SIGPIPE",
        _ => "?",
    }
}

/// `see <log>` and, on the lines below, its last lines: the end of an
/// error message whose first line must stand alone in a summary.
pub fn see_log(path: &Path) -> String {
    format!("see {}\n{}", path.display(), log_tail(path))
}

/// The last lines of a log, indented, for an error message.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
    if tail.is_empty() {
        format!("    (nothing in {})", path.display())
    } else {
        tail.iter().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
    }
}

/// `proxy_config_reloads_total` by outcome, from a `/metrics` page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReloadCounts {
    pub ok: u64,
    pub invalid: u64,
    /// The page names the metric at all (a labelled counter may show no
    /// sample before its first increment, so absence of samples is zero).
    pub present: bool,
}

/// The admin listener as the harness uses it. Assumed interface:
/// - `GET /readyz`: 200 when ready (exists today).
/// - `GET /metrics`: OpenMetrics text with
///   `proxy_config_reloads_total{outcome="ok"|"invalid"}` (other labels
///   allowed and summed) and `proxy_cache_total{...,outcome="hit"|...}`.
/// - `GET /config` with `Authorization: Bearer <PROXY_ADMIN_TOKEN>`: 200
///   and a JSON object whose top-level `"version"` (string or number)
///   names the running configuration and changes when a reload applies.
/// - `POST /reload` with the same bearer: 200 `{"reloaded": true,
///   "version": "..."}` once the new rules are in effect; 400 with a body
///   naming each invalid field (`{"errors": [{"field", "message"}]}`) when
///   the file is invalid, the running rules untouched.
pub struct AdminApi {
    base: String,
    http: reqwest::Client,
}

impl AdminApi {
    pub fn new(admin: SocketAddr) -> AdminApi {
        AdminApi {
            base: format!("http://{admin}"),
            http: stack::local_client(),
        }
    }

    pub async fn ready(&self) -> bool {
        let url = format!("{}/readyz", self.base);
        matches!(self.http.get(url).send().await, Ok(resp) if resp.status().is_success())
    }

    /// The running configuration's version, or why it is not known.
    pub async fn config_version(&self) -> Result<String, String> {
        let resp = self
            .http
            .get(format!("{}/config", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .map_err(|e| format!("GET /config: {}", super::load::classify(&e)))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| format!("GET /config: {e}"))?;
        if !status.is_success() {
            return Err(format!("GET /config answered {}: {}", status.as_u16(), snippet(&text)));
        }
        let json: Value =
            serde_json::from_str(&text).map_err(|_| format!("GET /config: not JSON: {}", snippet(&text)))?;
        match &json["version"] {
            Value::String(v) => Ok(v.clone()),
            Value::Number(n) => Ok(n.to_string()),
            _ => Err(format!("GET /config: no \"version\" in {}", snippet(&text))),
        }
    }

    /// `POST /reload`: its status, body as JSON (`Null` if not JSON) and
    /// raw body.
    pub async fn reload(&self) -> Result<(u16, Value, String), reqwest::Error> {
        let resp = self
            .http
            .post(format!("{}/reload", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok((status, json, text))
    }

    pub async fn metrics(&self) -> Option<String> {
        let resp = self.http.get(format!("{}/metrics", self.base)).send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.text().await.ok()
    }

    /// `None`: the metrics page could not be read.
    pub async fn reload_counts(&self) -> Option<ReloadCounts> {
        Some(reload_counts(&self.metrics().await?))
    }
}

/// The first 200 characters of a body, on one line.
pub fn snippet(text: &str) -> String {
    text.chars().take(200).collect::<String>().replace('\n', " ")
}

/// Sums the samples of `name` whose labels contain every one of `labels`.
fn sum_samples(page: &str, name: &str, labels: &[&str]) -> u64 {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && labels.iter().all(|l| rest.contains(l))).then(|| value.parse::<f64>().ok())?
        })
        .map(|v| v as u64)
        .sum()
}

pub fn reload_counts(page: &str) -> ReloadCounts {
    const NAME: &str = "proxy_config_reloads_total";
    ReloadCounts {
        ok: sum_samples(page, NAME, &[r#"outcome="ok""#]),
        invalid: sum_samples(page, NAME, &[r#"outcome="invalid""#]),
        present: page.contains("proxy_config_reloads"),
    }
}

/// `(hits, all outcomes)` of `proxy_cache_total`.
pub fn cache_counts(page: &str) -> (u64, u64) {
    const NAME: &str = "proxy_cache_total";
    (
        sum_samples(page, NAME, &[r#"outcome="hit""#]),
        sum_samples(page, NAME, &[]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# HELP proxy_config_reloads Reloads of the configuration.
# TYPE proxy_config_reloads counter
proxy_config_reloads_total{outcome="ok",trigger="sighup"} 3
proxy_config_reloads_total{outcome="ok",trigger="http"} 2
proxy_config_reloads_total{outcome="invalid",trigger="http"} 1
proxy_config_reloads_created{outcome="ok",trigger="http"} 1700000000.0
proxy_cache_total{rule="user",outcome="hit"} 7
proxy_cache_total{rule="user",outcome="miss"} 3
proxy_cache_total{rule="users-list",outcome="hit"} 1
# EOF
"#;

    #[test]
    fn reload_counters_are_summed_over_other_labels() {
        assert_eq!(
            reload_counts(PAGE),
            ReloadCounts {
                ok: 5,
                invalid: 1,
                present: true
            }
        );
        assert_eq!(reload_counts("# EOF\n"), ReloadCounts::default());
    }

    #[test]
    fn cache_counts_add_up_every_rule() {
        assert_eq!(cache_counts(PAGE), (8, 11));
    }
}
