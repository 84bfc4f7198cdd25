//! `custody bench` against a real node, briefly: every sampled receipt (and proof)
//! verifies and nothing failed. No timing is asserted: a test machine's speed says
//! nothing about the code, the figures live in README §Performance.

use custody_e2e::*;

/// Runs `custody --json bench …` with the test node's admin key, checking 20
/// sampled receipts (or proofs) and sending for at most 5 s; returns its report.
fn bench(node: &Node, work: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let key_file = work.join("admin.key");
    if !key_file.exists() {
        ledger::keyfile::write(&key_file, &admin()).expect("writing the admin key file");
    }
    let key_file = key_file.to_str().expect("UTF-8 temp path");
    let mut all = vec![
        "--json",
        "bench",
        "--admin-key",
        key_file,
        "--limit-secs",
        "0.2",
        "--sample",
        "20",
        "--duration",
        "5",
    ];
    all.extend_from_slice(args);
    let run = custody(work, Some(&node.url), &all);
    assert!(
        run.ok,
        "custody bench failed:\n{}\n{}\nnode log:\n{}",
        run.stdout,
        run.stderr,
        node.log()
    );
    run.json()
}

/// Whether a stage's figures carry the bound of its 99th percentile: a number of
/// milliseconds, or null for a stage whose 99th percentile lay above the last
/// bound (a second), which a slow test machine may show.
fn reports_p99(stage: &serde_json::Value) -> bool {
    stage
        .get("p99_ms_at_most")
        .is_some_and(|v| v.is_f64() || v.is_null())
}

fn assert_clean(report: &serde_json::Value, unit: &str) {
    let sample = &report["sample"];
    assert!(
        sample["verified"].as_u64().unwrap_or(0) > 0,
        "no sampled receipt was verified: {report:#}"
    );
    assert_eq!(
        sample["verified"], sample["wanted"],
        "every sampled receipt verifies: {report:#}"
    );
    assert_eq!(
        sample["failures"],
        serde_json::json!([]),
        "no sampled check failed: {report:#}"
    );
    assert_eq!(
        report["errors"],
        serde_json::json!({}),
        "no request or event failed: {report:#}"
    );
    assert_eq!(report[unit]["failed"], 0, "{report:#}");
    assert_eq!(report[unit]["ok"], report[unit]["sent"], "{report:#}");
}

