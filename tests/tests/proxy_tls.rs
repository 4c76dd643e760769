//! TLS on both sides, with certificates made per test: the proxy serving
//! HTTPS (HTTP/1.1 and h2 chosen by ALPN, SNI, client certificates,
//! rotation by reload, a bounded handshake), and an HTTPS backend with its
//! own CA (h2 by ALPN, a certificate for the wrong name refused).

use std::path::Path;
use std::time::Duration;

use e2e::tls::{TestCa, TlsSession};
use e2e::{json_reply, proxy_config_file, spawn_reloadable_proxy, ProxyHandle, ScriptedUpstream};
use http::{StatusCode, Version};
use proxy::config::ConfigFile;
use tokio::io::AsyncReadExt;

const ADMIN_TOKEN: &str = "tls-test-admin-token-0123456789abc";

const ROUTE: &str = r#"
[[routes]]
name = "r"
path = "/r"
methods = ["GET"]
access = "public"
"#;

/// An upstream answering with the `X-Forwarded-Proto` and HTTP version
/// it was sent.
async fn echo_upstream(tls: Option<std::sync::Arc<rustls::ServerConfig>>) -> ScriptedUpstream {
    let script = |req: http::Request<hyper::body::Incoming>| {
        let proto = req
            .headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = serde_json::json!({ "proto": proto, "version": format!("{:?}", req.version()) }).to_string();
        async move { json_reply(200, &body, &[]) }
    };
    match tls {
        None => ScriptedUpstream::start(script).await,
        Some(tls) => ScriptedUpstream::start_tls(tls, script).await,
    }
}

/// The proxy with `toml` (plus the test route) in `dir`, reloadable.
async fn proxy_with(dir: &Path, toml: &str, upstream: &ScriptedUpstream) -> (ProxyHandle, ConfigFile) {
    let file = proxy_config_file(dir, &format!("{toml}\n{ROUTE}"), upstream.addr, None, Some(ADMIN_TOKEN));
    (spawn_reloadable_proxy(file.clone()).await, file)
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap()
}

#[tokio::test]
async fn https_serves_http1_and_h2_as_alpn_chooses_and_tells_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    ca.server(&["localhost"]).write(dir.path(), "server");
    let upstream = echo_upstream(None).await;
    let toml = "[tls]\ncert_file = \"server.crt\"\nkey_file = \"server.key\"\n";
    let (proxy, _) = proxy_with(dir.path(), toml, &upstream).await;

    for (offered, alpn, version) in [
        (&["h2", "http/1.1"][..], Some("h2"), Version::HTTP_2),
        (&["http/1.1"][..], Some("http/1.1"), Version::HTTP_11),
        (&[][..], None, Version::HTTP_11),
    ] {
        let config = ca.client_config(None, offered);
        let mut session = TlsSession::connect(config, proxy.addr, "localhost").await.unwrap();
        assert_eq!(session.alpn.as_deref(), alpn, "offered {offered:?}");
        let (got, status, body) = session.get("/r").await.unwrap();
        assert_eq!((got, status), (version, StatusCode::OK), "offered {offered:?}");
        assert_eq!(json(&body)["proto"], "https", "the backend is told the client's scheme");
    }

    // Plain HTTP on the TLS port is not served.
    let plain = reqwest::get(proxy.base_url() + "/r").await;
    assert!(plain.is_err(), "plain HTTP answered on the TLS listener");
}

#[tokio::test]
async fn sni_chooses_the_certificate_and_the_default_answers_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let default = ca.server(&["localhost"]);
    let a = ca.server(&["a.test"]);
    let b = ca.server(&["*.b.test"]);
    default.write(dir.path(), "default");
    a.write(dir.path(), "a");
    b.write(dir.path(), "b");
    let upstream = echo_upstream(None).await;
    let toml = r#"
[tls]
cert_file = "default.crt"
key_file = "default.key"

[[tls.certificates]]
cert_file = "a.crt"
key_file = "a.key"
server_names = ["a.test"]

