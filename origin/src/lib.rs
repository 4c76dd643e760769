//! The reference origin: user registration and login (bcrypt, JWT), user
//! CRUD and an admin route, persisted in MongoDB.
//!
//! It is the system the proxy grew up in front of, and what the tests and
//! benches put behind it. It is safe on its own: it verifies its own tokens
//! and authorises from the role stored in MongoDB.
//!
//! # Layout
//! - [`config`]: settings from the environment, validated.
//! - [`routes`]: URL layout, callers, response shapes.
//! - [`users`]: the `users` collection and its unique indexes.
//! - [`password`]: bcrypt off the async runtime, a bounded number at once.
//! - [`token`]: JWT issue and verify.
//! - [`validate`]: request bodies and query strings.
//! - [`error`]: the error type and its one mapping to a response.

pub mod config;
pub mod error;
pub mod password;
pub mod routes;
pub mod token;
pub mod users;
pub mod validate;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use mongodb::options::ClientOptions;

use crate::config::{AdminBootstrap, Config, DEFAULT_DATABASE};
use crate::password::Passwords;
use crate::routes::AppState;
use crate::users::{NewUser, UserStore, ROLE_ADMIN};

/// Connects to MongoDB, prepares indexes and the bootstrap admin, then serves
/// on `listener` until `shutdown` resolves, letting in-flight requests finish.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: Arc<Config>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = prepare(&config).await?;
    tracing::info!(addr = %listener.local_addr()?, "origin listening");
    axum::serve(listener, routes::router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP")
}

/// Everything `run` does before it accepts connections.
async fn prepare(config: &Config) -> anyhow::Result<AppState> {
    let mut options = ClientOptions::parse(&config.mongo_uri)
        .await
        .context("parsing MONGO_URI")?;
    options.app_name = Some("origin".into());
    let database_name = config
        .mongo_database
        .clone()
        .or_else(|| options.default_database.clone())
        .unwrap_or_else(|| DEFAULT_DATABASE.into());
    let client = mongodb::Client::with_options(options).context("creating the MongoDB client")?;
    let database = client.database(&database_name);
    let mut users = UserStore::new(&database);
    users
        .ensure_indexes()
        .await
        .with_context(|| format!("creating indexes in database {database_name:?} (is MongoDB reachable?)"))?;
    let passwords = Passwords::with_limits(config.bcrypt_cost, config.bcrypt_limits)
        .await
        .context("preparing bcrypt")?;
    if let Some(admin) = &config.admin {
        bootstrap_admin(&users, &passwords, admin).await?;
    }
    Ok(AppState {
        users,
        passwords,
        tokens: token::Tokens::new(&config.jwt),
        body_limit: config.max_body_bytes,
        reserved_email: config.admin.as_ref().map(|admin| admin.email.clone()),
    })
}

/// Gives a database without any admin its first one: promotes the user with
/// the admin email, or creates it when a password is given. An existing user
/// keeps its password: start-up must not silently reset a credential someone
/// may have changed.
///
/// Once any admin exists this does nothing. Emails are not verified, so
/// promoting whoever holds `ADMIN_EMAIL` at every start let a user who took
/// that address become admin at the next restart.
async fn bootstrap_admin(users: &UserStore, passwords: &Passwords, admin: &AdminBootstrap) -> anyhow::Result<()> {
    if users.admin_exists().await.map_err(api_error)? {
        tracing::info!("an admin exists; ADMIN_EMAIL bootstrap skipped");
        return Ok(());
    }
    if users.promote_to_admin(&admin.email).await.map_err(api_error)? {
        tracing::info!("existing user promoted to admin from ADMIN_EMAIL");
        return Ok(());
    }
    let Some(password) = &admin.password else {
        tracing::warn!("ADMIN_EMAIL names no user and ADMIN_PASSWORD is unset; no admin bootstrapped");
        return Ok(());
    };
    let password_hash = passwords.hash(password.clone()).await.map_err(api_error)?;
    let new = NewUser {
        username: admin.username.clone(),
        email: admin.email.clone(),
        role: ROLE_ADMIN,
        password_hash,
    };
    match users.insert(new).await {
        Ok(user) => tracing::info!(user_id = %user.id, "admin created from ADMIN_EMAIL"),
        // Another instance created it between our promote and insert.
        Err(error::ApiError::Conflict("email")) => {
            users.promote_to_admin(&admin.email).await.map_err(api_error)?;
        }
        Err(err) => return Err(api_error(err)).context("creating the admin (is ADMIN_USERNAME taken?)"),
    }
    Ok(())
}

fn api_error(err: error::ApiError) -> anyhow::Error {
    match err {
        error::ApiError::Internal(cause) => cause,
        other => anyhow::anyhow!(other.to_string()),
    }
}
