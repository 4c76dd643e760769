//! The `proxy` binary as an operator runs it: SIGHUP (or, with `--watch`,
//! a changed file) reloads the config file, and a second process started on the same address takes over from
//! the first (SIGTERM) without a failed request.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

const SECRET: &str = "process-test-secret-of-at-least-32-bytes";
/// How long a condition the test waits for may take.
const PATIENCE: Duration = Duration::from_secs(20);

fn config(route_access: &str) -> String {
    format!(
        r#"
[server]
shutdown_grace = "5s"

[[routes]]
name = "r"
path = "/r"
methods = ["GET"]
{route_access}
cache = {{ scope = "shared", ttl = "1h" }}
"#
    )
}

/// A free port: bound, read, released, and never handed out twice by this
/// test binary (the kernel readily returns a just-released port, so a
/// listener and its admin listener could otherwise get the same one). Ports
/// are never fixed in tests.
fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner).insert(port) {
            return port;
        }
    }
}

/// An upstream that answers every request `{"ok": true}`.
async fn upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|_| async {
                    let response = http::Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from_static(b"{\"ok\":true}")))
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(response)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A `proxy` process, killed on drop if still running.
struct Proxy {
    child: Child,
    admin: SocketAddr,
}

impl Proxy {
    fn start(dir: &Path, listen: SocketAddr, upstream: SocketAddr) -> Proxy {
        Proxy::start_with(dir, listen, upstream, &[])
    }

