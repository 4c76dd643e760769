//! `reload`: the reload harness's driver (see `benches::reload`). Normally
//! run by `benches/reload`, which builds the release binaries first.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use benches::programs::{drive, interrupted, ProgramFlags};
use benches::reload::load::LoadSettings;
use benches::reload::{self, Scenario, Settings};
use clap::Parser;

/// Configuration reloads and socket hand-overs under fixed-rate load:
/// nothing may be dropped, every answer must follow a rule set.
#[derive(Parser, Debug)]
#[command(about)]
struct Cli {
    /// Which scenario: `reload` (21 reloads of one proxy), `handover`
    /// (a second process takes over the socket), or both in turn.
    #[arg(long, value_enum, default_value = "both")]
    scenario: Scenario,
    /// Offered requests per second (open loop: sent on time whatever the
    /// answers do).
    #[arg(long, default_value_t = 300)]
    rate: u64,
    /// Load per scenario; reloads and hand-overs are spread evenly over it.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    duration: Duration,
    /// Hand-overs in scenario `handover`.
    #[arg(long, default_value_t = 3)]
    handovers: usize,
    /// Users registered at the start (the first few are the hot keys).
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// Share of writes (PUT /users/{id}, POST /register), percent. Each
    /// write empties the cache of every user entry; FerretDB on SQLite
    /// commits each with an fsync, and on a small machine falls behind at
    /// 30 writes/s within a minute.
    #[arg(long, default_value_t = 3)]
    write_percent: u32,
    /// Share of rule-dependent requests (GET /users), percent.
    #[arg(long, default_value_t = 15)]
    rules_percent: u32,
    #[command(flatten)]
    programs: ProgramFlags,
    /// Folder for reload.json, handover.json, the config files and the
    /// servers' logs.
    #[arg(long, default_value = "target/reload")]
    out: PathBuf,
}

fn main() -> ExitCode {
    drive(run(Cli::parse()))
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    let binaries = cli.programs.locate()?;
    anyhow::ensure!(cli.rate > 0, "--rate must be at least 1");
    anyhow::ensure!(
        cli.write_percent + cli.rules_percent <= 100,
        "--write-percent plus --rules-percent must not exceed 100"
    );
    let settings = Settings {
        scenario: cli.scenario,
        duration: cli.duration,
        handovers: cli.handovers,
        load: LoadSettings {
            rate: cli.rate,
            users: cli.users.max(1),
            write_percent: cli.write_percent,
            rules_percent: cli.rules_percent,
        },
        binaries,
        out: cli.out.clone(),
    };
    let reports = reload::run(settings, interrupted()).await?;
    if let Some(report) = &reports.reload {
        println!("{}", report.table());
        write_json(&cli.out.join("reload.json"), report)?;
    }
    if let Some(report) = &reports.handover {
        println!("{}", report.table());
        write_json(&cli.out.join("handover.json"), report)?;
    }
    Ok(reports.passed())
}

fn write_json(path: &std::path::Path, report: &impl serde::Serialize) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(report)?)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
