//! The real proxy, run in-process on pre-bound ephemeral ports.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use proxy::access_log::{AccessFormat, AccessOutput, AccessSink};
use proxy::config::{Config, ConfigFile, Overrides};

use crate::origin::TEST_JWT_SECRET;
use crate::task::ServerTask;

/// The `config.toml` the project ships; tests run the proxy with it.
pub const SHIPPED_CONFIG: &str = include_str!("../../config.toml");

/// A public, cached `GET /items` tagged `items`, and a `POST /items` that
/// invalidates it: the smallest config with a read and the write that
/// replaces it.
pub const ITEMS_CONFIG: &str = r#"
[[routes]]
name = "items"
path = "/items"
methods = ["GET"]
access = "public"
cache = { tags = ["items"] }

[[routes]]
name = "items-write"
path = "/items"
methods = ["POST"]
access = "public"
invalidates = ["items"]
"#;

/// What every Redis name of a proxy in front of `upstream` starts with:
/// the default `cache.key_prefix`, then the default `cache.namespace` (the
/// upstream's authority).
pub fn redis_prefix(upstream: SocketAddr) -> String {
    format!("{}{upstream}:", proxy::config::DEFAULT_KEY_PREFIX)
}

/// The cache key of a shared entry of `rule` at `path` (no query, no
/// `vary`), as the proxy running `config` builds it.
pub fn shared_key(config: &Config, rule: &str, path: &str) -> proxy::cache::CacheKey {
    proxy::cache::CacheKey::build(&proxy::cache::KeyParts {
        rule: config
            .runtime
            .routes
            .by_name(rule)
            .expect("a rule of the config")
            .cache_id,
        path,
        query: None,
        vary: &[],
        scope: proxy::cache::ScopeKey::Shared,
    })
}

/// Builds a proxy config from TOML with the harness's overrides: the given
/// upstream and Redis (`None`: memory store), the test JWT secret, ephemeral
/// listeners. `CACHE_TTL`-style default TTL when `cache_ttl_secs` is set.
pub fn proxy_config(
    toml: &str,
    upstream: SocketAddr,
    redis_url: Option<String>,
    cache_ttl_secs: Option<u64>,
) -> Config {
    let overrides = Overrides {
        upstream: Some(format!("http://{upstream}")),
        cache_ttl: cache_ttl_secs.map(|s| s.to_string()),
        ..harness_overrides(redis_url)
    };
    load(toml, overrides)
}

/// As [`proxy_config`] (memory store), with `change` made to the
/// overrides (environment variables such as `PROXY_STATUS_TOKEN`).
pub fn proxy_config_with(toml: &str, upstream: SocketAddr, change: impl FnOnce(&mut Overrides)) -> Config {
    let mut overrides = Overrides {
        upstream: Some(format!("http://{upstream}")),
        ..harness_overrides(None)
    };
    change(&mut overrides);
    load(toml, overrides)
}

/// As [`proxy_config`], for a backend with several endpoints: `upstreams`
/// become `upstream.urls` in the TOML (added to its `[upstream]` table, or
/// as one), since the `UPSTREAM_URL` override would replace the list.
pub fn endpoints_proxy_config(toml: &str, upstreams: &[SocketAddr], redis_url: Option<String>) -> Config {
    let urls: Vec<String> = upstreams.iter().map(|addr| format!("\"http://{addr}\"")).collect();
    let urls = format!("urls = [{}]\n", urls.join(", "));
    let toml = match toml.find("[upstream]\n") {
        Some(at) => format!(
            "{}{urls}{}",
            &toml[..at + "[upstream]\n".len()],
            &toml[at + "[upstream]\n".len()..]
        ),
        None => format!("{toml}\n[upstream]\n{urls}"),
    };
    load(&toml, harness_overrides(redis_url))
}

/// Ephemeral listeners, the test JWT secret and `redis_url`.
fn harness_overrides(redis_url: Option<String>) -> Overrides {
    Overrides {
        listen: Some("127.0.0.1:0".into()),
        admin_listen: Some("127.0.0.1:0".into()),
        redis_url,
        jwt_secret: Some(TEST_JWT_SECRET.into()),
        ..Overrides::default()
    }
}

fn load(toml: &str, overrides: Overrides) -> Config {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    Config::load(toml, overrides, &base).unwrap_or_else(|e| panic!("test proxy config invalid:\n{e}"))
}

/// A running proxy; stopped on drop or with [`join`](Self::join).
pub struct ProxyHandle {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    task: ServerTask,
}

