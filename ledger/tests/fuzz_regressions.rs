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

/// What a target runs on one input.
type Target = fn(&[u8]);

/// A small deterministic PRNG (xorshift64*) for the mutation runs below.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One random edit of `data`, the kinds of change libFuzzer makes most: flip a bit,
/// overwrite, insert or delete bytes, copy a run, splice another seed, or swap a run of
/// digits for an extreme number.
fn mutate(rng: &mut Rng, data: &[u8], seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut d = data.to_vec();
    let at = |rng: &mut Rng, d: &[u8]| rng.below(d.len() + 1);
    for _ in 0..1 + rng.below(4) {
        match rng.below(7) {
            0 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] ^= 1 << rng.below(8);
            }
            1 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] = rng.next() as u8;
            }
            2 => {
                let i = at(rng, &d);
                d.insert(i, b"{}[]\",:0-9eE.\\u"[rng.below(15)]);
            }
            3 if !d.is_empty() => {
                let i = rng.below(d.len());
                let n = 1 + rng.below(8.min(d.len() - i));
                d.drain(i..i + n);
            }
            4 if !d.is_empty() => {
                let i = rng.below(d.len());
                let n = 1 + rng.below(32.min(d.len() - i));
                let run = d[i..i + n].to_vec();
                let j = at(rng, &d);
                d.splice(j..j, run);
            }
            5 => {
                let other = &seeds[rng.below(seeds.len())];
                let cut = at(rng, &d);
                let from = rng.below(other.len() + 1);
                d.truncate(cut);
                d.extend_from_slice(&other[from..]);
            }
            _ => {
                if let Some(i) = d.iter().position(|b| b.is_ascii_digit()) {
                    let end = d[i..]
                        .iter()
                        .position(|b| !b.is_ascii_digit())
                        .map_or(d.len(), |e| i + e);
                    let big: &[u8] = [
                        &b"18446744073709551615"[..],
                        b"18446744073709551616",
                        b"9223372036854775807",
                        b"0",
                        b"4611686018427387904",
                        b"99999999999999999999999",
                    ][rng.below(6)];
                    d.splice(i..end, big.iter().copied());
                }
            }
        }
    }
    d
}

/// Mutation fuzzing in the ordinary test suite: every target's inputs, edited at
/// random (a fixed seed, so a failure reproduces), through the same calls as the
/// cargo-fuzz targets. `CUSTODY_FUZZ_ITERS` (default 1,500 per target) and
/// `CUSTODY_FUZZ_SEED` run it longer or elsewhere. A panic, or a target still busy
/// after [`DEADLINE`] on one input, fails the test and writes the input to
/// `target/fuzz-failure-<target>` to keep as a regression case.
#[test]
fn mutated_inputs_do_not_panic_or_hang() {
    let iters: usize = std::env::var("CUSTODY_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_500);
    let seed: u64 = std::env::var("CUSTODY_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_c057_0d1e_2026);
    let targets: [(&str, Target); 7] = [
        ("envelope", envelope),
        ("event", event),
        ("entry", entry),
        ("checkpoint", checkpoint),
        ("bundle", bundle),
        ("tile", tile),
        ("proof", proof),
    ];
    let handles: Vec<_> = targets
        .into_iter()
        .enumerate()
        .map(|(t, (name, f))| {
            let seeds: Vec<Vec<u8>> = inputs(name).into_iter().map(|(_, b)| b).collect();
            let current = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let (tx, rx) = mpsc::channel::<()>();
            let cur = current.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(seed ^ (t as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                for _ in 0..iters {
                    let base = &seeds[rng.below(seeds.len())];
                    let input = mutate(&mut rng, base, &seeds);
                    *cur.lock().unwrap() = input.clone();
                    if std::panic::catch_unwind(|| f(&input)).is_err() {
                        return;
                    }
                    let _ = tx.send(());
                }
                drop(tx);
            });
            (name, rx, current)
        })
        .collect();
    for (name, rx, current) in handles {
        let mut done = 0usize;
        loop {
            match rx.recv_timeout(DEADLINE) {
                Ok(()) => done += 1,
                Err(mpsc::RecvTimeoutError::Disconnected) if done == iters => break,
                Err(e) => {
                    let input = current.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join(format!("../target/fuzz-failure-{name}"));
                    if let Some(dir) = path.parent() {
                        let _ = std::fs::create_dir_all(dir);
                    }
                    let _ = std::fs::write(&path, &input);
                    panic!(
                        "{name}: input {done} of {iters} {} (kept in {}; seed {seed})",
                        if matches!(e, mpsc::RecvTimeoutError::Timeout) {
                            format!("still running after {DEADLINE:?}")
                        } else {
                            "panicked".to_owned()
                        },
                        path.display()
                    );
                }
            }
        }
    }
}
