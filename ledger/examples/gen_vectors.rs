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

/// Signatures under the log's rule (spec/envelope.md §Signature rule) and under the
/// cofactorless `verify_strict`, including the cases where they part.
pub fn signatures() -> Value {
    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT as B, EIGHT_TORSION};
    use curve25519_dalek::scalar::Scalar;
    use ed25519_dalek::Signer;
    use sha2::{Digest, Sha512};

    let key = SigningKey::from_bytes(&ACTOR_SEED);
    let pk = *key.verifying_key().as_bytes();
    let msg = pae(
        PAYLOAD_TYPE,
        br#"{"kind":"withdrawal","case":"c-1","claimed_at":"2026-11-01T10:00:00Z","body":{"reason":"settled"}}"#,
    );
    // The signing scalar a, as RFC 8032 §5.1.5 derives it from the seed.
    let a = {
        let h = Sha512::digest(ACTOR_SEED);
        let mut lo = [0u8; 32];
        lo.copy_from_slice(&h[..32]);
        lo[0] &= 248;
        lo[31] &= 127;
        lo[31] |= 64;
        Scalar::from_bytes_mod_order(lo)
    };
    let k_of = |r: &[u8; 32], m: &[u8]| {
        let mut h = Sha512::new();
        h.update(r);
        h.update(pk);
        h.update(m);
        Scalar::from_bytes_mod_order_wide(&h.finalize().into())
    };
    let sig_of = |r: [u8; 32], s: [u8; 32]| {
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&r);
        out[32..].copy_from_slice(&s);
        out
    };
    let honest = key.sign(&msg).to_bytes();
    // R = rB + T with T of order 2; s = r + k·a: the equation holds up to T.
    let r = Scalar::from(20_261_123u64);
    let torsion_r = (B * r + EIGHT_TORSION[4]).compress().to_bytes();
    let torsion = sig_of(torsion_r, (r + k_of(&torsion_r, &msg) * a).to_bytes());
    // s + L: the same scalar, not canonical.
    let mut big_s = honest;
    let mut carry = 0u16;
    let l = {
        let mut l = [0u8; 32];
        l[..16].copy_from_slice(&0x14def9dea2f79cd65812631a5cf5d3ed_u128.to_le_bytes());
        l[31] = 0x10;
        l
    };
    for i in 0..32 {
        let v = u16::from(big_s[32 + i]) + u16::from(l[i]) + carry;
        big_s[32 + i] = v as u8;
        carry = v >> 8;
    }
    let small_r = sig_of(EIGHT_TORSION[1].compress().to_bytes(), [0; 32]);
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let case = |name: &str,
                key: [u8; 32],
                m: &[u8],
                sig: [u8; 64],
                custody: bool,
                strict: bool,
                why: &str| {
        let v = |ok: bool| if ok { "accept" } else { "reject" };
        json!({
            "name": name,
            "public_key": hex::encode(key),
            "message_base64": B64.encode(m),
            "signature": hex::encode(sig),
            "custody": v(custody),
            "cofactorless_strict": v(strict),
            "why": why,
        })
    };
    json!({
        "description": "Ed25519 signatures under the log's rule (cofactored equation, canonical s, R and A, no small-order points: spec/envelope.md §Signature rule) and under cofactorless strict verification (ed25519-dalek verify_strict). Messages are DSSE PAE bytes.",
        "signatures": [
            case("honest", pk, &msg, honest, true, true, "an RFC 8032 signature passes both"),
            case("torsion_in_r", pk, &msg, torsion, true, false, "R carries an order-2 component: the cofactored equation holds, the cofactorless one does not; only the key holder can make this"),
            case("non_canonical_s", pk, &msg, big_s, false, false, "s + L is not below L"),
            case("small_order_r", pk, &msg, small_r, false, false, "R is a point of small order"),
            case("small_order_key", identity, &msg, honest, false, false, "the key is the identity point, of small order"),
            case("wrong_message", pk, b"another message", honest, false, false, "the signature is over another message"),
        ]
    })
}

pub fn all() -> Vec<(&'static str, Value)> {
    vec![
        ("leaves.json", leaves()),
        ("envelopes.json", envelopes()),
        ("signatures.json", signatures()),
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
