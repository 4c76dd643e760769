//! `capacity`: what one entry costs in Redis and how many Redis commands a
//! hit and a write take, measured on a real `redis-server` (or, with
//! `--cluster`, a real 3-primary Redis Cluster, summed over its primaries)
//! behind the real proxy (Redis store, L1 off so every hit reaches Redis).
//! The inputs of the capacity model (docs/capacity.md).
//!
//! `cargo run --release -p benches --bin capacity -- --entries 2000 [--cluster]`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use e2e::cluster::RedisCluster;
use e2e::{json_reply, proxy_config, spawn_proxy, RedisServer, ScriptedUpstream};
use redis::aio::MultiplexedConnection;

#[derive(Parser, Debug)]
#[command(about)]
struct Cli {
    /// Distinct entries stored (each a miss, then a hit).
    #[arg(long, default_value_t = 2000)]
    entries: usize,
    /// Bytes of each answer's body.
    #[arg(long, default_value_t = 1024)]
    body_bytes: usize,
    /// Writes measured (each invalidates the entries' tag).
    #[arg(long, default_value_t = 200)]
    writes: usize,
    /// On a Redis Cluster (3 primaries, 3 replicas) instead of one node.
    #[arg(long)]
    cluster: bool,
}

/// Where the entries live: one node, or a cluster's primaries, each
/// asked and the answers summed.
struct Nodes {
    primaries: Vec<MultiplexedConnection>,
}

impl Nodes {
    async fn connect(ports: &[u16]) -> anyhow::Result<Nodes> {
        let mut primaries = Vec::new();
        for port in ports {
            let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))?
                .get_multiplexed_async_connection()
                .await?;
            let info: String = redis::cmd("INFO").arg("replication").query_async(&mut conn).await?;
            if info.contains("role:master") {
                primaries.push(conn);
            }
        }
        Ok(Nodes { primaries })
    }

    async fn keys(&mut self, pattern: &str) -> anyhow::Result<Vec<String>> {
        let mut all = Vec::new();
        for conn in &mut self.primaries {
            let keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query_async(conn).await?;
            all.extend(keys);
        }
        Ok(all)
    }

    async fn used_memory(&mut self) -> anyhow::Result<i64> {
        let mut total = 0;
        for conn in &mut self.primaries {
            total += used_memory(conn).await?;
        }
        Ok(total)
    }

    async fn dbsize(&mut self) -> anyhow::Result<usize> {
        let mut total = 0;
        for conn in &mut self.primaries {
            total += redis::cmd("DBSIZE").query_async::<usize>(conn).await?;
        }
        Ok(total)
    }

    async fn reset_stats(&mut self) -> anyhow::Result<()> {
        for conn in &mut self.primaries {
            redis::cmd("CONFIG").arg("RESETSTAT").query_async::<()>(conn).await?;
        }
        Ok(())
    }

    async fn commandstats(&mut self) -> anyhow::Result<BTreeMap<String, u64>> {
        let mut total = BTreeMap::new();
        for conn in &mut self.primaries {
            for (name, calls) in commandstats(conn).await? {
                *total.entry(name).or_insert(0) += calls;
            }
        }
        Ok(total)
    }

    /// `MEMORY USAGE` of the first key matching `pattern`, and its name.
    async fn first_key_usage(&mut self, pattern: &str) -> anyhow::Result<(String, usize)> {
        for conn in &mut self.primaries {
            let keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query_async(conn).await?;
            if let Some(key) = keys.into_iter().next() {
                let bytes = redis::cmd("MEMORY").arg("USAGE").arg(&key).query_async(conn).await?;
                return Ok((key, bytes));
            }
        }
        bail!("no key matches {pattern}")
    }

    /// The sum over primaries of `ZCARD` of every key matching `pattern`.
    async fn members(&mut self, pattern: &str) -> anyhow::Result<(usize, usize)> {
        let (mut members, mut bytes) = (0, 0);
        for conn in &mut self.primaries {
            let keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query_async(conn).await?;
            for key in keys {
                members += redis::cmd("ZCARD").arg(&key).query_async::<usize>(conn).await?;
                bytes += redis::cmd("MEMORY")
                    .arg("USAGE")
                    .arg(&key)
                    .query_async::<usize>(conn)
                    .await?;
            }
        }
        Ok((members, bytes))
    }
}

/// A cached `GET /items/{id}` tagged `items` (path index 2 levels deep:
/// `/items/{id}`, `/items`), and the write that invalidates it; no L1.
const CONFIG: &str = r#"
[cache]
l1_max_bytes = 0

[[routes]]
name = "item"
path = "/items/{id}"
methods = ["GET"]
access = "public"
cache = { ttl = "1h", tags = ["items"] }

