//! Proofs and tiles, checked client-side with the ledger's verifier: inclusion by
//! index and by leaf hash, consistency between sizes, the C2SP tiles reassembled into
//! the signed root, and all of it again after a restart.

use custody_e2e::*;
use ledger::checkpoint::{CheckpointVerifier, SignedCheckpoint};
use ledger::entry::leaf_hash;
use ledger::tree::{self, Frontier, TileRef, TILE_WIDTH};
use ledger::types::{LeafHash, RootHash};
use serde_json::{json, Value};

fn hashes(v: &Value) -> Vec<RootHash> {
    serde_json::from_value(v.clone()).expect("a list of hex hashes")
}

/// Appends `n` scans in one batch with an investigator (key 2).
fn grow(node: &Node, from: usize, n: usize) {
    let envs: Vec<Value> = (from..from + n)
        .map(|i| sign(&key(2), &scan(&format!("P-{i}"))))
        .collect();
    let a = node.post_json("/v1/events:batch", &json!({"envelopes": envs}));
    assert_eq!(a.status, 201, "{}", a.text());
}

fn verify_inclusion_of(node: &Node, index: u64, cp: &SignedCheckpoint) {
    let p = node.get_json(&format!(
        "/v1/proofs/inclusion?index={index}&tree_size={}",
        cp.size
    ));
    let entry = node.get(&format!("/v1/entries/{index}"));
    let leaf = leaf_hash(&entry.body);
    assert_eq!(p["leaf_hash"], leaf.to_hex());
    assert_eq!(p["root_hash"], cp.root.to_hex());
    tree::verify_inclusion(&hashes(&p["proof"]), cp.size, cp.root, index, leaf)
        .unwrap_or_else(|e| panic!("entry {index} in tree {}: {e}", cp.size));
}

#[test]
fn inclusion_proofs_by_index_and_by_leaf_hash_verify_against_signed_checkpoints() {
    let node = Node::start();
    node.register(&key(2), "Investigator", "Acme SA", &["investigator"]);
    grow(&node, 0, 40);
    let early = node.checkpoint();
    grow(&node, 40, 30);
    let late = node.checkpoint();
    for i in 0..early.size {
        verify_inclusion_of(&node, i, &early);
    }
    for i in 0..late.size {
        verify_inclusion_of(&node, i, &late);
    }
    // By leaf hash, defaulting to the current size.
    let leaf = leaf_hash(&node.get("/v1/entries/17").body);
    let p = node.get_json(&format!("/v1/proofs/inclusion?leaf_hash={leaf}"));
    assert_eq!(p["index"], 17);
    assert_eq!(p["tree_size"], late.size);
    tree::verify_inclusion(&hashes(&p["proof"]), late.size, late.root, 17, leaf).unwrap();
}

#[test]
fn consistency_proofs_between_every_pair_of_checkpoints_verify() {
    let node = Node::start();
    node.register(&key(2), "Investigator", "Acme SA", &["investigator"]);
    let mut seen = vec![node.checkpoint()];
    for (from, n) in [(0, 1), (1, 5), (6, 20), (26, 250), (276, 3)] {
        grow(&node, from, n);
        seen.push(node.checkpoint());
    }
    for a in &seen {
        for b in seen.iter().filter(|b| b.size >= a.size) {
            let p = node.get_json(&format!(
                "/v1/proofs/consistency?first={}&second={}",
                a.size, b.size
            ));
            assert_eq!(
                (p["first"].as_u64(), p["second"].as_u64()),
                (Some(a.size), Some(b.size))
            );
            tree::verify_consistency(&hashes(&p["proof"]), a.size, a.root, b.size, b.root)
                .unwrap_or_else(|e| panic!("{} → {}: {e}", a.size, b.size));
        }
    }
    // second defaults to the current size.
    let last = seen.last().unwrap();
    let p = node.get_json("/v1/proofs/consistency?first=3");
    assert_eq!(p["second"], last.size);
}