[[tls.certificates]]
cert_file = "b.crt"
key_file = "b.key"
server_names = ["*.b.test"]
"#;
    let (proxy, _) = proxy_with(dir.path(), toml, &upstream).await;
    let config = ca.client_config(None, &["http/1.1"]);

    for (name, expected) in [("a.test", &a), ("api.b.test", &b), ("localhost", &default)] {
        let mut session = TlsSession::connect(config.clone(), proxy.addr, name).await.unwrap();
        assert!(
            session.server_certificate == expected.der,
            "SNI {name} got another certificate"
        );
        assert_eq!(session.get("/r").await.unwrap().1, StatusCode::OK);
    }
    // A name no certificate carries gets the default, which the client
    // then refuses: the proxy never answers with a name it was not given.
    let other = TlsSession::connect(config, proxy.addr, "c.test").await;
    assert!(other.is_err(), "a certificate for c.test was presented");
}

#[tokio::test]
async fn a_required_client_certificate_refuses_clients_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("server CA");
    let clients = TestCa::new("client CA");
    let strangers = TestCa::new("another CA");
    ca.server(&["localhost"]).write(dir.path(), "server");
    clients.write(dir.path(), "clients");
    let upstream = echo_upstream(None).await;
    let tls = |mode: &str| {
        format!(
            "[tls]\ncert_file = \"server.crt\"\nkey_file = \"server.key\"\nclient_ca_file = \"clients.pem\"\nclient_auth = \"{mode}\"\n"
        )
    };
    let (proxy, file) = proxy_with(dir.path(), &tls("required"), &upstream).await;

    // The handshake (TLS 1.2) or the first request (TLS 1.3, where the
    // server's refusal arrives after the client's Finished) fails.
    let without = async |addr, config| match TlsSession::connect(config, addr, "localhost").await {
        Ok(mut session) => session.get("/r").await.map(|r| r.1).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    assert!(without(proxy.addr, ca.client_config(None, &["http/1.1"]))
        .await
        .is_err());
    let stranger = strangers.client("mallory");
    let refused = without(proxy.addr, ca.client_config(Some(&stranger), &["http/1.1"])).await;
    assert!(refused.is_err(), "a certificate from another CA was accepted");
    let alice = clients.client("alice");
    let mut session = TlsSession::connect(ca.client_config(Some(&alice), &["h2"]), proxy.addr, "localhost")
        .await
        .unwrap();
    assert_eq!(session.get("/r").await.unwrap().1, StatusCode::OK);

    // Optional: served without one; a bad one is still refused.
    std::fs::write(&file.path, format!("{}\n{ROUTE}", tls("optional"))).unwrap();
    assert_eq!(reload(&proxy).await, 200);
    assert_eq!(
        without(proxy.addr, ca.client_config(None, &["http/1.1"])).await,
        Ok(StatusCode::OK)
    );
    let refused = without(proxy.addr, ca.client_config(Some(&stranger), &["http/1.1"])).await;
    assert!(refused.is_err(), "a certificate from another CA was accepted");
}

