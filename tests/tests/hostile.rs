//! Attacks on a running node, one test per attack, each named for it. Every attack
//! is answered with its problem (or, for a replay, with the original receipt) and
//! leaves the log exactly as it was: same size, same signed checkpoint.
//!
//! Attacks whose plain form is already in refusals.rs are not repeated here: a
//! signature swapped from another payload, a valid signature by an unregistered
//! key, a revoked key, a marketplace key sending a notice, a ref with a forged leaf
//! hash or to a missing entry, an oversize body or batch (by count and by bytes).

use custody_e2e::*;
use ed25519_dalek::SigningKey;
use ledger::envelope::Envelope;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A log with an actor of each role, and something in it to attack.
struct World {
    node: Node,
    investigator: SigningKey,
    brand: SigningKey,
    marketplace: SigningKey,
    /// The investigator's scan, as sent and as answered.
    scan: Value,
    scan_receipt: Value,
    /// The brand's detection that opened case-1.
    detection: Value,
}

/// An attacker's own key, registered nowhere.
fn attacker() -> SigningKey {
    key(66)
}

impl World {
    fn new(flags: &[&str]) -> World {
        let node = Node::start_with(flags);
        let (investigator, brand, marketplace) = (key(2), key(3), key(4));
        node.register(&investigator, "Investigator", "Acme SA", &["investigator"]);
        node.register(&brand, "Acme", "Acme SA", &["brand"]);
        node.register(&marketplace, "Shop", "Shop Inc", &["marketplace"]);
        node.append(&brand, &right());
        let detection = node.append(&brand, &detection("case-1"));
        let scan = sign(&investigator, &scan("S-victim"));
        let a = node.post_json("/v1/events", &scan);
        assert_eq!(a.status, 201, "{}", a.text());
        let scan_receipt = a.json();
        // More entries after the scan, so a replay is of an *old* envelope.
        node.append(&investigator, &self::scan("S-later"));
        World {
            node,
            investigator,
            brand,
            marketplace,
            scan,
            scan_receipt,
            detection,
        }
    }

    /// The log as it stands: its size and its signed checkpoint note.
    fn snapshot(&self) -> (u64, String) {
        let cp = self.node.checkpoint();
        assert_eq!(self.node.size(), cp.size);
        (cp.size, cp.note)
    }
}

/// Runs `attack` against a fresh world and checks that the log did not move and
/// that the node still serves.
fn survive(flags: &[&str], attack: impl FnOnce(&World)) {
    let w = World::new(flags);
    let before = w.snapshot();
    attack(&w);
    assert_eq!(
        w.snapshot(),
        before,
        "the attack changed the log (size or checkpoint)"
    );
    assert_eq!(w.node.get("/healthz").status, 200, "the node still serves");
}

/// One request that must be refused with `(status, code)`.
macro_rules! refused {
    ($($name:ident: $status:literal $code:literal <= $attack:expr;)*) => {$(
        #[test]
        fn $name() {
            survive(&[], |w: &World| {
                let answer: Answer = ($attack)(w);
                answer.problem($status, $code);
            });
        }
    )*};
}

/// An envelope signed by `signer` but naming `keyid` as its signer.
fn signed_as(signer: &SigningKey, keyid: &SigningKey, payload: &Value) -> Value {
    let mut env = sign(signer, payload);
    env["signatures"][0]["keyid"] = json!(key_hex(keyid));
    env
}

/// Standard base64, as in an envelope.
fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The payload bytes of `env` signed again by `k`.
fn resigned(k: &SigningKey, env: &Value) -> Value {
    envelope_json(&Envelope::sign(&payload_of(env), k))
}

