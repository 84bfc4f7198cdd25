//! The sequencer's `Submitter`: a refusal hands the reply back (so a caller on
//! another thread can still answer through it), and shutdown ends the sequencer
//! however many handles are still held.

use ledger::error::{Code, LedgerError};
use ledger::sequencer::{Config, Reply, Sequencer};
use ledger::store::Store;
use ledger::types::KeyId;
use std::sync::mpsc::channel;
use std::sync::Arc;

fn refused() -> Vec<ledger::error::Result<ledger::envelope::Opened>> {
    vec![Err(LedgerError::new(Code::InvalidEvent, "not an event"))]
}

#[test]
fn a_refusal_hands_the_reply_back_and_shutdown_ends_with_handles_held() {
    let dir = tempfile::tempdir().unwrap();
    let admin = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
    let store = Arc::new(
        Store::init(
            dir.path(),
            "custody.test/submitter",
            KeyId(admin.to_bytes()),
        )
        .unwrap(),
    );
    let mut seq = Sequencer::start(
        store,
        Config {
            queue_capacity: 1,
            ..Config::default()
        },
    );
    let submitter = seq.submitter();
    // Hold the sequencer thread inside the first reply, so the queue fills.
    let (hold_tx, hold_rx) = channel::<()>();
    let (started_tx, started_rx) = channel::<()>();
    submitter
        .submit(
            refused(),
            Box::new(move |r| {
                assert_eq!(r[0].as_ref().unwrap_err().code, Code::InvalidEvent);
                started_tx.send(()).unwrap();
                hold_rx.recv().unwrap();
            }),
        )
        .unwrap();
    started_rx.recv().unwrap();
    let (answered_tx, answered_rx) = channel::<&'static str>();
    let queued = answered_tx.clone();
    submitter
        .submit(refused(), Box::new(move |_| queued.send("queued").unwrap()))
        .unwrap();
    let mine = answered_tx.clone();
    let reply: Reply = Box::new(move |_| mine.send("handed back").unwrap());
    let (e, reply) = submitter.try_submit(refused(), reply).unwrap_err();
    assert_eq!(e.code, Code::Overloaded, "{e}");
    reply(vec![Err(e)]);
    assert_eq!(answered_rx.recv().unwrap(), "handed back");
    hold_tx.send(()).unwrap();
    assert_eq!(
        answered_rx.recv().unwrap(),
        "queued",
        "queued work is answered"
    );
    // A clone outlives the shutdown: the sequencer still stops, and the clone is
    // then refused with its reply handed back.
    let kept = submitter.clone();
    seq.shutdown();
    let late = answered_tx.clone();
    let (e, reply) = kept
        .try_submit(refused(), Box::new(move |_| late.send("late").unwrap()))
        .unwrap_err();
    assert_eq!(e.code, Code::Overloaded);
    assert!(e.detail.contains("shutting down"), "{e}");
    reply(vec![]);
    assert_eq!(answered_rx.recv().unwrap(), "late");
}
