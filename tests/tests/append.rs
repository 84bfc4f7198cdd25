//! Appending: single events, batches and duplicates, every receipt checked the way a
//! client must (signed checkpoint, inclusion proof).

use custody_e2e::*;
use serde_json::json;

#[test]
fn a_single_event_is_logged_with_a_receipt_that_proves_inclusion() {
    let node = Node::start();
    let inv = key(2);
    node.register(&inv, "Investigator", "Acme SA", &["investigator"]);
    let before = node.size();
    let a = node.send(&inv, &scan("S-1"));
    assert_eq!(a.status, 201, "{}", a.text());
    assert_eq!(a.content_type, "application/json");
    let r = a.json();
    assert_eq!(r["duplicate"], false);
    assert_eq!(r["index"], before);
    assert_eq!(
        a.header("location"),
        Some(format!("/v1/entries/{before}").as_str())
    );
    let receipt = verify_receipt(&r, &node.vkey());
    // The receipt names the event by the BLAKE3 of its payload and the entry by its bytes.
    let entry = node.get(&format!("/v1/entries/{before}"));
    assert_eq!(ledger::entry::leaf_hash(&entry.body), receipt.leaf_hash);
    let logged = ledger::entry::Entry::parse(&entry.body).unwrap();
    let payload = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        &logged.envelope.payload,
    )
    .unwrap();
    assert_eq!(
        ledger::types::EventId::of_payload(&payload),
        receipt.event_id
    );
    assert_eq!(node.size(), before + 1);
}

#[test]
fn the_same_event_again_is_answered_200_with_the_original_receipt() {
    let node = Node::start();
    let inv = key(2);
    node.register(&inv, "Investigator", "Acme SA", &["investigator"]);
    let env = sign(&inv, &scan("S-dup"));
    let first = node.post_json("/v1/events", &env);
    assert_eq!(first.status, 201, "{}", first.text());
    let size = node.size();
    let again = node.post_json("/v1/events", &env);
    assert_eq!(again.status, 200, "{}", again.text());
    let (a, b) = (first.json(), again.json());
    assert_eq!(b["duplicate"], true);
    for field in ["index", "leaf_hash", "event_id", "logged_at"] {
        assert_eq!(a[field], b[field], "{field}");
    }
    verify_receipt(&b, &node.vkey());
    assert_eq!(node.size(), size, "a duplicate adds nothing");
}

#[test]
fn a_batch_gives_each_envelope_its_own_verdict_in_order() {
    let node = Node::start();
    let inv = key(2);
    node.register(&inv, "Investigator", "Acme SA", &["investigator"]);
    let old = sign(&inv, &scan("S-old"));
    assert_eq!(node.post_json("/v1/events", &old).status, 201);
    let mut forged = sign(&inv, &scan("S-forged"));
    forged["signatures"][0]["sig"] = old["signatures"][0]["sig"].clone();
    let batch = json!({"envelopes": [
        sign(&inv, &scan("S-a")),
        old,
        forged,
        sign(&key(9), &scan("S-stranger")),
        json!({"not": "an envelope"}),
        sign(&inv, &scan("S-b")),
    ]});
    let before = node.size();
    let a = node.post_json("/v1/events:batch", &batch);
    assert_eq!(a.status, 201, "{}", a.text());
    let results = a.json()["results"].as_array().unwrap().clone();
    let statuses: Vec<u64> = results
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [201, 200, 401, 403, 400, 201]);
    assert_eq!(code(&results[2]["problem"]), "bad_signature");
    assert_eq!(code(&results[3]["problem"]), "unknown_key");
    assert_eq!(code(&results[4]["problem"]), "malformed_envelope");
    assert_eq!(results[1]["receipt"]["duplicate"], true);
    let vkey = node.vkey();
    for i in [0, 1, 5] {
        verify_receipt(&results[i]["receipt"], &vkey);
    }
    assert_eq!(results[0]["receipt"]["index"], before);
    assert_eq!(results[5]["receipt"]["index"], before + 1);
    assert_eq!(node.size(), before + 2);
}

#[test]
fn a_batch_of_only_duplicates_is_answered_200() {
    let node = Node::start();
    let inv = key(2);
    node.register(&inv, "Investigator", "Acme SA", &["investigator"]);
    let batch = json!({"envelopes": [sign(&inv, &scan("S-1")), sign(&inv, &scan("S-2"))]});
    assert_eq!(node.post_json("/v1/events:batch", &batch).status, 201);
    let again = node.post_json("/v1/events:batch", &batch);
    assert_eq!(again.status, 200, "{}", again.text());
    for r in again.json()["results"].as_array().unwrap() {
        assert_eq!(r["status"], 200);
        assert_eq!(r["receipt"]["duplicate"], true);
    }
}

#[test]
fn every_receipt_of_a_large_batch_verifies_against_its_checkpoint() {
    let node = Node::start();
    let inv = key(2);
    node.register(&inv, "Investigator", "Acme SA", &["investigator"]);
    let envs: Vec<_> = (0..500)
        .map(|i| sign(&inv, &scan(&format!("B-{i}"))))
        .collect();
    let a = node.post_json("/v1/events:batch", &json!({"envelopes": envs}));
    assert_eq!(a.status, 201, "{}", a.text());
    let vkey = node.vkey();
    let results = a.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 500);
    for r in &results {
        assert_eq!(r["status"], 201, "{r}");
        verify_receipt(&r["receipt"], &vkey);
    }
    assert_eq!(node.size(), 2 + 500);
}

#[test]
fn a_registered_brand_can_run_a_case_from_detection_to_counter_notice() {
    let node = Node::start();
    let (brand, shop) = (key(2), key(3));
    node.register(&brand, "Acme brand team", "Acme SA", &["brand"]);
    node.register(&shop, "Shop trust & safety", "Shop Inc", &["marketplace"]);
    let right = node.append(&brand, &right());
    let det = node.append(&brand, &detection("case-1"));
    let not = node.append(&brand, &notice("case-1", &det, &right));
    let td = node.append(&shop, &takedown("case-1", &not));
    node.append(&shop, &counter_notice("case-1", &td));
    let case = node.get_json("/v1/cases/case-1");
    assert_eq!(case["state"], "countered");
    assert_eq!(case["steps"].as_array().unwrap().len(), 4);
}