refused! {
    forged_signature_under_a_registered_keyid_is_refused_401: 401 "bad_signature" <= |w: &World| {
        w.node.post_json("/v1/events", &signed_as(&attacker(), &w.investigator, &scan("S-forged")))
    };

    payload_altered_after_signing_is_refused_401: 401 "bad_signature" <= |w: &World| {
        let mut env = sign(&w.investigator, &scan("S-1"));
        let altered = serde_json::to_vec(&scan("S-2")).unwrap();
        env["payload"] = json!(base64_of(&altered));
        w.node.post_json("/v1/events", &env)
    };

    brand_key_registering_an_actor_is_refused_403: 403 "role_not_permitted" <= |w: &World| {
        w.node.send(&w.brand, &register(&attacker(), "Mallory", "Acme SA", &["brand"]))
    };

    brand_key_revoking_an_actor_is_refused_403: 403 "role_not_permitted" <= |w: &World| {
        w.node.send(&w.brand, &revoke(&w.marketplace, "a competitor"))
    };

    investigator_granting_itself_admin_is_refused_403: 403 "role_not_permitted" <= |w: &World| {
        w.node.send(&w.investigator, &register(&w.investigator, "Investigator", "Acme SA", &["admin"]))
    };

    marketplace_key_sending_a_detection_is_refused_403: 403 "role_not_permitted" <= |w: &World| {
        w.node.send(&w.marketplace, &detection("case-2"))
    };

    a_second_genesis_naming_the_attacker_admin_is_refused_403: 403 "role_not_permitted" <= |w: &World| {
        let genesis = json!({"kind": "log.genesis", "claimed_at": now(), "body": {
            "origin": ORIGIN, "admin_key": key_hex(&attacker()), "log_vkey": w.node.vkey()}});
        w.node.send(&attacker(), &genesis)
    };

    payload_over_32_kib_is_refused_413: 413 "too_large" <= |w: &World| {
        let mut s = scan("S-big");
        s["body"]["device"] = json!("x".repeat(33 * 1024));
        let env = sign(&w.investigator, &s);
        assert!(payload_of(&env).len() > 32 * 1024);
        assert!(serde_json::to_vec(&env).unwrap().len() < 1 << 20, "under the body limit");
        w.node.post_json("/v1/events", &env)
    };
}

#[test]
fn payload_over_32_kib_is_refused_in_a_batch_too() {
    survive(&[], |w| {
        let mut s = scan("S-big");
        s["body"]["device"] = json!("x".repeat(33 * 1024));
        let envs = json!({"envelopes": [sign(&w.investigator, &s)]});
        let a = w.node.post_json("/v1/events:batch", &envs);
        assert_eq!(a.status, 200, "nothing new was logged: {}", a.text());
        let r = &a.json()["results"][0];
        assert_eq!(
            (r["status"].as_u64(), code(&r["problem"])),
            (Some(413), "too_large"),
            "{r}"
        );
        assert_eq!(r["problem"]["field"], "payload");
    });
}

#[test]
fn replay_of_an_old_envelope_gets_the_original_receipt_and_appends_nothing() {
    survive(&[], |w| {
        let vkey = w.node.vkey();
        let original = &w.scan_receipt;
        let single = w.node.post_json("/v1/events", &w.scan);
        assert_eq!(single.status, 200, "{}", single.text());
        let batch = w.node.post_json(
            "/v1/events:batch",
            &json!({"envelopes": [w.scan.clone(), w.scan.clone()]}),
        );
        assert_eq!(batch.status, 200, "{}", batch.text());
        let mut replies = vec![single.json()];
        for r in batch.json()["results"].as_array().unwrap() {
            assert_eq!(r["status"], 200, "{r}");
            replies.push(r["receipt"].clone());
        }
        for r in &replies {
            assert_eq!(r["duplicate"], true, "{r}");
            for field in ["index", "leaf_hash", "event_id", "logged_at"] {
                assert_eq!(r[field], original[field], "{field} of a replay");
            }
            verify_receipt(r, &vkey);
        }
        // The genesis too: entry 0 is an envelope like any other.
        let genesis: Value = serde_json::from_slice(&w.node.get("/v1/entries/0").body).unwrap();
        let a = w.node.post_json("/v1/events", &genesis["envelope"]);
        assert_eq!(
            (a.status, a.json()["index"].as_u64()),
            (200, Some(0)),
            "{}",
            a.text()
        );
    });
}

