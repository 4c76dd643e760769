//! Request bodies and query strings, parsed and validated.
//!
//! Turns untrusted JSON into typed requests, or into a 400 that names the
//! offending field. Bodies arrive through [`JsonObject`], which enforces the
//! size limit (413) before any parsing happens.

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_LENGTH;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::password::MAX_PASSWORD_BYTES;
use crate::users::{ROLE_ADMIN, ROLE_USER};

pub const MIN_PASSWORD_CHARS: usize = 8;
pub const USERNAME_CHARS: std::ops::RangeInclusive<usize> = 3..=32;
/// RFC 5321's limit on a forward path.
pub const MAX_EMAIL_BYTES: usize = 254;
pub const DEFAULT_PAGE: u64 = 1;
pub const DEFAULT_PER_PAGE: u64 = 20;
pub const MAX_PER_PAGE: u64 = 100;

/// Largest body accepted, installed as a request extension by the router.
#[derive(Clone, Copy)]
pub struct BodyLimit(pub usize);

/// A request body that is a JSON object no larger than [`BodyLimit`].
pub struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let limit = req.extensions().get::<BodyLimit>().map_or(usize::MAX, |l| l.0);
        // Refuse early on a declared length, before reading anything.
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit as u64) {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        let body: Body = req.into_body();
        let bytes = match Limited::new(body, limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => {
                return Err(ApiError::PayloadTooLarge(limit))
            }
            Err(_) => return Err(ApiError::BadRequest("request body could not be read".into())),
        };
        json_object(&bytes).map(JsonObject)
    }
}

/// Parses a request body that must be a JSON object. Separate from
/// [`JsonObject`] so the fuzz targets reach it without an HTTP request.
pub fn json_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(bad("body must be a JSON object")),
    }
}

pub struct RegisterRequest {
    pub username: String,
    pub email: String,
    pub password: String,
}

pub enum LoginIdentity {
    Email(String),
    Username(String),
}

pub struct LoginRequest {
    pub identity: LoginIdentity,
    pub password: String,
}

#[derive(Default)]
pub struct UpdateRequest {
    pub username: Option<String>,
    pub email: Option<String>,
    pub password: Option<String>,
    pub role: Option<String>,
}

pub fn register(body: &Map<String, Value>) -> Result<RegisterRequest, ApiError> {
    if body.contains_key("role") {
        return Err(bad("role cannot be chosen at registration"));
    }
    Ok(RegisterRequest {
        username: username(required_string(body, "username")?)?,
        email: email(required_string(body, "email")?)?,
        password: password(required_string(body, "password")?)?,
    })
}

pub fn login(body: &Map<String, Value>) -> Result<LoginRequest, ApiError> {
    let email = optional_string(body, "email")?;
    let username = optional_string(body, "username")?;
    let identity = match (email, username) {
        (Some(e), None) => LoginIdentity::Email(e.to_lowercase()),
        (None, Some(u)) => LoginIdentity::Username(u.to_owned()),
        _ => return Err(bad("exactly one of email or username is required")),
    };
    // No length rules here: a login checks a password, it does not set one.
    let password = required_string(body, "password")?.to_owned();
    Ok(LoginRequest { identity, password })
}

pub fn update(body: &Map<String, Value>) -> Result<UpdateRequest, ApiError> {
    let request = UpdateRequest {
        username: optional_string(body, "username")?.map(username).transpose()?,
        email: optional_string(body, "email")?.map(email).transpose()?,
        password: optional_string(body, "password")?.map(password).transpose()?,
        role: optional_string(body, "role")?.map(role).transpose()?,
    };
    if request.username.is_none() && request.email.is_none() && request.password.is_none() && request.role.is_none() {
        return Err(bad("body must set at least one of username, email, password, role"));
    }
    Ok(request)
}

/// Parses `page` and `per_page` from a raw query string.
pub fn pagination(query: Option<&str>) -> Result<(u64, u64), ApiError> {
    let mut page = DEFAULT_PAGE;
    let mut per_page = DEFAULT_PER_PAGE;
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match name.as_ref() {
            "page" => {
                page = value
                    .parse()
                    .ok()
                    .filter(|p| *p >= 1)
                    .ok_or_else(|| bad("page must be an integer of at least 1"))?;
            }
            "per_page" => {
                per_page = value
                    .parse()
                    .ok()
                    .filter(|p| (1..=MAX_PER_PAGE).contains(p))
                    .ok_or_else(|| bad(&format!("per_page must be an integer from 1 to {MAX_PER_PAGE}")))?;
            }
            _ => {}
        }
    }
    // MongoDB's skip is an i64: a page past it would fail in the driver.
    if (page - 1)
        .checked_mul(per_page)
        .is_none_or(|skip| skip > i64::MAX as u64)
    {
        return Err(bad("page is too large"));
    }
    Ok((page, per_page))
}

fn bad(message: &str) -> ApiError {
    ApiError::BadRequest(message.to_owned())
}

fn required_string<'a>(body: &'a Map<String, Value>, field: &str) -> Result<&'a str, ApiError> {
    optional_string(body, field)?.ok_or_else(|| bad(&format!("{field} is required")))
}

