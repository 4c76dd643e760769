//! Token details a signature check alone does not settle: critical header
//! extensions (RFC 7515 §4.1.11), roles that would change meaning in the
//! comma-joined role header, and `POST /purge` reading a bearer token
//! exactly as the request path does.

use e2e::origin::TEST_JWT_SECRET;
use e2e::token::{claims, sign};
use e2e::{json_reply, proxy_config, spawn_proxy, ScriptedUpstream};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use proxy::config::Secret;
use reqwest::StatusCode;
use serde_json::{json, Value};

const CONFIG: &str = r#"
[jwt]
issuer = "origin"
audience = "api"

[[routes]]
name = "me"
path = "/me"
methods = ["GET"]

[[routes]]
name = "admin"
path = "/admin"
methods = ["GET"]
access = "roles"
roles = ["admin"]
"#;

const ADMIN_TOKEN: &str = "tokens-test-admin-token-0123456789";

async fn upstream() -> ScriptedUpstream {
    ScriptedUpstream::start(|req| async move {
        let role = req.headers().get("x-auth-role").map(|v| v.to_str().unwrap().to_owned());
        json_reply(200, &json!({ "role": role }).to_string(), &[])
    })
    .await
}

fn with_role(role: Value) -> String {
    let mut c = claims("mallory", "user", 600);
    c["role"] = role;
    sign(&c, TEST_JWT_SECRET.as_bytes())
}

#[tokio::test]
async fn crit_headers_and_roles_with_the_separator_are_401() {
    let upstream = upstream().await;
    let proxy = spawn_proxy(proxy_config(CONFIG, upstream.addr, None, None)).await;
    let client = reqwest::Client::new();

    let mut crit = Header::new(Algorithm::HS256);
    crit.crit = Some(vec!["exp".into()]);
    let crit = jsonwebtoken::encode(
        &crit,
        &claims("mallory", "user", 600),
        &EncodingKey::from_secret(TEST_JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let cases = [
        ("crit header", crit),
        ("comma in a role string", with_role(json!("user,admin"))),
        ("comma in a role array", with_role(json!(["user,admin"]))),
        ("space before a role", with_role(json!(["user", " admin"]))),
    ];
    for (label, token) in &cases {
        for path in ["/me", "/admin"] {
            let resp = client
                .get(format!("{}{path}", proxy.base_url()))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{label} on {path}");
            assert_eq!(
                resp.headers()["www-authenticate"],
                "Bearer error=\"invalid_token\"",
                "{label} on {path}"
            );
        }
    }
    assert_eq!(upstream.hits(), 0, "no such token reached the backend");

    // The same roles, well formed, still work.
    let fine = with_role(json!(["user", "admin"]));
    let resp = client
        .get(format!("{}/admin", proxy.base_url()))
        .bearer_auth(&fine)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap()["role"], "user,admin");
}

#[tokio::test]
async fn purge_refuses_two_authorization_headers_as_the_request_path_does() {
    let upstream = upstream().await;
    let mut config = proxy_config(CONFIG, upstream.addr, None, None);
    config.runtime.admin_token = Some(Secret(ADMIN_TOKEN.into()));
    let proxy = spawn_proxy(config).await;
    let client = reqwest::Client::new();
    let purge = |values: &[&str]| {
        let mut request = client.post(proxy.admin_url("/purge")).json(&json!({"all": true}));
        for value in values {
            request = request.header("authorization", *value);
        }
        request.send()
    };
    let admin = format!("Bearer {ADMIN_TOKEN}");

    let two = purge(&[&admin, "Bearer something-else"]).await.unwrap();
    assert_eq!(two.status(), StatusCode::BAD_REQUEST);
    let body: Value = two.json().await.unwrap();
    assert_eq!(body["error"], "more than one Authorization header");
    let reversed = purge(&["Bearer something-else", &admin]).await.unwrap();
    assert_eq!(reversed.status(), StatusCode::BAD_REQUEST);

    // As on the request path.
    let resp = client
        .get(format!("{}/me", proxy.base_url()))
        .header("authorization", &admin)
        .header("authorization", "Bearer something-else")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    assert_eq!(purge(&[&admin]).await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        purge(&["Basic YWRtaW46YWRtaW4="]).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(purge(&[]).await.unwrap().status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_rotated_secret_still_verifies_its_tokens_and_nothing_else() {
    const PREVIOUS: &str = "the-secret-before-rotation-0123456789";
    const STRANGER: &str = "a-secret-nobody-configured-0123456789";
    let upstream = upstream().await;
    let rotating = proxy::config::Overrides {
        upstream: Some(format!("http://{}", upstream.addr)),
        jwt_secret: Some(TEST_JWT_SECRET.into()),
        jwt_secret_previous: Some(PREVIOUS.into()),
        ..Default::default()
    };
    let config = proxy::config::Config::load(CONFIG, rotating, std::path::Path::new(".")).unwrap();
    let proxy = spawn_proxy(config).await;
    let client = reqwest::Client::new();
    let status = |secret: &'static str, ttl: i64| {
        let (client, url) = (client.clone(), format!("{}/me", proxy.base_url()));
        async move {
            let mut c = claims("alice", "user", 600);
            c["exp"] = json!(e2e::token::now() as i64 + ttl);
            let token = sign(&c, secret.as_bytes());
            client.get(url).bearer_auth(token).send().await.unwrap().status()
        }
    };
    assert_eq!(status(TEST_JWT_SECRET, 600).await, StatusCode::OK, "current secret");
    assert_eq!(status(PREVIOUS, 600).await, StatusCode::OK, "previous secret");
    assert_eq!(
        status(STRANGER, 600).await,
        StatusCode::UNAUTHORIZED,
        "any other secret"
    );
    assert_eq!(
        status(PREVIOUS, -3600).await,
        StatusCode::UNAUTHORIZED,
        "an expired token of the previous secret"
    );
}
