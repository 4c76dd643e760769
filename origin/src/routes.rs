//! HTTP routes of the origin and the caller extraction they share.
//!
//! Owns the URL layout, who may call what, and response shapes. Storage is
//! `users.rs`, hashing `password.rs`, tokens `token.rs`, input rules
//! `validate.rs`.

use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::http::{header, request::Parts, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::error::ApiError;
use crate::password::Passwords;
use crate::token::{now_secs, Claims, Tokens};
use crate::users::{NewUser, User, UserChanges, UserDoc, UserStore, ROLE_ADMIN, ROLE_USER};
use crate::validate::{self, BodyLimit, JsonObject, LoginIdentity};

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub users: UserStore,
    pub passwords: Passwords,
    pub tokens: Tokens,
    pub body_limit: usize,
    /// The bootstrap admin's email (`ADMIN_EMAIL`, lower-cased), which no
    /// user may change their email to: should every admin go, the next
    /// start-up promotes whoever holds it.
    pub reserved_email: Option<String>,
}

pub fn router(state: AppState) -> Router {
    let limit = BodyLimit(state.body_limit);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/register", post(register))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/users", get(list_users))
        .route("/users/{id}", get(get_user).put(update_user).delete(delete_user))
        .route("/me", get(me))
        .route("/admin", get(admin))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                Json(json!({"error": "method not allowed"})),
            )
        })
        .layer(axum::middleware::from_fn(log_request))
        .layer(axum::Extension(limit))
        .with_state(state)
}

/// One line per request: method, path (never the query, which may carry
/// personal data), status and latency.
async fn log_request(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    tracing::info!(%method, %path, status = response.status().as_u16(), micros = started.elapsed().as_micros() as u64, "request");
    response
}

// === Caller ===

/// The authenticated user making the request, loaded fresh from MongoDB so
/// that a role change or deletion takes effect before the token expires,
/// and the token they sent.
pub struct Caller(pub UserDoc, pub Claims);

impl Caller {
    fn is_admin(&self) -> bool {
        self.0.role == ROLE_ADMIN
    }

    fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::Forbidden("admin role required"))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(parts)?;
        let claims = state.tokens.verify(token)?;
        let user = state
            .users
            .find_by_id(&claims.sub)
            .await?
            .ok_or(ApiError::Unauthorized("invalid or expired token"))?;
        Ok(Caller(user, claims))
    }
}

/// The token from the single `Authorization: Bearer` header. Never from the
/// query string, where it would end up in logs and caches.
fn bearer_token(parts: &Parts) -> Result<&str, ApiError> {
    let mut values = parts.headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next().ok_or(ApiError::Unauthorized("missing bearer token"))?;
    if values.next().is_some() {
        return Err(ApiError::BadRequest("more than one Authorization header".into()));
    }
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("malformed Authorization header"))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => Ok(token.trim()),
        _ => Err(ApiError::Unauthorized("malformed Authorization header")),
    }
}

/// A `{id}` path segment. One that is not even UTF-8 names no user: 404,
/// like any other malformed id, rather than axum's plain-text 400.
pub struct UserId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for UserId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(id)| UserId(id))
            .map_err(|_| ApiError::NotFound)
    }
}

// === Handlers ===

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn register(State(state): State<AppState>, JsonObject(body): JsonObject) -> Result<Response, ApiError> {
    let request = validate::register(&body)?;
    let password_hash = state.passwords.hash(request.password).await?;
    let user = state
        .users
        .insert(NewUser {
            username: request.username,
            email: request.email,
            role: ROLE_USER,
            password_hash,
        })
        .await?;
    tracing::info!(user_id = %user.id, "user registered");
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

async fn login(State(state): State<AppState>, JsonObject(body): JsonObject) -> Result<Response, ApiError> {
    let request = validate::login(&body)?;
    let user = match &request.identity {
        LoginIdentity::Email(email) => state.users.find_by_email(email).await?,
        LoginIdentity::Username(username) => state.users.find_by_username(username).await?,
    };
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    // Unknown user and wrong password share one message and one bcrypt cost.
    let user = match (state.passwords.verify(request.password, hash).await?, user) {
        (true, Some(user)) => user,
        _ => return Err(ApiError::Unauthorized("invalid credentials")),
    };
    let revoked_before = user.tokens_revoked_before.and_then(|t| u64::try_from(t).ok());
    let token = state
        .tokens
        .issue_after(&user.id.to_hex(), &user.role, revoked_before)?;
    Ok(Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": state.tokens.ttl().as_secs(),
    }))
    .into_response())
}

/// Ends the caller's token: the proxy in front records its `jti` as
/// revoked (the `Revoke-Jti` header, see [`REVOKE_JTI`]), so it stops
/// working through every instance at once.
async fn logout(caller: Caller) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let revoked = format!("{}; exp={}", caller.1.jti, caller.1.exp);
    if let Ok(value) = HeaderValue::from_str(&revoked) {
        response.headers_mut().insert(REVOKE_JTI, value);
    }
    tracing::info!(user_id = %caller.0.id, "logged out");
    response
}

