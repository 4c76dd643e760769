//! `loadgen`: runs the benchmark suite, or one load against one address.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use benches::load::{self, LoadSpec, Planned, Protocol, Tls};
use benches::report::{self, Row};
use benches::scenarios::{self, BenchStack};
use clap::{Parser, Subcommand};
use http::{HeaderMap, HeaderName, HeaderValue};

#[derive(Parser)]
#[command(about = "Load generator for the proxy: closed-loop throughput, open-loop latency")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct LoadArgs {
    /// Connections for the closed-loop (throughput) run.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Measured time of each run.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    duration: Duration,
    /// Unmeasured time before each run.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    warmup: Duration,
}

#[derive(Subcommand)]
enum Command {
    /// Start the whole stack and run every scenario against it.
    Suite {
        #[command(flatten)]
        load: LoadArgs,
        /// Requests/s of each open-loop latency run (capped at half the
        /// scenario's closed-loop throughput).
        #[arg(long, default_value_t = 2000)]
        latency_rate: u64,
        /// Connections of each open-loop latency run.
        #[arg(long, default_value_t = 4)]
        latency_connections: usize,
        /// Users inserted into FerretDB.
        #[arg(long, default_value_t = 1000)]
        users: usize,
        /// Share of writes in the mixed scenario, percent.
        #[arg(long, default_value_t = 5)]
        write_percent: u64,
        /// Only scenarios whose name contains this.
        #[arg(long)]
        only: Option<String>,
        /// Folder for bench.json and bench.svg.
        #[arg(long, default_value = "target/bench")]
        out: PathBuf,
    },
    /// Insert bench users into a running MongoDB and print an admin token
    /// (used by benches/peers).
    Seed {
        #[arg(long)]
        mongo_uri: String,
        #[arg(long, default_value = "origin")]
        database: String,
        #[arg(long, default_value_t = 1000)]
        users: usize,
        /// HS256 secret the token is signed with.
        #[arg(long, env = "JWT_SECRET_KEY")]
        secret: String,
    },
    /// Print one token per subject (`bench-subject-00000` on), role `user`,
    /// valid for a day: the many-token scenarios of benches/peers.
    Mint {
        #[arg(long)]
        subjects: usize,
        #[arg(long, env = "JWT_SECRET_KEY")]
        secret: String,
    },
    /// One load against one address (used by benches/peers).
    Run {
        #[command(flatten)]
        load: LoadArgs,
        /// host:port to load.
        #[arg(long)]
        addr: std::net::SocketAddr,
        /// Request path.
        #[arg(long, default_value = "/")]
        path: String,
        /// Extra header, `name: value`; repeatable.
        #[arg(long = "header")]
        headers: Vec<String>,
        /// Open loop at this rate (requests/s); closed loop when absent.
        #[arg(long)]
        rate: Option<u64>,
        /// Requests from this file instead of `--path`: one per line, the
        /// path, then optional tab-separated `name: value` headers (added
        /// to `--header`s). Request i is line i modulo the line count.
        #[arg(long)]
        plan: Option<PathBuf>,
        /// With `--plan`: send each line once, then stop (closed loop, no
        /// warm-up; used to fill a cache with a known set of keys).
        #[arg(long, requires = "plan")]
        once: bool,
        /// Connect with TLS, trusting only the PEM certificates in this file
        /// (which must name the address's IP): TLS 1.3,
        /// TLS_AES_128_GCM_SHA256, X25519, ALPN http/1.1.
        #[arg(long)]
        tls_ca: Option<PathBuf>,
        /// The address is a Redis server: send it `PING`s (on the same
        /// schedule; `--path`, `--plan` and `--header` are not used) and
        /// count each `+PONG` as a 2xx. The floor of a Redis-backed hit.
        #[arg(long, conflicts_with_all = ["tls_ca", "once"])]
        redis_ping: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Suite {
                load,
                latency_rate,
                latency_connections,
                users,
                write_percent,
                only,
                out,
            } => suite(load, latency_rate, latency_connections, users, write_percent, only, out).await,
            Command::Run {
                load,
                addr,
                path,
                headers,
                rate,
                plan,
                once,
                tls_ca,
                redis_ping,
            } => {
                let tls = match tls_ca {
                    Some(ca) => Some(Tls::pinned(&ca, addr.ip().into())?),
                    None => None,
                };
                let requests = match plan {
                    Some(file) => read_plan(&file, &headers)?,
                    None => vec![scenarios::get(path, parse_headers(&headers, HeaderMap::new())?)],
                };
                let protocol = if redis_ping {
                    Protocol::RedisPing
                } else {
                    Protocol::Http
                };
                single(load, addr, requests, rate, once, tls, protocol).await
            }
            Command::Mint { subjects, secret } => {
                for i in 0..subjects {
                    println!(
                        "{}",
                        scenarios::mint_token_with(&format!("bench-subject-{i:05}"), "user", &secret)
                    );
                }
                Ok(())
            }
            Command::Seed {
                mongo_uri,
                database,
                users,
                secret,
            } => {
                let ids = scenarios::seed_users(&mongo_uri, &database, users.max(1)).await?;
                println!("{}", scenarios::mint_token_with(&ids[0], "admin", &secret));
                Ok(())
            }
        }
    })
}

