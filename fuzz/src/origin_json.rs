//! The origin's validation of request bodies (`/register`, `/login`,
//! `PUT /users/{id}`) and of the `/users` query.
//!
//! Input: the request body bytes; the same bytes, as UTF-8, are also the
//! query string `pagination` reads.
//!
//! Invariants: bad input is always a 400, never a 500 or a panic; what
//! validation accepts obeys the documented rules (usernames 3-32 of
//! `[A-Za-z0-9_.-]`, emails lower-cased with one `@` and at most 254 bytes
//! as stored, passwords 8 characters to 72 bytes, roles `user`/`admin`,
//! pages that fit MongoDB's `skip`).

use http::StatusCode;
use origin::error::ApiError;
use origin::validate::{self, LoginIdentity, MAX_EMAIL_BYTES, MAX_PER_PAGE, MIN_PASSWORD_CHARS, USERNAME_CHARS};

pub fn origin_json(data: &[u8]) {
    if let Ok(query) = std::str::from_utf8(data) {
        check_pagination(query);
    }
    let body = match validate::json_object(data) {
        Ok(body) => body,
        Err(err) => return assert_bad_request(&err),
    };
    match validate::register(&body) {
        Ok(r) => {
            check_username(&r.username);
            check_email(&r.email);
            check_password(&r.password);
        }
        Err(err) => assert_bad_request(&err),
    }
    match validate::login(&body) {
        Ok(l) => {
            if let LoginIdentity::Email(email) = &l.identity {
                assert_eq!(*email, email.to_lowercase());
            }
        }
        Err(err) => assert_bad_request(&err),
    }
    match validate::update(&body) {
        Ok(u) => {
            assert!(u.username.is_some() || u.email.is_some() || u.password.is_some() || u.role.is_some());
            if let Some(name) = &u.username {
                check_username(name);
            }
            if let Some(email) = &u.email {
                check_email(email);
            }
            if let Some(password) = &u.password {
                check_password(password);
            }
            if let Some(role) = &u.role {
                assert!(role == "user" || role == "admin", "{role:?}");
            }
        }
        Err(err) => assert_bad_request(&err),
    }
}

fn assert_bad_request(err: &ApiError) {
    assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{err}");
    assert!(!err.to_string().is_empty());
}

fn check_pagination(query: &str) {
    match validate::pagination(Some(query)) {
        Ok((page, per_page)) => {
            assert!(page >= 1);
            assert!((1..=MAX_PER_PAGE).contains(&per_page));
            let skip = (page - 1).checked_mul(per_page).expect("skip fits a u64");
            assert!(i64::try_from(skip).is_ok(), "skip {skip} does not fit MongoDB's i64");
        }
        Err(err) => assert_bad_request(&err),
    }
}

fn check_username(name: &str) {
    assert!(USERNAME_CHARS.contains(&name.chars().count()), "{name:?}");
    assert!(name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')));
}

fn check_email(email: &str) {
    assert_eq!(email, email.to_lowercase(), "emails are stored lower-cased");
    assert!(
        email.len() <= MAX_EMAIL_BYTES,
        "{} bytes stored: {email:?}",
        email.len()
    );
    assert_eq!(email.matches('@').count(), 1, "{email:?}");
}

fn check_password(password: &str) {
    assert!(password.chars().count() >= MIN_PASSWORD_CHARS);
    assert!(password.len() <= origin::password::MAX_PASSWORD_BYTES);
}
