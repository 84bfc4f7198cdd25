//! The binary starts and documents its commands. (Also makes `cargo test
//! --workspace` build `custody` before the end-to-end tests in tests/ run.)

use std::process::Command;

#[test]
fn help_lists_every_command() {
    let out = Command::new(env!("CARGO_BIN_EXE_custody"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for cmd in [
        "keygen",
        "actor",
        "append",
        "prove",
        "bundle",
        "verify",
        "audit",
        "get",
        "checkpoint",
        "case",
        "stats",
    ] {
        assert!(text.contains(cmd), "--help does not mention {cmd}:\n{text}");
    }
}

#[test]
fn verify_without_a_log_key_says_what_to_pass() {
    let out = Command::new(env!("CARGO_BIN_EXE_custody"))
        .args(["verify", "bundle.json"])
        .env_remove("CUSTODY_LOG_KEY")
        .env("CUSTODY_CONFIG", "/nonexistent/config.json")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--log-key"));
}