#[test]
fn replay_of_another_signers_payload_under_a_different_key_is_refused_409() {
    survive(&[], |w| {
        // A registered actor, an unregistered one, and a fresh copy of the detection.
        for (thief, env) in [
            (&w.brand, &w.scan),
            (&attacker(), &w.scan),
            (
                &w.investigator,
                &w.node
                    .get_json(&format!("/v1/entries/{}", w.detection["index"]))["envelope"],
            ),
        ] {
            let p = w
                .node
                .post_json("/v1/events", &resigned(thief, env))
                .problem(409, "conflict");
            assert_eq!(p["field"], "payload", "{p}");
        }
    });
}

/// Opens a connection and sends `bytes`, then stalls.
fn stall(addr: &str, bytes: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connecting");
    s.write_all(bytes.as_bytes()).expect("sending");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    s
}

#[test]
fn slow_loris_connections_are_cut_off_and_others_are_served_meanwhile() {
    const TIMEOUT: u64 = 2;
    survive(&["--request-timeout-secs", "2"], |w| {
        let addr = w.node.url.trim_start_matches("http://").to_owned();
        let body = format!(
            "POST /v1/events HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: 1000\r\n\r\n{{\"payloadType\""
        );
        let head = format!("POST /v1/events HTTP/1.1\r\nHost: {addr}\r\nContent-Ty");
        let opened = Instant::now();
        let mut slow: Vec<(&str, TcpStream)> = Vec::new();
        for _ in 0..20 {
            slow.push(("slow body", stall(&addr, &body)));
            slow.push(("slow headers", stall(&addr, &head)));
            slow.push(("silent", stall(&addr, "")));
        }
        // While 60 connections stall, an honest client is served at once.
        for _ in 0..5 {
            let t = Instant::now();
            assert_eq!(w.node.get("/v1/log").status, 200);
            let replay = w.node.post_json("/v1/events", &w.scan);
            assert_eq!(replay.status, 200, "{}", replay.text());
            // Well below the 2 s that waiting behind the slow ones would take, with
            // room for a busy machine.
            assert!(
                t.elapsed() < Duration::from_millis(1500),
                "an honest client waited {:?} behind slow ones",
                t.elapsed()
            );
        }
        for (what, mut s) in slow {
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            let took = opened.elapsed();
            assert!(
                took < Duration::from_secs(TIMEOUT + 5),
                "a {what} connection was held for {took:?}"
            );
            if what == "slow body" {
                assert!(out.starts_with("HTTP/1.1 408"), "{what}: {out}");
                assert!(out.contains("\"code\":\"request_timeout\""), "{out}");
            } else {
                // Before the headers are complete there is no request to answer: the
                // node closes the connection.
                assert!(
                    out.is_empty() || out.starts_with("HTTP/1.1 408"),
                    "{what}: {out}"
                );
            }
        }
    });
}

#[test]
fn path_traversal_in_tile_and_blob_paths_is_refused() {
    survive(&[], |w| {
        let blob = w.node.post(
            "/v1/blobs",
            "application/octet-stream",
            b"evidence".to_vec(),
        );
        assert_eq!(blob.status, 201, "{}", blob.text());
        let name = blob.json()["blake3"].as_str().unwrap().to_owned();
        let paths: Vec<(String, u16, &str)> = vec![
            ("/tile/../../etc/passwd".into(), 404, "not_found"),
            ("/tile/entries/../../../etc/passwd".into(), 404, "not_found"),
            ("/tile/0/..%2F..%2Fetc%2Fpasswd".into(), 404, "not_found"),
            ("/tile/%2e%2e/%2e%2e/etc/passwd".into(), 404, "not_found"),
            (
                "/tile/entries/000/../../../../data/CURRENT".into(),
                404,
                "not_found",
            ),
            ("/v1/blobs/../../etc/passwd".into(), 404, "not_found"),
            (
                "/v1/blobs/..%2F..%2Fetc%2Fpasswd".into(),
                400,
                "bad_encoding",
            ),
            ("/v1/blobs/%2e%2e".into(), 400, "bad_encoding"),
            ("/v1/blobs/..".into(), 400, "bad_encoding"),
            (
                format!("/v1/blobs/{name}%2F..%2F..%2Fetc%2Fpasswd"),
                400,
                "bad_encoding",
            ),
            (
                format!("/v1/blobs/{name}/../../../etc/passwd"),
                404,
                "not_found",
            ),
        ];
        for (path, status, want) in &paths {
            let (got, text) = raw_get(&w.node, path);
            assert_eq!(got, *status, "{path}: {text}");
            assert!(
                text.contains("application/problem+json")
                    && text.contains(&format!("\"code\":\"{want}\"")),
                "{path}: {text}"
            );
            assert!(!text.contains("root:"), "{path} leaked a file: {text}");
        }
        // The blob itself is still served under its name.
        assert_eq!(w.node.get(&format!("/v1/blobs/{name}")).body, b"evidence");
    });
}

