//! A small client for the origin's JSON API (also used through the proxy).

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// A response reduced to what tests assert on.
#[derive(Debug)]
pub struct ApiResponse {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl ApiResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `error` message of a JSON error body.
    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or_default()
    }
}

#[derive(Clone)]
pub struct ApiClient {
    base: String,
    http: reqwest::Client,
}

impl ApiClient {
    /// `base` is `http://host:port` with no trailing slash.
    pub fn new(base: impl Into<String>) -> ApiClient {
        ApiClient {
            base: base.into(),
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends a request with an optional bearer token and JSON body.
    pub async fn send(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> ApiResponse {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        read(request.send().await.expect("request sent")).await
    }

    /// Sends a raw body with the given content type.
    pub async fn send_raw(&self, method: Method, path: &str, token: Option<&str>, body: Vec<u8>) -> ApiResponse {
        let mut request = self.http.request(method, self.url(path)).body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        read(
            request
                .header("content-type", "application/json")
                .send()
                .await
                .expect("request sent"),
        )
        .await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> ApiResponse {
        self.send(Method::GET, path, token, None).await
    }

    pub async fn register(&self, username: &str, email: &str, password: &str) -> ApiResponse {
        let body = json!({"username": username, "email": email, "password": password});
        self.send(Method::POST, "/register", None, Some(body)).await
    }

    pub async fn login(&self, email: &str, password: &str) -> ApiResponse {
        self.send(
            Method::POST,
            "/login",
            None,
            Some(json!({"email": email, "password": password})),
        )
        .await
    }

    /// Registers a user and logs in; returns `(user id, access token)`.
    pub async fn register_and_login(&self, username: &str) -> (String, String) {
        let email = format!("{username}@example.com");
        let password = format!("{username}-password");
        let created = self.register(username, &email, &password).await;
        assert_eq!(
            created.status,
            StatusCode::CREATED,
            "register {username}: {:?}",
            created.body
        );
        let id = created.body["id"].as_str().expect("user id").to_owned();
        (id, self.token(&email, &password).await)
    }

    /// Logs in and returns the access token.
    pub async fn token(&self, email: &str, password: &str) -> String {
        let resp = self.login(email, password).await;
        assert_eq!(resp.status, StatusCode::OK, "login {email}: {:?}", resp.body);
        resp.body["access_token"].as_str().expect("access_token").to_owned()
    }
}

async fn read(resp: reqwest::Response) -> ApiResponse {
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.expect("response body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    ApiResponse { status, headers, body }
}

/// A client connecting from `local`, e.g. `127.0.0.2`: another loopback
/// address is another client as far as a server can tell.
pub fn client_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(local.parse::<std::net::IpAddr>().expect("an IP address"))
        .build()
        .expect("a client")
}

/// A response read off a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl RawResponse {
    /// A header's value, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends `request` byte for byte (no client-side URL normalisation, unlike
/// reqwest) and reads the response until the server closes. The request
/// should carry `Connection: close`.
pub async fn raw_http(addr: std::net::SocketAddr, request: &str) -> RawResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    RawResponse {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}
