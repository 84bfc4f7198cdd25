//! A node whose log cannot be written (its stderr on a full disk, here `/dev/full`,
//! which answers every write with ENOSPC) still starts, answers every request, and
//! stops cleanly: its log lines are lost, nothing else.

use custody_e2e::*;
use ledger::types::EventId;
use std::process::Child;
use std::time::{Duration, Instant};

/// The node, killed if the test fails before stopping it.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_node_whose_log_cannot_be_written_still_answers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let http = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    // Debug level: every answer, a receipt's too, is a line the node cannot write.
    // Its stderr cannot say it is listening, so the server that answers is known to
    // be this node by what it serves: a fresh log, holding only the genesis. A port
    // taken between probing and binding makes the node exit: then another port.
    let (mut node, url) = (0..5)
        .find_map(|_| {
            let port = free_port();
            let mut node = Killed(
                serve_command(&data, port, &[])
                    .env("RUST_LOG", "debug")
                    .stderr(dev_full())
                    .spawn()
                    .expect("starting custody-node"),
            );
            let url = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if node.0.try_wait().unwrap().is_some() {
                    return None;
                }
                if let Ok(r) = http.get(format!("{url}/healthz")).send() {
                    let health: serde_json::Value = r.json().unwrap();
                    assert_eq!(health["tree_size"], 1, "another server on {url}: {health}");
                    return Some((node, url));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            panic!("custody-node never answered");
        })
        .expect("custody-node exited at start, on five ports, with its log unwritable");
    // Each refusal is logged (at info): its answer must still come, many times over.
    for i in 0..20 {
        let r = http
            .post(format!("{url}/v1/events"))
            .header("content-type", "application/json")
            .body(format!("{{\"not an envelope\": {i}}}"))
            .send()
            .unwrap_or_else(|e| panic!("refusal {i} got no answer: {e}"));
        assert_eq!(r.status().as_u16(), 400, "refusal {i}");
        let body: serde_json::Value = r.json().unwrap();
        assert!(body["code"].is_string(), "a problem body: {body}");
    }
    // And an append is answered with its receipt.
    let reg = sign(&admin(), &register(&key(7), "Ann", "Brand Co", &["brand"]));
    let r = http
        .post(format!("{url}/v1/events"))
        .json(&reg)
        .send()
        .expect("the append got no answer");
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().unwrap_or_default());
    let receipt: serde_json::Value = r.json().unwrap();
    assert_eq!(receipt["index"], 1, "{receipt}");
    assert_eq!(
        receipt["event_id"],
        hex::encode(EventId::of_payload(&payload_of(&reg)).0),
        "{receipt}"
    );
    let status = stop_child(&mut node.0, Duration::from_secs(30)).expect("the node did not stop");
    assert!(status.success(), "custody-node stopped with {status}");
}
