//! `custody audit` against real nodes: an honest log passes and is remembered; a
//! node whose store was replaced by a forked copy (same size or larger, different
//! history, same log key) is reported as a fork; entries that break due process in
//! a log written with enforcement off are flagged, exactly those.

use custody_e2e::*;
use serde_json::Value;

fn audit(work: &std::path::Path, node: &Node, state: &str, log_key: &str) -> Run {
    custody(
        work,
        None,
        &[
            "--json",
            "--log-key",
            log_key,
            "audit",
            &node.url,
            "--state",
            state,
        ],
    )
}

/// A node with one brand actor registered (entries 0 and 1), and its key.
fn acme_node() -> (Node, ed25519_dalek::SigningKey) {
    let node = Node::start();
    let brand = key(2);
    node.register(&brand, "Acme", "Acme", &["brand"]);
    (node, brand)
}

fn scans(node: &Node, k: &ed25519_dalek::SigningKey, prefix: &str, n: usize) {
    for i in 0..n {
        node.append(k, &scan(&format!("{prefix}-{i}")));
    }
}

#[test]
fn an_honest_log_passes_audit_twice_and_the_second_run_checks_consistency() {
    let (node, brand) = acme_node();
    // Five entry bundles: more tiles than the audit has verifying threads, so its
    // round-robin hand-out wraps and the results must come back in order.
    scans(&node, &brand, "a", 1100);
    let work = tempfile::tempdir().unwrap();
    let vkey = node.vkey();
    let first = audit(work.path(), &node, "state.json", &vkey);
    assert!(first.ok, "{}\n{}", first.stdout, first.stderr);
    let s = first.json();
    assert_eq!(s["entries"].as_u64(), Some(1102));
    assert_eq!(s["violations"].as_array().unwrap().len(), 0);
    assert_eq!(s["actors"].as_u64(), Some(2));
    scans(&node, &brand, "b", 5);
    let second = audit(work.path(), &node, "state.json", &vkey);
    assert!(second.ok, "{}\n{}", second.stdout, second.stderr);
    assert_eq!(second.json()["tree_size"].as_u64(), Some(1107));
    let human = custody(
        work.path(),
        None,
        &[
            "--log-key",
            &vkey,
            "audit",
            &node.url,
            "--state",
            "state.json",
        ],
    );
    assert!(
        human.ok && human.stdout.contains("violations: 0"),
        "{}",
        human.stdout
    );
    assert!(
        human.stderr.contains("entries") && human.stderr.contains("/s"),
        "no progress shown:\n{}",
        human.stderr
    );
}

/// The audit's progress and its note about trusting the node's key go to stderr;
/// lines that cannot be written there (a full disk, here `/dev/full`) are dropped
/// and the audit still runs and reports. With `eprintln!` it panicked (exit 101).
#[test]
fn audit_reports_even_when_its_stderr_cannot_be_written() {
    let (node, brand) = acme_node();
    scans(&node, &brand, "a", 3);
    let work = tempfile::tempdir().unwrap();
    let out = custody_command(work.path(), None, &["audit", &node.url])
        .stderr(dev_full())
        .output()
        .expect("running custody");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "custody audit: {}\n{stdout}",
        out.status
    );
    assert!(
        stdout.contains("audited 5 entries") && stdout.contains("violations: 0"),
        "{stdout}"
    );
}

/// Builds a log, forks a copy of its store, grows both differently, audits the
/// original, then serves the fork in its place and audits again.
fn fork_detected(extra_in_fork: usize) -> Run {
    let (node, brand) = acme_node();
    scans(&node, &brand, "common", 3);
    let vkey = node.vkey();
    let dir = node.stop_and_keep();
    let fork = tempfile::tempdir().unwrap();
    copy_dir(&dir.path().join("data"), &fork.path().join("data"));

    let original = Node::start_in(dir, &[]);
    scans(&original, &brand, "original", 2);
    let work = tempfile::tempdir().unwrap();
    let honest = audit(work.path(), &original, "state.json", &vkey);
    assert!(honest.ok, "{}", honest.stderr);
    drop(original);

    // The operator swaps in the forked store: same key, different history.
    let forked = Node::start_in(fork, &[]);
    scans(&forked, &brand, "forged", extra_in_fork);
    audit(work.path(), &forked, "state.json", &vkey)
}

