//! A node whose log cannot be written (its stderr on a full disk, here `/dev/full`,
//! which answers every write with ENOSPC) still starts, answers every request, and
//! stops cleanly: its log lines are lost, nothing else.

use custody_e2e::*;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn a_node_whose_log_cannot_be_written_still_answers() {
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full (Linux)");
    let port = free_port();
    let mut child = spawn_serve(&dir.path().join("data"), port, &[], full.into());
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("custody-node exited ({status}) with its log unwritable");
        }
        if http.get(format!("{url}/healthz")).send().is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "custody-node never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Each refusal is logged (at info): the answer must still come, many times over.
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
    // And an append is logged and answered with its receipt.
    let reg = sign(&admin(), &register(&key(7), "Ann", "Brand Co", &["brand"]));
    let r = http
        .post(format!("{url}/v1/events"))
        .json(&reg)
        .send()
        .expect("the append got no answer");
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().unwrap_or_default());
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let stopped = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(30),
            "the node did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "custody-node stopped with {status}");
}
