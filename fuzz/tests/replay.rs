//! Replays every seed (`fuzz/corpus/<target>/`) and every past finding
//! (`fuzz/regressions/<target>/`) through its target, on stable and
//! without instrumentation, as part of `cargo test --workspace`.
//!
//! A regression file whose name starts with `open-` records a finding
//! that is not fixed yet: it is replayed only by the ignored test below
//! (`cargo test -p fuzz-targets -- --ignored`), so the default run stays
//! green while the file keeps the failing input.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use fuzz_targets::TARGETS;

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn is_open(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("open-"))
}

/// Runs each target over its files in `kind` that `select` picks; fails
/// naming every file that panicked.
fn replay(kind: &str, select: impl Fn(&Path) -> bool) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(kind);
    let mut failed = Vec::new();
    let mut count = 0;
    for target in TARGETS {
        for file in files(&root.join(target.name)).into_iter().filter(|f| select(f)) {
            let data = std::fs::read(&file).expect("readable file");
            count += 1;
            if catch_unwind(AssertUnwindSafe(|| (target.run)(&data))).is_err() {
                failed.push(file.display().to_string());
            }
        }
    }
    assert!(
        failed.is_empty(),
        "inputs that fail their target:\n{}",
        failed.join("\n")
    );
    count
}

#[test]
fn every_corpus_seed_passes_its_target() {
    let seeds = replay("corpus", |_| true);
    assert!(seeds >= TARGETS.len(), "every target has seeds ({seeds} found)");
}

#[test]
fn every_fixed_finding_stays_fixed() {
    replay("regressions", |f| !is_open(f));
}

#[test]
#[ignore = "findings not fixed yet (files named open-*); see fuzz/regressions/README.md"]
fn open_findings() {
    replay("regressions", is_open);
}

#[test]
fn every_target_has_a_corpus_folder_and_a_libfuzzer_binary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for target in TARGETS {
        assert!(root.join("corpus").join(target.name).is_dir(), "{}", target.name);
        let binary = root.join("libfuzzer/fuzz_targets").join(format!("{}.rs", target.name));
        assert!(binary.is_file(), "{}", binary.display());
    }
}
