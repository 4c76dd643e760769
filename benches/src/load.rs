//! The load engine: keep-alive HTTP/1.1 connections, plain or over TLS
//! (or bare Redis `PING`s, the floor a Redis-backed hit is measured
//! against), driven closed-loop (as fast as each connection can go) or
//! open-loop (a fixed request rate).
//!
//! Open-loop latency is measured from when each request was *scheduled*
//! whenever the server made it late — its connection was still busy with
//! the previous answer at the due time — so a stalled server shows up as
//! latency instead of silently lowering the send rate (coordinated
//! omission). When the connection was idle, the request is timed from when
//! it was actually sent: Tokio's millisecond timer may wake the generator
//! up to 1 ms late, and that lateness is the generator's, not the server's.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request to send.
#[derive(Clone)]
pub struct Planned {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Produces request number `i` of a run; called from every connection.
pub type Plan = Arc<dyn Fn(u64) -> Planned + Send + Sync>;

#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub addr: std::net::SocketAddr,
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// `Some(r)`: open loop at `r` requests/s; `None`: closed loop.
    pub rate: Option<u64>,
    /// `Some`: every connection does a TLS handshake first.
    pub tls: Option<Tls>,
    /// `Some(n)`: send requests 0 to n - 1 once each, then stop; the run
    /// lasts as long as they take (`duration` is not used).
    pub limit: Option<u64>,
    pub protocol: Protocol,
}

/// What each connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1, the plan's requests.
    Http,
    /// RESP `PING`, answered `+PONG` (counted as a 2xx; the plan is not
    /// used): one bare round trip to a Redis server on the same open-loop
    /// schedule, the floor under any cache hit confirmed in Redis.
    RedisPing,
}

/// TLS for [`LoadSpec::tls`]: the client configuration and the name the
/// server's certificate must carry.
#[derive(Clone, Debug)]
pub struct Tls {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: rustls_pki_types::ServerName<'static>,
}

impl Tls {
    /// TLS 1.3 with TLS_AES_128_GCM_SHA256 and X25519 only, ALPN
    /// `http/1.1`, trusting only the PEM certificates in `ca_file`: the
    /// suite benches/peers pins on every HTTPS target, so that each is
    /// measured on the same cipher whatever it would prefer.
    pub fn pinned(
        ca_file: &std::path::Path,
        server_name: rustls_pki_types::ServerName<'static>,
    ) -> anyhow::Result<Tls> {
        use rustls::crypto::ring;
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca_file)? {
            roots.add(cert?)?;
        }
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: vec![ring::cipher_suite::TLS13_AES_128_GCM_SHA256],
            kx_groups: vec![ring::kx_group::X25519],
            ..ring::default_provider()
        };
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            config: Arc::new(config),
            server_name,
        })
    }
}

/// What one run measured (after warm-up).
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadResult {
    pub requests: u64,
    pub errors: u64,
    /// Responses by status class: 2xx, 3xx, 4xx, 5xx.
    pub status_classes: [u64; 4],
    pub seconds: f64,
    pub throughput: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// The open-loop rate asked for; `None` in closed loop.
    pub offered_rate: Option<u64>,
    /// Open loop only: fewer than 95 % of the offered requests completed,
    /// so the target (or the generator) could not keep up and the latency
    /// figures understate the backlog left unsent at the end.
    pub fell_behind: bool,
}

/// A request unanswered for this long counts as an error, so one stalled
/// response cannot hang a run.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

struct Shared {
    next: AtomicU64,
    stop: AtomicBool,
    measuring: AtomicBool,
}

/// Runs `plan` against `spec.addr` and returns the measured figures.
pub async fn run(spec: &LoadSpec, plan: Plan) -> anyhow::Result<LoadResult> {
    let shared = Arc::new(Shared {
        next: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        // Without a warm-up every request counts, from the first: the
        // connections start sending before this task sets the flag.
        measuring: AtomicBool::new(spec.warmup.is_zero()),
    });
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(spec.connections);
    for _ in 0..spec.connections {
        let (shared, plan, spec) = (shared.clone(), plan.clone(), spec.clone());
        tasks.push(tokio::spawn(async move { connection(spec, plan, shared, start).await }));
    }
    tokio::time::sleep(spec.warmup).await;
    shared.measuring.store(true, Ordering::SeqCst);
    let measured_from = Instant::now();
    let mut seconds = None;
    if spec.limit.is_none() {
        tokio::time::sleep(spec.duration).await;
        shared.stop.store(true, Ordering::SeqCst);
        seconds = Some(measured_from.elapsed().as_secs_f64());
    }
    let mut finished = Vec::with_capacity(tasks.len());
    for task in tasks {
        finished.push(task.await??);
    }
    // With a limit, the run lasts until the last request is answered.
    let seconds = seconds.unwrap_or_else(|| measured_from.elapsed().as_secs_f64());

    let mut histogram = new_histogram();
    let (mut errors, mut classes) = (0, [0u64; 4]);
    for stats in finished {
        histogram.add(&stats.histogram)?;
        errors += stats.errors;
        for (total, n) in classes.iter_mut().zip(stats.classes) {
            *total += n;
        }
    }
    let requests = histogram.len();
    let q = |p: f64| histogram.value_at_quantile(p) as f64 / 1000.0;
    Ok(LoadResult {
        requests,
        errors,
        status_classes: classes,
        seconds,
        throughput: requests as f64 / seconds,
        p50_us: q(0.50),
        p90_us: q(0.90),
        p99_us: q(0.99),
        p999_us: q(0.999),
        max_us: histogram.max() as f64 / 1000.0,
        offered_rate: spec.rate,
        fell_behind: spec
            .rate
            .is_some_and(|rate| (requests as f64 / seconds) < 0.95 * rate as f64),
    })
}

