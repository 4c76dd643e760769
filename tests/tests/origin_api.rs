//! Every origin route against real FerretDB: success paths, each validation
//! failure, conflicts, authentication and authorisation.

use base64::Engine;
use e2e::origin::{ADMIN_EMAIL, ADMIN_PASSWORD, TEST_JWT_SECRET};
use e2e::token::{now, sign};
use e2e::{spawn_origin, spawn_origin_with, ApiClient, MongoServer, OriginHandle};
use mongodb::bson::{doc, oid::ObjectId, DateTime, Document};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// One isolated stack: its own FerretDB, its own origin.
struct Stack {
    api: ApiClient,
    _origin: OriginHandle,
    _mongo: MongoServer,
}

async fn stack() -> Stack {
    let mongo = MongoServer::start();
    let origin = spawn_origin(&mongo).await;
    Stack {
        api: ApiClient::new(format!("http://{}", origin.addr)),
        _origin: origin,
        _mongo: mongo,
    }
}

impl Stack {
    async fn admin_token(&self) -> String {
        self.api.token(ADMIN_EMAIL, ADMIN_PASSWORD).await
    }
}

fn assert_no_hash(body: &Value) {
    let text = body.to_string();
    assert!(!text.contains("$2b$") && !text.contains("password"), "leaked: {text}");
}

// === register ===

#[tokio::test]
async fn register_creates_a_user_with_a_lower_cased_email_and_no_hash() {
    let s = stack().await;
    let resp = s.api.register("ann", "Ann@Example.COM", "ann-password").await;
    assert_eq!(resp.status, StatusCode::CREATED);
    assert_eq!(resp.body["username"], "ann");
    assert_eq!(resp.body["email"], "ann@example.com");
    assert_eq!(resp.body["role"], "user");
    assert!(resp.body["id"].as_str().is_some_and(|id| id.len() == 24));
    assert!(resp.body["created_at"].as_str().is_some());
    assert_eq!(
        resp.body.as_object().unwrap().len(),
        5,
        "exactly the public fields: {}",
        resp.body
    );
    assert_no_hash(&resp.body);
}

#[tokio::test]
async fn register_rejects_each_invalid_field_with_a_message_naming_it() {
    let s = stack().await;
    let valid = json!({"username": "bob", "email": "bob@example.com", "password": "bob-password"});
    let mut cases: Vec<(Value, &str)> = Vec::new();
    for field in ["username", "email", "password"] {
        let mut missing = valid.clone();
        missing.as_object_mut().unwrap().remove(field);
        cases.push((missing, field));
        let mut wrong_type = valid.clone();
        wrong_type[field] = json!(["not", "a", "string"]);
        cases.push((wrong_type, field));
    }
    let mut malformed_email = valid.clone();
    malformed_email["email"] = json!("not-an-email");
    cases.push((malformed_email, "email"));
    let mut short_password = valid.clone();
    short_password["password"] = json!("short");
    cases.push((short_password, "password"));
    let mut bad_username = valid.clone();
    bad_username["username"] = json!("a b");
    cases.push((bad_username, "username"));

    for (body, field) in cases {
        let resp = s.api.send(Method::POST, "/register", None, Some(body.clone())).await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(resp.error().contains(field), "{body} -> {}", resp.error());
    }
    // Nothing was created by any of them.
    let list = s.api.get("/users", Some(&s.admin_token().await)).await;
    assert_eq!(list.body["total"], 1, "only the admin exists");
}

