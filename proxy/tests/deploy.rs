//! The deployment files against the tools that read them. Needs
//! `systemd-analyze` (Debian's `systemd`): run by `scripts/test
//! --extended`, skipped by the default run.

use std::path::{Path, PathBuf};
use std::process::Command;

#[test]
#[ignore = "needs systemd-analyze: scripts/test --extended"]
fn the_systemd_unit_verifies_clean() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let unit = std::fs::read_to_string(repo.join("deploy/systemd/proxy@.service")).unwrap();
    let proxy = PathBuf::from(env!("CARGO_BIN_EXE_proxy"));
    let dir = tempfile::tempdir().unwrap();
    // verify checks that the programs the unit runs exist: point them at
    // this build, and name an instance of the template.
    let path = dir.path().join("proxy@9091.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/proxy", &proxy.display().to_string()),
    )
    .unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze is installed (scripts/test --extended installs it)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
}
