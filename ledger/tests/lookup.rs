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

/// Single-event requests are looked up by the verifier thread that opens them, one
/// read for everything it gathered: each caller gets its own part of that lookup,
/// and the sequencer, trusting it, still logs every event once and answers a repeat
/// with the original receipt.
#[test]
fn verifier_threads_look_up_what_they_open_for_each_caller() {
    use ledger::verifier::Verifier;
    use std::collections::HashMap;
    use std::sync::atomic::Ordering::Relaxed;
    let (_dir, store, seq) = setup();
    let old: HashMap<u64, u64> = (300..310)
        .zip(submit(&seq, (300..310).map(scan).collect(), None))
        .map(|(serial, (index, _))| (serial, index))
        .collect();
    let size = store.size();
    let own_reads = seq.stats().sequencer_lookups.load(Relaxed);
    let v = Verifier::start(2, 1024, Some(store.clone()), std::time::Duration::ZERO);
    let (tx, rx) = std::sync::mpsc::channel();
    // 60 callers of 1–3 envelopes: events already logged (300..310), new ones
    // (400..420, most sent by several callers), and now and then a bad signature
    // (None).
    let mut sent: Vec<Vec<Option<u64>>> = Vec::new();
    for c in 0..60u64 {
        let serials: Vec<u64> = (0..c % 3 + 1)
            .map(|i| c * 3 + i)
            .map(|n| {
                if n % 4 == 0 {
                    300 + n % 10
                } else {
                    400 + n % 20
                }
            })
            .collect();
        let mut envs: Vec<Envelope> = serials.iter().map(|&n| scan(n)).collect();
        let mut expect: Vec<Option<u64>> = serials.into_iter().map(Some).collect();
        if c % 11 == 5 {
            envs[0].signatures[0].sig =
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [0u8; 64]);
            expect[0] = None;
        }
        sent.push(expect);
        let (tx, submitter) = (tx.clone(), seq.submitter());
        v.submit(
            envs,
            Box::new(move |verdicts, prior| {
                assert!(
                    prior.is_some(),
                    "caller {c}: a store was given, so a lookup"
                );
                let reply = Box::new(move |r| tx.send((c, r)).unwrap());
                if let Err((e, _)) = submitter.try_submit_looked_up(verdicts, prior, reply) {
                    panic!("caller {c}: refused: {e}");
                }
            }),
        )
        .unwrap();
    }
    drop(tx);
    let mut answers: Vec<_> = rx.iter().collect();
    answers.sort_by_key(|(c, _)| *c);
    assert_eq!(answers.len(), 60);
    // serial → (index, times answered as new)
    let mut new: HashMap<u64, (u64, usize)> = HashMap::new();
    for ((c, results), expect) in answers.into_iter().zip(&sent) {
        assert_eq!(results.len(), expect.len(), "caller {c}");
        for (r, serial) in results.iter().zip(expect) {
            let Some(serial) = serial else {
                assert!(r.is_err(), "caller {c}: the bad signature is refused");
                continue;
            };
            let (receipt, dup) = r.as_ref().expect("accepted");
            if let Some(&index) = old.get(serial) {
                assert_eq!((receipt.index, *dup), (index, true), "caller {c}: {serial}");
                continue;
            }
            let seen = new.entry(*serial).or_insert((receipt.index, 0));
            assert_eq!(receipt.index, seen.0, "caller {c}: one index for {serial}");
            seen.1 += usize::from(!dup);
        }
    }
    let distinct: std::collections::HashSet<u64> = sent
        .iter()
        .flatten()
        .flatten()
        .filter(|s| **s >= 400)
        .copied()
        .collect();
    assert!(distinct.len() >= 10, "the test sends enough new events");
    assert_eq!(new.len(), distinct.len());
    assert!(
        new.values().all(|&(_, n)| n == 1),
        "each answered new once: {new:?}"
    );
    assert_eq!(
        store.size(),
        size + distinct.len() as u64,
        "every new event logged once"
    );
    assert_eq!(
        seq.stats().sequencer_lookups.load(Relaxed),
        own_reads,
        "the sequencer read nothing itself"
    );
}
