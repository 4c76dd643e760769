//! Header spoofing on uncacheable routes, where every end-to-end client
//! header is forwarded: underscore twins of the proxy's own headers (which
//! CGI, WSGI and Rack backends read as those headers, cf. CVE-2024-45614)
//! and method or URL override headers never reach the backend.

use std::collections::BTreeMap;

use e2e::token::mint;
use e2e::{json_reply, proxy_config, spawn_proxy, ScriptedUpstream};
use reqwest::StatusCode;
use serde_json::{json, Value};

const CONFIG: &str = r#"
[[routes]]
name = "echo"
path = "/echo"
methods = ["GET", "POST"]

[[routes]]
name = "open"
path = "/open"
methods = ["GET"]
access = "public"
"#;

/// Every spoof a client might try, and what it would claim.
const SPOOFS: [(&str, &str); 13] = [
    ("x_auth_subject", "admin"),
    ("x_auth_role", "admin"),
    ("x-auth_role", "admin"),
    ("x_forwarded_for", "10.9.8.7"),
    ("x_forwarded_proto", "https"),
    ("x_forwarded_host", "evil.example"),
    ("x_real_ip", "10.9.8.7"),
    ("x-http-method-override", "DELETE"),
    ("x_http_method_override", "DELETE"),
    ("x-method-override", "DELETE"),
    ("x-http-method", "DELETE"),
    ("x-original-url", "/admin"),
    ("x-rewrite-url", "/admin"),
];

/// An upstream answering with the method, path and headers it received.
async fn echo_upstream() -> ScriptedUpstream {
    ScriptedUpstream::start(|req| async move {
        let headers: BTreeMap<String, Vec<String>> = req
            .headers()
            .keys()
            .map(|k| (k.as_str().to_owned(), all(req.headers(), k)))
            .collect();
        let body = json!({"method": req.method().as_str(), "path": req.uri().path(), "headers": headers});
        json_reply(200, &body.to_string(), &[])
    })
    .await
}

fn all(headers: &http::HeaderMap, name: &http::HeaderName) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap_or("?").to_owned())
        .collect()
}

#[tokio::test]
async fn underscore_twins_and_override_headers_never_reach_the_backend() {
    let upstream = echo_upstream().await;
    let proxy = spawn_proxy(proxy_config(CONFIG, upstream.addr, None, None)).await;
    let client = reqwest::Client::new();
    let alice = mint("alice", "user");

    for (method, path, token) in [
        (reqwest::Method::GET, "/echo", Some(&alice)),
        (reqwest::Method::POST, "/echo", Some(&alice)),
        (reqwest::Method::GET, "/open", None),
    ] {
        let mut request = client.request(method.clone(), format!("{}{path}", proxy.base_url()));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in SPOOFS {
            request = request.header(name, value);
        }
        let resp = request.header("x_custom", "kept").send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{method} {path}");
        assert_eq!(resp.headers()["x-cache"], "BYPASS", "{method} {path}: uncacheable");
        let seen: Value = resp.json().await.unwrap();
        let label = format!("{method} {path}");
        assert_eq!(seen["method"], method.as_str(), "{label}");
        assert_eq!(seen["path"], path, "{label}");
        let headers = &seen["headers"];
        for (name, _) in SPOOFS {
            assert!(
                headers.get(name).is_none(),
                "{label}: {name} reached the backend: {headers}"
            );
        }
        // The proxy's own values, once each; other headers with `_` pass.
        assert_eq!(headers["x-forwarded-for"], json!(["127.0.0.1"]), "{label}");
        assert_eq!(headers["x-forwarded-proto"], json!(["http"]), "{label}");
        assert_eq!(headers["x_custom"], json!(["kept"]), "{label}");
        if token.is_some() {
            assert_eq!(headers["x-auth-subject"], json!(["alice"]), "{label}");
            assert_eq!(headers["x-auth-role"], json!(["user"]), "{label}");
        } else {
            assert!(headers.get("x-auth-subject").is_none(), "{label}");
            assert!(headers.get("x-auth-role").is_none(), "{label}");
        }
    }
    assert_eq!(upstream.hits(), 3);
}
