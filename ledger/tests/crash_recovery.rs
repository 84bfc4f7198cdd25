//! Crash safety (DESIGN.md §The write path): a real child process appends in a
//! loop through the sequencer and is killed with SIGKILL at random moments. After
//! every kill the store must reopen, every receipt the child printed (i.e. every
//! acknowledged append) must be present byte for byte and provable against the new
//! checkpoint, and the new checkpoint must be consistent with every earlier one.

use ed25519_dalek::SigningKey;
use ledger::checkpoint::CheckpointVerifier;
use ledger::envelope::{open_all, Envelope};
use ledger::sequencer::{Config, Receipt, Sequencer};
use ledger::store::Store;
use ledger::tree;
use ledger::types::KeyId;
use rand_core::RngCore;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ADMIN_SEED: [u8; 32] = [1; 32];
const BRAND_SEED: [u8; 32] = [2; 32];
const ENV_DIR: &str = "CUSTODY_CRASH_CHILD_DIR";

fn register_payload(key: &SigningKey) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "kind": "actor.register",
        "claimed_at": "2026-01-01T00:00:00Z",
        "body": {"key": hex::encode(key.verifying_key().as_bytes()), "name": "Acme scanner",
                 "org": "Acme", "roles": ["brand"]}
    }))
    .unwrap()
}

fn scan_payload(serial: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "kind": "scan",
        "claimed_at": "2026-01-01T00:00:00Z",
        "body": {"product_id": "04012345678901", "serial": serial, "marking": "qr",
                 "result": "suspect", "location": {"country": "FR"}, "device": "crash-test"}
    }))
    .unwrap()
}

/// The child: appends forever from four threads until it is killed, printing one
/// `RECEIPT <json>` line per acknowledged append.
#[test]
#[ignore = "run by sigkill_at_random_moments_loses_no_acknowledged_receipt as a child process"]
fn child_appender() {
    let Ok(dir) = std::env::var(ENV_DIR) else {
        return;
    };
    let store = Arc::new(Store::open(Path::new(&dir)).expect("child opens the store"));
    let seq = Arc::new(Sequencer::start(
        store.clone(),
        Config {
            max_group: 64,
            ..Config::default()
        },
    ));
    let admin = SigningKey::from_bytes(&ADMIN_SEED);
    let brand = SigningKey::from_bytes(&BRAND_SEED);
    let reg = Envelope::sign(&register_payload(&brand), &admin);
    seq.append_blocking(open_all(vec![reg])).expect("register");
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let nonce = rand_core::OsRng.next_u64();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (seq, out, brand) = (seq.clone(), out.clone(), brand.clone());
            std::thread::spawn(move || {
                for i in 0u64.. {
                    let n = 1 + (i % 5) as usize;
                    let envs = (0..n)
                        .map(|j| {
                            Envelope::sign(&scan_payload(&format!("{nonce:x}-{t}-{i}-{j}")), &brand)
                        })
                        .collect();
                    let Ok(results) = seq.append_blocking(open_all(envs)) else {
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    };
                    let mut o = out.lock().unwrap();
                    for (r, _) in results.into_iter().flatten() {
                        writeln!(o, "RECEIPT {}", serde_json::to_string(&r).unwrap()).unwrap();
                    }
                    o.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let admin = SigningKey::from_bytes(&ADMIN_SEED);
    let vkey = {
        let s = Store::init(
            dir.path(),
            "custody.example/crash",
            KeyId(admin.verifying_key().to_bytes()),
        )
        .unwrap();
        s.vkey()
    };
    let verifier = CheckpointVerifier::new(&vkey).unwrap();
    let mut acked: Vec<Receipt> = Vec::new();
    let mut seen_checkpoints: Vec<ledger::checkpoint::SignedCheckpoint> = Vec::new();
    let rounds = 24;
    for round in 0..rounds {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "child_appender",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ENV_DIR, dir.path())
            // Tables of the de-duplication index every 64 entries: kills land while
            // one is written and ingested too.
            .env("CUSTODY_ID_RUN", "64")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (first_tx, first_receipt) = std::sync::mpsc::channel::<()>();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(json) = line.strip_prefix("RECEIPT ") {
                    // A line cut by the kill is not an acknowledgement.
                    if let Ok(r) = serde_json::from_str::<Receipt>(json) {
                        got.push(r);
                        let _ = first_tx.send(());
                    }
                }
            }
            got
        });
        // Odd rounds kill at any moment from the start (opening, recovering the
        // WAL, registering, appending); even ones once appends are acknowledged, so
        // that on a slow machine the test still kills mid-append in half its rounds.
        if round % 2 == 0 {
            let _ = first_receipt.recv_timeout(Duration::from_secs(30));
        }
        let wait = 150 + rand_core::OsRng.next_u64() % 600;
        std::thread::sleep(Duration::from_millis(wait));
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        let new = reader.join().unwrap();
        // A receipt's own proof is checked once, against the checkpoint it came with.
        for r in &new {
            let rcp = verifier.verify(&r.checkpoint).unwrap();
            tree::verify_inclusion(&r.inclusion_proof, rcp.size, rcp.root, r.index, r.leaf_hash)
                .unwrap();
            if !seen_checkpoints.iter().any(|c| c.size == rcp.size) {
                seen_checkpoints.push(rcp);
            }
        }
        acked.extend(new);

        let store = Store::open(dir.path()).unwrap_or_else(|e| {
            panic!("round {round}: the store does not reopen after SIGKILL: {e}")
        });
        let cp = verifier.verify(&store.checkpoint().note).unwrap();
        for r in &acked {
            let bytes = store
                .entry(r.index)
                .unwrap()
                .unwrap_or_else(|| panic!("round {round}: acknowledged entry {} is lost", r.index));
            assert_eq!(
                ledger::entry::leaf_hash(&bytes),
                r.leaf_hash,
                "entry {} altered",
                r.index
            );
            // Still found by its id: a resent event is answered as a duplicate.
            assert_eq!(
                store.index_of_event(&r.event_id).unwrap(),
                Some(r.index),
                "round {round}: the de-duplication index lost entry {}",
                r.index
            );
            let proof = tree::prove_inclusion(r.index, cp.size, &store).unwrap();
            tree::verify_inclusion(&proof, cp.size, cp.root, r.index, r.leaf_hash).unwrap();
        }
        // Every checkpoint ever published to a client or seen after a reopen.
        for old in &seen_checkpoints {
            let p = tree::prove_consistency(old.size, cp.size, &store).unwrap();
            tree::verify_consistency(&p, old.size, old.root, cp.size, cp.root).unwrap_or_else(
                |e| {
                    panic!(
                        "round {round}: checkpoint {} is not consistent with {}: {e}",
                        old.size, cp.size
                    )
                },
            );
        }
        if !seen_checkpoints.iter().any(|c| c.size == cp.size) {
            seen_checkpoints.push(cp);
        }
    }
    assert!(
        acked.len() > rounds,
        "the child acknowledged only {} appends in {rounds} rounds: the test proved little",
        acked.len()
    );
    eprintln!(
        "{} acknowledged appends survived {rounds} SIGKILLs",
        acked.len()
    );
}
