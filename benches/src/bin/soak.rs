//! `soak`: the soak test's driver (see `benches::soak`). Normally run by
//! `benches/soak`, which builds the release binaries first.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use benches::programs::{drive, interrupted, ProgramFlags};
use benches::soak::chaos::ChaosSchedule;
use benches::soak::stack::{Binaries, RedisSettings};
use benches::soak::workload::WorkloadSettings;
use benches::soak::{self, SoakSettings};
use clap::Parser;

/// Soak test: fixed-rate load through two proxies on one Redis under chaos,
/// checking every answer against every committed version.
#[derive(Parser, Debug)]
#[command(about)]
struct Cli {
    /// Load under chaos (after the warm-up).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
    duration: Duration,
    /// Load without chaos first; the proxies' starting RSS is taken after it.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    warmup: Duration,
    /// Offered requests per second (open loop: sent on time whatever the
    /// answers do).
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// Users registered at the start.
    #[arg(long, default_value_t = 50)]
    users: usize,
    /// Share of requests that are writes (PUT /users/{id}), percent.
    #[arg(long, default_value_t = 10)]
    write_percent: u32,
    /// Share of writes dropped by the client mid-write, percent.
    #[arg(long, default_value_t = 10)]
    drop_percent: u32,
    /// Shortest gap between chaos events.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
    chaos_min: Duration,
    /// Longest gap between chaos events.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "40s")]
    chaos_max: Duration,
    /// Gap between dropped-write probes (writes paused, one write dropped
    /// while the proxy waits for the origin, its user read again); 0s: none.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    probe_every: Duration,
    /// Redis `--maxmemory` (policy volatile-lru).
    #[arg(long, default_value = "64mb")]
    redis_maxmemory: String,
    #[command(flatten)]
    programs: ProgramFlags,
    /// The proxies' configuration.
    #[arg(long, default_value = "config.toml")]
    config: PathBuf,
    /// Folder for soak.json and the servers' logs.
    #[arg(long, default_value = "target/soak")]
    out: PathBuf,
}

fn main() -> ExitCode {
    drive(run(Cli::parse()))
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    let binaries = Binaries {
        programs: cli.programs.locate()?,
        config: std::fs::canonicalize(&cli.config).with_context(|| format!("finding {}", cli.config.display()))?,
    };
    let settings = SoakSettings {
        duration: cli.duration,
        warmup: cli.warmup,
        workload: WorkloadSettings {
            rate: cli.rate,
            users: cli.users.max(2),
            write_percent: cli.write_percent.min(100),
            drop_percent: cli.drop_percent.min(100),
        },
        chaos: ChaosSchedule {
            min: cli.chaos_min,
            max: cli.chaos_max.max(cli.chaos_min),
        },
        probe_every: (!cli.probe_every.is_zero()).then_some(cli.probe_every),
        redis: RedisSettings {
            maxmemory: cli.redis_maxmemory,
        },
        binaries,
        out: cli.out.clone(),
    };
    let report = soak::run(settings, interrupted()).await?;
    println!("{}", soak::report::table(&report));
    let path = cli.out.join("soak.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(report.passed)
}
