//! The binary's command line. Having an integration test here also makes
//! `cargo test --workspace` build `custody-node` before the end-to-end tests in
//! tests/ look for it.

use std::process::Command;

fn node() -> Command {
    Command::new(env!("CARGO_BIN_EXE_custody-node"))
}

#[test]
fn help_exits_zero_and_lists_both_commands() {
    let out = node().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("init") && text.contains("serve"), "{text}");
}

#[test]
fn serve_help_explains_every_limit() {
    let out = node().args(["serve", "--help"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--data",
        "--listen",
        "--init-admin-key",
        "--origin",
        "--max-body-bytes",
        "--max-batch",
        "--max-blob-bytes",
        "--queue",
        "--max-group",
        "--clock-skew-secs",
        "--request-timeout-secs",
    ] {
        assert!(text.contains(flag), "{flag} missing from:\n{text}");
    }
    assert!(text.contains("CUSTODY_DATA") && text.contains("CUSTODY_LISTEN"));
}

#[test]
fn a_bad_limit_names_the_flag_and_what_it_expects() {
    let out = node()
        .args(["serve", "--max-body-bytes", "lots"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--max-body-bytes") && err.contains("expected a byte count"),
        "{err}"
    );
}

#[test]
fn a_bad_admin_key_names_the_flag() {
    let out = node()
        .args([
            "init",
            "--data",
            "/nonexistent/x",
            "--origin",
            "custody.test/x",
            "--admin-key",
            "xyz",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--admin-key") && err.contains("64 lowercase hex"),
        "{err}"
    );
}

#[test]
fn init_twice_in_one_directory_is_refused() {
    let dir = std::env::temp_dir().join(format!("custody-node-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let admin = "5866666666666666666666666666666666666666666666666666666666666666";
    let init = || {
        node()
            .args([
                "init",
                "--origin",
                "custody.test/cli",
                "--admin-key",
                admin,
                "--data",
            ])
            .arg(&dir)
            .output()
            .unwrap()
    };
    let first = init();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(
        out.contains("origin: custody.test/cli") && out.contains("vkey: custody.test/cli+"),
        "{out}"
    );
    let second = init();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("already holds a log"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `custody-node init` of a log in `data`.
fn init_command(data: &std::path::Path) -> Command {
    let mut init = node();
    init.args(["init", "--origin", "custody.test/check", "--admin-key"])
        .arg(hex::encode(
            ed25519_dalek::SigningKey::from_bytes(&[1; 32])
                .verifying_key()
                .as_bytes(),
        ))
        .arg("--data")
        .arg(data);
    init
}

/// `/dev/full`, where every write fails with "no space left on device".
fn dev_full() -> std::fs::File {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full (Linux)")
}

/// Creates a log in `data` with `custody-node init`: the genesis entry only.
fn init_log(data: &std::path::Path) {
    let init = init_command(data).output().unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
}

#[test]
fn check_passes_a_fresh_log_and_refuses_a_directory_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    init_log(&data);
    let ok = node()
        .arg("check")
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("ok: 1 entries"));
    let empty = node()
        .arg("check")
        .arg("--data")
        .arg(dir.path().join("nothing"))
        .output()
        .unwrap();
    assert!(!empty.status.success());
    assert!(String::from_utf8_lossy(&empty.stderr).contains("custody-node init"));
}

/// Progress lines go to stderr; one that cannot be written (stderr on a full disk,
/// here `/dev/full`) is dropped, and the check still runs and reports. With
/// `eprintln!` the first line panicked (exit 101). An error it cannot write still
/// ends the run with status 1, not a panic.
#[test]
fn check_reports_even_when_its_stderr_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    init_log(&data);
    let check = |data: &std::path::Path| {
        node()
            .arg("check")
            .arg("--data")
            .arg(data)
            .stderr(dev_full())
            .output()
            .unwrap()
    };
    let out = check(&data);
    assert!(out.status.success(), "custody-node check: {}", out.status);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("ok: 1 entries"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let refused = check(&dir.path().join("nothing"));
    assert_eq!(refused.status.code(), Some(1), "{}", refused.status);
}

/// `init` and `check` write their result to stdout last; when it cannot be written
/// they exit 1 saying what was done (the log created, the log sound), and write it
/// to stderr instead, rather than panicking (exit 101).
#[test]
fn init_and_check_say_what_was_done_when_stdout_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let init = init_command(&data).stdout(dev_full()).output().unwrap();
    let stderr = String::from_utf8_lossy(&init.stderr);
    assert_eq!(init.status.code(), Some(1), "{}: {stderr}", init.status);
    assert!(
        stderr.contains("was created") && stderr.contains("GET /v1/log"),
        "{stderr}"
    );
    assert!(
        stderr.contains("\nvkey: custody.test/check+"),
        "the vkey on stderr: {stderr}"
    );
    let check = |stdout: std::process::Stdio| {
        node()
            .arg("check")
            .arg("--data")
            .arg(&data)
            .stdout(stdout)
            .output()
            .unwrap()
    };
    let sound = check(std::process::Stdio::piped());
    assert!(
        sound.status.success()
            && String::from_utf8_lossy(&sound.stdout).starts_with("ok: 1 entries"),
        "the log was created: {}",
        String::from_utf8_lossy(&sound.stderr)
    );
    let unwritten = check(dev_full().into());
    let stderr = String::from_utf8_lossy(&unwritten.stderr);
    assert_eq!(
        unwritten.status.code(),
        Some(1),
        "{}: {stderr}",
        unwritten.status
    );
    assert!(
        stderr.contains("checked sound") && stderr.contains("\nok: 1 entries"),
        "{stderr}"
    );
}
