//! Every bad input is answered with its problem (RFC 9457, stable code) and leaves
//! the log exactly as it was.

use custody_e2e::*;
use serde_json::{json, Value};

/// A node with an investigator (key 2) registered; returns it and the log size.
fn node_with_investigator() -> (Node, u64) {
    let node = Node::start();
    node.register(&key(2), "Investigator", "Acme SA", &["investigator"]);
    let size = node.size();
    (node, size)
}

fn assert_unchanged(node: &Node, size: u64) {
    assert_eq!(node.size(), size, "the refused request changed the log");
    assert_eq!(node.checkpoint().size, size);
}

#[test]
fn malformed_json_is_refused_as_malformed_envelope() {
    let (node, size) = node_with_investigator();
    let p = node
        .post(
            "/v1/events",
            "application/json",
            b"{\"payloadType\": ".to_vec(),
        )
        .problem(400, "malformed_envelope");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("not a DSSE envelope"),
        "{p}"
    );
    node.post("/v1/events:batch", "application/json", b"[1,2]".to_vec())
        .problem(400, "malformed_envelope");
    assert_unchanged(&node, size);
}

#[test]
fn a_body_not_declared_as_json_is_refused_415() {
    let (node, size) = node_with_investigator();
    let env = serde_json::to_vec(&sign(&key(2), &scan("S-1"))).unwrap();
    let p = node
        .post("/v1/events", "text/plain", env.clone())
        .problem(415, "unsupported_media_type");
    assert_eq!(p["expected"], "application/json");
    node.post("/v1/events:batch", "application/x-www-form-urlencoded", env)
        .problem(415, "unsupported_media_type");
    assert_unchanged(&node, size);
}

#[test]
fn a_payload_that_is_not_base64_is_refused_as_bad_encoding() {
    let (node, size) = node_with_investigator();
    let mut env = sign(&key(2), &scan("S-1"));
    env["payload"] = json!("not base64!");
    let p = node
        .post_json("/v1/events", &env)
        .problem(400, "bad_encoding");
    assert_eq!(p["field"], "payload");
    assert_unchanged(&node, size);
}

#[test]
fn a_signature_that_does_not_verify_is_refused_401() {
    let (node, size) = node_with_investigator();
    let mut env = sign(&key(2), &scan("S-1"));
    let other = sign(&key(2), &scan("S-2"));
    env["signatures"][0]["sig"] = other["signatures"][0]["sig"].clone();
    let p = node
        .post_json("/v1/events", &env)
        .problem(401, "bad_signature");
    assert_eq!(p["field"], "signatures[0].sig");
    assert_unchanged(&node, size);
}

#[test]
fn an_unregistered_key_is_refused_403() {
    let (node, size) = node_with_investigator();
    let p = node
        .send(&key(42), &scan("S-1"))
        .problem(403, "unknown_key");
    assert!(
        p["detail"].as_str().unwrap().contains(&key_hex(&key(42))),
        "{p}"
    );
    assert_unchanged(&node, size);
}

#[test]
fn a_revoked_key_is_refused_403() {
    let (node, _) = node_with_investigator();
    node.append(&admin(), &revoke(&key(2), "device lost"));
    let size = node.size();
    node.send(&key(2), &scan("S-1")).problem(403, "revoked_key");
    assert_unchanged(&node, size);
}

#[test]
fn a_marketplace_key_may_not_send_a_notice() {
    let node = Node::start();
    let (brand, shop) = (key(2), key(3));
    node.register(&brand, "Acme", "Acme SA", &["brand"]);
    node.register(&shop, "Shop", "Shop Inc", &["marketplace"]);
    let right = node.append(&brand, &right());
    let det = node.append(&brand, &detection("case-1"));
    let size = node.size();
    let p = node
        .send(&shop, &notice("case-1", &det, &right))
        .problem(403, "role_not_permitted");
    assert!(p["expected"].as_str().unwrap().contains("brand"), "{p}");
    assert_unchanged(&node, size);
}

#[test]
fn a_notice_before_any_detection_is_refused_by_due_process() {
    let node = Node::start();
    node.register(&key(2), "Acme", "Acme SA", &["brand"]);
    let right = node.append(&key(2), &right());
    let size = node.size();
    let mut n = notice("case-9", &right, &right);
    n["refs"] = json!([reference_to(&right)]);
    let p = node.send(&key(2), &n).problem(422, "due_process");
    assert_eq!(p["rule"], "case_not_open");
    assert_unchanged(&node, size);
}

#[test]
fn a_body_over_the_limit_is_refused_413() {
    let (node, size) = node_with_investigator();
    let mut env = sign(&key(2), &scan("S-1"));
    env["padding"] = Value::String("x".repeat(1_100_000));
    let p = node.post_json("/v1/events", &env).problem(413, "too_large");
    assert!(p["detail"].as_str().unwrap().contains("1048576"), "{p}");
    assert!(
        p["expected"].as_str().unwrap().contains("--max-body-bytes"),
        "{p}"
    );
    assert_unchanged(&node, size);
}