fn optional_string<'a>(body: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(&format!("{field} must be a string"))),
    }
}

fn username(value: &str) -> Result<String, ApiError> {
    let ok_chars = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !USERNAME_CHARS.contains(&value.chars().count()) || !ok_chars {
        return Err(bad(&format!(
            "username must be {} to {} characters of letters, digits, '_', '.' or '-'",
            USERNAME_CHARS.start(),
            USERNAME_CHARS.end()
        )));
    }
    Ok(value.to_owned())
}

/// A deliberately plain check: one `@`, a non-empty local part, a dotted
/// domain, no whitespace. Deliverability is the mail system's business.
fn email(value: &str) -> Result<String, ApiError> {
    // The limit applies to what is stored: lower-casing can lengthen a
    // string (`İ`, 2 bytes, becomes `i̇`, 3 bytes).
    let value = value.to_lowercase();
    let valid = value.len() <= MAX_EMAIL_BYTES
        && !value.chars().any(|c| c.is_whitespace() || c.is_control())
        && match value.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains("..")
            }
            None => false,
        };
    if !valid {
        return Err(bad("email must be a valid email address"));
    }
    Ok(value)
}

fn password(value: &str) -> Result<String, ApiError> {
    if value.chars().count() < MIN_PASSWORD_CHARS {
        return Err(bad(&format!(
            "password must be at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if value.len() > MAX_PASSWORD_BYTES {
        return Err(bad(&format!("password must be at most {MAX_PASSWORD_BYTES} bytes")));
    }
    Ok(value.to_owned())
}

fn role(value: &str) -> Result<String, ApiError> {
    match value {
        ROLE_USER | ROLE_ADMIN => Ok(value.to_owned()),
        _ => Err(bad("role must be \"user\" or \"admin\"")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn message(err: ApiError) -> String {
        err.to_string()
    }

    #[test]
    fn register_names_each_bad_field() {
        let ok = json!({"username": "ann", "email": "Ann@Example.com", "password": "longenough"});
        let parsed = register(&obj(ok.clone())).unwrap();
        assert_eq!(parsed.email, "ann@example.com");
        for field in ["username", "email", "password"] {
            let mut missing = obj(ok.clone());
            missing.remove(field);
            assert_eq!(
                message(register(&missing).err().unwrap()),
                format!("{field} is required")
            );
            let mut wrong_type = obj(ok.clone());
            wrong_type.insert(field.into(), json!(42));
            assert_eq!(
                message(register(&wrong_type).err().unwrap()),
                format!("{field} must be a string")
            );
        }
    }

    #[test]
    fn malformed_emails_are_rejected() {
        for bad_email in [
            "plain", "a@b", "@x.io", "a@@x.io", "a b@x.io", "a@x..io", "a@.x.io", "a@x.io.",
        ] {
            assert!(email(bad_email).is_err(), "{bad_email}");
        }
        assert_eq!(email("A.B+tag@Sub.Example.ORG").unwrap(), "a.b+tag@sub.example.org");
        // 250 bytes as sent, 374 once lower-cased: too long to store.
        let dotted_capital_i = format!("{}@x.io", "\u{130}".repeat(124));
        assert!(dotted_capital_i.len() <= MAX_EMAIL_BYTES);
        assert!(email(&dotted_capital_i).is_err());
    }

    #[test]
    fn passwords_must_fit_bcrypt() {
        assert!(password("short").is_err());
        assert!(password(&"x".repeat(73)).is_err());
        assert!(password(&"x".repeat(72)).is_ok());
    }

    #[test]
    fn role_cannot_be_sent_at_registration() {
        let body = json!({"username": "ann", "email": "a@x.io", "password": "longenough", "role": "admin"});
        assert!(message(register(&obj(body)).err().unwrap()).contains("role"));
    }

    #[test]
    fn login_needs_exactly_one_identity() {
        assert!(login(&obj(json!({"password": "p"}))).is_err());
        assert!(login(&obj(json!({"email": "a@x.io", "username": "a", "password": "p"}))).is_err());
        assert!(login(&obj(json!({"email": "a@x.io"}))).is_err());
        assert!(matches!(
            login(&obj(json!({"email": "A@X.io", "password": "p"}))).unwrap().identity,
            LoginIdentity::Email(e) if e == "a@x.io"
        ));
    }

    #[test]
    fn update_needs_a_field_and_checks_roles() {
        assert!(update(&obj(json!({}))).is_err());
        assert!(update(&obj(json!({"role": "root"}))).is_err());
        assert_eq!(
            update(&obj(json!({"role": "admin"}))).unwrap().role.as_deref(),
            Some("admin")
        );
    }

    #[test]
    fn pagination_bounds_name_the_parameter() {
        assert_eq!(pagination(None).unwrap(), (1, 20));
        assert_eq!(pagination(Some("page=3&per_page=100")).unwrap(), (3, 100));
        for (query, name) in [
            ("page=0", "page"),
            ("page=x", "page"),
            ("per_page=0", "per_page"),
            ("per_page=101", "per_page"),
        ] {
            assert!(
                message(pagination(Some(query)).err().unwrap()).starts_with(name),
                "{query}"
            );
        }
    }
}
