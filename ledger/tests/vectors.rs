//! spec/vectors/ is the spec's twin: these tests fail when the files and the code
//! drift apart, and check each vector from its own inputs the way another
//! implementation would (plain SHA-256, plain Ed25519, plain PAE).

#[path = "../examples/gen_vectors.rs"]
#[allow(dead_code)]
mod gen;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use ledger::checkpoint::CheckpointVerifier;
use ledger::tree;
use ledger::types::{LeafHash, RootHash};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn load(name: &str) -> Value {
    let path = gen::dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run `cargo run -p custody-ledger --example gen_vectors`",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

#[test]
fn vector_files_match_the_code() {
    for (name, v) in gen::all() {
        let on_disk = std::fs::read_to_string(gen::dir().join(name)).unwrap_or_default();
        assert_eq!(
            on_disk,
            gen::render(&v),
            "spec/vectors/{name} differs from what the code produces; if the change is intended, \
             regenerate with `cargo run -p custody-ledger --example gen_vectors` and update spec/"
        );
    }
}

fn hex32(v: &Value) -> [u8; 32] {
    hex::decode(v.as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

#[test]
fn leaf_vectors_are_sha256_with_a_zero_prefix() {
    for l in load("leaves.json")["leaves"].as_array().unwrap() {
        let entry = B64.decode(l["entry_base64"].as_str().unwrap()).unwrap();
        let mut h = Sha256::new();
        h.update([0u8]);
        h.update(&entry);
        assert_eq!(h.finalize().as_slice(), &hex32(&l["leaf_hash"]));
    }
}

#[test]
fn envelope_vectors_verify_with_plain_ed25519() {
    let v = load("envelopes.json");
    for e in v["envelopes"].as_array().unwrap() {
        let payload = e["payload_utf8"].as_str().unwrap().as_bytes();
        let ptype = e["payload_type"].as_str().unwrap();
        let pae = format!("DSSEv1 {} {} {} ", ptype.len(), ptype, payload.len()).into_bytes();
        let pae = [pae, payload.to_vec()].concat();
        assert_eq!(B64.decode(e["pae_base64"].as_str().unwrap()).unwrap(), pae);
        let key = VerifyingKey::from_bytes(&hex32(&e["keyid"])).unwrap();
        let sig = &e["envelope"]["signatures"][0];
        assert_eq!(sig["keyid"], e["keyid"]);
        let sig =
            Signature::from_slice(&B64.decode(sig["sig"].as_str().unwrap()).unwrap()).unwrap();
        key.verify(&pae, &sig).expect("vector signature verifies");
        assert_eq!(
            blake3::hash(payload).as_bytes(),
            &hex32(&e["event_id_blake3"])
        );
        let entry = e["entry_utf8"].as_str().unwrap();
        assert_eq!(
            ledger::entry::leaf_hash(entry.as_bytes()).0,
            hex32(&e["leaf_hash"])
        );
    }
}

#[test]
fn proof_vectors_verify() {
    let v = load("proofs.json");
    let roots: Vec<RootHash> = v["roots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| RootHash(hex32(&r["root_hash"])))
        .collect();
    let mut f = tree::Frontier::new();
    assert_eq!(f.root(), roots[0]);
    for (i, e) in v["entries"].as_array().unwrap().iter().enumerate() {
        f.push(ledger::entry::leaf_hash(e.as_str().unwrap().as_bytes()));
        assert_eq!(f.root(), roots[i + 1], "root of size {}", i + 1);
    }
    let proof = |p: &Value| -> Vec<RootHash> {
        p.as_array()
            .unwrap()
            .iter()
            .map(|h| RootHash(hex32(h)))
            .collect()
    };
    for c in v["inclusion"].as_array().unwrap() {
        let (i, s) = (
            c["index"].as_u64().unwrap(),
            c["tree_size"].as_u64().unwrap(),
        );
        tree::verify_inclusion(
            &proof(&c["proof"]),
            s,
            roots[s as usize],
            i,
            LeafHash(hex32(&c["leaf_hash"])),
        )
        .unwrap();
    }
    for c in v["consistency"].as_array().unwrap() {
        let (a, b) = (c["first"].as_u64().unwrap(), c["second"].as_u64().unwrap());
        tree::verify_consistency(
            &proof(&c["proof"]),
            a,
            roots[a as usize],
            b,
            roots[b as usize],
        )
        .unwrap();
    }
}

#[test]
fn checkpoint_vectors_verify_with_the_published_vkey() {
    let v = load("checkpoints.json");
    let verifier = CheckpointVerifier::new(v["vkey"].as_str().unwrap()).unwrap();
    for c in v["checkpoints"].as_array().unwrap() {
        let cp = verifier.verify(c["note"].as_str().unwrap()).unwrap();
        assert_eq!(cp.size, c["tree_size"].as_u64().unwrap());
        assert_eq!(cp.root.0, hex32(&c["root_hash"]));
        let tampered = c["note"].as_str().unwrap().replacen('\n', "x\n", 1);
        assert!(verifier.verify(&tampered).is_err());
    }
}

/// Each signature vector gets its stated verdict under the log's rule, alone and in a
/// batch, and under cofactorless strict verification.
#[test]
fn signature_vectors_get_their_verdicts_alone_and_in_batches() {
    use ledger::sig::{self, Pending, PublicKey};
    let v = load("signatures.json");
    let cases = v["signatures"].as_array().unwrap();
    assert!(cases.len() >= 6);
    let mut accepted = Vec::new();
    let mut rejected_but_decodable = Vec::new();
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let key = hex32(&c["public_key"]);
        let msg = B64.decode(c["message_base64"].as_str().unwrap()).unwrap();
        let sig: [u8; 64] = hex::decode(c["signature"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let pending = PublicKey::from_bytes(&key).and_then(|k| Pending::new(&k, &sig, &[&msg]));
        let ours = pending.as_ref().is_some_and(Pending::verify);
        assert_eq!(ours, c["custody"] == "accept", "{name}: our rule");
        let strict = VerifyingKey::from_bytes(&key)
            .map(|k| k.verify_strict(&msg, &Signature::from_bytes(&sig)).is_ok())
            .unwrap_or(false);
        assert_eq!(
            strict,
            c["cofactorless_strict"] == "accept",
            "{name}: verify_strict"
        );
        match (pending, ours) {
            (Some(p), true) => accepted.push(p),
            (Some(p), false) => rejected_but_decodable.push((name, p)),
            (None, _) => {}
        }
    }
    assert!(
        sig::verify_batch(&accepted),
        "every accepted vector, in one batch"
    );
    for (name, bad) in rejected_but_decodable {
        let mut batch = accepted.clone();
        batch.insert(1, bad);
        assert!(!sig::verify_batch(&batch), "{name} must fail a batch too");
        let verdicts = sig::verify_each(&batch);
        assert_eq!(
            verdicts.iter().filter(|ok| !**ok).count(),
            1,
            "{name}: only itself fails"
        );
    }
}
