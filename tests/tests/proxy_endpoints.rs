//! A backend of several endpoints (`upstream.urls`): one stopped under load
//! costs no idempotent request, is ejected, and is re-admitted once it
//! answers again; a request with a body is never sent twice; each endpoint
//! is sent its own `Host`.
//!
//! Waits are bounded polls on a condition (a metric, a backend's count);
//! nothing asserts speed. Ports are the backends' own: a stopped backend is
//! started again on the address it had.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use e2e::wait::eventually;
use e2e::{endpoints_proxy_config, json_reply, spawn_proxy, ProxyHandle, ScriptedUpstream};
use serde_json::Value;
use tokio::task::JoinHandle;

/// `eject_for` short, so re-admission comes soon; a connect timeout well
/// above loopback's, so only a refusal counts.
const CONFIG: &str = r#"
[upstream]
eject_after = 3
eject_for = "200ms"
connect_timeout = "2s"

[[routes]]
name = "plain"
path = "/plain"
methods = ["GET"]
access = "public"

[[routes]]
name = "write"
path = "/write"
methods = ["POST"]
access = "public"
"#;

/// A backend answering every request with the `Host` it was sent and its
/// own name.
async fn backend(name: &'static str, on: Option<SocketAddr>) -> ScriptedUpstream {
    let script = move |req: http::Request<hyper::body::Incoming>| async move {
        let host = req.headers().get("host").and_then(|h| h.to_str().ok()).unwrap_or("");
        json_reply(200, &format!(r#"{{"host":"{host}"}}"#), &[("x-backend", name)])
    };
    match on {
        Some(addr) => ScriptedUpstream::start_on(addr, script).await,
        None => ScriptedUpstream::start(script).await,
    }
}

fn series(name: &str, endpoint: SocketAddr) -> String {
    format!("{name}{{endpoint=\"{endpoint}\"}}")
}

/// Clients sending `GET /plain` back to back until stopped, each failure
/// (an error, another status, a truncated body) kept with its reason.
struct Load {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
    clients: Vec<JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(proxy: &ProxyHandle, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let url = format!("{}/plain", proxy.base_url());
        let clients = (0..clients)
            .map(|_| {
                let (stop, answered, url) = (stop.clone(), answered.clone(), url.clone());
                tokio::spawn(async move {
                    let client = reqwest::Client::new();
                    let mut failures = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        match client.get(&url).send().await {
                            Ok(resp) if resp.status() == 200 => match resp.json::<Value>().await {
                                Ok(_) => {
                                    answered.fetch_add(1, Ordering::SeqCst);
                                }
                                Err(e) => failures.push(format!("body: {e}")),
                            },
                            Ok(resp) => failures.push(format!("status {}", resp.status())),
                            Err(e) => failures.push(format!("request: {e}")),
                        }
                    }
                    failures
                })
            })
            .collect();
        Load {
            stop,
            answered,
            clients,
        }
    }

    fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }

    /// Waits until `more` requests beyond those answered so far are.
    async fn until_more_answered(&self, more: usize, what: &str) {
        let target = self.answered() + more;
        eventually(what, || async { self.answered() >= target }).await;
    }

    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let mut failures = Vec::new();
        for client in self.clients {
            failures.extend(client.await.expect("load client panicked"));
        }
        (self.answered.load(Ordering::SeqCst), failures)
    }
}

async fn stopped_under_load(balance: &str) {
    let a = backend("a", None).await;
    let b = backend("b", None).await;
    let (a_addr, b_addr) = (a.addr, b.addr);
    let config = CONFIG.replace("[upstream]\n", &format!("[upstream]\nbalance = \"{balance}\"\n"));
    let proxy = spawn_proxy(endpoints_proxy_config(&config, &[a_addr, b_addr], None)).await;
    let load = Load::start(&proxy, 4);
    eventually("both endpoints serve", || async { a.hits() >= 20 && b.hits() >= 20 }).await;

    let b_addr = b.stop().await;
    let ejected = series("proxy_upstream_endpoint_ejected", b_addr);
    eventually("the stopped endpoint is ejected", || async {
        proxy.metric(&ejected).await == 1
    })
    .await;
    assert_eq!(
        proxy
            .metric(&series("proxy_upstream_endpoint_ejections_total", b_addr))
            .await,
        1,
        "ejected once, however many probes failed since"
    );
    assert_eq!(
        proxy.metric(&series("proxy_upstream_endpoint_ejected", a_addr)).await,
        0
    );
    let refused = format!("proxy_upstream_endpoint_requests_total{{endpoint=\"{b_addr}\",outcome=\"connect_error\"}}");
    assert!(proxy.metric(&refused).await >= 3, "ejected after three refusals");
    load.until_more_answered(200, "the load goes on with one endpoint")
        .await;

    let ready = reqwest::get(proxy.admin_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200, "one endpoint accepting is ready");
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["upstream_endpoints"][b_addr.to_string()], "unavailable");
    assert_eq!(ready["upstream_endpoints"][a_addr.to_string()], "ok");

    let b = backend("b", Some(b_addr)).await;
    eventually("the returned endpoint is re-admitted", || async {
        proxy.metric(&ejected).await == 0 && b.hits() >= 20
    })
    .await;
    let (answered, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {answered} GETs failed: {failures:?}",
        failures.len()
    );
    assert!(a.hits() > 0 && b.hits() > 0);
}