#[test]
fn tiles_and_entry_bundles_reassemble_into_the_signed_root() {
    let node = Node::start();
    node.register(&key(2), "Investigator", "Acme SA", &["investigator"]);
    grow(&node, 0, 300);
    let cp = node.checkpoint();
    assert_eq!(cp.size, 302);
    let mut frontier = Frontier::new();
    let mut leaves: Vec<LeafHash> = Vec::new();
    for n in 0..cp.size.div_ceil(TILE_WIDTH) {
        let width = (cp.size - n * TILE_WIDTH).min(TILE_WIDTH) as u32;
        let bundle = TileRef {
            level: None,
            n,
            width,
        };
        let a = node.get(&format!("/tile/{}", bundle.path()));
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(a.content_type, "application/octet-stream");
        let full = u64::from(width) == TILE_WIDTH;
        assert_eq!(
            a.header("cache-control") == Some("public, max-age=31536000, immutable"),
            full
        );
        let entries = tree::split_bundle(&a.body).unwrap();
        assert_eq!(entries.len(), width as usize);
        let tile_leaves: Vec<LeafHash> = entries.iter().map(|e| leaf_hash(e)).collect();
        for (k, e) in entries.iter().enumerate() {
            // The bundle holds the same bytes /v1/entries serves.
            if k % 50 == 0 {
                assert_eq!(
                    *e,
                    node.get(&format!("/v1/entries/{}", n * TILE_WIDTH + k as u64))
                        .body
                        .as_slice()
                );
            }
        }
        // The level-0 hash tile lists exactly these leaf hashes.
        let ht = TileRef {
            level: Some(0),
            n,
            width,
        };
        let h = node.get(&format!("/tile/{}", ht.path()));
        assert_eq!(h.status, 200);
        let expect: Vec<u8> = tile_leaves.iter().flat_map(|l| l.0).collect();
        assert_eq!(h.body, expect, "hash tile {}", ht.path());
        for l in tile_leaves {
            frontier.push(l);
            leaves.push(l);
        }
    }
    assert_eq!(frontier.size(), cp.size);
    assert_eq!(
        frontier.root(),
        cp.root,
        "the tiles hash to the signed root"
    );
    // The level-1 tile holds the root of the first 256 leaves.
    let mut first = Frontier::new();
    leaves[..256].iter().for_each(|l| first.push(*l));
    let l1 = node.get("/tile/1/000.p/1");
    assert_eq!(l1.status, 200, "{}", l1.text());
    assert_eq!(l1.body, first.root().0.to_vec());
}

#[test]
fn after_a_restart_everything_is_still_provable() {
    let mut node = Node::start();
    node.register(&key(2), "Investigator", "Acme SA", &["investigator"]);
    let receipt = node.append(&key(2), &scan("before-restart"));
    grow(&node, 0, 20);
    let before = node.checkpoint();
    let vkey = node.vkey();
    node.restart();
    assert_eq!(node.vkey(), vkey, "the log keeps its key");
    let after = node.checkpoint();
    assert_eq!(
        (after.size, after.root),
        (before.size, before.root),
        "the log is exactly as it was"
    );
    for i in 0..after.size {
        verify_inclusion_of(&node, i, &after);
    }
    verify_receipt(&receipt, &vkey);
    // The same event is still recognised, and the log keeps growing consistently.
    let again = node.send(&key(2), &scan("before-restart"));
    assert_eq!(
        again.status,
        201,
        "claimed_at differs, so this is a new event: {}",
        again.text()
    );
    grow(&node, 20, 5);
    let later = node.checkpoint();
    let p = node.get_json(&format!(
        "/v1/proofs/consistency?first={}&second={}",
        before.size, later.size
    ));
    tree::verify_consistency(
        &hashes(&p["proof"]),
        before.size,
        before.root,
        later.size,
        later.root,
    )
    .unwrap();
    let v = CheckpointVerifier::new(&vkey).unwrap();
    v.verify(&node.get("/checkpoint").text()).unwrap();
}

