//! The real origin, run in-process on a pre-bound ephemeral port.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::servers::MongoServer;
use crate::task::ServerTask;

/// HS256 secret shared by the harness origin and proxy.
pub const TEST_JWT_SECRET: &str = "e2e-test-secret-that-is-at-least-32-bytes";
pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "admin-password";

/// A running origin; shut down on drop, or explicitly with [`join`](Self::join).
pub struct OriginHandle {
    pub addr: SocketAddr,
    pub database: String,
    env: HashMap<String, String>,
    task: ServerTask,
}

/// An origin stopped with [`OriginHandle::stop`]: its port refuses
/// connections until [`restart`](Self::restart).
pub struct StoppedOrigin {
    addr: SocketAddr,
    env: HashMap<String, String>,
}

impl StoppedOrigin {
    /// Starts the origin again on the same port and database.
    pub async fn restart(self) -> OriginHandle {
        start(self.env, &self.addr.to_string()).await
    }
}

impl OriginHandle {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops the origin and waits for it, re-raising a panic from its task.
    pub async fn join(mut self) -> anyhow::Result<()> {
        self.task.join().await
    }

    /// Stops the origin, keeping what restarting it on the same port needs.
    pub async fn stop(mut self) -> StoppedOrigin {
        self.task.join().await.expect("origin stopped cleanly");
        StoppedOrigin {
            addr: self.addr,
            env: std::mem::take(&mut self.env),
        }
    }
}

/// The settings the harness gives the origin: bcrypt cost 4 so the suite
/// stays fast, its own database, and a bootstrapped admin.
pub fn origin_env(mongo: &MongoServer) -> HashMap<String, String> {
    [
        ("MONGO_URI", mongo.uri()),
        ("MONGO_DB", MongoServer::unique_database("origin")),
        ("JWT_SECRET_KEY", TEST_JWT_SECRET.to_owned()),
        ("BCRYPT_COST", "4".to_owned()),
        ("ADMIN_EMAIL", ADMIN_EMAIL.to_owned()),
        ("ADMIN_PASSWORD", ADMIN_PASSWORD.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Starts the origin with the harness defaults.
pub async fn spawn_origin(mongo: &MongoServer) -> OriginHandle {
    spawn_origin_with(origin_env(mongo)).await
}

/// Starts the origin with the given environment; returns once it listens
/// and has prepared its database.
pub async fn spawn_origin_with(env: HashMap<String, String>) -> OriginHandle {
    start(env, "127.0.0.1:0").await
}

async fn start(env: HashMap<String, String>, listen: &str) -> OriginHandle {
    crate::init_logging();
    let config = origin::config::Config::from_env(&env).expect("valid origin test config");
    let database = config.mongo_database.clone().unwrap_or_default();
    let listener = tokio::net::TcpListener::bind(listen).await.expect("bind origin");
    let addr = listener.local_addr().expect("origin addr");
    let task = ServerTask::spawn(|shutdown| origin::run(listener, Arc::new(config), shutdown));
    let mut handle = OriginHandle {
        addr,
        database,
        env,
        task,
    };
    wait_for_health(&mut handle).await;
    handle
}

/// The listener accepts before `run` has created indexes; `/healthz`
/// answering means preparation is done (or failed, which the task reports).
async fn wait_for_health(handle: &mut OriginHandle) {
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok(resp) = client.get(handle.url("/healthz")).send().await {
            if resp.status().is_success() {
                return;
            }
        }
        if handle.task.is_finished() {
            let result = handle.task.join().await;
            panic!("origin exited during start-up: {result:?}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "origin did not become healthy in 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