#[test]
fn huge_numbers_in_proof_queries_are_refused() {
    const MAX: &str = "18446744073709551615"; // u64::MAX
    const OVER: &str = "18446744073709551616"; // 2^64
    survive(&[], |w| {
        let cases: Vec<(String, u16, &str)> = vec![
            (
                format!("/v1/proofs/inclusion?index={MAX}"),
                422,
                "out_of_range",
            ),
            (
                format!("/v1/proofs/inclusion?index=0&tree_size={MAX}"),
                422,
                "out_of_range",
            ),
            (
                format!("/v1/proofs/inclusion?index={MAX}&tree_size={MAX}"),
                422,
                "out_of_range",
            ),
            (
                format!("/v1/proofs/inclusion?index=0&tree_size={OVER}"),
                400,
                "bad_request",
            ),
            (
                "/v1/proofs/inclusion?index=0&tree_size=-1".into(),
                400,
                "bad_request",
            ),
            (
                "/v1/proofs/inclusion?index=1000000000".into(),
                422,
                "out_of_range",
            ),
            ("/v1/proofs/inclusion?index=1e9".into(), 400, "bad_request"),
            (
                "/v1/proofs/inclusion?index=0&tree_size=1e9".into(),
                400,
                "bad_request",
            ),
            (
                format!(
                    "/v1/proofs/inclusion?leaf_hash={}&tree_size={MAX}",
                    "0".repeat(64)
                ),
                422,
                "out_of_range",
            ),
            (
                format!("/v1/proofs/consistency?first={MAX}"),
                422,
                "out_of_range",
            ),
            (
                format!("/v1/proofs/consistency?first=1&second={MAX}"),
                422,
                "out_of_range",
            ),
            (
                format!("/v1/proofs/consistency?first={MAX}&second={MAX}"),
                422,
                "out_of_range",
            ),
            (
                format!("/v1/proofs/consistency?first={OVER}&second=2"),
                400,
                "bad_request",
            ),
            (
                format!("/v1/proofs/consistency?first=1&second={OVER}"),
                400,
                "bad_request",
            ),
            ("/v1/proofs/consistency?first=-1".into(), 400, "bad_request"),
            (
                "/v1/proofs/consistency?first=1&second=-1".into(),
                400,
                "bad_request",
            ),
            (
                "/v1/proofs/consistency?first=1000000000&second=1000000000".into(),
                422,
                "out_of_range",
            ),
            (
                "/v1/proofs/consistency?first=1e9".into(),
                400,
                "bad_request",
            ),
            (
                "/v1/proofs/consistency?first=1&second=1e9".into(),
                400,
                "bad_request",
            ),
            (format!("/v1/entries/{MAX}"), 404, "not_found"),
            ("/v1/entries/1000000000".into(), 404, "not_found"),
            (format!("/v1/entries/{OVER}"), 400, "bad_request"),
            (format!("/v1/bundles/{MAX}"), 404, "not_found"),
            // Tile indices up to u64::MAX (and past it) in the C2SP x-group form.
            (
                "/tile/0/x018/x446/x744/x073/x709/x551/615".into(),
                404,
                "not_found",
            ),
            (
                "/tile/7/x018/x446/x744/x073/x709/x551/615.p/255".into(),
                404,
                "not_found",
            ),
            (
                "/tile/entries/x999/x999/x999/x999/x999/x999/x999/999".into(),
                404,
                "not_found",
            ),
            ("/tile/0/000.p/4294967297".into(), 404, "not_found"),
        ];
        for (path, status, want) in &cases {
            w.node.get(path).problem(*status, want);
        }
    });
}
