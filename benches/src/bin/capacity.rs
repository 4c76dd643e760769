//! `capacity`: what one entry costs in Redis and how many Redis commands a
//! hit and a write take, measured on a real `redis-server` behind the real
//! proxy (Redis store, L1 off so every hit reaches Redis). The inputs of
//! the capacity model (docs/capacity.md).
//!
//! `cargo run --release -p benches --bin capacity -- --entries 2000`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use e2e::{json_reply, proxy_config, spawn_proxy, RedisServer, ScriptedUpstream};

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
    let redis = RedisServer::start();
    let proxy = spawn_proxy(proxy_config(CONFIG, upstream.addr, Some(redis.url()), None)).await;
    let mut conn = redis::Client::open(redis.url())?
        .get_multiplexed_async_connection()
        .await?;
    let http = reqwest::Client::new();
    let get = |i: usize| http.get(format!("{}/items/{i}", proxy.base_url())).send();

    // Warm: the generation exists, the index sets exist.
    get(0).await?.error_for_status()?;
    wait_for_entries(&mut conn, 1).await?;
    let before = used_memory(&mut conn).await?;
    let keys_before: usize = redis::cmd("DBSIZE").query_async(&mut conn).await?;
    for i in 1..=cli.entries {
        get(i).await?.error_for_status()?;
    }
    let entries_stored = wait_for_entries(&mut conn, cli.entries + 1).await?;
    let after = used_memory(&mut conn).await?;
    let keys_after: usize = redis::cmd("DBSIZE").query_async(&mut conn).await?;
    let per_entry = (after - before) as f64 / cli.entries as f64;

    let entry_bytes = memory_usage(&mut conn, "*:e:*").await?;
    let index_key: String = first_key(&mut conn, "*:ix:/items").await?;
    let index_bytes = memory_usage(&mut conn, &index_key).await?;
    let index_members: usize = redis::cmd("ZCARD").arg(&index_key).query_async(&mut conn).await?;

    // Hits: every entry once more, served from Redis.
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async::<()>(&mut conn)
        .await?;
    for i in 1..=cli.entries {
        let response = get(i).await?;
        if response.headers().get("x-cache").and_then(|v| v.to_str().ok()) != Some("HIT") {
            bail!("GET /items/{i} was not a hit");
        }
    }
    let per_hit = commandstats(&mut conn).await?;

    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async::<()>(&mut conn)
        .await?;
    for _ in 0..cli.writes {
        http.post(format!("{}/items", proxy.base_url()))
            .send()
            .await?
            .error_for_status()?;
    }
    let per_write = commandstats(&mut conn).await?;

    println!("## capacity inputs (redis-server, Redis store, L1 off)\n");
    println!(
        "{} entries of {} body bytes; route tags [\"items\"] + the all-tag; path index /items/{{id}}, /items\n",
        cli.entries, cli.body_bytes
    );
    println!("| measure | value |\n|---|---:|");
    println!("| used_memory per entry, everything included | {per_entry:.0} B |");
    println!("| MEMORY USAGE of one entry key | {entry_bytes} B |");
    println!(
        "| MEMORY USAGE per member of the /items prefix index ({index_members} members) | {:.0} B |",
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

async fn used_memory(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<i64> {
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
async fn commandstats(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<BTreeMap<String, u64>> {
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

/// `MEMORY USAGE` of the first key matching `pattern`.
async fn memory_usage(conn: &mut redis::aio::MultiplexedConnection, pattern: &str) -> anyhow::Result<usize> {
    let key = first_key(conn, pattern).await?;
    Ok(redis::cmd("MEMORY").arg("USAGE").arg(&key).query_async(conn).await?)
}

async fn first_key(conn: &mut redis::aio::MultiplexedConnection, pattern: &str) -> anyhow::Result<String> {
    let keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query_async(conn).await?;
    keys.into_iter()
        .next()
        .with_context(|| format!("no key matches {pattern}"))
}

/// Polls until `at_least` entry keys exist: stores complete after their
/// answers.
async fn wait_for_entries(conn: &mut redis::aio::MultiplexedConnection, at_least: usize) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let keys: Vec<String> = redis::cmd("KEYS").arg("*:e:*").query_async(conn).await?;
        if keys.len() >= at_least {
            return Ok(keys.len());
        }
        if Instant::now() > deadline {
            bail!("only {} of {at_least} entries stored", keys.len());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