#[test]
fn bench_single_batch_and_proof_runs_verify_every_sample_without_errors() {
    let node = Node::start();
    let work = tempfile::tempdir().expect("temp dir");

    let single = bench(
        &node,
        work.path(),
        &["--events", "400", "--connections", "8"],
    );
    assert_eq!(single["mode"], "single");
    assert_clean(&single, "events");
    // The bench read the node's storage gauge to wait for an idle node first.
    assert!(
        single["limit"]["node_background_jobs_left"].is_u64(),
        "the bench saw the node's custody_store_background_jobs: {single:#}"
    );
    // The limit was read again after the load, and compared with the first reading.
    let after = &single["limit"]["after_load"];
    assert!(
        after["ed25519_verify_batch_per_sec"]
            .as_f64()
            .is_some_and(|v| v > 0.0),
        "the limit was measured again after the load: {single:#}"
    );
    assert!(single["limit"]["drift"].is_f64(), "{single:#}");
    // And it says how busy the rest of the machine was meanwhile (Linux).
    assert!(
        single["machine"]["others_share_during_limit"].is_f64() && after["others_share"].is_f64(),
        "{single:#}"
    );
    // The node's own account of the load, read from /metrics before and after it:
    // it did work, and on this machine it is also put in units of a signature check.
    let usage = &single["node_usage"];
    for field in [
        "serving_cpu_seconds",
        "serving_cpu_us_per_event",
        "serving_cpu_in_batch_verifies",
        "peak_resident_bytes",
    ] {
        assert!(
            usage[field].as_f64().is_some_and(|v| v > 0.0),
            "node_usage.{field} is reported and positive: {single:#}"
        );
    }
    // Whether its flushes and compactions write with O_DIRECT: said either way,
    // since the test's temporary directory may be on a filesystem that refuses it.
    assert!(usage["direct_io"].is_boolean(), "{single:#}");

    // Its group commits during the load, from the node's own histogram: at least
    // one group and at most one per event, their times in order, and this
    // machine's I/O wait beside them.
    let commits = &single["node_commits"];
    let groups = commits["groups"].as_u64().unwrap_or(0);
    let ok = single["events"]["ok"].as_u64().unwrap_or(0);
    assert!((1..=ok).contains(&groups), "{single:#}");
    let bound = |q: &str| commits[q].as_f64().unwrap_or(f64::INFINITY);
    assert!(
        bound("p50_ms_at_most") <= bound("p99_ms_at_most")
            && bound("p99_ms_at_most") <= bound("max_ms_at_most")
            && commits["max_ms_over"]
                .as_f64()
                .is_some_and(|v| v < bound("max_ms_at_most")),
        "{single:#}"
    );
    assert!(
        single["machine"]["iowait_share_during_load"].is_f64(),
        "{single:#}"
    );
    // Where the node says the requests spent their time, from its stage histogram:
    // every stage reported with its mean and the bound of its 99th percentile, time
    // spent checking signatures and in the sequencer, and the rest of the mean
    // latency outside the node's handler, which the stages do not overlap. The
    // bench gives these only if the node timed exactly the requests it sent, once
    // each in every stage.
    let stages = &single["node_stages"];
    for stage in ["body", "verify", "sequencer", "resume", "respond"] {
        assert!(reports_p99(&stages[stage]), "{stage} in {single:#}");
    }
    for stage in ["verify", "sequencer"] {
        assert!(
            stages[stage]["mean_ms"].as_f64() > Some(0.0),
            "{stage} in {single:#}"
        );
    }
    assert!(
        stages["outside_mean_ms"].as_f64() >= Some(-0.05),
        "{single:#}"
    );
    let metrics = node.get("/metrics").text();
    let counts: Vec<f64> = ["body", "verify", "sequencer", "resume", "respond"]
        .iter()
        .map(|s| {
            metric(
                &metrics,
                &format!("custody_single_stage_seconds_count{{stage=\"{s}\"}}"),
            )
        })
        .collect();
    assert!(
        counts[0] >= ok as f64 && counts.iter().all(|&c| c == counts[0]),
        "{counts:?}\n{metrics}"
    );

    let batch = bench(
        &node,
        work.path(),
        &["--events", "3000", "--connections", "2", "--batch", "250"],
    );
    assert_eq!(batch["mode"], "batch");
    assert_clean(&batch, "events");
    // The node timed each batch request's stages: as many requests as the bench
    // sent in every stage, time spent checking signatures and in the sequencer, and
    // the bench read them back with each stage's 99th percentile.
    let metrics = node.get("/metrics").text();
    let value = |name: &str| metric(&metrics, name);
    for stage in ["body", "parse", "open", "lookup", "sequencer", "respond"] {
        let count = format!("custody_batch_stage_seconds_count{{stage=\"{stage}\"}}");
        assert_eq!(
            value(&count),
            batch["requests"]["count"].as_f64().unwrap_or(-1.0),
            "{count}:\n{metrics}\n{batch:#}"
        );
        assert!(
            reports_p99(&batch["node_stages"][stage]),
            "{stage} in {batch:#}"
        );
    }
    for stage in ["open", "sequencer"] {
        let name = format!("custody_batch_stage_seconds_sum{{stage=\"{stage}\"}}");
        assert!(value(&name) > 0.0, "{name} is zero:\n{metrics}");
    }
    assert!(
        batch["node_stages"]["sequencer"]["mean_ms"].as_f64() > Some(0.0),
        "{batch:#}"
    );

    // By index, then by leaf hash as an adjudicator asks: the leaf hashes are read
    // from the log's tiles first (full ones and the partial one at its right edge),
    // and each answer must name the entry asked for and carry the leaf hash asked
    // for.
    for (by, flag) in [("index", None), ("leaf_hash", Some("--by-leaf-hash"))] {
        let mut args = vec!["--proofs", "500", "--connections", "4"];
        args.extend(flag);
        let proofs = bench(&node, work.path(), &args);
        assert_eq!(proofs["mode"], "proofs");
        assert_eq!(proofs["proofs_by"], by, "{proofs:#}");
        assert_clean(&proofs, "proofs");
        // Proofs commit nothing: no commit figures, rather than zeros.
        assert!(proofs["node_commits"].is_null(), "{proofs:#}");
        assert!(
            proofs["node_usage"]["serving_cpu_us_per_proof"]
                .as_f64()
                .is_some_and(|v| v > 0.0),
            "the node's CPU per proof is reported: {proofs:#}"
        );
    }

    // On a fixed schedule (--rate): the requests go out at 600 a second whatever
    // the answers do, so 300 of them take at least the 0.498 s until the last is
    // due, and the report says what was offered.
    let paced = bench(
        &node,
        work.path(),
        &["--events", "300", "--rate", "600", "--connections", "8"],
    );
    assert_clean(&paced, "events");
    assert_eq!(paced["requests"]["offered_per_sec"], 600.0, "{paced:#}");
    assert!(
        paced["requests"]["behind_schedule"].is_boolean(),
        "{paced:#}"
    );
    // (The report rounds seconds to the millisecond.)
    assert!(
        paced["events"]["seconds"].as_f64() >= Some(0.498),
        "sent faster than the schedule: {paced:#}"
    );
    let late = &paced["requests"]["sent_late_ms"];
    assert!(
        late["p50"].as_f64() <= late["max"].as_f64() && late["max"].is_f64(),
        "{paced:#}"
    );

    // Pipelined: each connection writes 8 requests before reading their answers,
    // which the node must send back whole and in order.
    for (args, unit) in [
        (["--proofs", "500"], "proofs"),
        (["--events", "400"], "events"),
    ] {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--pipeline", "8", "--connections", "3"]);
        let run = bench(&node, work.path(), &all);
        assert_eq!(run["pipeline"], 8, "{run:#}");
        assert_clean(&run, unit);
    }
}

#[test]
fn pipelining_and_a_schedule_need_one_event_per_request() {
    let node = Node::start();
    let work = tempfile::tempdir().expect("temp dir");
    for (args, says) in [
        (
            ["--batch", "5", "--pipeline", "2"],
            "--pipeline 2 needs one event or proof per request",
        ),
        (
            ["--batch", "5", "--rate", "100"],
            "--rate 100 needs one event or proof per request",
        ),
        (
            ["--batch", "1", "--rate", "0"],
            "--rate must be at least 1 request a second, not 0",
        ),
    ] {
        let mut all = vec!["bench", "--events", "10"];
        all.extend_from_slice(&args);
        let run = custody(work.path(), Some(&node.url), &all);
        assert!(!run.ok, "{args:?} was accepted:\n{}", run.stdout);
        assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
    }
}
