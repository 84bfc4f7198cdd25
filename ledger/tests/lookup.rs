//! Batch submitters look their events up in the store themselves
//! (`sequencer::look_up`), off the sequencer's thread. A lookup taken before other
//! groups committed the same events must still find them: the sequencer adds what it
//! committed since, so an event is never logged twice.

use ed25519_dalek::SigningKey;
use ledger::envelope::{open_all, Envelope};
use ledger::sequencer::{look_up, Config, Sequencer};
use ledger::store::Store;
use ledger::types::KeyId;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;

const ADMIN: [u8; 32] = [1; 32];
const BRAND: [u8; 32] = [2; 32];

fn scan(serial: u64) -> Envelope {
    let p = serde_json::to_vec(&serde_json::json!({
        "kind": "scan", "claimed_at": "2026-01-01T00:00:00Z",
        "body": {"product_id": "04012345678901", "serial": format!("SN-{serial}"), "marking": "qr",
                 "result": "genuine", "location": {"country": "DE"}, "device": "test"}
    }))
    .unwrap();
    Envelope::sign(&p, &SigningKey::from_bytes(&BRAND))
}

fn setup() -> (tempfile::TempDir, Arc<Store>, Sequencer) {
    let dir = tempfile::tempdir().unwrap();
    let admin = SigningKey::from_bytes(&ADMIN);
    let store = Arc::new(
        Store::init(
            dir.path(),
            "custody.test/lookup",
            KeyId(admin.verifying_key().to_bytes()),
        )
        .unwrap(),
    );
    let seq = Sequencer::start(store.clone(), Config::default());
    let brand = SigningKey::from_bytes(&BRAND);
    let reg = serde_json::to_vec(&serde_json::json!({
        "kind": "actor.register", "claimed_at": "2026-01-01T00:00:00Z",
        "body": {"key": hex::encode(brand.verifying_key().as_bytes()), "name": "t", "org": "T", "roles": ["brand"]}
    }))
    .unwrap();
    let r = seq
        .append_blocking(open_all(vec![Envelope::sign(&reg, &admin)]))
        .unwrap();
    assert!(r[0].is_ok(), "{:?}", r[0]);
    (dir, store, seq)
}

/// Submits with a lookup and waits: (index, duplicate) per event.
fn submit(
    seq: &Sequencer,
    envs: Vec<Envelope>,
    prior: Option<ledger::sequencer::Prior>,
) -> Vec<(u64, bool)> {
    let (tx, rx) = sync_channel(1);
    seq.submit_looked_up(
        open_all(envs),
        prior,
        Box::new(move |r| tx.send(r).unwrap()),
    )
    .unwrap();
    rx.recv()
        .unwrap()
        .into_iter()
        .map(|r| {
            let (receipt, dup) = r.expect("accepted");
            (receipt.index, dup)
        })
        .collect()
}

#[test]
fn a_stale_lookup_still_finds_events_committed_after_it() {
    let (_dir, store, seq) = setup();
    let first: Vec<Envelope> = (0..20).map(scan).collect();
    // Looked up before anything of them is in the log…
    let stale = look_up(&store, &open_all(first.clone())).expect("lookup");
    // …then half of them are committed by another request.
    let committed = submit(&seq, first[..10].to_vec(), None);
    assert!(committed.iter().all(|(_, dup)| !dup));
    let size = store.size();
    // The stale lookup saw none of them; the sequencer knows better.
    let again = submit(&seq, first.clone(), Some(stale));
    assert_eq!(
        &again[..10],
        &committed
            .iter()
            .map(|(i, _)| (*i, true))
            .collect::<Vec<_>>()[..]
    );
    assert!(again[10..].iter().all(|(_, dup)| !dup), "{again:?}");
    assert_eq!(
        store.size(),
        size + 10,
        "only the ten new events were logged"
    );
    // A fresh lookup finds all twenty in the store itself.
    let fresh = look_up(&store, &open_all(first.clone())).expect("lookup");
    let third = submit(&seq, first, Some(fresh));
    assert!(third.iter().all(|(_, dup)| *dup));
    assert_eq!(
        &third[..],
        &again.iter().map(|(i, _)| (*i, true)).collect::<Vec<_>>()[..]
    );
    assert_eq!(store.size(), size + 10);
}

#[test]
fn a_lookup_with_repeats_and_bad_envelopes_keeps_every_item_in_place() {
    let (_dir, store, seq) = setup();
    let mut envs: Vec<Envelope> = (100..105).map(scan).collect();
    envs.push(envs[1].clone()); // the same event twice in one batch
    let mut bad = scan(200);
    bad.signatures[0].sig =
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [0u8; 64]);
    envs.insert(2, bad);
    let items = open_all(envs.clone());
    assert!(items[2].is_err());
    let prior = look_up(&store, &items);
    let (tx, rx) = sync_channel(1);
    seq.submit_looked_up(items, prior, Box::new(move |r| tx.send(r).unwrap()))
        .unwrap();
    let r = rx.recv().unwrap();
    assert_eq!(r.len(), 7);
    assert!(
        r[2].is_err(),
        "the bad envelope keeps its place and its error"
    );
    let ok: Vec<(u64, bool)> = r
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 2)
        .map(|(_, x)| {
            let (receipt, dup) = x.as_ref().unwrap();
            (receipt.index, *dup)
        })
        .collect();
    // Five new events, then the repeat answered with the second one's receipt.
    assert!(ok[..5].iter().all(|(_, dup)| !dup));
    assert_eq!(ok[5], (ok[1].0, true));
}