impl ProxyHandle {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin_addr, path)
    }

    /// The value of one series on the admin `/metrics` page, e.g.
    /// `proxy_l1_lookups_total{outcome="hit"}`; 0 while it does not exist.
    pub async fn metric(&self, series: &str) -> u64 {
        let page = reqwest::get(self.admin_url("/metrics"))
            .await
            .expect("metrics reachable")
            .text()
            .await
            .expect("metrics readable");
        page.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0, |value| value.trim().parse().expect("a counter value"))
    }

    /// Starts the proxy's shutdown (as SIGTERM does) without waiting.
    pub fn stop(&mut self) {
        self.task.stop();
    }

    /// Stops the proxy, waits for it to drain, re-raises a panic from it.
    pub async fn join(mut self) -> anyhow::Result<()> {
        self.task.join().await
    }
}

/// Starts `proxy::run` with `config`; returns once both listeners are bound
/// (they are bound before this returns, so requests queue until served).
pub async fn spawn_proxy(config: Config) -> ProxyHandle {
    spawn(config, None).await
}

/// Starts `proxy::run` with the settings `file` holds, reloadable from it
/// (`POST /reload`).
pub async fn spawn_reloadable_proxy(file: ConfigFile) -> ProxyHandle {
    let config = file
        .load()
        .unwrap_or_else(|e| panic!("test proxy config invalid:\n{e}"));
    spawn(config, Some(file)).await
}

/// Starts `proxy::run` with `config`, its access lines (in `format`)
/// captured.
pub async fn spawn_logging_proxy(config: Config, format: AccessFormat) -> (ProxyHandle, Arc<AccessLines>) {
    let lines = Arc::new(AccessLines::default());
    let output = AccessOutput {
        sink: lines.clone(),
        format,
    };
    (spawn_with(config, None, Some(output)).await, lines)
}

/// Access lines as a proxy wrote them.
#[derive(Default)]
pub struct AccessLines {
    lines: std::sync::Mutex<Vec<String>>,
    written: tokio::sync::Notify,
}

impl AccessSink for AccessLines {
    fn write_line(&self, line: &[u8]) {
        self.lines
            .lock()
            .unwrap()
            .push(String::from_utf8(line.to_vec()).expect("access lines are UTF-8"));
        self.written.notify_waiters();
    }
}

impl AccessLines {
    /// Every line so far.
    pub fn all(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The first line containing `needle`, once written (a line is written
    /// when its response's body is dropped, which may be just after the
    /// client has read it).
    pub async fn find(&self, needle: &str) -> String {
        let wait = async {
            loop {
                let written = self.written.notified();
                if let Some(line) = self.all().into_iter().find(|l| l.contains(needle)) {
                    return line;
                }
                written.await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), wait)
            .await
            .unwrap_or_else(|_| panic!("no access line containing {needle:?} in {:#?}", self.all()))
    }
}

async fn spawn(config: Config, file: Option<ConfigFile>) -> ProxyHandle {
    spawn_with(config, file, None).await
}

async fn spawn_with(config: Config, file: Option<ConfigFile>, access: Option<AccessOutput>) -> ProxyHandle {
    let reload_from = file.map(|file| proxy::ReloadFrom { file, watch: None });
    crate::init_logging();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind proxy admin");
    let (addr, admin_addr) = (listener.local_addr().unwrap(), admin.local_addr().unwrap());
    let task = ServerTask::spawn(|shutdown| async move {
        let mut prepared = proxy::prepare(config)
            .await
            .map_err(|e| anyhow::anyhow!("test proxy config invalid:\n{e}"))?;
        if let Some(access) = access {
            prepared.access = access;
        }
        proxy::run(listener, admin, prepared, reload_from, shutdown).await
    });
    ProxyHandle { addr, admin_addr, task }
}

/// A config file holding `toml`, read with the harness's overrides (see
/// [`proxy_config`]), for tests that rewrite it and reload.
pub fn proxy_config_file(
    dir: &Path,
    toml: &str,
    upstream: SocketAddr,
    redis_url: Option<String>,
    admin_token: Option<&str>,
) -> ConfigFile {
    let path = dir.join("config.toml");
    std::fs::write(&path, toml).expect("write test config");
    let mut environment = HashMap::from([("JWT_SECRET_KEY".to_owned(), TEST_JWT_SECRET.to_owned())]);
    if let Some(token) = admin_token {
        environment.insert("PROXY_ADMIN_TOKEN".to_owned(), token.to_owned());
    }
    ConfigFile {
        path,
        environment,
        dotenv: None,
        flags: Overrides {
            listen: Some("127.0.0.1:0".into()),
            admin_listen: Some("127.0.0.1:0".into()),
            upstream: Some(format!("http://{upstream}")),
            redis_url,
            ..Overrides::default()
        },
    }
}