#[tokio::test]
async fn register_rejects_a_body_that_is_not_a_json_object() {
    let s = stack().await;
    for raw in [&b"{not json"[..], b"[1,2]", b"", b"\"text\""] {
        let resp = s.api.send_raw(Method::POST, "/register", None, raw.to_vec()).await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST);
        assert_eq!(resp.error(), "body must be a JSON object");
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_whether_declared_or_streamed() {
    let s = stack().await;
    let big = format!(
        r#"{{"username":"x","email":"x@example.com","password":"{}"}}"#,
        "p".repeat(1 << 20)
    );
    let resp = s
        .api
        .send_raw(Method::POST, "/register", None, big.clone().into_bytes())
        .await;
    assert_eq!(resp.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(resp.error().contains("larger than"));

    // Chunked, so no Content-Length announces the size.
    let stream = futures_stream(big.into_bytes());
    let resp = reqwest::Client::new()
        .post(s.api.url("/register"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

fn futures_stream(bytes: Vec<u8>) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::iter(bytes.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect::<Vec<_>>())
}

#[tokio::test]
async fn nobody_can_self_register_as_admin() {
    let s = stack().await;
    let body = json!({"username": "eve", "email": "eve@example.com", "password": "eve-password", "role": "admin"});
    let resp = s.api.send(Method::POST, "/register", None, Some(body)).await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert!(resp.error().contains("role"));
    assert_eq!(
        s.api.login("eve@example.com", "eve-password").await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn duplicate_email_or_username_is_409_naming_the_field() {
    let s = stack().await;
    assert_eq!(
        s.api
            .register("carol", "carol@example.com", "carol-password")
            .await
            .status,
        StatusCode::CREATED
    );

    let same_email = s.api.register("carol2", "CAROL@example.com", "carol-password").await;
    assert_eq!(same_email.status, StatusCode::CONFLICT);
    assert_eq!(same_email.error(), "email is already taken");

    let same_username = s.api.register("carol", "other@example.com", "carol-password").await;
    assert_eq!(same_username.status, StatusCode::CONFLICT);
    assert_eq!(same_username.error(), "username is already taken");
}

#[tokio::test]
async fn concurrent_duplicate_registrations_create_exactly_one_user() {
    let s = stack().await;
    let attempts = (0..8).map(|_| {
        let api = s.api.clone();
        tokio::spawn(async move { api.register("race", "race@example.com", "race-password").await.status })
    });
    let mut statuses = Vec::new();
    for attempt in attempts {
        statuses.push(attempt.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::CREATED).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT),
        "{statuses:?}"
    );
}

// === login ===

#[tokio::test]
async fn login_returns_a_bearer_token_by_email_or_username() {
    let s = stack().await;
    s.api.register("dave", "dave@example.com", "dave-password").await;
    let by_email = s.api.login("DAVE@example.com", "dave-password").await;
    assert_eq!(by_email.status, StatusCode::OK);
    assert_eq!(by_email.body["token_type"], "Bearer");
    assert_eq!(by_email.body["expires_in"], 900);
    assert!(by_email.body["access_token"]
        .as_str()
        .is_some_and(|t| t.split('.').count() == 3));

    let body = json!({"username": "dave", "password": "dave-password"});
    let by_username = s.api.send(Method::POST, "/login", None, Some(body)).await;
    assert_eq!(by_username.status, StatusCode::OK);

    let both = json!({"username": "dave", "email": "dave@example.com", "password": "dave-password"});
    assert_eq!(
        s.api.send(Method::POST, "/login", None, Some(both)).await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_401() {
    let s = stack().await;
    s.api.register("erin", "erin@example.com", "erin-password").await;
    let wrong = s.api.login("erin@example.com", "not-her-password").await;
    let unknown = s.api.login("nobody@example.com", "erin-password").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.body, unknown.body);
}

// === tokens ===

#[tokio::test]
async fn protected_routes_reject_missing_expired_and_tampered_tokens() {
    let s = stack().await;
    let (id, token) = s.api.register_and_login("frank").await;
    let claims = |exp: u64| json!({"sub": id, "role": "user", "iat": now() - 7200, "exp": exp, "jti": "j", "iss": "origin", "aud": "api"});

    let expired = sign(&claims(now() - 3600), TEST_JWT_SECRET.as_bytes());
    let wrong_secret = sign(&claims(now() + 600), b"some-other-secret-of-sufficient-length!");
    // Same header and signature, payload rewritten to claim admin.
    let parts: Vec<&str> = token.split('.').collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut payload: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    payload["role"] = json!("admin");
    let tampered = format!("{}.{}.{}", parts[0], b64.encode(payload.to_string()), parts[2]);

    for path in ["/users", "/me", "/admin", &format!("/users/{id}")] {
        assert_eq!(
            s.api.get(path, None).await.status,
            StatusCode::UNAUTHORIZED,
            "{path} without a token"
        );
        for (label, bad) in [
            ("expired", &expired),
            ("wrong secret", &wrong_secret),
            ("tampered", &tampered),
            ("garbage", &"abc".to_owned()),
        ] {
            let resp = s.api.get(path, Some(bad)).await;
            assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{path} with {label} token");
            assert_eq!(resp.header("www-authenticate"), Some("Bearer"));
        }
    }
    assert_eq!(s.api.get("/me", Some(&token)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn two_authorization_headers_are_400() {
    let s = stack().await;
    let (_, token) = s.api.register_and_login("gina").await;
    let resp = reqwest::Client::new()
        .get(s.api.url("/me"))
        .header("authorization", format!("Bearer {token}"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_token_in_the_query_string_is_not_accepted() {
    let s = stack().await;
    let (_, token) = s.api.register_and_login("hank").await;
    assert_eq!(
        s.api.get(&format!("/me?access_token={token}"), None).await.status,
        StatusCode::UNAUTHORIZED
    );
}

// === users ===

#[tokio::test]
async fn users_are_listed_in_creation_order_with_pagination() {
    let s = stack().await;
    let mut ids = Vec::new();
    for name in ["user1", "user2", "user3", "user4", "user5"] {
        ids.push(s.api.register_and_login(name).await.0);
    }
    let token = s.admin_token().await;
    let all = s.api.get("/users", Some(&token)).await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(
        (
            all.body["page"].clone(),
            all.body["per_page"].clone(),
            all.body["total"].clone()
        ),
        (json!(1), json!(20), json!(6))
    );
    let listed: Vec<&str> = all.body["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        &listed[1..],
        ids.iter().map(String::as_str).collect::<Vec<_>>(),
        "admin first, then in order"
    );
    assert_no_hash(&all.body);
    assert!(all.header("cache-control").is_none());

    let page2 = s.api.get("/users?page=2&per_page=2", Some(&token)).await;
    let names: Vec<&str> = page2.body["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["user2", "user3"]);
    assert_eq!(page2.body["total"], 6);
    let beyond = s.api.get("/users?page=9&per_page=2", Some(&token)).await;
    assert_eq!(beyond.body["users"], json!([]));
}

#[tokio::test]
async fn pagination_out_of_bounds_is_400_naming_the_parameter() {
    let s = stack().await;
    let token = s.admin_token().await;
    for (query, name) in [
        ("page=0", "page"),
        ("page=-1", "page"),
        ("page=one", "page"),
        ("per_page=0", "per_page"),
        ("per_page=101", "per_page"),
    ] {
        let resp = s.api.get(&format!("/users?{query}"), Some(&token)).await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{query}");
        assert!(resp.error().starts_with(name), "{query}: {}", resp.error());
    }
    assert_eq!(
        s.api.get("/users?per_page=100", Some(&token)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_user_is_fetched_by_id_and_unknown_or_malformed_ids_are_404() {
    let s = stack().await;
    let (id, token) = s.api.register_and_login("ivy").await;
    let resp = s.api.get(&format!("/users/{id}"), Some(&token)).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.body["username"], "ivy");
    assert!(resp.header("cache-control").is_none());
    assert_eq!(
        s.api.get("/users/000000000000000000000000", Some(&token)).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.api.get("/users/not-an-id", Some(&token)).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn me_returns_the_caller_marked_private() {
    let s = stack().await;
    let (id, token) = s.api.register_and_login("jack").await;
    let resp = s.api.get("/me", Some(&token)).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.body["id"], id.as_str());
    assert_eq!(resp.header("cache-control"), Some("private"));
    assert_no_hash(&resp.body);
}

#[tokio::test]
async fn a_user_updates_their_own_account_but_not_another_or_their_role() {
    let s = stack().await;
    let (kim, kim_token) = s.api.register_and_login("kim").await;
    let (lee, _) = s.api.register_and_login("lee").await;

    let body = json!({"username": "kimberly", "email": "KIM2@example.com", "password": "new-kim-password"});
    let resp = s
        .api
        .send(Method::PUT, &format!("/users/{kim}"), Some(&kim_token), Some(body))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{:?}", resp.body);
    assert_eq!(
        (resp.body["username"].as_str(), resp.body["email"].as_str()),
        (Some("kimberly"), Some("kim2@example.com"))
    );
    assert_no_hash(&resp.body);
    assert_eq!(
        s.api.login("kim2@example.com", "new-kim-password").await.status,
        StatusCode::OK
    );
    assert_eq!(
        s.api.login("kim2@example.com", "kim-password").await.status,
        StatusCode::UNAUTHORIZED
    );

    let other = s
        .api
        .send(
            Method::PUT,
            &format!("/users/{lee}"),
            Some(&kim_token),
            Some(json!({"username": "hacked"})),
        )
        .await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);

    let promote = s
        .api
        .send(
            Method::PUT,
            &format!("/users/{kim}"),
            Some(&kim_token),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(promote.status, StatusCode::FORBIDDEN);
    assert_eq!(
        s.api.get("/admin", Some(&kim_token)).await.status,
        StatusCode::FORBIDDEN
    );

    // Echoing the unchanged role back is not a role change.
    let same = s
        .api
        .send(
            Method::PUT,
            &format!("/users/{kim}"),
            Some(&kim_token),
            Some(json!({"role": "user", "username": "kim"})),
        )
        .await;
    assert_eq!(same.status, StatusCode::OK);
}

#[tokio::test]
async fn update_validates_fields_and_404s_unknown_ids() {
    let s = stack().await;
    let (id, token) = s.api.register_and_login("lou").await;
    let admin = s.admin_token().await;
    for (body, field) in [
        (json!({"email": "nope"}), "email"),
        (json!({"password": "short"}), "password"),
        (json!({"username": 7}), "username"),
        (json!({}), "at least one"),
    ] {
        let resp = s
            .api
            .send(Method::PUT, &format!("/users/{id}"), Some(&token), Some(body.clone()))
            .await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(resp.error().contains(field), "{body}: {}", resp.error());
    }
    let unknown = s
        .api
        .send(
            Method::PUT,
            "/users/000000000000000000000000",
            Some(&admin),
            Some(json!({"username": "xyz"})),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let malformed = s
        .api
        .send(
            Method::PUT,
            "/users/zzz",
            Some(&admin),
            Some(json!({"username": "xyz"})),
        )
        .await;
    assert_eq!(malformed.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn update_to_a_taken_email_or_username_is_409_naming_the_field() {
    let s = stack().await;
    let (mia, token) = s.api.register_and_login("mia").await;
    s.api.register_and_login("ned").await;
    let path = format!("/users/{mia}");

    let email = s
        .api
        .send(
            Method::PUT,
            &path,
            Some(&token),
            Some(json!({"email": "NED@example.com"})),
        )
        .await;
    assert_eq!(email.status, StatusCode::CONFLICT);
    assert_eq!(email.error(), "email is already taken");

    let username = s
        .api
        .send(Method::PUT, &path, Some(&token), Some(json!({"username": "ned"})))
        .await;
    assert_eq!(username.status, StatusCode::CONFLICT);
    assert_eq!(username.error(), "username is already taken");

    // Setting one's own current values is not a clash.
    let own = s
        .api
        .send(
            Method::PUT,
            &path,
            Some(&token),
            Some(json!({"email": "mia@example.com", "username": "mia"})),
        )
        .await;
    assert_eq!(own.status, StatusCode::OK);
}

#[tokio::test]
async fn only_an_admin_changes_roles_and_deletes() {
    let s = stack().await;
    let (olga, olga_token) = s.api.register_and_login("olga").await;
    let (pat, pat_token) = s.api.register_and_login("pat").await;
    let admin = s.admin_token().await;

    assert_eq!(
        s.api
            .send(Method::DELETE, &format!("/users/{pat}"), Some(&olga_token), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        s.api
            .send(Method::DELETE, &format!("/users/{olga}"), Some(&olga_token), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    let promoted = s
        .api
        .send(
            Method::PUT,
            &format!("/users/{olga}"),
            Some(&admin),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(promoted.status, StatusCode::OK);
    assert_eq!(promoted.body["role"], "admin");
    // Role comes from the database, so her existing token now passes.
    assert_eq!(s.api.get("/admin", Some(&olga_token)).await.status, StatusCode::OK);

    let deleted = s
        .api
        .send(Method::DELETE, &format!("/users/{pat}"), Some(&admin), None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(deleted.body, Value::Null);
    assert_eq!(
        s.api.get(&format!("/users/{pat}"), Some(&admin)).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.api.get("/me", Some(&pat_token)).await.status,
        StatusCode::UNAUTHORIZED,
        "deleted user's token"
    );
    assert_eq!(
        s.api
            .send(Method::DELETE, &format!("/users/{pat}"), Some(&admin), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

// === admin ===

#[tokio::test]
async fn admin_route_is_403_for_a_user_and_200_for_the_bootstrapped_admin() {
    let s = stack().await;
    let (_, token) = s.api.register_and_login("quinn").await;
    let denied = s.api.get("/admin", Some(&token)).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    let allowed = s.api.get("/admin", Some(&s.admin_token().await)).await;
    assert_eq!(allowed.status, StatusCode::OK);
    assert!(allowed.body.is_object());
}

#[tokio::test]
async fn bootstrap_promotes_an_existing_user_and_keeps_their_password() {
    let mongo = MongoServer::start();
    let mut env = e2e::origin::origin_env(&mongo);
    env.remove("ADMIN_EMAIL");
    env.remove("ADMIN_PASSWORD");
    let first = spawn_origin_with(env.clone()).await;
    let api = ApiClient::new(format!("http://{}", first.addr));
    api.register("rita", "rita@example.com", "rita-password").await;
    first.join().await.unwrap();

    env.insert("ADMIN_EMAIL".into(), "RITA@example.com".into());
    env.insert("ADMIN_PASSWORD".into(), "a-different-password".into());
    let second = spawn_origin_with(env).await;
    let api = ApiClient::new(format!("http://{}", second.addr));
    assert_eq!(
        api.login("rita@example.com", "a-different-password").await.status,
        StatusCode::UNAUTHORIZED
    );
    let token = api.token("rita@example.com", "rita-password").await;
    assert_eq!(api.get("/admin", Some(&token)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn nobody_may_change_an_email_to_the_bootstrap_address() {
    let s = stack().await;
    let admin = s.admin_token().await;
    let admin_id = s.api.get("/me", Some(&admin)).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let admin_path = format!("/users/{admin_id}");

    // Its holder may restate it (any case): that changes nothing.
    let restate = s
        .api
        .send(
            Method::PUT,
            &admin_path,
            Some(&admin),
            Some(json!({"email": ADMIN_EMAIL.to_uppercase()})),
        )
        .await;
    assert_eq!(restate.status, StatusCode::OK, "{:?}", restate.body);
    // The admin moves to another address, leaving the bootstrap one free.
    let moved = s
        .api
        .send(
            Method::PUT,
            &admin_path,
            Some(&admin),
            Some(json!({"email": "ops@example.com"})),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{:?}", moved.body);

    let (mallory, token) = s.api.register_and_login("mallory").await;
    let path = format!("/users/{mallory}");
    let taken = s
        .api
        .send(
            Method::PUT,
            &path,
            Some(&token),
            Some(json!({"email": "Admin@Example.COM"})),
        )
        .await;
    assert_eq!(taken.status, StatusCode::CONFLICT, "{:?}", taken.body);
    assert_eq!(taken.error(), "email is reserved");
    // Not even an admin may hand the address to someone else.
    let handed = s
        .api
        .send(Method::PUT, &path, Some(&admin), Some(json!({"email": ADMIN_EMAIL})))
        .await;
    assert_eq!(handed.status, StatusCode::CONFLICT, "{:?}", handed.body);
    assert_eq!(
        s.api.get(&path, Some(&token)).await.body["email"],
        "mallory@example.com"
    );
}

#[tokio::test]
async fn a_restart_promotes_nobody_while_an_admin_exists() {
    let mongo = MongoServer::start();
    let origin = spawn_origin(&mongo).await;
    let api = ApiClient::new(format!("http://{}", origin.addr));
    let admin = api.token(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let admin_id = api.get("/me", Some(&admin)).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let moved = api
        .send(
            Method::PUT,
            &format!("/users/{admin_id}"),
            Some(&admin),
            Some(json!({"email": "ops@example.com"})),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{:?}", moved.body);
    let (mallory, token) = api.register_and_login("mallory").await;
    // Before the fix a PUT could take the freed address; written directly
    // here, as a user who took it back then would still hold it.
    let users = Users::connect(&mongo, &origin.database).await;
    let changed = users
        .collection
        .update_one(
            doc! {"_id": ObjectId::parse_str(&mallory).unwrap()},
            doc! {"$set": {"email": ADMIN_EMAIL}},
        )
        .await
        .unwrap();
    assert_eq!(changed.modified_count, 1);

    let origin = origin.stop().await.restart().await;
    let api = ApiClient::new(format!("http://{}", origin.addr));
    assert_eq!(api.get("/admin", Some(&token)).await.status, StatusCode::FORBIDDEN);
    assert_eq!(api.get("/me", Some(&token)).await.body["role"], "user");
    let admin = api.token("ops@example.com", ADMIN_PASSWORD).await;
    assert_eq!(api.get("/admin", Some(&admin)).await.status, StatusCode::OK);
    users.close().await;
}

/// Direct access to the origin's `users` collection, for states the API
/// cannot (or no longer can) produce.
struct Users {
    client: mongodb::Client,
    collection: mongodb::Collection<Document>,
}

impl Users {
    async fn connect(mongo: &MongoServer, database: &str) -> Users {
        let client = mongodb::Client::with_uri_str(mongo.uri()).await.unwrap();
        let collection = client.database(database).collection("users");
        Users { client, collection }
    }

    /// Closed explicitly: a client dropped while its runtime shuts down
    /// panics inside the driver.
    async fn close(self) {
        self.client.shutdown().await;
    }
}

// === bcrypt limit ===

#[tokio::test]
async fn logins_beyond_the_bcrypt_limit_get_503_while_other_routes_answer() {
    let mongo = MongoServer::start();
    let mut env = e2e::origin::origin_env(&mongo);
    // No bootstrap admin: one bcrypt fewer at start-up.
    env.remove("ADMIN_EMAIL");
    env.remove("ADMIN_PASSWORD");
    // One bcrypt at a time and no waiting, at a cost where one verification
    // (hundreds of milliseconds) outlasts the time the rest of the burst
    // needs to reach the limiter, so some of it must find the slot taken.
    for (name, value) in [
        ("BCRYPT_COST", "12"),
        ("BCRYPT_CONCURRENCY", "1"),
        ("BCRYPT_QUEUE_TIMEOUT", "0"),
    ] {
        env.insert(name.into(), value.into());
    }
    let origin = spawn_origin_with(env).await;
    let api = ApiClient::new(format!("http://{}", origin.addr));
    assert_eq!(
        api.register("burst", "burst@example.com", "burst-password")
            .await
            .status,
        StatusCode::CREATED
    );

    let logins: Vec<_> = (0..16)
        .map(|i| {
            let api = api.clone();
            let password = if i % 2 == 0 { "burst-password" } else { "wrong-password" };
            tokio::spawn(async move { api.login("burst@example.com", password).await })
        })
        .collect();
    // bcrypt runs off the async workers, so other routes answer meanwhile.
    assert_eq!(api.get("/healthz", None).await.status, StatusCode::OK);
    let mut busy = 0;
    for login in logins {
        let resp = login.await.unwrap();
        match resp.status {
            StatusCode::OK | StatusCode::UNAUTHORIZED => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                busy += 1;
                assert_eq!(resp.header("retry-after"), Some("1"));
                assert!(!resp.error().is_empty(), "{:?}", resp.body);
            }
            other => panic!("unexpected {other}: {:?}", resp.body),
        }
    }
    assert!(busy > 0, "no login was turned away");
    // The slot is released once the burst is over.
    api.token("burst@example.com", "burst-password").await;
}

// === usernames ===

#[tokio::test]
async fn usernames_are_unique_and_matched_regardless_of_case() {
    let s = stack().await;
    assert_eq!(
        s.api
            .register("alice", "alice@example.com", "alice-password")
            .await
            .status,
        StatusCode::CREATED
    );
    let variant = s.api.register("Alice", "alice2@example.com", "alice-password").await;
    assert_eq!(variant.status, StatusCode::CONFLICT, "{:?}", variant.body);
    assert_eq!(variant.error(), "username is already taken");

    // The name is shown as given and logs in in any case.
    let bob = s.api.register("Bob.Smith", "bob@example.com", "bob-password").await;
    assert_eq!(bob.body["username"], "Bob.Smith");
    for name in ["Bob.Smith", "bob.smith", "BOB.SMITH"] {
        let body = json!({"username": name, "password": "bob-password"});
        assert_eq!(
            s.api.send(Method::POST, "/login", None, Some(body)).await.status,
            StatusCode::OK,
            "{name}"
        );
    }

    let (carl, token) = s.api.register_and_login("carl").await;
    let path = format!("/users/{carl}");
    let clash = s
        .api
        .send(Method::PUT, &path, Some(&token), Some(json!({"username": "ALICE"})))
        .await;
    assert_eq!(clash.status, StatusCode::CONFLICT, "{:?}", clash.body);
    assert_eq!(clash.error(), "username is already taken");
    // Re-casing one's own name is no clash.
    let recased = s
        .api
        .send(Method::PUT, &path, Some(&token), Some(json!({"username": "Carl"})))
        .await;
    assert_eq!(recased.status, StatusCode::OK, "{:?}", recased.body);
    assert_eq!(recased.body["username"], "Carl");
}

#[tokio::test]
async fn start_up_backfills_username_keys_and_survives_a_case_clash() {
    let mongo = MongoServer::start();
    let env = e2e::origin::origin_env(&mongo);
    let users = Users::connect(&mongo, &env["MONGO_DB"]).await;
    // Users as an origin without case-insensitive usernames stored them: no
    // normalised key, and two names that differ only in case.
    let hash = origin::password::Passwords::new(4)
        .await
        .unwrap()
        .hash("legacy-password".into())
        .await
        .unwrap();
    for (username, email) in [
        ("Yan", "yan@example.com"),
        ("Zed", "zed@example.com"),
        ("zed", "zed2@example.com"),
    ] {
        users
            .collection
            .insert_one(doc! {
                "_id": ObjectId::new(),
                "username": username,
                "email": email,
                "role": "user",
                "password_hash": hash.as_str(),
                "created_at": DateTime::now(),
            })
            .await
            .unwrap();
    }

    let origin = spawn_origin_with(env).await;
    let api = ApiClient::new(format!("http://{}", origin.addr));
    let login = |username: &'static str| {
        let api = api.clone();
        async move {
            let body = json!({"username": username, "password": "legacy-password"});
            api.send(Method::POST, "/login", None, Some(body)).await.status
        }
    };
    assert_eq!(login("yan").await, StatusCode::OK);
    // Each clashing user still logs in by their exact name.
    assert_eq!(login("Zed").await, StatusCode::OK);
    assert_eq!(login("zed").await, StatusCode::OK);
    for name in ["YAN", "ZED"] {
        let resp = api
            .register(name, &format!("{name}@new.example.com"), "new-password")
            .await;
        assert_eq!(resp.status, StatusCode::CONFLICT, "{name}: {:?}", resp.body);
        assert_eq!(resp.error(), "username is already taken");
    }
    let yan = users
        .collection
        .find_one(doc! {"username": "Yan"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(yan.get_str("username_lower"), Ok("yan"));
    users.close().await;
}

// === protocol ===

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let s = stack().await;
    let missing = s.api.get("/nope", None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.error(), "not found");
    let wrong_method = s.api.send(Method::DELETE, "/login", None, None).await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(!wrong_method.error().is_empty());
    assert_eq!(s.api.get("/healthz", None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn logout_deletion_and_credential_changes_ask_the_proxy_to_revoke() {
    let s = stack().await;
    let admin = s.admin_token().await;
    let (id, token) = s.api.register_and_login("rex").await;
    let claims = |token: &str| -> Value {
        let payload = token.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap()
    };

    let out = s.api.send(Method::POST, "/logout", Some(&token), None).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    let own = claims(&token);
    assert_eq!(
        out.header("revoke-jti"),
        Some(format!("{}; exp={}", own["jti"].as_str().unwrap(), own["exp"]).as_str())
    );

    let path = format!("/users/{id}");
    let renamed = s
        .api
        .send(Method::PUT, &path, Some(&token), Some(json!({"username": "rexy"})))
        .await;
    assert_eq!(renamed.status, StatusCode::OK);
    assert_eq!(renamed.header("revoke-subject"), None, "a new name revokes nothing");

    let before_change = now();
    let changed = s
        .api
        .send(
            Method::PUT,
            &path,
            Some(&token),
            Some(json!({"password": "rex-new-password"})),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK);
    let revoked = changed
        .header("revoke-subject")
        .expect("a password change revokes")
        .to_owned();
    let before: u64 = revoked
        .strip_prefix(&format!("{id}; before="))
        .expect("the subject and its time")
        .parse()
        .unwrap();
    assert!(before >= before_change);
    // The next token is dated after the revocation, even in its second.
    let next = s.api.token("rex@example.com", "rex-new-password").await;
    assert!(claims(&next)["iat"].as_u64().unwrap() > before);
    // A second revocation in that second still covers the token just issued.
    let demoted = s
        .api
        .send(Method::PUT, &path, Some(&admin), Some(json!({"role": "admin"})))
        .await;
    let again: u64 = demoted
        .header("revoke-subject")
        .unwrap()
        .rsplit('=')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(again >= claims(&next)["iat"].as_u64().unwrap());

    let deleted = s.api.send(Method::DELETE, &path, Some(&admin), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(deleted
        .header("revoke-subject")
        .unwrap()
        .starts_with(&format!("{id}; before=")));
}
