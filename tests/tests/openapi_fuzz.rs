//! Property-based test of the HTTP API from its OpenAPI document: schemathesis
//! (tests/schemathesis/run.sh) generates requests from spec/openapi.json, valid and
//! invalid, against a node holding a small case, and checks that no answer is a 5xx
//! and that every answer's status, content type, headers and body are the ones the
//! document declares. It cannot sign, so it must not be able to add anything to the
//! log: the log's size and checkpoint are the same afterwards.
//!
//! Needs python3 and, the first time, PyPI (the script installs schemathesis into a
//! venv under $CARGO_TARGET_DIR). Without them this test fails; set
//! CUSTODY_SKIP_SCHEMATHESIS=1 to skip it on purpose.

use custody_e2e::*;
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A run takes about 15 s; past this something hangs.
const DEADLINE: Duration = Duration::from_secs(240);
/// run.sh's exit status when schemathesis cannot be installed.
const NOT_INSTALLED: i32 = 3;

/// Every `custody_http_requests_total` line: (method, route, status, count).
fn requests(node: &Node) -> Vec<(String, String, u16, u64)> {
    let text = node.get("/metrics").text();
    text.lines()
        .filter_map(|l| l.strip_prefix("custody_http_requests_total{"))
        .map(|l| {
            let (labels, n) = l.split_once("} ").expect("a labelled sample");
            let label = |name: &str| {
                labels
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or_else(|| panic!("{name} in {l}"))
                    .to_owned()
            };
            (
                label("method"),
                label("route"),
                label("status").parse().expect("status"),
                n.trim().parse().expect("count"),
            )
        })
        .collect()
}

fn appends_accepted(node: &Node) -> u64 {
    requests(node)
        .iter()
        .filter(|(m, r, s, _)| m == "POST" && r.starts_with("/v1/events") && *s == 201)
        .map(|(.., n)| n)
        .sum()
}

/// A node with an actor of each role, a case taken down, scans, and a blob: enough
/// that generated indices, tile paths (the document's examples) and the configured
/// case id reach real data and the 200 answers' schemas get checked.
fn populated_node() -> Node {
    let node = Node::start();
    let (inv, brand, shop) = (key(2), key(3), key(4));
    node.register(&inv, "Investigator", "Acme SA", &["investigator"]);
    node.register(&brand, "Acme", "Acme SA", &["brand"]);
    node.register(&shop, "Shop", "Shop Inc", &["marketplace"]);
    let right = node.append(&brand, &right());
    let det = node.append(&brand, &detection("case-1"));
    let notice = node.append(&brand, &notice("case-1", &det, &right));
    node.append(&shop, &takedown("case-1", &notice));
    let scans: Vec<Value> = (0..12)
        .map(|i| sign(&inv, &scan(&format!("F-{i}"))))
        .collect();
    let a = node.post_json("/v1/events:batch", &json!({"envelopes": scans}));
    assert_eq!(a.status, 201, "{}", a.text());
    let blob = node.post("/v1/blobs", "application/octet-stream", b"photo".to_vec());
    assert_eq!(blob.status, 201, "{}", blob.text());
    node
}

#[test]
fn the_api_answers_generated_requests_as_its_openapi_document_says() {
    if std::env::var_os("CUSTODY_SKIP_SCHEMATHESIS").is_some_and(|v| v == "1") {
        eprintln!("skipped: CUSTODY_SKIP_SCHEMATHESIS=1");
        return;
    }
    let node = populated_node();
    let before = node.checkpoint();
    let accepted_before = appends_accepted(&node);
    let served_before: u64 = requests(&node).iter().map(|(.., n)| n).sum();

    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemathesis/run.sh");
    // schemathesis keeps its example database and reports in the working directory.
    let work = tempfile::tempdir().unwrap();
    let out_path = work.path().join("schemathesis.out");
    let started = Instant::now();
    let mut child = Command::new("bash")
        .arg(&script)
        .arg(&node.url)
        .current_dir(work.path())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(work.path().join("schemathesis.err")).unwrap())
        .spawn()
        .expect("running tests/schemathesis/run.sh (is bash installed?)");
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for schemathesis") {
            break s;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "schemathesis did not finish within {DEADLINE:?}:\n{}",
                std::fs::read_to_string(&out_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(work.path().join("schemathesis.err")).unwrap_or_default();
    eprintln!("{stdout}");
    assert_ne!(
        status.code(),
        Some(NOT_INSTALLED),
        "schemathesis could not be installed, so the API was NOT tested \
         (set CUSTODY_SKIP_SCHEMATHESIS=1 to skip on purpose):\n{stderr}"
    );
    assert!(
        status.success(),
        "schemathesis found answers that break spec/openapi.json ({status}):\n{stdout}\n{stderr}\nnode log:\n{}",
        node.log()
    );

    let served: u64 = requests(&node).iter().map(|(.., n)| n).sum::<u64>() - served_before;
    let server_errors: Vec<_> = requests(&node)
        .into_iter()
        .filter(|(_, _, s, _)| *s >= 500)
        .collect();
    eprintln!(
        "schemathesis: {served} requests in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        served > 500,
        "schemathesis sent only {served} requests: did it run?"
    );
    assert!(server_errors.is_empty(), "5xx answers: {server_errors:?}");
    assert_eq!(
        appends_accepted(&node),
        accepted_before,
        "an append without a valid signature was accepted"
    );
    let after = node.checkpoint();
    assert_eq!(
        (after.size, after.note),
        (before.size, before.note),
        "the log changed under generated requests"
    );
}