#[test]
fn a_batch_body_over_max_batch_bytes_is_refused_413() {
    let node = Node::start_with(&["--max-batch-bytes", "4KiB"]);
    node.register(&key(2), "Investigator", "Acme SA", &["investigator"]);
    let size = node.size();
    let envs: Vec<Value> = (0..10)
        .map(|i| sign(&key(2), &scan(&format!("S-{i}"))))
        .collect();
    let p = node
        .post_json("/v1/events:batch", &json!({"envelopes": envs}))
        .problem(413, "too_large");
    assert!(
        p["expected"]
            .as_str()
            .unwrap()
            .contains("--max-batch-bytes"),
        "{p}"
    );
    assert_unchanged(&node, size);
}

#[test]
fn a_batch_over_max_batch_is_refused_413() {
    let node = Node::start_with(&["--max-batch", "3"]);
    node.register(&key(2), "Investigator", "Acme SA", &["investigator"]);
    let size = node.size();
    let envs: Vec<Value> = (0..4)
        .map(|i| sign(&key(2), &scan(&format!("S-{i}"))))
        .collect();
    let p = node
        .post_json("/v1/events:batch", &json!({"envelopes": envs}))
        .problem(413, "too_large");
    assert!(p["expected"].as_str().unwrap().contains("at most 3"), "{p}");
    node.post_json("/v1/events:batch", &json!({"envelopes": []}))
        .problem(400, "malformed_envelope");
    assert_unchanged(&node, size);
}

#[test]
fn a_ref_to_an_entry_that_does_not_exist_is_refused() {
    let (node, size) = node_with_investigator();
    let mut s = scan("S-1");
    s["refs"] = json!([reference(999, &"00".repeat(32))]);
    let p = node.send(&key(2), &s).problem(422, "ref_not_found");
    assert_eq!(p["field"], "payload.refs[0]");
    assert_unchanged(&node, size);
}

#[test]
fn a_ref_with_the_wrong_leaf_hash_is_refused() {
    let (node, size) = node_with_investigator();
    let mut s = scan("S-1");
    s["refs"] = json!([reference(1, &"ab".repeat(32))]);
    let p = node.send(&key(2), &s).problem(409, "ref_mismatch");
    assert_eq!(p["field"], "payload.refs[0].leaf_hash");
    assert_unchanged(&node, size);
}

#[test]
fn proof_queries_out_of_range_are_refused_422() {
    let (node, size) = node_with_investigator();
    for q in [
        format!("/v1/proofs/inclusion?index={size}"),
        format!("/v1/proofs/inclusion?index=0&tree_size={}", size + 1),
        "/v1/proofs/inclusion?index=1&tree_size=1".to_owned(),
        format!("/v1/proofs/consistency?first={}", size + 1),
        format!("/v1/proofs/consistency?first=1&second={}", size + 1),
        "/v1/proofs/consistency?first=2&second=1".to_owned(),
    ] {
        node.get(&q).problem(422, "out_of_range");
    }
    node.get(&format!("/v1/entries/{size}"))
        .problem(404, "not_found");
    node.get(&format!("/v1/bundles/{size}"))
        .problem(404, "not_found");
    assert_unchanged(&node, size);
}

#[test]
fn numbers_that_are_not_u64_are_refused_400() {
    let (node, size) = node_with_investigator();
    for q in [
        "/v1/proofs/inclusion?index=18446744073709551616",
        "/v1/proofs/inclusion?index=-1",
        "/v1/proofs/inclusion?index=1e3",
        "/v1/proofs/inclusion",
        "/v1/proofs/inclusion?index=0&leaf_hash=00",
        "/v1/proofs/consistency?second=1",
        "/v1/proofs/consistency?first=x",
        "/v1/entries/abc",
        "/v1/entries/99999999999999999999999",
        "/v1/bundles/-3",
    ] {
        node.get(q).problem(400, "bad_request");
    }
    node.get("/v1/proofs/inclusion?leaf_hash=XYZ")
        .problem(400, "bad_encoding");
    node.get(&format!(
        "/v1/proofs/inclusion?leaf_hash={}",
        "0".repeat(64)
    ))
    .problem(404, "not_found");
    assert_unchanged(&node, size);
}

#[test]
fn tile_paths_that_lie_outside_the_tree_are_refused_404() {
    // Traversal (`..`, escaped or not) is in hostile.rs.
    let (node, size) = node_with_investigator();
    for path in [
        "/tile/0/001",
        "/tile/0/000",
        "/tile/0/000.p/3",
        "/tile/entries/000.p/200",
        "/tile/8/000",
        "/tile/entries/0",
    ] {
        node.get(path).problem(404, "not_found");
    }
    assert_eq!(node.get(&format!("/tile/0/000.p/{size}")).status, 200);
    assert_unchanged(&node, size);
}

#[test]
fn unknown_routes_and_methods_are_problems_too() {
    let (node, size) = node_with_investigator();
    node.get("/v2/nothing").problem(404, "not_found");
    node.get("/v1/events").problem(405, "method_not_allowed");
    node.post("/v1/log", "application/json", b"{}".to_vec())
        .problem(405, "method_not_allowed");
    node.get("/v1/blobs/nothex").problem(400, "bad_encoding");
    node.get(&format!("/v1/blobs/{}", "0".repeat(64)))
        .problem(404, "not_found");
    node.get("/v1/cases/a%20b").problem(400, "bad_request");
    node.get("/v1/cases/no-such-case").problem(404, "not_found");
    assert_unchanged(&node, size);
}