#[test]
fn a_forked_store_of_the_same_size_is_reported_as_a_fork() {
    let run = fork_detected(2);
    assert!(!run.ok);
    let s = run.json();
    assert!(s["history"].as_str().unwrap_or("").contains("FORK"), "{s}");
}

#[test]
fn a_forked_store_that_grew_larger_is_reported_as_a_fork() {
    let run = fork_detected(7);
    assert!(!run.ok);
    assert!(
        run.json()["history"]
            .as_str()
            .unwrap_or("")
            .contains("FORK"),
        "{}",
        run.stdout
    );
}

#[test]
fn audit_flags_exactly_the_entries_a_lax_node_let_through() {
    let node = Node::start_with(&["--no-enforce-due-process"]);
    let brand = key(2);
    let market = key(3);
    node.register(&brand, "Acme", "Acme", &["brand"]);
    node.register(&market, "Shop", "Shop", &["marketplace"]);
    let right = node.append(&brand, &right());
    let det = node.append(&brand, &detection("ok-case"));
    let notice_ok = node.append(&brand, &notice("ok-case", &det, &right));
    // Violations: a takedown in a case with no detection, and a counter-notice
    // before any takedown.
    let bad1 = node.append(&market, &serde_json::json!({"kind": "takedown", "case": "ghost", "claimed_at": now(),
        "refs": [reference_to(&notice_ok)],
        "body": {"decision": "removed", "ground": "tm", "statement_of_reasons": "x", "automated": false, "redress": "y"}}));
    let bad2 = node.append(&market, &counter_notice("ok-case", &notice_ok));
    let work = tempfile::tempdir().unwrap();
    let run = audit(work.path(), &node, "state.json", &node.vkey());
    assert!(!run.ok, "the audit must fail on violations");
    let v: Vec<(u64, Value)> = run.json()["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["index"].as_u64().unwrap(), v["rule"].clone()))
        .collect();
    let flagged: Vec<u64> = v.iter().map(|(i, _)| *i).collect();
    assert_eq!(
        flagged,
        vec![
            bad1["index"].as_u64().unwrap(),
            bad2["index"].as_u64().unwrap()
        ],
        "{v:?}"
    );
    assert!(
        v.iter().all(|(_, r)| r.is_string()),
        "each violation names its rule: {v:?}"
    );
}

#[test]
fn an_entry_altered_on_disk_is_named_by_index_by_the_audit() {
    let (node, brand) = acme_node();
    // Entry 5 in a full tile: the node hashes the last, partial tile's entries
    // again when it opens, and would refuse the log instead of serving it.
    scans(&node, &brand, "t", 300);
    let vkey = node.vkey();
    let dir = node.stop_and_keep();
    {
        // An operator (or a thief with disk access) rewrites entry 5 in place.
        // Every column family must be opened: those the store has.
        let path = dir.path().join("data/db");
        let families = rocksdb::DB::list_cf(&rocksdb::Options::default(), &path).unwrap();
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &path, families).unwrap();
        let entries = db.cf_handle("entries").unwrap();
        let mut k = vec![b'e'];
        k.extend_from_slice(&5u64.to_be_bytes());
        let mut e = db.get_cf(entries, &k).unwrap().unwrap();
        // `{"logged_at":"2026-…`: move the log's own timestamp by a year.
        assert!(e.starts_with(b"{\"logged_at\":\"20"));
        e[17] = if e[17] == b'7' { b'8' } else { b'7' };
        db.put_cf(entries, &k, e).unwrap();
    }
    let node = Node::start_in(dir, &[]);
    let work = tempfile::tempdir().unwrap();
    let run = audit(work.path(), &node, "s.json", &vkey);
    assert!(!run.ok);
    let s = run.json();
    let altered: Vec<u64> = s["violations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["code"] == "entry_altered")
        .map(|v| v["index"].as_u64().unwrap())
        .collect();
    assert_eq!(altered, vec![5], "{s}");
    assert!(
        s["history"]
            .as_str()
            .unwrap_or("")
            .contains("ROOT MISMATCH"),
        "{s}"
    );
}
