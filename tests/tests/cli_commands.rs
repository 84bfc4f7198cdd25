//! The CLI's other commands against a real node: batch appends from a JSONL file,
//! proofs, entries, checkpoints, and errors that say what to do.

use custody_e2e::*;

fn setup() -> (Node, tempfile::TempDir, String) {
    let node = Node::start();
    let work = tempfile::tempdir().unwrap();
    ledger::keyfile::write(&work.path().join("inv.key"), &key(7)).unwrap();
    node.register(&key(7), "Investigator", "Acme", &["investigator"]);
    let vkey = node.vkey();
    (node, work, vkey)
}

/// Writes `file` in `work`: one scan event per serial, a JSON line each.
fn write_scans(work: &std::path::Path, file: &str, serials: &[String]) {
    let lines: Vec<String> = serials
        .iter()
        .map(|serial| {
            serde_json::json!({"kind": "scan", "body": {"product_id": "04012345678901",
                "serial": serial, "marking": "qr", "result": "genuine",
                "location": {"country": "DE"}, "device": "d"}})
            .to_string()
        })
        .collect();
    std::fs::write(work.join(file), lines.join("\n")).unwrap();
}

/// The arguments of `custody append --batch FILE`, signed with the setup's key.
fn append_batch<'a>(vkey: &'a str, file: &'a str) -> [&'a str; 7] {
    [
        "--key",
        "inv.key",
        "--log-key",
        vkey,
        "append",
        "--batch",
        file,
    ]
}

#[test]
fn append_batch_appends_every_line_and_verifies_every_receipt() {
    let (node, work, vkey) = setup();
    let serials: Vec<String> = (0..5).map(|i| format!("SN-{i}")).collect();
    write_scans(work.path(), "events.jsonl", &serials);
    let before = node.size();
    let mut args = vec!["--json"];
    args.extend(append_batch(&vkey, "events.jsonl"));
    let run = custody(work.path(), Some(&node.url), &args);
    assert!(run.ok, "{}\n{}", run.stdout, run.stderr);
    let receipts = run.json();
    assert_eq!(receipts.as_array().unwrap().len(), 5);
    for r in receipts.as_array().unwrap() {
        assert_eq!(r["duplicate"], false, "{r}");
    }
    assert_eq!(node.size(), before + 5);
}

/// The same event sent again in a batch (its claimed time given, so it is signed
/// the same) is answered with its original receipt, and said to be so.
#[test]
fn a_batch_line_already_in_the_log_is_reported_as_such() {
    let (node, work, vkey) = setup();
    let line = serde_json::json!({"kind": "scan", "claimed_at": "2026-11-02T10:00:00Z",
        "body": {"product_id": "04012345678901", "serial": "SN-again", "marking": "qr",
        "result": "genuine", "location": {"country": "DE"}, "device": "d"}});
    std::fs::write(work.path().join("again.jsonl"), line.to_string()).unwrap();
    let args = append_batch(&vkey, "again.jsonl");
    let before = node.size();
    // Sent once, then again.
    for said in ["appended", "already in the log"] {
        let run = custody(work.path(), Some(&node.url), &args);
        assert!(run.ok, "{}\n{}", run.stdout, run.stderr);
        assert!(
            run.stdout
                .contains(&format!("line 1: ok: entry {before} {said}")),
            "{}",
            run.stdout
        );
    }
    let mut json_args = vec!["--json"];
    json_args.extend(args);
    let third = custody(work.path(), Some(&node.url), &json_args);
    assert_eq!(third.json()[0]["duplicate"], true, "{}", third.stdout);
    assert_eq!(
        third.json()[0]["receipt"]["index"],
        before,
        "{}",
        third.stdout
    );
    assert_eq!(node.size(), before + 1);
}

#[test]
fn a_bad_line_in_a_batch_is_named_and_nothing_is_sent() {
    let (node, work, vkey) = setup();
    std::fs::write(
        work.path().join("events.jsonl"),
        "{\"kind\":\"scan\",\"body\":{}}\nnot json\n",
    )
    .unwrap();
    let before = node.size();
    let run = custody(
        work.path(),
        Some(&node.url),
        &append_batch(&vkey, "events.jsonl"),
    );
    assert!(!run.ok);
    assert!(
        run.stderr.contains("events.jsonl:1"),
        "the error must name the line: {}",
        run.stderr
    );
    assert_eq!(node.size(), before);
}

#[test]
fn prove_get_and_checkpoint_print_verified_answers() {
    let (node, work, vkey) = setup();
    let w = work.path();
    let prove = custody(
        w,
        Some(&node.url),
        &["--json", "--log-key", &vkey, "prove", "1"],
    );
    assert!(prove.ok, "{}", prove.stderr);
    assert_eq!(prove.json()["verified"], true);
    let get = custody(w, Some(&node.url), &["--json", "get", "1"]);
    assert_eq!(get.json()["event"]["kind"], "actor.register");
    let cp = custody(
        w,
        Some(&node.url),
        &["--json", "--log-key", &vkey, "checkpoint"],
    );
    assert_eq!(cp.json()["tree_size"].as_u64(), Some(node.size()));
    let other = "custody.test/e2e+12345678+AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
    let forged = custody(w, Some(&node.url), &["--log-key", other, "checkpoint"]);
    assert!(!forged.ok, "a checkpoint must not verify under another key");
}

#[test]
fn an_invalid_event_is_refused_locally_naming_the_field() {
    let (node, work, vkey) = setup();
    let before = node.size();
    let run = custody(
        work.path(),
        Some(&node.url),
        &[
            "--key",
            "inv.key",
            "--log-key",
            &vkey,
            "append",
            "detection",
            "--case",
            "c1",
            "--marketplace",
            "m",
            "--listing-url",
            "not-a-url",
            "--listing-id",
            "1",
            "--seller-id",
            "s",
            "--method",
            "ocr",
            "--confidence",
            "50",
        ],
    );
    assert!(!run.ok);
    assert!(run.stderr.contains("body.listing_url"), "{}", run.stderr);
    assert_eq!(node.size(), before);
}

#[test]
fn a_node_that_is_down_is_reported_with_what_to_check() {
    let work = tempfile::tempdir().unwrap();
    let run = custody(work.path(), Some("http://127.0.0.1:9"), &["get", "0"]);
    assert!(!run.ok);
    assert!(
        run.stderr.contains("cannot reach the node") && run.stderr.contains("custody-node running"),
        "{}",
        run.stderr
    );
}

/// The output is the last thing a command writes: when stdout cannot take it (here
/// `/dev/full`), the command exits 1 saying its work was done, and the output
/// (here the receipt, naming the new entry) goes to stderr instead of being lost
/// to a panic. (Sending the append again would log a second event: the CLI stamps
/// each with the time it is signed.)
#[test]
fn an_append_whose_receipt_cannot_be_printed_gives_it_on_stderr() {
    let (node, work, vkey) = setup();
    write_scans(work.path(), "one.jsonl", &["SN-unprinted".into()]);
    let before = node.size();
    let out = custody_command(
        work.path(),
        Some(&node.url),
        &append_batch(&vkey, "one.jsonl"),
    )
    .stdout(dev_full())
    .output()
    .expect("running custody");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}: {stderr}", out.status);
    assert!(
        stderr.contains("the command finished, but the output could not be written to stdout"),
        "{stderr}"
    );
    assert_eq!(node.size(), before + 1, "the append itself was done");
    assert!(
        stderr.contains(&format!("ok: entry {before} appended")),
        "the receipt is on stderr: {stderr}"
    );
}
