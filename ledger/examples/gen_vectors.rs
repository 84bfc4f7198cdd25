//! Writes the test vectors in spec/vectors/ (spec/vectors/README.md):
//!
//!     cargo run -p custody-ledger --example gen_vectors
//!
//! Everything is derived from fixed seeds, so the output is reproducible; the test
//! `ledger/tests/vectors.rs` fails when these files and the code drift apart.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::SigningKey;
use ledger::checkpoint::LogKey;
use ledger::entry::{self, leaf_hash};
use ledger::envelope::{pae, Envelope};
use ledger::event::PAYLOAD_TYPE;
use ledger::tree::{self, MemoryTree};
use serde_json::{json, Value};

pub const ORIGIN: &str = "custody.example/vectors";
pub const LOG_SEED: [u8; 32] = [7; 32];
pub const ACTOR_SEED: [u8; 32] = [42; 32];

fn hexs(p: &[ledger::types::RootHash]) -> Vec<String> {
    p.iter().map(|h| h.to_hex()).collect()
}

pub fn leaves() -> Value {
    let cases: Vec<Value> = [
        "".as_bytes().to_vec(),
        b"{}".to_vec(),
        br#"{"logged_at":"2026-11-22T10:00:00.000Z","envelope":{"payloadType":"application/vnd.custody.event+json","payload":"e30=","signatures":[]}}"#.to_vec(),
    ]
    .into_iter()
    .map(|e| json!({"entry_base64": B64.encode(&e), "leaf_hash": leaf_hash(&e).to_hex()}))
    .collect();
    json!({"description": "RFC 6962 leaf hash: SHA-256(0x00 || entry bytes)", "leaves": cases})
}

pub fn envelopes() -> Value {
    let key = SigningKey::from_bytes(&ACTOR_SEED);
    let payloads = [
        r#"{"kind":"scan","claimed_at":"2026-11-20T09:30:00Z","body":{"product_id":"04012345678901","serial":"SN-0001","marking":"qr","result":"counterfeit","location":{"country":"FR","region":"Ile-de-France"},"device":"scanner-7"}}"#,
        r#"{"kind":"withdrawal","case":"acme-2026-0001","claimed_at":"2026-11-21T12:00:00Z","refs":[{"index":3,"leaf_hash":"0000000000000000000000000000000000000000000000000000000000000000"}],"body":{"reason":"settled"}}"#,
    ];
    let cases: Vec<Value> = payloads
        .iter()
        .map(|p| {
            let env = Envelope::sign(p.as_bytes(), &key);
            let t = chrono::DateTime::parse_from_rfc3339("2026-11-22T10:00:00.123Z")
                .expect("fixed time")
                .with_timezone(&chrono::Utc);
            let entry_bytes = entry::encode(t, &env);
            json!({
                "payload_type": PAYLOAD_TYPE,
                "payload_utf8": p,
                "pae_base64": B64.encode(pae(PAYLOAD_TYPE, p.as_bytes())),
                "event_id_blake3": ledger::types::EventId::of_payload(p.as_bytes()).to_hex(),
                "keyid": hex::encode(key.verifying_key().as_bytes()),
                "envelope": serde_json::from_slice::<Value>(&env.to_json()).expect("json"),
                "logged_at": "2026-11-22T10:00:00.123Z",
                "entry_utf8": String::from_utf8(entry_bytes.clone()).expect("utf8"),
                "leaf_hash": leaf_hash(&entry_bytes).to_hex(),
            })
        })
        .collect();
    json!({
        "description": "DSSE v1 envelopes signed with Ed25519 (RFC 8032, deterministic) by the key with this seed",
        "signing_seed_hex": hex::encode(ACTOR_SEED),
        "envelopes": cases
    })
}

fn vector_tree(n: u64) -> (MemoryTree, Vec<String>) {
    let mut t = MemoryTree::new();
    let mut entries = Vec::new();
    for i in 0..n {
        let e = format!("entry {i}");
        t.push(leaf_hash(e.as_bytes()));
        entries.push(e);
    }
    (t, entries)
}

pub fn proofs() -> Value {
    let n = 21u64;
    let (t, entries) = vector_tree(n);
    let roots: Vec<Value> = (0..=n)
        .map(|s| json!({"tree_size": s, "root_hash": tree::root(s, &t).expect("root").to_hex()}))
        .collect();
    let mut inclusion = Vec::new();
    for &(i, s) in &[(0u64, 1u64), (0, 21), (5, 8), (13, 21), (20, 21), (6, 7)] {
        inclusion.push(json!({
            "index": i, "tree_size": s,
            "leaf_hash": leaf_hash(entries[i as usize].as_bytes()).to_hex(),
            "proof": hexs(&tree::prove_inclusion(i, s, &t).expect("proof")),
        }));
    }
    let mut consistency = Vec::new();
    for &(a, b) in &[(1u64, 21u64), (4, 8), (6, 13), (7, 21), (16, 21), (21, 21)] {
        consistency.push(json!({
            "first": a, "second": b,
            "proof": hexs(&tree::prove_consistency(a, b, &t).expect("proof")),
        }));
    }
    json!({
        "description": "A tree whose entry i is the UTF-8 string \"entry <i>\"",
        "entries": entries, "roots": roots, "inclusion": inclusion, "consistency": consistency
    })
}

pub fn checkpoints() -> Value {
    let key = LogKey::from_seed(ORIGIN, LOG_SEED).expect("valid origin");
    let (t, _) = vector_tree(21);
    let cases: Vec<Value> = [0u64, 1, 21]
        .iter()
        .map(|&s| {
            let root = tree::root(s, &t).expect("root");
            let cp = key.sign(s, root).expect("sign");
            json!({"tree_size": s, "root_hash": root.to_hex(), "note": cp.note})
        })
        .collect();
    json!({
        "description": "C2SP tlog-checkpoint bodies signed as C2SP signed-notes (Ed25519)",
        "origin": ORIGIN,
        "log_seed_hex": hex::encode(LOG_SEED),
        "vkey": key.vkey(),
        "checkpoints": cases
    })
}

pub fn all() -> Vec<(&'static str, Value)> {
    vec![
        ("leaves.json", leaves()),
        ("envelopes.json", envelopes()),
        ("proofs.json", proofs()),
        ("checkpoints.json", checkpoints()),
    ]
}

pub fn dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/vectors")
}

pub fn render(v: &Value) -> String {
    serde_json::to_string_pretty(v).expect("json") + "\n"
}

#[allow(dead_code)]
fn main() {
    let dir = dir();
    std::fs::create_dir_all(&dir).expect("create spec/vectors");
    for (name, v) in all() {
        let path = dir.join(name);
        std::fs::write(&path, render(&v)).expect("write vector");
        println!("wrote {}", path.display());
    }
}
