//! What the scenarios record and the report reads: one row per reload and
//! per hand-over, and the reload plan's fixed numbers.

/// Reloads per run: 20 valid files and one invalid.
pub const RELOADS: usize = 21;
/// Which reload (0-based) installs the invalid file: in the middle, and
/// by `POST /reload`, whose answer must name the field.
pub const INVALID_AT: usize = 11;
/// How a reload is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    Sighup,
    Http,
}

/// What came of one reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReloadOutcome {
    /// A valid file, confirmed in effect.
    Ok,
    /// The invalid file, refused with the rules unchanged.
    Invalid,
    /// Not what the contract says (see `detail`).
    Failed,
    /// The proxy exited: the scenario ends.
    ProxyExited,
}

/// One reload, for the report.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ReloadRecord {
    /// 1-based.
    pub index: usize,
    pub file: &'static str,
    pub trigger: Trigger,
    /// When it was triggered, seconds into the scenario.
    pub at_s: f64,
    pub outcome: ReloadOutcome,
    /// From the trigger to the confirmation (or the failure).
    pub ms: f64,
    pub version_before: Option<String>,
    pub version_after: Option<String>,
    /// How it was confirmed, or what went wrong.
    pub detail: String,
}

/// One hand-over, for the report.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HandoverRecord {
    /// 1-based.
    pub index: usize,
    /// When the new proxy was started, seconds into the scenario.
    pub at_s: f64,
    pub old_pid: u32,
    pub new_pid: Option<u32>,
    pub new_admin: Option<String>,
    /// From spawning the new proxy to its `/readyz` answering 200.
    pub new_ready_ms: Option<f64>,
    /// From SIGTERM to the old proxy's exit.
    pub old_exit_ms: Option<f64>,
    /// `exit 0`, `signal 9 (SIGKILL)`, ...
    pub old_exit: Option<String>,
    pub old_exit_code: Option<i32>,
    /// Still running well past its grace period after SIGTERM: killed.
    pub old_killed: bool,
    /// What went wrong, if anything.
    pub error: Option<String>,
}
