//! `origin` binary: reads `.env` and the environment, binds, runs.

use std::sync::Arc;

use anyhow::Context;
use origin::config::{Config, ProcessEnv, MIN_RECOMMENDED_SECRET_BYTES};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A missing .env is normal; a malformed one is worth saying.
    if let Err(err) = dotenvy::dotenv() {
        if !err.not_found() {
            eprintln!("warning: ignoring .env: {err}");
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LOG").unwrap_or_else(|_| "info,mongodb=warn".into()),
        )
        .init();
    let config = Config::from_env(&ProcessEnv).context("invalid configuration")?;
    if config.has_weak_secret() {
        tracing::warn!(
            min_bytes = MIN_RECOMMENDED_SECRET_BYTES,
            "JWT_SECRET_KEY is shorter than recommended; tokens could be forged by brute force"
        );
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    origin::run(listener, Arc::new(config), shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = terminate => {} }
    tracing::info!("shutting down");
}