#[tokio::test]
async fn round_robin_one_backend_stopped_under_load_fails_no_get_is_ejected_and_readmitted() {
    stopped_under_load("round_robin").await;
}

#[tokio::test]
async fn least_outstanding_one_backend_stopped_under_load_fails_no_get_is_ejected_and_readmitted() {
    stopped_under_load("least_outstanding").await;
}

/// A raw backend that reads each request's head, counts it and closes the
/// connection without answering: it may have acted on the request.
async fn closes_unanswered() -> (SocketAddr, Arc<AtomicUsize>) {
    e2e::upstream::raw_upstream(|stream| async move { drop(stream) }).await
}

#[tokio::test]
async fn a_post_is_never_sent_twice_and_a_get_is_retried_on_the_other_endpoint() {
    let (closer, received) = closes_unanswered().await;
    let other = backend("other", None).await;
    let proxy = spawn_proxy(endpoints_proxy_config(CONFIG, &[closer, other.addr], None)).await;
    let client = reqwest::Client::new();
    const POSTS: usize = 6;
    let mut statuses = Vec::new();
    for _ in 0..POSTS {
        let resp = client
            .post(format!("{}/write", proxy.base_url()))
            .body(r#"{"n":1}"#)
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    let failed = statuses.iter().filter(|&&s| s == 502).count();
    assert!(failed > 0, "no POST went to the endpoint that drops them: {statuses:?}");
    assert_eq!(
        failed + statuses.iter().filter(|&&s| s == 200).count(),
        POSTS,
        "{statuses:?}"
    );
    assert_eq!(received.load(Ordering::SeqCst), failed, "every 502 was received");
    assert_eq!(
        other.hits(),
        POSTS - failed,
        "a POST the closer dropped went to the other endpoint too"
    );
    let errors = format!("proxy_upstream_endpoint_requests_total{{endpoint=\"{closer}\",outcome=\"error\"}}");
    assert_eq!(proxy.metric(&errors).await, failed as u64);
    assert_eq!(
        proxy.metric(&series("proxy_upstream_endpoint_ejected", closer)).await,
        0,
        "failing after sending says nothing about health"
    );

    // A GET may be sent twice: the one the closer drops is answered by the
    // other endpoint.
    let before = received.load(Ordering::SeqCst);
    for _ in 0..POSTS {
        let resp = client.get(format!("{}/plain", proxy.base_url())).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-backend"], "other");
    }
    assert!(
        received.load(Ordering::SeqCst) > before,
        "no GET tried the closer first"
    );
}

#[tokio::test]
async fn each_endpoint_is_sent_its_own_authority_as_host() {
    let a = backend("a", None).await;
    let b = backend("b", None).await;
    let proxy = spawn_proxy(endpoints_proxy_config(CONFIG, &[a.addr, b.addr], None)).await;
    let expected = HashMap::from([("a", a.addr.to_string()), ("b", b.addr.to_string())]);
    let client = reqwest::Client::new();
    let mut seen = HashMap::new();
    for _ in 0..4 {
        let resp = client
            .get(format!("{}/plain", proxy.base_url()))
            .header("host", "client.example")
            .send()
            .await
            .unwrap();
        let name = resp.headers()["x-backend"].to_str().unwrap().to_owned();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["host"], expected[name.as_str()], "{name} was sent another Host");
        *seen.entry(name).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "round robin spreads: {seen:?}");
}
