//! Group commit under concurrency: many clients appending at once share fsyncs and
//! checkpoint signatures, and every one gets a receipt that verifies.

use custody_e2e::*;
use std::sync::Arc;

/// A counter from the exposition `text` (see [`metric`]).
fn count(text: &str, name: &str) -> u64 {
    metric(text, name) as u64
}

#[test]
fn a_thousand_concurrent_appends_are_committed_in_far_fewer_groups() {
    let node = Arc::new(Node::start());
    node.register(&key(2), "Investigator", "Acme SA", &["investigator"]);
    let start = node.size();
    let vkey = Arc::new(node.vkey());
    let (threads, each) = (50, 20);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (node, vkey) = (node.clone(), vkey.clone());
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::builder()
                    .no_proxy()
                    .build()
                    .unwrap();
                let mut indices = Vec::new();
                for i in 0..each {
                    let env = sign(&key(2), &scan(&format!("T{t}-{i}")));
                    let r = http
                        .post(format!("{}/v1/events", node.url))
                        .json(&env)
                        .send()
                        .unwrap();
                    let status = r.status().as_u16();
                    let body: serde_json::Value = r.json().unwrap();
                    assert_eq!(status, 201, "{body}");
                    indices.push(verify_receipt(&body, &vkey).index);
                }
                indices
            })
        })
        .collect();
    let mut all: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort_unstable();
    let expected: Vec<u64> = (start..start + threads * each).collect();
    assert_eq!(all, expected, "every append got its own index, none lost");
    assert_eq!(node.size(), start + threads * each);
    let text = node.get("/metrics").text();
    let groups = count(&text, "custody_groups_total");
    let appended = count(&text, "custody_appended_total");
    assert_eq!(
        appended,
        1 + threads * each,
        "the registration and the 1,000 scans"
    );
    eprintln!("1,000 concurrent appends in {groups} groups");
    assert!(
        groups < 500,
        "group commit should merge concurrent appends: {groups} groups for 1,000 events"
    );
    assert_eq!(count(&text, "custody_group_size_count"), groups);
    assert_eq!(count(&text, "custody_group_size_sum"), appended);
}
