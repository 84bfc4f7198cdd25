//! Crash safety under load: the real node is SIGKILLed at random instants while
//! several clients append (single events and batches), then served again from the
//! same data directory. After every restart, every receipt any client ever received
//! must still be in the log byte for byte and provable against the new checkpoint,
//! every checkpoint ever published must be a prefix of the new tree, and nothing may
//! lie beyond the new tree (DESIGN.md §"The write path": a receipt is only sent
//! after its batch is durable).
//!
//! Reproduce a failing run with `CUSTODY_CRASH_SEED=<seed printed by the test>`.

use custody_e2e::*;
use ledger::checkpoint::{CheckpointVerifier, SignedCheckpoint};
use ledger::entry::leaf_hash;
use ledger::receipt::Receipt;
use ledger::tree::{self, split_bundle, Frontier, TileRef, TILE_WIDTH};
use ledger::types::{EventId, LeafHash, RootHash, TreeSize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const ROUNDS: u32 = 30;
/// Client threads appending single events.
const SINGLE_CLIENTS: u32 = 2;
/// Client threads appending batches of 1 to `MAX_BATCH` events.
const BATCH_CLIENTS: u32 = 2;
const MAX_BATCH: u64 = 16;
/// The kill lands this long (uniformly) after the clients start.
const KILL_AFTER_MS: std::ops::Range<u64> = 5..250;
/// Events one client sends per round at most, so the checks (every receipt ever,
/// through the API, after every restart) stay within about a minute on fast machines.
const MAX_PER_CLIENT: u64 = 150;
/// Threads proving receipts through the API after each restart.
const VERIFIERS: usize = 4;

/// SplitMix64: enough randomness for kill instants and batch sizes, with a seed to
/// replay a failure (the tests take no `rand` dependency).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn range(&mut self, r: std::ops::Range<u64>) -> u64 {
        r.start + self.next() % (r.end - r.start)
    }
}

fn seed() -> u64 {
    match std::env::var("CUSTODY_CRASH_SEED") {
        Ok(s) => s.parse().expect("CUSTODY_CRASH_SEED is a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos() as u64,
    }
}

fn hashes(v: &Value) -> Vec<RootHash> {
    serde_json::from_value(v.clone()).expect("a list of hex hashes")
}

/// Everything the clients were told while the node ran.
#[derive(Default)]
struct Told {
    receipts: Vec<Receipt>,
    /// The envelope of each receipt, in the same order.
    envelopes: Vec<Value>,
    checkpoints: Vec<SignedCheckpoint>,
    /// Appends answered 503 (the queue was full): allowed, but counted.
    overloaded: u64,
}

/// What a client thread shares for one round.
struct Client<'a> {
    url: &'a str,
    vkey: &'a str,
    round: u32,
    seed: u64,
    stop: &'a AtomicBool,
    told: &'a Mutex<Told>,
}

/// Client `t`: appends until the node stops answering (it was killed) or `stop`;
/// records each receipt after checking it as a client must.
fn client(c: &Client, t: u32) {
    let Client {
        url,
        vkey,
        round,
        seed,
        stop,
        told,
    } = *c;
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()
        .expect("http client");
    let log = CheckpointVerifier::new(vkey).expect("vkey");
    let mut rng = Rng(seed ^ (u64::from(t) << 32) ^ u64::from(round));
    let batch = t >= SINGLE_CLIENTS;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if i >= MAX_PER_CLIENT {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        let n = if batch {
            rng.range(1..MAX_BATCH + 1)
        } else {
            1
        };
        let envs: Vec<Value> = (0..n)
            .map(|k| sign(&key(2), &scan(&format!("R{round}-T{t}-{}", i + k))))
            .collect();
        i += n;
        let req = if batch {
            http.post(format!("{url}/v1/events:batch"))
                .json(&json!({"envelopes": envs}))
        } else {
            http.post(format!("{url}/v1/events")).json(&envs[0])
        };
        // A refused connection, a reset or a cut-off body: the node is dead.
        let Ok(resp) = req.send() else { return };
        let status = resp.status().as_u16();
        let Ok(body) = resp.json::<Value>() else {
            return;
        };
        let mut got = Vec::new();
        match (status, batch) {
            (201, false) => got.push(body),
            (201, true) => {
                for r in body["results"].as_array().expect("batch results") {
                    assert_eq!(r["status"], 201, "a fresh scan was refused: {r}");
                    got.push(r["receipt"].clone());
                }
            }
            (503, _) => {
                assert_eq!(code(&body), "overloaded", "{body}");
                told.lock().unwrap().overloaded += 1;
                continue;
            }
            (other, _) => panic!("append answered {other}: {body}"),
        }
        let mut checked = Vec::new();
        for (r, env) in got.iter().zip(envs) {
            assert_eq!(r["duplicate"], false, "{r}");
            let receipt = verify_receipt(r, vkey);
            let cp = log
                .verify(&receipt.checkpoint)
                .expect("the receipt's checkpoint verifies");
            checked.push((receipt, cp, env));
        }
        let mut t = told.lock().unwrap();
        for (r, cp, env) in checked {
            t.receipts.push(r);
            t.checkpoints.push(cp);
            t.envelopes.push(env);
        }
    }
}