/// Response header asking the proxy to revoke every token of a user issued
/// until now: sent when the user is deleted, their role changes, or their
/// password or email changes (the README's revocation contract).
pub const REVOKE_SUBJECT: &str = "revoke-subject";
/// Response header asking the proxy to revoke one token, by `jti`.
pub const REVOKE_JTI: &str = "revoke-jti";

/// The time of a revocation of `user`'s tokens: now, or later when tokens
/// were dated after an earlier revocation of this same second, so that it
/// covers every token issued so far.
fn revocation_time(user: &UserDoc) -> Result<u64, ApiError> {
    let issued_until = user.tokens_revoked_before.and_then(|t| u64::try_from(t + 1).ok());
    Ok(now_secs()?.max(issued_until.unwrap_or(0)))
}

/// `response` with a request to revoke `user_id`'s tokens issued until
/// `before` (Unix seconds, this origin's clock, which also dates the
/// tokens it issues).
fn revoking_subject(mut response: Response, user_id: &str, before: u64) -> Response {
    if let Ok(value) = HeaderValue::from_str(&format!("{user_id}; before={before}")) {
        response.headers_mut().insert(REVOKE_SUBJECT, value);
    }
    response
}

async fn list_users(
    State(state): State<AppState>,
    _caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (page, per_page) = validate::pagination(query.as_deref())?;
    let listed = state.users.list(page, per_page).await?;
    Ok(Json(json!({
        "users": listed.users,
        "page": page,
        "per_page": per_page,
        "total": listed.total,
    })))
}

async fn get_user(State(state): State<AppState>, _caller: Caller, UserId(id): UserId) -> Result<Json<User>, ApiError> {
    let user = state.users.find_by_id(&id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(user.into()))
}

async fn update_user(
    State(state): State<AppState>,
    caller: Caller,
    UserId(id): UserId,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let is_self = caller.0.id.to_hex() == id;
    if !is_self && !caller.is_admin() {
        // Checked before the lookup so a user cannot probe which ids exist.
        return Err(ApiError::Forbidden("you may only change your own account"));
    }
    let request = validate::update(&body)?;
    let target = state.users.find_by_id(&id).await?.ok_or(ApiError::NotFound)?;
    if request.role.as_ref().is_some_and(|r| *r != target.role) {
        caller
            .require_admin()
            .map_err(|_| ApiError::Forbidden("only an admin can change roles"))?;
    }
    // Refused for admins too: handing the address to anyone is how an
    // account could be lined up for the bootstrap. Restating it is fine.
    if let (Some(email), Some(reserved)) = (&request.email, &state.reserved_email) {
        if email == reserved && target.email != *reserved {
            return Err(ApiError::Reserved("email"));
        }
    }
    // What makes tokens already issued wrong: a new role, or a new
    // password or email (the account's credentials changed hands).
    let revokes_tokens = request.role.as_ref().is_some_and(|r| *r != target.role)
        || request.password.is_some()
        || request.email.as_ref().is_some_and(|e| *e != target.email);
    let password_hash = match request.password {
        Some(password) => Some(state.passwords.hash(password).await?),
        None => None,
    };
    let revoked_before = match revokes_tokens {
        true => Some(revocation_time(&target)?),
        false => None,
    };
    let changes = UserChanges {
        username: request.username,
        email: request.email,
        role: request.role,
        password_hash,
        tokens_revoked_before: revoked_before,
    };
    let updated = state.users.update(&id, changes).await?.ok_or(ApiError::NotFound)?;
    tracing::info!(user_id = %updated.id, by = %caller.0.id, revokes_tokens, "user updated");
    // The id as tokens carry it (lower-case hex), not as the path spelt it.
    let subject = updated.id.clone();
    let response = Json(updated).into_response();
    Ok(match revoked_before {
        Some(before) => revoking_subject(response, &subject, before),
        None => response,
    })
}

async fn delete_user(State(state): State<AppState>, caller: Caller, UserId(id): UserId) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let target = state.users.find_by_id(&id).await?.ok_or(ApiError::NotFound)?;
    if !state.users.delete(&id).await? {
        return Err(ApiError::NotFound);
    }
    tracing::info!(user_id = %id, by = %caller.0.id, "user deleted");
    let before = revocation_time(&target)?;
    Ok(revoking_subject(
        StatusCode::NO_CONTENT.into_response(),
        &target.id.to_hex(),
        before,
    ))
}

async fn me(caller: Caller) -> Response {
    let mut response = Json(User::from(caller.0)).into_response();
    // The answer depends on who asks: no shared cache may keep it.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    response
}

async fn admin(State(state): State<AppState>, caller: Caller) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require_admin()?;
    Ok(Json(json!({
        "message": "welcome, admin",
        "users": state.users.count().await?,
    })))
}
