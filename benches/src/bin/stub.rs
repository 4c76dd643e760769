//! `stub`: the two fixed servers benches/peers runs besides the origin.
//!
//! - `stub origin`: an upstream answering every GET with a JSON body of a
//!   set size after a set delay, for the scenarios whose variables are the
//!   body size, the key set and the origin's latency.
//! - `stub ceiling`: answers every request with the status, headers and
//!   body of one response captured from the proxy (`curl -si` output), from
//!   memory, on the proxy's runtime settings: the most an HTTP/1.1 server
//!   built on hyper can do on this machine, the ceiling the proxy's hit
//!   path is measured against.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

#[derive(Parser)]
#[command(about = "Fixed HTTP servers for benches/peers")]
struct Cli {
    /// host:port to listen on.
    #[arg(long)]
    listen: std::net::SocketAddr,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Answer every request with a JSON body of `--body-bytes` bytes,
    /// after `--delay`.
    Origin {
        #[arg(long, default_value_t = 1024)]
        body_bytes: usize,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
        delay: Duration,
    },
    /// Answer every request with the response captured in this file.
    Ceiling { response: PathBuf },
}

/// What every request is answered with.
struct Canned {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The proxy's runtime: `Runtime::new()`, one worker per core.
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(cli.listen).await?;
        match cli.command {
            Command::Origin { body_bytes, delay } => {
                serve(listener, move |request: Request<Incoming>| {
                    let body = padded_json(request.uri().path(), body_bytes);
                    async move {
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        let mut response = Response::new(Full::new(body));
                        response
                            .headers_mut()
                            .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                        response
                    }
                })
                .await
            }
            Command::Ceiling { response } => {
                let canned = Arc::new(parse_captured(&std::fs::read(&response)?)?);
                serve(listener, move |_request: Request<Incoming>| {
                    let canned = canned.clone();
                    async move {
                        let mut response = Response::new(Full::new(canned.body.clone()));
                        *response.status_mut() = canned.status;
                        *response.headers_mut() = canned.headers.clone();
                        response
                    }
                })
                .await
            }
        }
    })
}

async fn serve<F, Fut>(listener: tokio::net::TcpListener, answer: F) -> anyhow::Result<()>
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let answer = answer.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let answer = answer.clone();
                async move { Ok::<_, Infallible>(answer(request).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// `{"path":"…","pad":"xxx…"}`, `bytes` long (or as long as the path
/// makes it): each key its own answer, so a check can tell them apart.
fn padded_json(path: &str, bytes: usize) -> Bytes {
    let path = path.replace(['"', '\\'], "");
    let bare = format!(r#"{{"path":"{path}","pad":""}}"#).len();
    let pad = "x".repeat(bytes.saturating_sub(bare));
    Bytes::from(format!(r#"{{"path":"{path}","pad":"{pad}"}}"#))
}

/// A response as `curl -si` prints it. The framing and date headers are
/// left to hyper, which writes them as it does for the proxy.
fn parse_captured(raw: &[u8]) -> anyhow::Result<Canned> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no end of headers in the captured response"))?;
    let head = std::str::from_utf8(&raw[..split])?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("no status in {status_line:?}"))?
        .parse::<StatusCode>()?;
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("not a header line: {line:?}"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())?;
        if [
            http::header::CONTENT_LENGTH,
            http::header::DATE,
            http::header::CONNECTION,
            http::header::TRANSFER_ENCODING,
        ]
        .contains(&name)
        {
            continue;
        }
        headers.append(name, HeaderValue::from_str(value.trim())?);
    }
    Ok(Canned {
        status,
        headers,
        body: Bytes::copy_from_slice(&raw[split + 4..]),
    })
}
