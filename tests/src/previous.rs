//! The previous release's `proxy` binary, built from git, for tests of a
//! rolling upgrade (old and new instances on one Redis).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The last commit of the release before this one (issue 9's hardening).
pub const PREVIOUS_RELEASE: &str = "b55939f";

/// Builds (once per test process; incrementally across runs) the `proxy`
/// binary of [`PREVIOUS_RELEASE`] under `target/previous-release`.
/// Panics, saying why, when the checkout has no history to build it from.
pub fn previous_proxy() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| build(PREVIOUS_RELEASE).unwrap_or_else(|e| panic!("building the previous release: {e}")))
}

fn build(rev: &str) -> Result<PathBuf, String> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let base = repo.join("target").join("previous-release");
    let source = base.join(format!("src-{rev}"));
    if !source.join("Cargo.toml").exists() {
        std::fs::create_dir_all(&source).map_err(|e| e.to_string())?;
        let archive = Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(["archive", "--format=tar", rev])
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("git archive: {e}"))?;
        let untar = Command::new("tar")
            .arg("-x")
            .arg("-C")
            .arg(&source)
            .stdin(archive.stdout.ok_or("git archive has no stdout")?)
            .status()
            .map_err(|e| format!("tar: {e}"))?;
        if !untar.success() || !source.join("Cargo.toml").exists() {
            let _ = std::fs::remove_dir_all(&source);
            return Err(format!(
                "could not check out {rev}: a clone with its history is needed (not a shallow one)"
            ));
        }
    }
    let target = base.join("target");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--locked", "-p", "proxy", "--bin", "proxy"])
        .arg("--manifest-path")
        .arg(source.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        // Only the binary is needed; debug info would cost disk, not help.
        .env("CARGO_PROFILE_DEV_DEBUG", "0")
        .status()
        .map_err(|e| format!("cargo build: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build of {rev} failed: {status}"));
    }
    Ok(target.join("debug").join("proxy"))
}