async fn suite(
    args: LoadArgs,
    latency_rate: u64,
    latency_connections: usize,
    users: usize,
    write_percent: u64,
    only: Option<String>,
    out: PathBuf,
) -> anyhow::Result<()> {
    eprintln!("starting the stack with {users} users ...");
    let stack = BenchStack::start(users.max(2)).await?;
    let mut rows = Vec::new();
    for scenario in scenarios::all(&stack, write_percent) {
        if only.as_deref().is_some_and(|o| !scenario.name.contains(o)) {
            continue;
        }
        let addr = stack.addr(scenario.target);
        let spec = LoadSpec {
            addr,
            connections: args.connections,
            warmup: Duration::ZERO,
            duration: args.duration,
            rate: None,
            tls: None,
            limit: None,
            protocol: Protocol::Http,
        };
        eprintln!("{} against {} ...", scenario.name, scenario.target.name());
        // Warm up in a run of its own, so the upstream count covers only
        // the measured run.
        load::run(
            &LoadSpec {
                duration: args.warmup,
                ..spec.clone()
            },
            scenario.plan.clone(),
        )
        .await?;
        let before = stack.upstream_requests(scenario.target).await;
        let throughput = load::run(&spec, scenario.plan.clone()).await?;
        let after = stack.upstream_requests(scenario.target).await;
        let rate = latency_rate.min((throughput.throughput / 2.0) as u64).max(1);
        let latency_spec = LoadSpec {
            connections: latency_connections,
            rate: Some(rate),
            warmup: args.warmup,
            ..spec
        };
        let latency = load::run(&latency_spec, scenario.plan.clone()).await?;
        if latency.fell_behind {
            eprintln!(
                "warning: {} could not keep up with {rate} requests/s; its latency understates the backlog",
                scenario.name
            );
        }
        rows.push(Row {
            scenario: scenario.name.to_owned(),
            target: scenario.target.name().to_owned(),
            throughput,
            latency,
            upstream_requests: before.zip(after).map(|(b, a)| a - b),
        });
    }
    println!("{}", report::table(&rows));
    std::fs::create_dir_all(&out)?;
    let json = serde_json::json!({
        "connections": args.connections,
        "duration_s": args.duration.as_secs_f64(),
        "latency_rate": latency_rate,
        "users": users,
        "rows": rows,
    });
    std::fs::write(out.join("bench.json"), serde_json::to_string_pretty(&json)?)?;
    std::fs::write(
        out.join("bench.svg"),
        report::svg(&rows, "proxy benchmark suite (same run, same machine)"),
    )?;
    eprintln!("wrote {0}/bench.json and {0}/bench.svg", out.display());
    Ok(())
}

/// `name: value` headers added to `map`.
fn parse_headers<S: AsRef<str>>(headers: &[S], mut map: HeaderMap) -> anyhow::Result<HeaderMap> {
    for h in headers {
        let h = h.as_ref();
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("header {h:?} is not `name: value`"))?;
        map.append(
            HeaderName::from_bytes(name.trim().as_bytes())?,
            HeaderValue::from_str(value.trim())?,
        );
    }
    Ok(map)
}

/// A `--plan` file's requests, each with the command line's headers too.
fn read_plan(file: &std::path::Path, headers: &[String]) -> anyhow::Result<Vec<Planned>> {
    let common = parse_headers(headers, HeaderMap::new())?;
    let text = std::fs::read_to_string(file)?;
    let requests = text
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let mut fields = line.split('\t');
            let path = fields.next().unwrap_or_default().to_owned();
            Ok(scenarios::get(
                path,
                parse_headers(&fields.collect::<Vec<_>>(), common.clone())?,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(!requests.is_empty(), "{} has no request", file.display());
    Ok(requests)
}

async fn single(
    args: LoadArgs,
    addr: std::net::SocketAddr,
    requests: Vec<Planned>,
    rate: Option<u64>,
    once: bool,
    tls: Option<Tls>,
    protocol: Protocol,
) -> anyhow::Result<()> {
    let spec = LoadSpec {
        addr,
        connections: args.connections,
        warmup: if once { Duration::ZERO } else { args.warmup },
        duration: args.duration,
        rate,
        tls,
        limit: once.then_some(requests.len() as u64),
        protocol,
    };
    let result = load::run(&spec, Arc::new(move |i| requests[i as usize % requests.len()].clone())).await?;
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}
