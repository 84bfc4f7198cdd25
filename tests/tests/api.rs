//! The rest of the HTTP contract: the OpenAPI document, log info, blobs, case
//! timelines, evidence bundles, metrics, request ids, back-pressure, and the
//! process's life (init, SIGTERM, refusing a damaged store).

use custody_e2e::*;
use ledger::bundle::Bundle;
use ledger::types::BlobId;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::process::Command;

/// Every route the node serves, as (method, OpenAPI path).
const ROUTES: &[(&str, &str)] = &[
    ("get", "/checkpoint"),
    ("get", "/tile/{path}"),
    ("get", "/v1/log"),
    ("post", "/v1/events"),
    ("post", "/v1/events:batch"),
    ("get", "/v1/entries/{index}"),
    ("get", "/v1/proofs/inclusion"),
    ("get", "/v1/proofs/consistency"),
    ("get", "/v1/bundles/{index}"),
    ("get", "/v1/cases/{id}"),
    ("get", "/v1/stats"),
    ("post", "/v1/blobs"),
    ("get", "/v1/blobs/{blake3}"),
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
];

#[test]
fn every_route_is_in_the_openapi_document_and_served() {
    let text = std::fs::read_to_string(spec_dir().join("openapi.json")).expect("spec/openapi.json");
    let doc: Value = serde_json::from_str(&text).expect("spec/openapi.json is JSON");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().expect("paths");
    let mut documented = BTreeSet::new();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.clone(), path.clone()));
        }
    }
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        documented, served,
        "spec/openapi.json and the node's routes differ"
    );
    assert!(doc["components"]["schemas"]["Problem"].is_object());

    let node = Node::start();
    let served_doc = node.get("/openapi.json");
    assert_eq!(served_doc.status, 200);
    assert_eq!(
        served_doc.json(),
        doc,
        "the node serves spec/openapi.json as is"
    );
    for (method, path) in ROUTES {
        let concrete = path
            .replace("{path}", "0/000.p/1")
            .replace("{index}", "0")
            .replace("{id}", "case-x")
            .replace("{blake3}", &"0".repeat(64));
        let a = if *method == "get" {
            node.get(&concrete)
        } else {
            node.post_json(&concrete, &json!({}))
        };
        let unrouted = a.status == 405 || (a.status == 404 && a.text().contains("no route"));
        assert!(
            !unrouted,
            "{method} {concrete} is documented but not served: {}",
            a.text()
        );
    }
}

#[test]
fn log_info_names_origin_vkey_algorithm_and_size() {
    let node = Node::start();
    let info = node.get_json("/v1/log");
    assert_eq!(info["origin"], ORIGIN);
    assert_eq!(info["hash_algorithm"], "SHA-256");
    assert_eq!(info["tree_size"], 1, "the genesis entry");
    let vkey = info["vkey"].as_str().unwrap();
    assert!(vkey.starts_with(&format!("{ORIGIN}+")));
    let cp = ledger::checkpoint::CheckpointVerifier::new(vkey)
        .unwrap()
        .verify(info["checkpoint"].as_str().unwrap())
        .unwrap();
    assert_eq!(cp.size, 1);
    let health = node.get_json("/healthz");
    assert_eq!(health, json!({"status": "ok", "tree_size": 1}));
    let c = node.get("/checkpoint");
    assert!(c.content_type.starts_with("text/plain"));
    assert!(c.text().starts_with(&format!("{ORIGIN}\n1\n")));
}

#[test]
fn blobs_are_stored_and_served_by_their_blake3() {
    let node = Node::start_with(&["--max-blob-bytes", "1KiB"]);
    let data = b"\x89PNG fake screenshot bytes".to_vec();
    let a = node.post("/v1/blobs", "image/png", data.clone());
    assert_eq!(a.status, 201, "{}", a.text());
    let v = a.json();
    assert_eq!(v["blake3"], BlobId::of(&data).to_hex());
    assert_eq!(v["size"], data.len());
    let got = node.get(&format!("/v1/blobs/{}", v["blake3"].as_str().unwrap()));
    assert_eq!(got.status, 200);
    assert_eq!(got.body, data);
    node.post("/v1/blobs", "application/octet-stream", vec![0; 2048])
        .problem(413, "too_large");
}

