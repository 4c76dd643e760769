//! The `proxy` binary's command line: `--check` validates and exits.

use std::process::Command;

fn check(config: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_proxy"));
    command
        .arg("--check")
        .arg("--config")
        .arg(&path)
        .current_dir(dir.path())
        .env_clear();
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const SHIPPED: &str = include_str!("../../config.toml");
/// Long enough for HS256 (RFC 7518 §3.2).
const SECRET: &str = "cli-test-secret-of-at-least-32-bytes";

#[test]
fn the_shipped_config_checks_clean() {
    let (code, stdout, stderr) = check(SHIPPED, &[("JWT_SECRET_KEY", SECRET)]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("valid (9 routes, memory cache)"), "{stdout}");
    let (code, stdout, _) = check(SHIPPED, &[("JWT_SECRET_KEY", SECRET), ("REDIS_HOST", "127.0.0.1")]);
    assert_eq!(code, 0);
    assert!(stdout.contains("redis cache"), "{stdout}");
}

#[test]
fn a_broken_config_exits_2_naming_every_bad_field() {
    let broken = SHIPPED
        .replace("roles = [\"admin\"]", "roles = []")
        .replace("header_read_timeout = \"10s\"", "header_read_timeout = \"0s\"");
    let (code, _, stderr) = check(&broken, &[("JWT_SECRET_KEY", SECRET)]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("routes[7].roles"), "{stderr}");
    assert!(stderr.contains("server.header_read_timeout"), "{stderr}");
}

#[test]
fn unknown_fields_are_rejected() {
    let (code, _, stderr) = check(
        &SHIPPED.replace("[server]", "[server]\nheader_timeout = \"5s\""),
        &[("JWT_SECRET_KEY", SECRET)],
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("header_timeout"), "{stderr}");
}

#[test]
fn a_missing_secret_is_named() {
    let (code, _, stderr) = check(SHIPPED, &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("JWT_SECRET_KEY"), "{stderr}");
}

#[test]
fn a_short_secret_exits_2_naming_the_variable() {
    let (code, _, stderr) = check(SHIPPED, &[("JWT_SECRET_KEY", "only-sixteen-byt")]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("JWT_SECRET_KEY"), "{stderr}");
    assert!(stderr.contains("at least 32"), "{stderr}");
    assert!(
        !stderr.contains("only-sixteen-byt"),
        "the secret is never shown: {stderr}"
    );
}

#[test]
fn a_missing_file_is_an_error_not_a_panic() {
    let out = Command::new(env!("CARGO_BIN_EXE_proxy"))
        .args(["--check", "--config", "/nonexistent/config.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}