    fn start_with(dir: &Path, listen: SocketAddr, upstream: SocketAddr, flags: &[&str]) -> Proxy {
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_proxy"))
            .args(flags)
            .arg("--config")
            .arg(dir.join("config.toml"))
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--admin-listen")
            .arg(admin.to_string())
            .arg("--upstream")
            .arg(format!("http://{upstream}"))
            .current_dir(dir)
            .env_clear()
            .env("JWT_SECRET_KEY", SECRET)
            .env("LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Proxy { child, admin }
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    async fn admin_get(&self, path: &str) -> Option<String> {
        let response = reqwest::get(format!("http://{}{path}", self.admin)).await.ok()?;
        response.status().is_success().then_some(())?;
        response.text().await.ok()
    }

    async fn metric(&self, series: &str) -> u64 {
        let page = self.admin_get("/metrics").await.unwrap_or_default();
        page.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0, |v| v.trim().parse().unwrap())
    }

    async fn ready(&self) {
        until("the proxy is ready", || self.admin_get("/readyz")).await;
    }

    /// Waits for the process to exit; its exit status.
    async fn exited(&mut self) -> std::process::ExitStatus {
        let child = &mut self.child;
        until("the proxy exits", || std::future::ready(child.try_wait().unwrap())).await
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` until it yields a value, failing after [`PATIENCE`].
async fn until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.toml"), config("access = \"public\"")).unwrap();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let proxy = Proxy::start(dir.path(), listen, upstream().await);
    proxy.ready().await;
    let url = format!("http://{listen}/r");
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 200);

    std::fs::write(dir.path().join("config.toml"), config("roles = [\"admin\"]")).unwrap();
    proxy.signal(libc::SIGHUP);
    until("the reload is counted", || async {
        (proxy.metric(r#"proxy_config_reloads_total{outcome="ok"}"#).await == 1).then_some(())
    })
    .await;
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 401, "the new rules apply");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reloads_when_the_file_changes_and_refuses_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.toml"), config("access = \"public\"")).unwrap();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let proxy = Proxy::start_with(dir.path(), listen, upstream().await, &["--watch"]);
    proxy.ready().await;
    let url = format!("http://{listen}/r");

    std::fs::write(dir.path().join("config.toml"), "[[routes]]\nname = ").unwrap();
    until("the broken file is refused", || async {
        (proxy.metric(r#"proxy_config_reloads_total{outcome="invalid"}"#).await == 1).then_some(())
    })
    .await;
    assert_eq!(
        reqwest::get(&url).await.unwrap().status(),
        200,
        "the old rules serve on"
    );

    std::fs::write(dir.path().join("config.toml"), config("roles = [\"admin\"]")).unwrap();
    until("the fixed file is loaded", || async {
        (proxy.metric(r#"proxy_config_reloads_total{outcome="ok"}"#).await == 1).then_some(())
    })
    .await;
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 401, "the new rules apply");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_takes_over_the_address_without_a_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.toml"), config("access = \"public\"")).unwrap();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let upstream = upstream().await;
    let mut old = Proxy::start(dir.path(), listen, upstream);
    old.ready().await;

    // A client sending requests back to back for the whole hand-over.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let client = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut errors = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match http.get(format!("http://{listen}/r")).send().await {
                    Ok(response) if response.status() == 200 => ok.fetch_add(1, Ordering::SeqCst),
                    other => {
                        errors.push(format!("{other:?}"));
                        failed.fetch_add(1, Ordering::SeqCst)
                    }
                };
            }
            errors
        })
    };
    let served_before = |n: u64| {
        let ok = ok.clone();
        move || std::future::ready((ok.load(Ordering::SeqCst) >= n).then_some(()))
    };
    until("the old process serves", served_before(50)).await;

    let new = Proxy::start(dir.path(), listen, upstream);
    new.ready().await;
    old.signal(libc::SIGTERM);
    let status = old.exited().await;
    assert!(status.success(), "the old process exited cleanly: {status}");
    let after = ok.load(Ordering::SeqCst) + 50;
    until("the new process serves", served_before(after)).await;
    stop.store(true, Ordering::SeqCst);
    let errors = client.await.unwrap();
    assert_eq!(failed.load(Ordering::SeqCst), 0, "failed requests: {errors:?}");
    assert!(new.metric(r#"proxy_requests_total{rule="r",status="200"}"#).await >= 50);
}

/// A CA made for one test, and the server certificates it signs.
struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    fn new() -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap();
        TestCa { issuer }
    }

    /// Writes a new certificate for `localhost` to `dir/server.{crt,key}`;
    /// returns it (DER).
    fn renew(&self, dir: &Path) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        // The key first: a reload that sees the new key with the old
        // certificate is refused, and the next look sees both.
        std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
        std::fs::write(dir.join("server.crt"), cert.pem()).unwrap();
        cert.der().to_vec()
    }

    /// An HTTP/1.1 connection over TLS to `addr`, trusting only this CA,
    /// with no session to resume; the certificate the server presented.
    async fn connect(
        &self,
        addr: SocketAddr,
    ) -> (
        hyper::client::conn::http1::SendRequest<http_body_util::Empty<Bytes>>,
        Vec<u8>,
    ) {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap();
        let presented = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(connection);
        (sender, presented)
    }
}

async fn get_r(sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Empty<Bytes>>) -> u16 {
    sender.ready().await.unwrap();
    let request = http::Request::get("/r")
        .header("host", "localhost")
        .body(http_body_util::Empty::new())
        .unwrap();
    sender.send_request(request).await.unwrap().status().as_u16()
}

const TLS: &str = "[tls]\ncert_file = \"server.crt\"\nkey_file = \"server.key\"\n";

/// A ready `proxy` serving HTTPS with a certificate `ca` issued (the one
/// returned), run with `flags`; its folder and address.
async fn tls_proxy(ca: &TestCa, flags: &[&str]) -> (tempfile::TempDir, Proxy, SocketAddr, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let first = ca.renew(dir.path());
    std::fs::write(
        dir.path().join("config.toml"),
        format!("{TLS}{}", config("access = \"public\"")),
    )
    .unwrap();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let proxy = Proxy::start_with(dir.path(), listen, upstream().await, flags);
    proxy.ready().await;
    (dir, proxy, listen, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_renews_the_certificate_under_a_running_client() {
    let ca = TestCa::new();
    let (dir, proxy, listen, first) = tls_proxy(&ca, &[]).await;
    let (mut open, presented) = ca.connect(listen).await;
    assert_eq!(presented, first);
    assert_eq!(get_r(&mut open).await, 200);

    let second = ca.renew(dir.path());
    proxy.signal(libc::SIGHUP);
    until("the reload is counted", || async {
        (proxy.metric(r#"proxy_config_reloads_total{outcome="ok"}"#).await == 1).then_some(())
    })
    .await;
    let (mut fresh, presented) = ca.connect(listen).await;
    assert_eq!(presented, second, "a new connection got the old certificate");
    assert_eq!(get_r(&mut fresh).await, 200);
    assert_eq!(get_r(&mut open).await, 200, "the open connection broke");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_picks_up_a_renewed_certificate_file() {
    let ca = TestCa::new();
    let (dir, _proxy, listen, first) = tls_proxy(&ca, &["--watch"]).await;
    let (mut open, presented) = ca.connect(listen).await;
    assert_eq!(presented, first);

    let second = ca.renew(dir.path());
    until("a new connection gets the renewed certificate", || async {
        let (_, presented) = ca.connect(listen).await;
        (presented == second).then_some(())
    })
    .await;
    assert_eq!(get_r(&mut open).await, 200, "the open connection broke");
}