/// A case through detection, notice, takedown and counter-notice: (node, receipts).
fn case_to_counter_notice() -> (Node, Vec<Value>) {
    let node = Node::start();
    let (brand, shop) = (key(2), key(3));
    node.register(&brand, "Acme brand team", "Acme SA", &["brand"]);
    node.register(&shop, "Shop trust & safety", "Shop Inc", &["marketplace"]);
    let right = node.append(&brand, &right());
    let det = node.append(&brand, &detection("case-7"));
    let not = node.append(&brand, &notice("case-7", &det, &right));
    let td = node.append(&shop, &takedown("case-7", &not));
    let cn = node.append(&shop, &counter_notice("case-7", &td));
    (node, vec![right, det, not, td, cn])
}

#[test]
fn a_case_timeline_shows_every_step_its_state_and_open_deadlines() {
    let (node, r) = case_to_counter_notice();
    let case = node.get_json("/v1/cases/case-7");
    assert_eq!(case["id"], "case-7");
    assert_eq!(case["state"], "countered");
    assert_eq!(case["regime"], "dmca-512");
    assert_eq!(case["brand_org"], "Acme SA");
    let steps = case["steps"].as_array().unwrap();
    let kinds: Vec<&str> = steps.iter().map(|s| s["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["detection", "notice", "takedown", "counter_notice"]);
    let states: Vec<&str> = steps
        .iter()
        .map(|s| s["state_after"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["detected", "noticed", "removed", "countered"]);
    for (s, rec) in steps.iter().zip(&r[1..]) {
        assert_eq!(s["index"], rec["index"]);
        assert_eq!(s["logged_at"], rec["logged_at"]);
    }
    assert_eq!(steps[0]["seconds_since_previous"], Value::Null);
    assert!(steps[1..].iter().all(|s| s["seconds_since_previous"]
        .as_f64()
        .is_some_and(|x| x >= 0.0)));
    assert_eq!(steps[3]["org"], "Shop Inc");
    let deadlines: Vec<&str> = case["deadlines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        deadlines,
        ["reinstatement_not_before", "reinstatement_due_by"]
    );
}

#[test]
fn an_evidence_bundle_verifies_offline_with_only_the_log_key() {
    let (node, r) = case_to_counter_notice();
    let vkey = node.vkey();
    let index = r[4]["index"].as_u64().unwrap();
    let a = node.get(&format!("/v1/bundles/{index}"));
    assert_eq!(a.status, 200, "{}", a.text());
    let bundle = Bundle::parse(&a.body).unwrap();
    let report = bundle
        .verify(&vkey, &|_| None)
        .expect("the bundle verifies offline");
    assert_eq!(report.subject, index);
    let kinds: BTreeSet<String> = report.entries.iter().map(|l| l.kind.clone()).collect();
    for k in [
        "log.genesis",
        "actor.register",
        "right",
        "detection",
        "notice",
        "takedown",
        "counter_notice",
    ] {
        assert!(kinds.contains(k), "{k} missing from the bundle: {kinds:?}");
    }
    let other = ledger::checkpoint::LogKey::generate(ORIGIN).unwrap().vkey();
    assert!(
        bundle.verify(&other, &|_| None).is_err(),
        "another log's key must not verify it"
    );
}

#[test]
fn metrics_count_appends_and_refusals_by_code() {
    let node = Node::start();
    node.register(&key(2), "Investigator", "Acme SA", &["investigator"]);
    node.append(&key(2), &scan("S-1"));
    node.send(&key(9), &scan("S-2")).problem(403, "unknown_key");
    node.send(&key(9), &scan("S-3")).problem(403, "unknown_key");
    node.post("/v1/events", "text/plain", b"x".to_vec())
        .problem(415, "unsupported_media_type");
    let a = node.get("/metrics");
    assert!(
        a.content_type.starts_with("text/plain"),
        "{}",
        a.content_type
    );
    let text = a.text();
    for line in [
        "custody_appended_total 2",
        "custody_tree_size 3",
        "custody_refused_total{code=\"unknown_key\"} 2",
        "custody_refused_total{code=\"unsupported_media_type\"} 1",
        "custody_group_size_bucket{le=\"+Inf\"} 2",
        "custody_commit_seconds_count 2",
        "custody_http_requests_total{method=\"POST\",route=\"/v1/events\",status=\"201\"} 2",
        "custody_http_requests_total{method=\"POST\",route=\"/v1/events\",status=\"403\"} 2",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing from:\n{text}"
        );
    }
}

#[test]
fn every_answer_carries_a_distinct_request_id() {
    let node = Node::start();
    let ids: BTreeSet<String> = ["/healthz", "/v1/log", "/nowhere", "/v1/entries/x"]
        .iter()
        .map(|p| {
            node.get(p)
                .header("x-request-id")
                .expect("x-request-id")
                .to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 4, "{ids:?}");
}

/// A node whose append queues hold one request, with an investigator (key 2)
/// registered; and its size then.
fn tiny_queue_node(max_group: &str) -> (std::sync::Arc<Node>, u64) {
    let node = Node::start_with(&["--queue", "1", "--max-group", max_group]);
    node.register(&key(2), "Investigator", "Acme SA", &["investigator"]);
    let start = node.size();
    (std::sync::Arc::new(node), start)
}

/// What a client needs from an answer here: status, Retry-After, body.
type Told = (u16, Option<String>, Value);

fn told(a: Answer) -> Told {
    (
        a.status,
        a.header("retry-after").map(str::to_owned),
        a.json(),
    )
}

/// Runs `client(t)` on `n` threads at once, against `node`; every thread's answers.
fn clients(
    node: &std::sync::Arc<Node>,
    n: usize,
    client: impl Fn(&Node, usize) -> Vec<Told> + Send + Sync + Copy + 'static,
) -> Vec<Told> {
    let handles: Vec<_> = (0..n)
        .map(|t| {
            let node = node.clone();
            std::thread::spawn(move || client(&node, t))
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

/// Every 503 says when to retry and why.
fn assert_told_to_retry(overloaded: &[&Told]) {
    for (_, retry, body) in overloaded {
        assert_eq!(retry.as_deref(), Some("1"));
        assert_eq!(code(body), "overloaded");
    }
}

#[test]
fn a_full_queue_is_answered_503_with_retry_after() {
    let (node, start) = tiny_queue_node("64");
    // Behind a queue of one, the sequencer holds a group and its answering thread
    // two more, so a 503 needs several batches to arrive at once; on two busy cores
    // their signature checks may finish a few at a time. Rounds of 16 concurrent
    // batches until one is refused (a bounded number of rounds).
    let mut answers = Vec::new();
    for round in 0..8 {
        answers.extend(clients(&node, 16, move |node, t| {
            let envs: Vec<Value> = (0..200)
                .map(|i| sign(&key(2), &scan(&format!("Q{round}-{t}-{i}"))))
                .collect();
            vec![told(
                node.post_json("/v1/events:batch", &json!({"envelopes": envs})),
            )]
        }));
        if answers.iter().any(|(s, _, _)| *s == 503) {
            break;
        }
    }
    let overloaded: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 503).collect();
    eprintln!(
        "{} of {} batches were told to retry",
        overloaded.len(),
        answers.len()
    );
    assert!(
        !overloaded.is_empty(),
        "a queue of 1 under rounds of 16 concurrent batches must overflow"
    );
    assert_told_to_retry(&overloaded);
    let accepted = answers.iter().filter(|(s, _, _)| *s == 201).count() as u64;
    assert_eq!(accepted + overloaded.len() as u64, answers.len() as u64);
    assert_eq!(
        node.size(),
        start + 200 * accepted,
        "refused batches left no trace"
    );
}

/// Single events take one hand-off (verifier threads straight to the sequencer):
/// when either queue is full the request is still answered 503 + Retry-After, and
/// every event answered 201 is in the log, and no other.
#[test]
fn single_events_at_a_full_queue_are_answered_503_and_nothing_acknowledged_is_lost() {
    let (node, start) = tiny_queue_node("4");
    let answers = clients(&node, 32, |node, t| {
        (0..15)
            .map(|i| {
                told(node.post_json("/v1/events", &sign(&key(2), &scan(&format!("S{t}-{i}")))))
            })
            .collect()
    });
    let overloaded: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 503).collect();
    eprintln!(
        "{} of {} single events were told to retry",
        overloaded.len(),
        answers.len()
    );
    assert!(
        !overloaded.is_empty(),
        "a queue of 1 under 32 concurrent clients must overflow"
    );
    assert_told_to_retry(&overloaded);
    let receipts: Vec<&Value> = answers
        .iter()
        .filter(|(s, _, _)| *s == 201)
        .map(|(_, _, b)| b)
        .collect();
    assert_eq!(
        receipts.len() + overloaded.len(),
        answers.len(),
        "only 201 or 503"
    );
    assert_eq!(
        node.size(),
        start + receipts.len() as u64,
        "refused events left no trace"
    );
    for r in receipts {
        let index = r["index"].as_u64().unwrap();
        let entry = node.get(&format!("/v1/entries/{index}"));
        assert_eq!(entry.status, 200, "acknowledged entry {index} is served");
    }
}

#[test]
fn sigterm_stops_the_node_cleanly_with_exit_0() {
    let mut node = Node::start();
    node.register(&key(2), "Investigator", "Acme SA", &["investigator"]);
    let size = node.size();
    let status = node.stop();
    assert!(status.success(), "exit {status}:\n{}", node.log());
    assert!(node.log().contains("stopped"), "{}", node.log());
    // It wrote its memtables to table files, so no write-ahead log is left to replay.
    assert!(
        node.log().contains("the next start replays no log"),
        "{}",
        node.log()
    );
    let wal: u64 = std::fs::read_dir(node.data_dir().join("db"))
        .expect("the store's directory")
        .flatten()
        .filter(|f| f.file_name().to_string_lossy().ends_with(".log"))
        .map(|f| f.metadata().map_or(0, |m| m.len()))
        .sum();
    assert_eq!(wal, 0, "write-ahead log bytes left after a clean stop");
    // And the next start serves everything that was acknowledged.
    node.relaunch();
    assert_eq!(node.size(), size, "{}", node.log());
}

#[test]
fn init_creates_a_log_that_serve_then_opens() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(binary("custody-node"))
        .args([
            "init",
            "--origin",
            "custody.test/init",
            "--admin-key",
            &key_hex(&admin()),
            "--data",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let vkey = stdout
        .lines()
        .find_map(|l| l.strip_prefix("vkey: "))
        .expect("init prints the vkey")
        .to_owned();
    let node = Node::start_in(dir, &[]);
    let info = node.get_json("/v1/log");
    assert_eq!(info["vkey"], vkey.as_str());
    assert_eq!(
        info["origin"], "custody.test/init",
        "an existing log is opened, not re-created"
    );
    node.register(&key(2), "Investigator", "Acme SA", &["investigator"]);
}

#[test]
fn serve_refuses_a_store_it_cannot_open_and_exits_non_zero() {
    let mut node = Node::start();
    assert!(node.stop().success());
    let data = node.data_dir();
    std::fs::write(data.join("log.key"), "PRIVATE+KEY+garbage\n").unwrap();
    let out = Command::new(binary("custody-node"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("opening the log in"), "{err}");
    // A directory that holds something, but no log, is never taken over.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("notes.txt"), "not a log").unwrap();
    let out = Command::new(binary("custody-node"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(other.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("custody-node init"));
}

#[test]
fn the_first_serve_on_an_empty_dir_creates_a_log_and_a_private_admin_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = dir.path().join("node.log");
    let mut child = Command::new(binary("custody-node"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(&data)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/v1/log");
    // Asked only once this node says it listens there: another test's node could
    // have taken the port in between.
    let listening = format!("listening addr=127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let info = loop {
        let ours = std::fs::read_to_string(&log).is_ok_and(|l| l.contains(&listening));
        if let Some(r) = ours.then(|| reqwest::blocking::get(&url).ok()).flatten() {
            break r.json::<serde_json::Value>().unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the node did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let genesis: Value = reqwest::blocking::get(format!("http://127.0.0.1:{port}/v1/entries/0"))
        .unwrap()
        .json()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(info["tree_size"], 1, "the genesis only: {info}");
    let key = ledger::keyfile::load(&data.join("admin.key")).expect("the admin key file loads");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("admin.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The genesis names that key as the admin.
    let payload: Value = serde_json::from_slice(&payload_of(&genesis["envelope"])).unwrap();
    assert_eq!(
        payload["body"]["admin_key"],
        hex::encode(key.verifying_key().as_bytes())
    );
}

#[test]
fn due_process_can_be_waived_for_fixtures_with_a_hidden_flag() {
    let node = Node::start_with(&["--no-enforce-due-process"]);
    node.register(&key(2), "Acme", "Acme SA", &["brand"]);
    let right = node.append(&key(2), &right());
    let mut n = notice("case-9", &right, &right);
    n["refs"] = json!([reference_to(&right)]);
    // A notice with no detection breaks due process; the node logs it anyway (the
    // audit flags it), while roles and signatures stay enforced.
    node.append(&key(2), &n);
    node.send(&key(9), &scan("S-1")).problem(403, "unknown_key");
}
