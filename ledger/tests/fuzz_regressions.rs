//! Inputs that crashed a fuzz target (fuzz/README.md), plus hostile seeds, replayed
//! through the same calls as the target, in the ordinary test suite: none may
//! panic or hang. Inputs live in `tests/fuzz-regressions/<target>/`, one file each;
//! a crash found by `bundle_replay` is kept as the bundle it built, under `bundle/`.
//!
//! The fixed log key is the fuzz crate's (`custody_fuzz::LOG_SEED`), so a bundle or
//! checkpoint signed there verifies here up to the point that crashed.

use ledger::bundle::Bundle;
use ledger::cases::Rules;
use ledger::checkpoint::{CheckpointVerifier, LogKey};
use ledger::entry::{encode, Entry, MAX_ENTRY_BYTES};
use ledger::envelope::{open_all, Envelope};
use ledger::event::{Event, MAX_PAYLOAD_BYTES};
use ledger::replay::{logged_event, signed_note_key, Replayer};
use ledger::tree::{
    hash_tile_bytes, prove_consistency, prove_inclusion, split_bundle, verify_consistency,
    verify_inclusion, MemoryTree, TileRef,
};
use ledger::types::{CaseId, LeafHash, RootHash};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

const ORIGIN: &str = "custody.example/fuzz";
const LOG_SEED: [u8; 32] = [0x11; 32];
/// Longer than any honest input takes at -O0, far shorter than a hang.
const DEADLINE: Duration = Duration::from_secs(20);

fn vkey() -> String {
    LogKey::from_seed(ORIGIN, LOG_SEED).unwrap().vkey()
}

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-regressions")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no inputs in {}", dir.display());
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// Runs `f` on every input of `target` on its own thread: a panic or an input still
/// running after [`DEADLINE`] fails the test, naming the file.
fn replay(target: &str, f: fn(&[u8])) {
    for (path, bytes) in inputs(target) {
        let (tx, rx) = mpsc::channel();
        let name = path.display().to_string();
        std::thread::spawn(move || {
            let r = std::panic::catch_unwind(|| f(&bytes));
            let _ = tx.send(r.is_ok());
        });
        match rx.recv_timeout(DEADLINE) {
            Ok(true) => {}
            Ok(false) => panic!("{name}: panicked"),
            Err(_) => panic!("{name}: still running after {DEADLINE:?}"),
        }
    }
}

fn envelope(data: &[u8]) {
    if let Ok(env) = Envelope::from_json(data) {
        assert_eq!(Envelope::from_json(&env.to_json()).unwrap(), env);
        let single = env.clone().open().is_ok();
        assert_eq!(open_all(vec![env]).pop().unwrap().is_ok(), single);
    }
}

fn event(data: &[u8]) {
    if let Ok(ev) = Event::parse(data) {
        let p = ev.to_payload();
        if p.len() <= MAX_PAYLOAD_BYTES {
            assert_eq!(Event::parse(&p).unwrap(), ev);
        }
    }
}

fn entry(data: &[u8]) {
    let _ = logged_event(data);
    let _ = Replayer::new(Rules::default()).apply(0, data);
    let _ = Replayer::new(Rules::default()).apply(1, data);
    if let Ok(e) = Entry::parse(data) {
        let bytes = encode(e.logged_at, &e.envelope);
        if bytes.len() <= MAX_ENTRY_BYTES {
            let again = Entry::parse(&bytes).unwrap();
            assert_eq!((again.logged_at, again.envelope), (e.logged_at, e.envelope));
        }
    }
}

fn checkpoint(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let v = CheckpointVerifier::new(&vkey()).unwrap();
    let _ = v.verify(text);
    if let Ok(other) = CheckpointVerifier::new(text) {
        let own = LogKey::from_seed(ORIGIN, LOG_SEED)
            .unwrap()
            .sign(3, RootHash([3; 32]))
            .unwrap();
        let _ = other.verify(&own.note);
    }
    let _ = signed_note_key(text);
}

fn bundle(data: &[u8]) {
    if let Ok(b) = Bundle::parse(data) {
        // The verifier holds one file, the empty one (the seeds attach it).
        let empty = ledger::types::BlobId::of(b"").to_hex();
        let _ = b.verify(&vkey(), &|h| (h == empty).then(Vec::new));
    }
}

fn tile(data: &[u8]) {
    let mut t = MemoryTree::new();
    for i in 0..600u64 {
        t.push(ledger::entry::leaf_hash(&i.to_be_bytes()));
    }
    if let Ok(path) = std::str::from_utf8(data) {
        for p in [path, path.strip_prefix("tile/").unwrap_or(path)] {
            let Ok(tr) = TileRef::parse(p) else { continue };
            assert_eq!(tr.path(), p);
            for size in [0, 1, 255, 256, 257, u64::MAX] {
                let _ = tr.fits(size);
            }
            if tr.level.is_some() && tr.fits(t.size()) {
                assert_eq!(
                    hash_tile_bytes(&tr, &t).unwrap().len(),
                    tr.width as usize * 32
                );
            }
        }
    }
    let _ = split_bundle(data);
}

/// A proof input is JSON (the fuzz target's `Input`, hashes as hex):
/// `{"index", "size", "first", "second", "proof": [hex…], "root_a", "root_b", "leaf"}`.
fn proof(data: &[u8]) {
    #[derive(serde::Deserialize)]
    struct Input {
        index: u64,
        size: u64,
        first: u64,
        second: u64,
        proof: Vec<RootHash>,
        root_a: RootHash,
        root_b: RootHash,
        leaf: LeafHash,
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = LeafHash::parse(s);
        let _ = CaseId::parse(s);
    }
    let Ok(i) = serde_json::from_slice::<Input>(data) else {
        return;
    };
    let _ = verify_inclusion(&i.proof, i.size, i.root_a, i.index, i.leaf);
    let _ = verify_consistency(&i.proof, i.first, i.root_a, i.second, i.root_b);
    let mut t = MemoryTree::new();
    for n in 0..300u64 {
        t.push(ledger::entry::leaf_hash(&n.to_be_bytes()));
    }
    let _ = prove_inclusion(i.index, i.size, &t);
    let _ = prove_consistency(i.first, i.second, &t);
}

#[test]
fn envelope_inputs_do_not_panic() {
    replay("envelope", envelope);
}

#[test]
fn event_inputs_do_not_panic() {
    replay("event", event);
}

#[test]
fn entry_inputs_do_not_panic() {
    replay("entry", entry);
}

#[test]
fn checkpoint_inputs_do_not_panic() {
    replay("checkpoint", checkpoint);
}

#[test]
fn bundle_inputs_do_not_panic_or_hang() {
    replay("bundle", bundle);
}

#[test]
fn tile_inputs_do_not_panic() {
    replay("tile", tile);
}

#[test]
fn proof_inputs_do_not_panic() {
    replay("proof", proof);
}

/// The crash bundles are this bundle with hostile `rules`: it must verify, or they
/// would stop before the replay they once crashed.
#[test]
fn the_valid_bundle_the_crash_inputs_derive_from_verifies() {
    let (_, bytes) = inputs("bundle")
        .into_iter()
        .find(|(p, _)| p.ends_with("valid-full-case.json"))
        .expect("valid-full-case.json");
    let report = Bundle::parse(&bytes)
        .unwrap()
        .verify(&vkey(), &|_| None)
        .unwrap();
    assert_eq!((report.subject, report.entries.len()), (8, 9));
}
