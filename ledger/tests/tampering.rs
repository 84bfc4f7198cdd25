//! A store altered on disk — entry bytes, stored hashes, the checkpoint — is
//! refused when it is opened, or named by index by the full check
//! (`Store::verify_all`, `custody-node check`).

use ed25519_dalek::SigningKey;
use ledger::envelope::{open_all, Envelope};
use ledger::sequencer::{Config, Sequencer};
use ledger::store::Store;
use ledger::types::KeyId;
use std::path::Path;
use std::sync::Arc;

/// A log of a registration and `n` scans, stopped as a node stops: its newest ids
/// written into the de-duplication index's tables.
fn build(dir: &Path, n: usize) {
    build_and_stop(dir, n, true);
}

/// With `clean` false, stopped as by a crash: the ids of the entries since the last
/// table of the de-duplication index are read again from the entries on open.
fn build_and_stop(dir: &Path, n: usize, clean: bool) {
    let admin = SigningKey::from_bytes(&[1; 32]);
    let brand = SigningKey::from_bytes(&[2; 32]);
    let store = Arc::new(
        Store::init(
            dir,
            "custody.example/tamper",
            KeyId(admin.verifying_key().to_bytes()),
        )
        .unwrap(),
    );
    let mut seq = Sequencer::start(store.clone(), Config::default());
    let reg = serde_json::to_vec(&serde_json::json!({"kind": "actor.register", "claimed_at": "2026-01-01T00:00:00Z",
        "body": {"key": hex::encode(brand.verifying_key().as_bytes()), "name": "b", "org": "B", "roles": ["brand"]}}))
    .unwrap();
    seq.append_blocking(open_all(vec![Envelope::sign(&reg, &admin)]))
        .unwrap();
    let envs = (0..n)
        .map(|i| {
            let p = serde_json::to_vec(&serde_json::json!({"kind": "scan", "claimed_at": "2026-01-01T00:00:00Z",
                "body": {"product_id": "p", "serial": format!("s{i}"), "marking": "qr", "result": "genuine",
                         "location": {"country": "FR"}, "device": "d"}}))
            .unwrap();
            Envelope::sign(&p, &brand)
        })
        .collect();
    assert!(seq
        .append_blocking(open_all(envs))
        .unwrap()
        .iter()
        .all(|r| r.is_ok()));
    seq.shutdown();
    if clean {
        store.flush_memtables().unwrap();
    }
}

/// Opens the raw database (as an attacker with disk access would) and applies `f`.
fn tamper(dir: &Path, f: impl FnOnce(&rocksdb::DB)) {
    // Every column family must be opened: those the store has, whatever its layout.
    let path = dir.join("db");
    let families = rocksdb::DB::list_cf(&rocksdb::Options::default(), &path).unwrap();
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &path, families).unwrap();
    f(&db);
}

/// Entries (`e` keys) live in the family `entries`, full tiles of tree hashes (`t`)
/// in `hashes`, the upper levels' hashes (`u`) in the default family.
fn get(db: &rocksdb::DB, family: &str, k: Vec<u8>) -> Vec<u8> {
    db.get_cf(db.cf_handle(family).unwrap(), k)
        .unwrap()
        .unwrap()
}

fn put(db: &rocksdb::DB, family: &str, k: Vec<u8>, v: impl AsRef<[u8]>) {
    db.put_cf(db.cf_handle(family).unwrap(), k, v).unwrap();
}

fn key(prefix: u8, n: u64) -> Vec<u8> {
    let mut k = vec![prefix];
    k.extend_from_slice(&n.to_be_bytes());
    k
}

fn err(dir: &Path) -> String {
    Store::open(dir).map(|_| ()).unwrap_err().to_string()
}

/// Opens a store that must open (`why`) and answers what its full check reports.
fn full_check_error(dir: &Path, why: &str) -> String {
    let store = Store::open(dir).expect(why);
    store.verify_all(&mut |_, _| {}).unwrap_err().to_string()
}

#[test]
fn an_honest_store_passes_the_full_check() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 50);
    let store = Store::open(dir.path()).unwrap();
    let mut calls = 0;
    store.verify_all(&mut |_, _| calls += 1).unwrap();
    assert!(calls > 0, "the full check reports progress");
}