fn new_histogram() -> Histogram<u64> {
    // Nanoseconds, 1 ns to 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

struct ConnectionStats {
    histogram: Histogram<u64>,
    errors: u64,
    classes: [u64; 4],
}

/// One connection to the target, in its protocol.
enum Client {
    Http(http1::SendRequest<Full<Bytes>>),
    Redis(tokio::net::TcpStream),
}

const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";
const PONG: &[u8] = b"+PONG\r\n";

impl Client {
    async fn connect(spec: &LoadSpec) -> anyhow::Result<Client> {
        let stream = tokio::net::TcpStream::connect(spec.addr).await?;
        stream.set_nodelay(true)?;
        if spec.protocol == Protocol::RedisPing {
            return Ok(Client::Redis(stream));
        }
        let Some(tls) = &spec.tls else {
            return handshake(stream).await;
        };
        let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
        handshake(connector.connect(tls.server_name.clone(), stream).await?).await
    }

    /// Sends `planned` (a `PING` to Redis) and reads the whole answer;
    /// returns its status (200 for `+PONG`).
    async fn exchange(&mut self, planned: Planned, host: &http::HeaderValue) -> anyhow::Result<u16> {
        match self {
            Client::Http(sender) => request(sender, planned, host).await,
            Client::Redis(stream) => ping(stream).await,
        }
    }
}

async fn request(
    sender: &mut http1::SendRequest<Full<Bytes>>,
    planned: Planned,
    host: &http::HeaderValue,
) -> anyhow::Result<u16> {
    let mut request = Request::new(Full::new(planned.body));
    *request.method_mut() = planned.method;
    *request.uri_mut() = planned.path.parse()?;
    *request.headers_mut() = planned.headers;
    // The address, as curl and wrk send it: caches that key on the
    // host (HAProxy's) see the same key whichever client asks.
    request.headers_mut().insert(http::header::HOST, host.clone());
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    response.into_body().collect().await?;
    Ok(status)
}

async fn ping(stream: &mut tokio::net::TcpStream) -> anyhow::Result<u16> {
    stream.write_all(PING).await?;
    let mut answer = [0u8; PONG.len()];
    stream.read_exact(&mut answer).await?;
    anyhow::ensure!(
        answer == PONG,
        "Redis answered {:?} to PING",
        String::from_utf8_lossy(&answer)
    );
    Ok(200)
}

async fn handshake<S>(stream: S) -> anyhow::Result<Client>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Client::Http(sender))
}

async fn connection(
    spec: LoadSpec,
    plan: Plan,
    shared: Arc<Shared>,
    start: Instant,
) -> anyhow::Result<ConnectionStats> {
    let mut stats = ConnectionStats {
        histogram: new_histogram(),
        errors: 0,
        classes: [0; 4],
    };
    let host = http::HeaderValue::from_str(&spec.addr.to_string())?;
    let mut client = Client::connect(&spec).await?;
    let mut previous_done = start;
    while !shared.stop.load(Ordering::Relaxed) {
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if spec.limit.is_some_and(|limit| i >= limit) {
            break;
        }
        let scheduled = match spec.rate {
            Some(rate) => {
                let due = start + Duration::from_nanos(i.saturating_mul(1_000_000_000) / rate.max(1));
                tokio::time::sleep_until(due.into()).await;
                if previous_done > due {
                    due
                } else {
                    Instant::now()
                }
            }
            None => Instant::now(),
        };
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let exchange = client.exchange(plan(i), &host);
        let outcome = match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(outcome) => outcome,
            Err(_) => Err(anyhow::anyhow!("no answer within {REQUEST_TIMEOUT:?}")),
        };
        previous_done = Instant::now();
        let measuring = shared.measuring.load(Ordering::Relaxed);
        match outcome {
            Ok(status) => {
                if measuring {
                    let elapsed = scheduled.elapsed().as_nanos() as u64;
                    stats.histogram.saturating_record(elapsed.max(1));
                    stats.classes[((status / 100).clamp(2, 5) - 2) as usize] += 1;
                }
            }
            Err(_) => {
                if measuring {
                    stats.errors += 1;
                }
                // The connection is unusable after an error; open a new one.
                client = Client::connect(&spec).await?;
            }
        }
    }
    Ok(stats)
}