async fn reload(proxy: &ProxyHandle) -> u16 {
    reqwest::Client::new()
        .post(proxy.admin_url("/reload"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_renewed_certificate_serves_new_connections_and_open_ones_keep_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let old = ca.server(&["localhost"]);
    old.write(dir.path(), "server");
    let upstream = echo_upstream(None).await;
    let toml = "[tls]\ncert_file = \"server.crt\"\nkey_file = \"server.key\"\n";
    let (proxy, _) = proxy_with(dir.path(), toml, &upstream).await;
    let config = ca.client_config(None, &["http/1.1"]);
    let mut open = TlsSession::connect(config.clone(), proxy.addr, "localhost")
        .await
        .unwrap();
    assert_eq!(open.get("/r").await.unwrap().1, StatusCode::OK);

    let renewed = ca.server(&["localhost"]);
    renewed.write(dir.path(), "server");
    assert_eq!(reload(&proxy).await, 200);
    // A client that remembers its session resumes it across the reload
    // (no full handshake for every client after a renewal)...
    let resumed = TlsSession::connect(config.clone(), proxy.addr, "localhost")
        .await
        .unwrap();
    assert!(resumed.resumed, "the session did not survive the reload");
    // ...and a full handshake gets the renewed certificate.
    let config = ca.client_config(None, &["http/1.1"]);
    let mut fresh = TlsSession::connect(config.clone(), proxy.addr, "localhost")
        .await
        .unwrap();
    assert!(!fresh.resumed);
    assert!(
        fresh.server_certificate == renewed.der,
        "a new connection got the old certificate"
    );
    assert_eq!(fresh.get("/r").await.unwrap().1, StatusCode::OK);
    assert!(open.server_certificate == old.der);
    assert_eq!(
        open.get("/r").await.unwrap().1,
        StatusCode::OK,
        "the open connection broke"
    );

    // A broken renewal (a key that is not the certificate's) is refused,
    // and the last good certificate keeps serving.
    std::fs::write(dir.path().join("server.key"), ca.server(&["localhost"]).key_pem).unwrap();
    assert_eq!(reload(&proxy).await, 400);
    let config = ca.client_config(None, &["http/1.1"]);
    let mut after = TlsSession::connect(config, proxy.addr, "localhost").await.unwrap();
    assert!(after.server_certificate == renewed.der);
    assert_eq!(after.get("/r").await.unwrap().1, StatusCode::OK);
    assert_eq!(open.get("/r").await.unwrap().1, StatusCode::OK);
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    ca.server(&["localhost"]).write(dir.path(), "server");
    let upstream = echo_upstream(None).await;
    let toml =
        "[server]\nheader_read_timeout = \"200ms\"\n[tls]\ncert_file = \"server.crt\"\nkey_file = \"server.key\"\n";
    let (proxy, _) = proxy_with(dir.path(), toml, &upstream).await;

    let mut silent = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let mut buf = [0u8; 64];
    // A guard against a hang, not a timing assertion: the proxy closes at
    // its own timeout, far sooner.
    let read = tokio::time::timeout(Duration::from_secs(30), silent.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the silent connection was not closed: {read:?}"
    );
    assert_eq!(
        proxy
            .metric(r#"proxy_connections_closed_total{reason="tls_handshake_timeout"}"#)
            .await,
        1
    );
}

#[tokio::test]
async fn the_admin_listener_may_use_tls_too() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    ca.server(&["localhost"]).write(dir.path(), "admin");
    let upstream = echo_upstream(None).await;
    let toml = "[admin_tls]\ncert_file = \"admin.crt\"\nkey_file = \"admin.key\"\n";
    let (proxy, _) = proxy_with(dir.path(), toml, &upstream).await;
    let mut session = TlsSession::connect(ca.client_config(None, &["h2"]), proxy.admin_addr, "localhost")
        .await
        .unwrap();
    assert_eq!(session.get("/healthz").await.unwrap().1, StatusCode::OK);
    // The client listener stays plain.
    assert_eq!(reqwest::get(proxy.base_url() + "/r").await.unwrap().status(), 200);
}

/// The proxy in front of an HTTPS upstream whose certificate `backend`
/// presents, trusting `ca`, with `extra` upstream settings.
async fn via_https_backend(dir: &Path, ca: &TestCa, upstream: &ScriptedUpstream, extra: &str) -> ProxyHandle {
    ca.write(dir, "backend-ca");
    let toml = format!("[upstream]\nca_file = \"backend-ca.pem\"\n{extra}\n");
    let mut file = proxy_config_file(dir, &format!("{toml}\n{ROUTE}"), upstream.addr, None, Some(ADMIN_TOKEN));
    file.flags.upstream = Some(format!("https://localhost:{}", upstream.addr.port()));
    spawn_reloadable_proxy(file).await
}

#[tokio::test]
async fn an_https_backend_with_its_own_ca_is_reached_over_h2_when_it_offers_it() {
    let ca = TestCa::new("backend CA");
    let leaf = ca.server(&["localhost"]);
    for (backend_alpn, setting, version) in [
        (&["h2", "http/1.1"][..], "", "HTTP/2.0"),
        (&["h2", "http/1.1"][..], "http2 = \"never\"", "HTTP/1.1"),
        (&["http/1.1"][..], "http2 = \"auto\"", "HTTP/1.1"),
        (&["h2"][..], "http2 = \"always\"", "HTTP/2.0"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let upstream = echo_upstream(Some(leaf.server_config(backend_alpn))).await;
        let proxy = via_https_backend(dir.path(), &ca, &upstream, setting).await;
        let response = reqwest::get(proxy.base_url() + "/r").await.unwrap();
        assert_eq!(response.status(), 200, "{setting}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            body["version"], version,
            "backend offering {backend_alpn:?}, {setting:?}"
        );
        assert_eq!(body["proto"], "http");
    }
}

#[tokio::test]
async fn a_backend_requiring_a_client_certificate_gets_the_configured_one_renewed_on_reload() {
    let ca = TestCa::new("backend CA");
    let clients = TestCa::new("backend's client CA");
    let tls = ca
        .server(&["localhost"])
        .server_config_requiring(&clients, &["h2", "http/1.1"]);
    let upstream = echo_upstream(Some(tls)).await;

    // A certificate the backend does not accept (another CA), then the
    // right one written over it and reloaded: no restart.
    let dir = tempfile::tempdir().unwrap();
    TestCa::new("stranger CA")
        .client("proxy")
        .write(dir.path(), "proxy-client");
    let with = "client_cert_file = \"proxy-client.crt\"\nclient_key_file = \"proxy-client.key\"";
    let proxy = via_https_backend(dir.path(), &ca, &upstream, with).await;
    assert_eq!(reqwest::get(proxy.base_url() + "/r").await.unwrap().status(), 502);
    clients.client("proxy").write(dir.path(), "proxy-client");
    assert_eq!(reload(&proxy).await, 200);
    assert_eq!(reqwest::get(proxy.base_url() + "/r").await.unwrap().status(), 200);

    let dir = tempfile::tempdir().unwrap();
    let without = via_https_backend(dir.path(), &ca, &upstream, "").await;
    assert_eq!(reqwest::get(without.base_url() + "/r").await.unwrap().status(), 502);
    assert_eq!(
        upstream.hits(),
        1,
        "only the request with an accepted certificate reached the backend"
    );
}

#[tokio::test]
async fn http2_always_speaks_h2c_to_a_plain_backend() {
    let upstream = echo_upstream(None).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = format!("[upstream]\nhttp2 = \"always\"\n{ROUTE}");
    let proxy = spawn_reloadable_proxy(proxy_config_file(dir.path(), &toml, upstream.addr, None, None)).await;
    let body: serde_json::Value = reqwest::get(proxy.base_url() + "/r")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["version"], "HTTP/2.0");
}

#[tokio::test]
async fn a_backend_certificate_for_another_name_or_ca_is_a_502() {
    let ca = TestCa::new("backend CA");
    let wrong_name = ca.server(&["elsewhere.test"]);
    let dir = tempfile::tempdir().unwrap();
    let upstream = echo_upstream(Some(wrong_name.server_config(&["http/1.1"]))).await;
    let proxy = via_https_backend(dir.path(), &ca, &upstream, "").await;
    let response = reqwest::get(proxy.base_url() + "/r").await.unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(upstream.hits(), 0);

    // The same certificate is accepted once upstream.server_name says
    // which name to expect.
    let dir = tempfile::tempdir().unwrap();
    let named = via_https_backend(dir.path(), &ca, &upstream, "server_name = \"elsewhere.test\"").await;
    assert_eq!(reqwest::get(named.base_url() + "/r").await.unwrap().status(), 200);

    // A certificate from a CA the proxy was not told to trust: 502, even
    // though the name is right.
    let stranger = TestCa::new("stranger CA").server(&["localhost"]);
    let upstream = echo_upstream(Some(stranger.server_config(&["http/1.1"]))).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = via_https_backend(dir.path(), &ca, &upstream, "").await;
    assert_eq!(reqwest::get(proxy.base_url() + "/r").await.unwrap().status(), 502);
    assert_eq!(upstream.hits(), 0);
}