/// 300 scans fill tile 0 (entries 0..256), whose stored hashes the full check
/// compares with its entries; the partial tile after it is hashed again on open.
#[test]
fn an_altered_entry_in_the_middle_is_named_by_the_full_check() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 300);
    tamper(dir.path(), |db| {
        let mut e = get(db, "entries", key(b'e', 17));
        let pos = e.len() - 5;
        e[pos] ^= 1;
        put(db, "entries", key(b'e', 17), e);
    });
    let e = full_check_error(dir.path(), "a middle entry is only found by the full check");
    assert!(
        e.contains("entry 17") && e.contains("the entry was altered"),
        "{e}"
    );
}

/// After a crash the open reads the ids of the entries not yet in the index's
/// tables again from the entries: one that is no longer an entry is named.
#[test]
fn an_unreadable_entry_after_a_crash_is_refused_on_open() {
    let dir = tempfile::tempdir().unwrap();
    build_and_stop(dir.path(), 300, false);
    tamper(dir.path(), |db| {
        let mut e = get(db, "entries", key(b'e', 17));
        e.truncate(e.len() - 5);
        put(db, "entries", key(b'e', 17), e);
    });
    let e = err(dir.path());
    assert!(
        e.contains("entry 17") && e.contains("not a Custody entry"),
        "{e}"
    );
}

/// An event id missing from the de-duplication index (an event sent again would
/// be logged twice) is named by the full check, with its entry.
#[test]
fn a_lost_de_duplication_key_is_named_by_the_full_check() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 300);
    tamper(dir.path(), |db| {
        let id = ledger::replay::logged_event_id(&get(db, "entries", key(b'e', 17))).unwrap();
        let mut k = vec![b'd'];
        k.extend_from_slice(&id.0);
        db.delete_cf(db.cf_handle("ids").unwrap(), k).unwrap();
    });
    let e = full_check_error(
        dir.path(),
        "a lost index key is only found by the full check",
    );
    assert!(
        e.contains("de-duplication index holds nothing for the event of entry 17"),
        "{e}"
    );
}

#[test]
fn an_altered_stored_leaf_hash_is_named_by_the_full_check() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 300);
    tamper(dir.path(), |db| {
        let mut t = get(db, "hashes", key(b't', 0));
        // Tile 0's hashes in stored-hash order: entry 17's leaf hash is the 33rd.
        let at = tlog_tiles::stored_hash_index(0, 17) as usize * 32;
        t[at] ^= 1;
        put(db, "hashes", key(b't', 0), t);
    });
    let e = full_check_error(dir.path(), "a tile off the root's path opens");
    assert!(
        e.contains("entry 17") && e.contains("the tile's stored hash was altered"),
        "{e}"
    );
}

/// The last entries (the partial tile) are hashed again on open: an altered one
/// changes the root, and the store is refused, naming the entry (its leaf hash is
/// not the one indexed for it).
#[test]
fn an_altered_last_entry_is_refused_on_open() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 10);
    let size = Store::open(dir.path()).unwrap().size();
    tamper(dir.path(), |db| {
        let mut e = get(db, "entries", key(b'e', size - 1));
        e[20] ^= 1;
        put(db, "entries", key(b'e', size - 1), e);
    });
    let e = err(dir.path());
    assert!(
        e.contains(&format!("entry {} does not hash", size - 1)) && e.contains("altered"),
        "{e}"
    );
}

#[test]
fn an_altered_tree_hash_is_refused_on_open() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 300);
    tamper(dir.path(), |db| {
        // The hash of tile 0 (level 8, 0) is part of every root of 256 or more.
        db.put([&b"u\x08"[..], &0u64.to_be_bytes()].concat(), [0u8; 32])
            .unwrap();
    });
    assert!(err(dir.path()).contains("root"), "{}", err(dir.path()));
}

#[test]
fn an_altered_checkpoint_is_refused_on_open() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 10);
    let size = Store::open(dir.path()).unwrap().size();
    tamper(dir.path(), |db| {
        let note = String::from_utf8(db.get(key(b'c', size)).unwrap().unwrap()).unwrap();
        let forged = note.replacen(&format!("\n{size}\n"), &format!("\n{}\n", size + 1), 1);
        db.put(key(b'c', size), forged).unwrap();
    });
    assert!(
        err(dir.path()).contains("does not verify"),
        "{}",
        err(dir.path())
    );
}

#[test]
fn an_entry_beyond_the_checkpoint_is_refused_on_open() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 10);
    let size = Store::open(dir.path()).unwrap().size();
    tamper(dir.path(), |db| put(db, "entries", key(b'e', size), b"{}"));
    assert!(
        err(dir.path()).contains("beyond the checkpoint"),
        "{}",
        err(dir.path())
    );
}