[[routes]]
name = "items-write"
path = "/items"
methods = ["POST"]
access = "public"
invalidates = ["items"]
"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let body = format!("{{\"pad\":\"{}\"}}", "x".repeat(cli.body_bytes.saturating_sub(10)));
    let upstream = ScriptedUpstream::start(move |_| {
        let body = body.clone();
        async move { json_reply(200, &body, &[]) }
    })
    .await;
    // Kept alive to the end: dropping either stops its servers.
    let (_standalone, _cluster, redis_url, ports) = if cli.cluster {
        let cluster = RedisCluster::start();
        let (url, ports) = (cluster.url(), cluster.ports().to_vec());
        (None, Some(cluster), url, ports)
    } else {
        let redis = RedisServer::start();
        let (url, port) = (redis.url(), redis.addr().port());
        (Some(redis), None, url, vec![port])
    };
    let proxy = spawn_proxy(proxy_config(CONFIG, upstream.addr, Some(redis_url), None)).await;
    let mut nodes = Nodes::connect(&ports).await?;
    let http = reqwest::Client::new();
    let get = |i: usize| http.get(format!("{}/items/{i}", proxy.base_url())).send();

    // Warm: the generation exists, the index sets exist.
    get(0).await?.error_for_status()?;
    wait_for_entries(&mut nodes, 1).await?;
    let before = nodes.used_memory().await?;
    let keys_before = nodes.dbsize().await?;
    for i in 1..=cli.entries {
        get(i).await?.error_for_status()?;
    }
    let entries_stored = wait_for_entries(&mut nodes, cli.entries + 1).await?;
    let after = nodes.used_memory().await?;
    let keys_after = nodes.dbsize().await?;
    let per_entry = (after - before) as f64 / cli.entries as f64;

    let (_, entry_bytes) = nodes.first_key_usage("*:e:*").await?;
    let (index_members, index_bytes) = nodes.members("*:ix:/items").await?;

    // Hits: every entry once more, served from Redis.
    nodes.reset_stats().await?;
    for i in 1..=cli.entries {
        let response = get(i).await?;
        if response.headers().get("x-cache").and_then(|v| v.to_str().ok()) != Some("HIT") {
            bail!("GET /items/{i} was not a hit");
        }
    }
    let per_hit = nodes.commandstats().await?;

    nodes.reset_stats().await?;
    for _ in 0..cli.writes {
        http.post(format!("{}/items", proxy.base_url()))
            .send()
            .await?
            .error_for_status()?;
    }
    let per_write = nodes.commandstats().await?;

    let deployment = if cli.cluster {
        "a Redis Cluster, 3 primaries + 3 replicas, summed over the primaries"
    } else {
        "one redis-server"
    };
    println!("## capacity inputs ({deployment}; Redis store, L1 off)\n");
    println!(
        "{} entries of {} body bytes; route tags [\"items\"] + the all-tag; path index /items/{{id}}, /items\n",
        cli.entries, cli.body_bytes
    );
    println!("| measure | value |\n|---|---:|");
    println!("| used_memory per entry, everything included | {per_entry:.0} B |");
    println!("| MEMORY USAGE of one entry key | {entry_bytes} B |");
    println!(
        "| MEMORY USAGE per member of the /items prefix index ({index_members} members, every bucket) | {:.0} B |",
        index_bytes as f64 / index_members.max(1) as f64
    );
    println!(
        "| keys per entry | {:.2} |",
        (keys_after - keys_before) as f64 / cli.entries as f64
    );
    println!("| entries stored | {entries_stored} |");
    for (what, stats, n) in [("hit", &per_hit, cli.entries), ("write", &per_write, cli.writes)] {
        let total: u64 = stats.values().sum();
        let detail: Vec<String> = stats
            .iter()
            .map(|(cmd, calls)| format!("{cmd} {:.2}", *calls as f64 / n as f64))
            .collect();
        println!(
            "| Redis commands per {what} | {:.2} ({}) |",
            total as f64 / n as f64,
            detail.join(", ")
        );
    }
    Ok(())
}

async fn used_memory(conn: &mut MultiplexedConnection) -> anyhow::Result<i64> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(conn).await?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .context("INFO memory without used_memory")?
        .trim()
        .parse()
        .context("used_memory")
}

/// Calls per command since the last RESETSTAT, the measuring commands
/// themselves left out.
async fn commandstats(conn: &mut MultiplexedConnection) -> anyhow::Result<BTreeMap<String, u64>> {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(conn).await?;
    let mut calls = BTreeMap::new();
    for line in info.lines().filter_map(|l| l.strip_prefix("cmdstat_")) {
        let (name, rest) = line.split_once(':').context("a commandstats line")?;
        if matches!(name, "info" | "config|resetstat" | "config") {
            continue;
        }
        let count = rest
            .split(',')
            .find_map(|f| f.strip_prefix("calls="))
            .context("calls=")?
            .parse()?;
        calls.insert(name.to_owned(), count);
    }
    Ok(calls)
}

/// Polls until `at_least` entry keys exist: stores complete after their
/// answers.
async fn wait_for_entries(nodes: &mut Nodes, at_least: usize) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let keys = nodes.keys("*:e:*").await?;
        if keys.len() >= at_least {
            return Ok(keys.len());
        }
        if Instant::now() > deadline {
            bail!("only {} of {at_least} entries stored", keys.len());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