/// Polls `/checkpoint` and keeps every distinct checkpoint it sees (they are
/// published too: a monitor or witness may hold any of them).
fn watcher(c: &Client) {
    let Client {
        url,
        vkey,
        stop,
        told,
        ..
    } = *c;
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()
        .expect("http client");
    let log = CheckpointVerifier::new(vkey).expect("vkey");
    let mut last = None;
    while !stop.load(Ordering::Relaxed) {
        let Ok(resp) = http.get(format!("{url}/checkpoint")).send() else {
            return;
        };
        if resp.status() != 200 {
            return;
        }
        let Ok(note) = resp.text() else { return };
        let cp = log.verify(&note).expect("a published checkpoint verifies");
        if last != Some(cp.size) {
            last = Some(cp.size);
            told.lock().unwrap().checkpoints.push(cp);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What the test has been told over all rounds, checked against each restarted node.
struct Ledger {
    receipts: Vec<Receipt>,
    /// Every checkpoint ever published, by size (one root per size, or the log forked).
    checkpoints: BTreeMap<TreeSize, RootHash>,
}

impl Ledger {
    fn remember(&mut self, cp: &SignedCheckpoint) {
        if let Some(root) = self.checkpoints.insert(cp.size, cp.root) {
            assert_eq!(
                root, cp.root,
                "two checkpoints of size {} with different roots: the log forked",
                cp.size
            );
        }
    }
}

/// Every entry's leaf hash, read through the C2SP entry bundles (256 entries per
/// request), each bundle entry hashed from the bytes served.
fn all_leaves(node: &Node, size: TreeSize) -> Vec<LeafHash> {
    let mut leaves = Vec::with_capacity(size as usize);
    let mut n = 0;
    while n * TILE_WIDTH < size {
        let width = (size - n * TILE_WIDTH).min(TILE_WIDTH) as u32;
        let t = TileRef {
            level: None,
            n,
            width,
        };
        let a = node.get(&format!("/tile/{}", t.path()));
        assert_eq!(a.status, 200, "entry bundle {}: {}", t.path(), a.text());
        let entries = split_bundle(&a.body).expect("entry bundle splits");
        assert_eq!(entries.len(), width as usize, "entry bundle {}", t.path());
        leaves.extend(entries.into_iter().map(leaf_hash));
        n += 1;
    }
    leaves
}

/// The entry at `index` is the one the receipt names (its bytes hash to the receipt's
/// leaf hash, its payload to the event id), and the node proves it into `cp`.
fn prove_receipt(node: &Node, r: &Receipt, cp: &SignedCheckpoint) {
    let entry = node.get(&format!("/v1/entries/{}", r.index));
    assert_eq!(
        entry.status,
        200,
        "acknowledged entry {} is gone: {}",
        r.index,
        entry.text()
    );
    assert_eq!(
        leaf_hash(&entry.body),
        r.leaf_hash,
        "entry {} differs from what was acknowledged",
        r.index
    );
    let e: Value = serde_json::from_slice(&entry.body).expect("entry is JSON");
    assert_eq!(
        EventId::of_payload(&payload_of(&e["envelope"])),
        r.event_id,
        "entry {} holds another event",
        r.index
    );
    assert_eq!(e["logged_at"], r.logged_at.as_str());
    let p = node.get_json(&format!(
        "/v1/proofs/inclusion?index={}&tree_size={}",
        r.index, cp.size
    ));
    assert_eq!(p["leaf_hash"], r.leaf_hash.to_hex());
    assert_eq!(p["root_hash"], cp.root.to_hex());
    tree::verify_inclusion(&hashes(&p["proof"]), cp.size, cp.root, r.index, r.leaf_hash)
        .unwrap_or_else(|e| panic!("receipt for entry {}: {e}", r.index));
}

/// [`prove_receipt`] for every receipt and [`prove_consistent`] for every
/// checkpoint, on a few threads (the node serves reads in parallel).
fn prove_all(
    node: &Node,
    receipts: &[Receipt],
    checkpoints: &BTreeMap<TreeSize, RootHash>,
    cp: &SignedCheckpoint,
) {
    let checkpoints: Vec<(TreeSize, RootHash)> =
        checkpoints.iter().map(|(&s, &r)| (s, r)).collect();
    let chunk = receipts.len().div_ceil(VERIFIERS).max(1);
    let cp_chunk = checkpoints.len().div_ceil(VERIFIERS).max(1);
    std::thread::scope(|s| {
        for part in receipts.chunks(chunk) {
            s.spawn(move || part.iter().for_each(|r| prove_receipt(node, r, cp)));
        }
        for part in checkpoints.chunks(cp_chunk) {
            s.spawn(move || {
                for &(size, root) in part {
                    prove_consistent(node, size, root, cp);
                }
            });
        }
    });
}

fn prove_consistent(node: &Node, first: TreeSize, first_root: RootHash, cp: &SignedCheckpoint) {
    let p = node.get_json(&format!(
        "/v1/proofs/consistency?first={first}&second={}",
        cp.size
    ));
    tree::verify_consistency(&hashes(&p["proof"]), first, first_root, cp.size, cp.root)
        .unwrap_or_else(|e| panic!("checkpoint {first} → {}: {e}", cp.size));
}

/// Nothing lies beyond the tree: no entry, no entry bundle and no hash tile that
/// would reach index `size`.
fn nothing_beyond(node: &Node, size: TreeSize) {
    for i in [size, size + 1, size + 1000] {
        node.get(&format!("/v1/entries/{i}"))
            .problem(404, "not_found");
        node.get(&format!("/v1/proofs/inclusion?index={i}"))
            .problem(422, "out_of_range");
    }
    node.get(&format!(
        "/v1/proofs/consistency?first={size}&second={}",
        size + 1
    ))
    .problem(422, "out_of_range");
    let n = size / TILE_WIDTH;
    let width = (size % TILE_WIDTH + 1) as u32;
    for level in [None, Some(0)] {
        for t in [
            TileRef { level, n, width },
            TileRef {
                level,
                n,
                width: TILE_WIDTH as u32,
            },
            TileRef {
                level,
                n: n + 1,
                width: 1,
            },
        ] {
            node.get(&format!("/tile/{}", t.path()))
                .problem(404, "not_found");
        }
    }
}

#[test]
fn every_acknowledged_append_survives_sigkill_under_concurrent_load() {
    let started = Instant::now();
    let seed = seed();
    eprintln!("crash_under_load seed {seed} (CUSTODY_CRASH_SEED={seed} to replay)");
    let mut rng = Rng(seed);
    // A table of the de-duplication index every 64 entries, so that kills land
    // while one is written and ingested too.
    let mut node = Node::start_with_env(&[], &[("CUSTODY_ID_RUN", "64")]);
    let reg = node.register(&key(2), "Investigator", "Acme SA", &["investigator"]);
    let vkey = node.vkey();
    let first = node.checkpoint();
    let mut ledger = Ledger {
        receipts: vec![verify_receipt(&reg, &vkey)],
        checkpoints: BTreeMap::new(),
    };
    ledger.remember(&first);
    let mut last = first;
    let (mut inclusion_proofs, mut consistency_proofs, mut overloaded) = (0usize, 0usize, 0u64);
    for round in 0..ROUNDS {
        let told = Mutex::new(Told::default());
        let stop = AtomicBool::new(false);
        let kill_after = Duration::from_millis(rng.range(KILL_AFTER_MS));
        let url = node.url.clone();
        let c = Client {
            url: &url,
            vkey: &vkey,
            round,
            seed,
            stop: &stop,
            told: &told,
        };
        std::thread::scope(|s| {
            for t in 0..SINGLE_CLIENTS + BATCH_CLIENTS {
                let c = &c;
                s.spawn(move || client(c, t));
            }
            s.spawn(|| watcher(&c));
            std::thread::sleep(kill_after);
            node.kill9();
            stop.store(true, Ordering::Relaxed);
        });
        let told = told.into_inner().unwrap();
        overloaded += told.overloaded;
        node.relaunch();

        let cp = node.checkpoint();
        assert_eq!(node.size(), cp.size, "/v1/log and /checkpoint agree");
        assert!(
            cp.size >= last.size,
            "round {round}: the log shrank from {} to {}",
            last.size,
            cp.size
        );
        let new_checkpoints = told
            .checkpoints
            .iter()
            .map(|c| c.size)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        for c in &told.checkpoints {
            ledger.remember(c);
        }
        ledger.remember(&cp);

        // Every receipt ever, byte for byte, and every checkpoint ever, as a prefix:
        // recompute the whole tree from the entry bundles the node serves.
        let leaves = all_leaves(&node, cp.size);
        for r in ledger.receipts.iter().chain(&told.receipts) {
            assert!(
                r.index < cp.size,
                "round {round}: acknowledged entry {} is beyond the restarted log's size {}",
                r.index,
                cp.size
            );
            assert_eq!(
                leaves[r.index as usize], r.leaf_hash,
                "round {round}: entry {} differs from its receipt",
                r.index
            );
        }
        let mut frontier = Frontier::new();
        let mut roots = ledger.checkpoints.iter().peekable();
        for leaf in &leaves {
            frontier.push(*leaf);
            while let Some(&(&size, &root)) = roots.peek() {
                if size != frontier.size() {
                    break;
                }
                assert_eq!(
                    frontier.root(),
                    root,
                    "round {round}: published checkpoint {size} is not a prefix of the restarted log"
                );
                roots.next();
            }
        }
        assert_eq!(
            roots.next(),
            None,
            "round {round}: a published checkpoint is beyond the restarted log's size {}",
            cp.size
        );
        assert_eq!(frontier.root(), cp.root, "the entries make the signed root");

        // Every event acknowledged this round, sent again, is answered as a
        // duplicate of its entry: the de-duplication index lost none of them (the
        // ids not yet in its tables are read again from the entries on start).
        for (envs, receipts) in told.envelopes.chunks(256).zip(told.receipts.chunks(256)) {
            let again = node.post_json("/v1/events:batch", &json!({ "envelopes": envs }));
            let results = again.json()["results"].clone();
            for (r, want) in results.as_array().expect("results").iter().zip(receipts) {
                let (index, duplicate) = (&r["receipt"]["index"], &r["receipt"]["duplicate"]);
                assert!(
                    r["status"] == 200 && *duplicate == true && *index == want.index,
                    "round {round}: entry {} sent again was answered {} (duplicate {duplicate}, \
                     index {index})",
                    want.index,
                    r["status"]
                );
            }
            assert_eq!(again.status, 200, "round {round}");
        }

        // And again through the API, as a client holding a receipt or a checkpoint
        // would check: every receipt ever, every checkpoint ever.
        ledger.receipts.extend(told.receipts.iter().cloned());
        prove_all(&node, &ledger.receipts, &ledger.checkpoints, &cp);
        inclusion_proofs += ledger.receipts.len();
        consistency_proofs += ledger.checkpoints.len();
        nothing_beyond(&node, cp.size);

        eprintln!(
            "round {round:2}: killed after {:3} ms; {:3} receipts, {:2} checkpoints seen; log {} → {}",
            kill_after.as_millis(),
            told.receipts.len(),
            new_checkpoints,
            last.size,
            cp.size
        );
        last = cp;
    }
    // The log still takes appends after all that.
    let r = node.append(&key(2), &scan("after-the-crashes"));
    assert_eq!(r["index"], last.size);
    eprintln!(
        "{ROUNDS} SIGKILLs in {:.1} s: {} receipts and {} distinct checkpoints, all checked after every restart \
         ({inclusion_proofs} inclusion and {consistency_proofs} consistency proofs through the API); {overloaded} appends told 503",
        started.elapsed().as_secs_f64(),
        ledger.receipts.len(),
        ledger.checkpoints.len(),
    );
}
