//! Criterion benchmarks of the ledger core (README §Performance):
//!
//!     cargo bench -p custody-ledger --bench ledger
//!
//! - `ed25519_verify/*`: the machine's limit, raw Ed25519 verification (single and
//!   batch), measured in the same run as everything else;
//! - `envelope_open/*`: our envelope check (decode, verify, parse), single and batch;
//! - `durable_append/group_{1,64,1024}`: signed events through the sequencer into a
//!   real RocksDB store with a synced WAL;
//! - `proofs_{1m,10m}/*`: inclusion and consistency proof generation on a 1M- and a
//!   10M-entry store (built once under target/bench-stores/, which takes a few
//!   minutes the first time), a hash tile read and an entry bundle read;
//! - `audit_replay/*`: what `custody audit` does per entry once the bytes are here
//!   (parse, batch signature check on all cores, roles and rules, leaf hash, root).
//!
//! Every throughput is reported in elements/s, so ratios to the raw verify rate
//! can be read off directly.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ed25519_dalek::{Signer, SigningKey};
use ledger::cases::Rules;
use ledger::entry::leaf_hash;
use ledger::envelope::{open_all, pae, Envelope};
use ledger::event::PAYLOAD_TYPE;
use ledger::replay::{prepare, Replayer};
use ledger::sequencer::{Config, Sequencer};
use ledger::sig::{self, Pending, PublicKey};
use ledger::store::{NewEntry, Store};
use ledger::tree::{self, TileRef};
use ledger::types::KeyId;
use std::path::PathBuf;
use std::sync::Arc;

const ADMIN: [u8; 32] = [1; 32];
const BRAND: [u8; 32] = [2; 32];

fn scan(serial: u64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "kind": "scan", "claimed_at": "2026-01-01T00:00:00Z",
        "body": {"product_id": "04012345678901", "serial": format!("SN-{serial}"), "marking": "qr",
                 "result": "genuine", "location": {"country": "DE"}, "device": "bench"}
    }))
    .unwrap()
}

fn signed(from: u64, n: u64) -> Vec<Envelope> {
    let k = SigningKey::from_bytes(&BRAND);
    (from..from + n)
        .map(|i| Envelope::sign(&scan(i), &k))
        .collect()
}