/// Waits (up to 10 s) until the node's tile file holds every full tile, and
/// answers how many there are.
fn tile_file_caught_up(node: &Node) -> f64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = node.get("/metrics").text();
        let (have, full) = (
            metric(&text, "custody_tile_file_tiles"),
            metric(&text, "custody_tiles_full"),
        );
        if have == full {
            return full;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the tile file holds {have} of {full} full tiles after 10 s:\n{}",
            node.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Full tiles are served from the node's tile file once its tile thread has
/// copied them; a tile altered in that file (the node stopped) is never served
/// from it: proofs through it still verify, the node names the tile, and the
/// tile thread writes it again.
#[test]
fn proofs_verify_through_the_tile_file_even_when_it_is_altered() {
    let node = Node::start();
    node.register(&key(2), "Investigator", "Acme SA", &["investigator"]);
    grow(&node, 0, 600);
    assert_eq!(tile_file_caught_up(&node), 2.0);
    let cp = node.checkpoint();
    for i in (0..cp.size).step_by(7) {
        verify_inclusion_of(&node, i, &cp);
    }
    let dir = node.stop_and_keep();
    // Tile 1's hashes start after a 4 KiB header and tile 0's 16 KiB slot; alter
    // entry 300's leaf hash and a hash above it.
    let path = dir.path().join("data/tiles");
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    for at in [
        tlog_tiles::stored_hash_index(0, 300) - tlog_tiles::stored_hash_index(0, 256),
        tlog_tiles::stored_hash_index(3, 300 / 8) - tlog_tiles::stored_hash_index(0, 256),
    ] {
        std::os::unix::fs::FileExt::write_all_at(&f, &[0x5a; 32], 4096 + 16384 + at * 32).unwrap();
    }
    drop(f);
    let node = Node::start_in(dir, &[]);
    assert_eq!(node.checkpoint().root, cp.root);
    for i in (256..cp.size.min(512)).step_by(3) {
        verify_inclusion_of(&node, i, &cp);
    }
    assert!(
        node.log().contains("tile 1 in") && node.log().contains("is unusable"),
        "the node names the altered tile:\n{}",
        node.log()
    );
    assert_eq!(tile_file_caught_up(&node), 2.0);
    for i in 256..cp.size.min(512) {
        verify_inclusion_of(&node, i, &cp);
    }
}

#[test]
fn a_duplicate_sent_after_a_restart_gets_its_original_receipt() {
    let mut node = Node::start();
    node.register(&key(2), "Investigator", "Acme SA", &["investigator"]);
    let env = sign(&key(2), &scan("S-1"));
    let first = node.post_json("/v1/events", &env).json();
    node.restart();
    let again = node.post_json("/v1/events", &env);
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["index"], first["index"]);
    verify_receipt(&again.json(), &node.vkey());
}

#[test]
fn appends_acknowledged_before_sigterm_survive_the_restart() {
    let mut node = Node::start();
    node.register(&key(2), "Investigator", "Acme SA", &["investigator"]);
    let vkey = node.vkey();
    let acked = std::sync::atomic::AtomicUsize::new(0);
    let acknowledged: Vec<Value> = std::thread::scope(|s| {
        let node = &node;
        let acked = &acked;
        let senders: Vec<_> = (0..8)
            .map(|t| {
                s.spawn(move || {
                    let http = reqwest::blocking::Client::builder()
                        .no_proxy()
                        .build()
                        .unwrap();
                    let mut got = Vec::new();
                    for i in 0.. {
                        let env = sign(&key(2), &scan(&format!("K{t}-{i}")));
                        // Once the node stops listening, requests fail: that is the end.
                        let Ok(r) = http
                            .post(format!("{}/v1/events", node.url))
                            .json(&env)
                            .send()
                        else {
                            break;
                        };
                        let status = r.status().as_u16();
                        let Ok(body) = r.json::<Value>() else { break };
                        match status {
                            201 => {
                                got.push(body);
                                acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            }
                            503 => assert_eq!(code(&body), "overloaded"),
                            other => panic!("unexpected {other}: {body}"),
                        }
                    }
                    got
                })
            })
            .collect();
        // SIGTERM once appends are being acknowledged (not after a fixed sleep,
        // which a busy machine may spend starting the senders).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while acked.load(std::sync::atomic::Ordering::SeqCst) < 16
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(node.terminate());
        senders
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(!acknowledged.is_empty());
    node.restart();
    let cp = node.checkpoint();
    for r in &acknowledged {
        let receipt = verify_receipt(r, &vkey);
        assert!(
            receipt.index < cp.size,
            "entry {} was acknowledged but is gone",
            receipt.index
        );
        let entry = node.get(&format!("/v1/entries/{}", receipt.index));
        assert_eq!(
            leaf_hash(&entry.body),
            receipt.leaf_hash,
            "entry {} changed",
            receipt.index
        );
    }
}
