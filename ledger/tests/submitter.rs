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
    // Hold the answering thread inside the first reply. The sequencer thread goes on
    // taking work until the answers it has handed over fill their channel; only then
    // does the queue fill. How many submissions that takes depends on how the
    // sequencer groups them, so submit until the first refusal (a bounded number).
    let (hold_tx, hold_rx) = channel::<()>();
    let (started_tx, started_rx) = channel::<()>();
    submitter
        .submit(
            refused(),
            Box::new(move |r| {
                assert_eq!(r[0].as_ref().unwrap_err().code, Code::InvalidEvent);
                started_tx.send(()).unwrap();
                // An Err here means the test itself already failed.
                let _ = hold_rx.recv();
            }),
        )
        .unwrap();
    started_rx.recv().unwrap();
    let (answered_tx, answered_rx) = channel::<String>();
    let labelled = |label: String| -> Reply {
        let tx = answered_tx.clone();
        Box::new(move |_| tx.send(label).unwrap())
    };
    let mut accepted = 0;
    let (e, reply) = loop {
        assert!(
            accepted < 64,
            "{accepted} submissions were all accepted while the answering thread was held"
        );
        match submitter.try_submit(refused(), labelled(format!("queued {accepted}"))) {
            Ok(()) => accepted += 1,
            Err(refusal) => break refusal,
        }
    };
    assert!(accepted >= 1, "the queue holds at least one submission");
    assert_eq!(e.code, Code::Overloaded, "{e}");
    assert!(e.detail.contains("queue is full"), "{e}");
    // The refused submission's own reply came back, and still answers (while every
    // accepted one is still held behind the first).
    reply(vec![Err(e)]);
    assert_eq!(answered_rx.recv().unwrap(), format!("queued {accepted}"));
    hold_tx.send(()).unwrap();
    for n in 0..accepted {
        assert_eq!(
            answered_rx.recv().unwrap(),
            format!("queued {n}"),
            "queued work is answered, in order"
        );
    }
    // A clone outlives the shutdown: the sequencer still stops, and the clone is
    // then refused with its reply handed back.
    let kept = submitter.clone();
    seq.shutdown();
    let (e, reply) = kept
        .try_submit(refused(), labelled("late".into()))
        .unwrap_err();
    assert_eq!(e.code, Code::Overloaded);
    assert!(e.detail.contains("shutting down"), "{e}");
    reply(vec![]);
    assert_eq!(answered_rx.recv().unwrap(), "late");
}