fn limit(c: &mut Criterion) {
    let mut g = c.benchmark_group("ed25519_verify");
    let keys: Vec<SigningKey> = (0..64u8)
        .map(|i| SigningKey::from_bytes(&[i; 32]))
        .collect();
    let msgs: Vec<Vec<u8>> = (0..64).map(|i| pae(PAYLOAD_TYPE, &scan(i))).collect();
    let sigs: Vec<_> = keys.iter().zip(&msgs).map(|(k, m)| k.sign(m)).collect();
    let vks: Vec<_> = keys.iter().map(|k| k.verifying_key()).collect();
    g.throughput(Throughput::Elements(1));
    g.bench_function("single", |b| {
        b.iter(|| vks[0].verify_strict(&msgs[0], &sigs[0]).unwrap())
    });
    g.throughput(Throughput::Elements(64));
    g.bench_function("batch_64", |b| {
        let m: Vec<&[u8]> = msgs.iter().map(|m| m.as_slice()).collect();
        b.iter(|| ed25519_dalek::verify_batch(&m, &sigs, &vks).unwrap())
    });
    // The same batch under the log's own rule (ledger::sig: cofactored equation).
    g.bench_function("custody_rule_batch_64", |b| {
        b.iter(|| {
            let pending: Vec<Pending> = vks
                .iter()
                .zip(&sigs)
                .zip(&msgs)
                .map(|((vk, sig), m)| {
                    let pk = PublicKey::from_bytes(vk.as_bytes()).unwrap();
                    Pending::new(&pk, &sig.to_bytes(), &[m]).unwrap()
                })
                .collect();
            assert!(sig::verify_batch(&pending));
        })
    });
    // One signer's signatures (a brand's batch, tiles of one actor): their key terms
    // merge into one point of the batch equation. 256 is the node's batch, 4,096 the
    // audit's; larger batches take wider windows in the multiscalar multiplication
    // and cost less per signature.
    let one_key: Vec<(Vec<u8>, [u8; 64])> = (0..4096u64)
        .map(|i| {
            let m = pae(PAYLOAD_TYPE, &scan(1_000 + i));
            let s = keys[0].sign(&m).to_bytes();
            (m, s)
        })
        .collect();
    let pk0 = PublicKey::from_bytes(vks[0].as_bytes()).unwrap();
    for n in [256, 1024, 4096] {
        let pending: Vec<Pending> = one_key[..n]
            .iter()
            .map(|(m, s)| Pending::new(&pk0, s, &[m]).unwrap())
            .collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("custody_rule_batch_{n}_one_key"), |b| {
            b.iter(|| {
                let pending: Vec<Pending> = one_key[..n]
                    .iter()
                    .map(|(m, s)| Pending::new(&pk0, s, &[m]).unwrap())
                    .collect();
                assert!(sig::verify_batch(&pending));
            })
        });
        // The equation alone, the signatures already decoded (R decompressed, k hashed).
        g.bench_function(format!("custody_rule_equation_{n}_one_key"), |b| {
            b.iter(|| assert!(sig::verify_batch(&pending)))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("envelope_open");
    let envs = signed(0, 1024);
    g.throughput(Throughput::Elements(1));
    g.bench_function("single", |b| {
        b.iter_batched(
            || envs[0].clone(),
            |e| e.open().unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.throughput(Throughput::Elements(1024));
    g.bench_function("batch_1024_all_cores", |b| {
        b.iter_batched(|| envs.clone(), open_all, BatchSize::LargeInput)
    });
    g.finish();
}

fn fresh_store() -> (tempfile::TempDir, Arc<Store>) {
    let dir = tempfile::tempdir().unwrap();
    let admin = SigningKey::from_bytes(&ADMIN);
    let store = Store::init(
        dir.path(),
        "custody.example/bench",
        KeyId(admin.verifying_key().to_bytes()),
    )
    .unwrap();
    (dir, Arc::new(store))
}

fn register(seq: &Sequencer) {
    let admin = SigningKey::from_bytes(&ADMIN);
    let brand = SigningKey::from_bytes(&BRAND);
    let p = serde_json::to_vec(&serde_json::json!({
        "kind": "actor.register", "claimed_at": "2026-01-01T00:00:00Z",
        "body": {"key": hex::encode(brand.verifying_key().as_bytes()), "name": "bench", "org": "Bench", "roles": ["brand"]}
    }))
    .unwrap();
    seq.append_blocking(open_all(vec![Envelope::sign(&p, &admin)]))
        .unwrap();
}

fn durable_append(c: &mut Criterion) {
    let mut g = c.benchmark_group("durable_append");
    g.sample_size(10);
    for group in [1u64, 64, 1024] {
        let (_dir, store) = fresh_store();
        let seq = Sequencer::start(store, Config::default());
        register(&seq);
        let mut next = 0u64;
        g.throughput(Throughput::Elements(group));
        g.bench_function(format!("group_{group}"), |b| {
            b.iter_batched(
                || {
                    let envs = signed(next, group);
                    next += group;
                    envs
                },
                |envs| {
                    let r = seq.append_blocking(open_all(envs)).unwrap();
                    assert!(r.iter().all(|x| x.is_ok()));
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

/// A store with `n` synthetic entries, built once and kept under target/, its
/// tile file filled as the node's tile thread fills it: proofs read their tiles
/// from it, as the node's do.
fn big_store(n: u64) -> Store {
    let store = built_store(n);
    store.extend_tile_file(u64::MAX, true).unwrap();
    store
}

fn built_store(n: u64) -> Store {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/bench-stores")
        .join(format!("proofs-{n}"));
    if let Ok(s) = Store::open(&dir) {
        if s.size() >= n {
            return s;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let admin = SigningKey::from_bytes(&ADMIN);
    let store = Store::init(
        &dir,
        "custody.example/bench-proofs",
        KeyId(admin.verifying_key().to_bytes()),
    )
    .unwrap();
    let mut i = store.size();
    eprintln!("building a {n}-entry store in {} (once)…", dir.display());
    while i < n {
        let chunk: Vec<NewEntry> = (i..(i + 10_000).min(n))
            .map(|j| NewEntry::unsigned(format!("{{\"synthetic\":{j}}}").as_bytes()))
            .collect();
        i += chunk.len() as u64;
        store.commit(chunk).unwrap();
    }
    // The ids still in memory into tables, as a node's clean stop does.
    store.flush_memtables().unwrap();
    store
}

fn proofs(c: &mut Criterion) {
    for (n, name) in [(1_000_000u64, "proofs_1m"), (10_000_000, "proofs_10m")] {
        // Built (or opened) on first use: a run filtered to other benchmarks never
        // spends minutes building stores it does not read.
        let store = std::cell::OnceCell::new();
        let store = || store.get_or_init(|| big_store(n));
        let mut g = c.benchmark_group(name);
        let mut i = 0u64;
        g.bench_function("inclusion", |b| {
            let (store, size) = (store(), store().size());
            b.iter(|| {
                i = (i + 7919) % size;
                tree::prove_inclusion(i, size, store).unwrap()
            })
        });
        let mut a = 1u64;
        g.bench_function("consistency", |b| {
            let (store, size) = (store(), store().size());
            b.iter(|| {
                a = (a + 7919) % (size - 1) + 1;
                tree::prove_consistency(a, size, store).unwrap()
            })
        });
        let t = TileRef::parse("0/x001/234").unwrap();
        g.bench_function("hash_tile_read", |b| {
            let store = store();
            b.iter(|| tree::hash_tile_bytes(&t, store).unwrap())
        });
        let bundle = TileRef {
            level: None,
            n: 1234,
            width: 256,
        };
        g.throughput(Throughput::Elements(256));
        g.bench_function("entry_bundle_read", |b| {
            let store = store();
            b.iter(|| store.tile(&bundle).unwrap())
        });
        g.finish();
    }
}

fn audit_replay(c: &mut Criterion) {
    let (_dir, store) = fresh_store();
    let mut seq = Sequencer::start(store.clone(), Config::default());
    register(&seq);
    for k in 0..8 {
        let r = seq
            .append_blocking(open_all(signed(k * 1024, 1024)))
            .unwrap();
        assert!(r.iter().all(|x| x.is_ok()));
    }
    seq.shutdown();
    let cp = store.checkpoint();
    let mut entries: Vec<Vec<u8>> = Vec::new();
    for n in 0..cp.size.div_ceil(tree::TILE_WIDTH) {
        let width = (cp.size - n * tree::TILE_WIDTH).min(tree::TILE_WIDTH) as u32;
        let bytes = store
            .tile(&TileRef {
                level: None,
                n,
                width,
            })
            .unwrap();
        entries.extend(
            tree::split_bundle(&bytes)
                .unwrap()
                .into_iter()
                .map(<[u8]>::to_vec),
        );
    }
    let mut g = c.benchmark_group("audit_replay");
    g.sample_size(10);
    g.throughput(Throughput::Elements(entries.len() as u64));
    g.bench_function(format!("entries_{}", entries.len()), |b| {
        b.iter(|| {
            let mut replay = Replayer::new(Rules::default());
            let mut frontier = tree::Frontier::new();
            for (t, tile) in entries.chunks(tree::TILE_WIDTH as usize).enumerate() {
                let refs: Vec<&[u8]> = tile.iter().map(Vec::as_slice).collect();
                for (k, (bytes, p)) in refs.iter().zip(prepare(&refs)).enumerate() {
                    let index = t as u64 * tree::TILE_WIDTH + k as u64;
                    replay.apply_prepared(index, bytes, p).unwrap();
                    frontier.push(leaf_hash(bytes));
                }
            }
            assert_eq!(frontier.root(), cp.root);
        })
    });
    g.finish();
}

criterion_group!(benches, limit, durable_append, audit_replay, proofs);
criterion_main!(benches);
