//! A pool of verifier threads that opens envelopes from many callers in shared
//! batches (spec/envelope.md §Verification).
//!
//! Single-event requests arrive one envelope at a time; checked alone, each costs
//! a full signature verification and a hand-off to a thread of its own. The pool
//! gathers whatever is waiting (up to [`MAX_GATHER`] envelopes; [`crate::gather`])
//! into one batch equation, one thread per core, and answers each caller with its
//! own verdicts.
//! Given the store, a thread also looks up in one read which of the gathered
//! events the log already holds ([`look_up`]), so the sequencer's one thread need
//! not (spec/storage.md §Committing).

use crate::envelope::{open_here, Envelope, Opened};
use crate::error::{Code, LedgerError, Result};
use crate::gather::{Gather, Gatherer};
use crate::sequencer::{look_up, Prior};
use crate::store::Store;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Most envelopes one thread gathers into one batch.
pub const MAX_GATHER: usize = 512;

/// Called once with one verdict per envelope, in order, and the lookup of those
/// that opened (None without a store, or if the read failed).
pub type Reply = Box<dyn FnOnce(Vec<Result<Opened>>, Option<Prior>) + Send>;

struct Work {
    envelopes: Vec<Envelope>,
    reply: Reply,
}

pub struct Verifier {
    tx: Option<SyncSender<Work>>,
    threads: Vec<JoinHandle<()>>,
}

impl Verifier {
    /// Starts `threads` verifier threads (at least one) behind a queue of
    /// `capacity` requests. With `store`, each gathered batch is also looked up in
    /// it after opening. `wait`: how long a small batch waits for more under load
    /// ([`crate::gather`]; zero: never).
    pub fn start(
        threads: usize,
        capacity: usize,
        store: Option<Arc<Store>>,
        wait: Duration,
    ) -> Verifier {
        let (tx, rx) = sync_channel::<Work>(capacity.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let threads = (0..threads.max(1))
            .map(|i| {
                let rx = rx.clone();
                let store = store.clone();
                std::thread::Builder::new()
                    .name(format!("custody-verify-{i}"))
                    .spawn(move || run(&rx, store.as_deref(), wait))
                    .expect("spawning a verifier thread")
            })
            .collect();
        Verifier {
            tx: Some(tx),
            threads,
        }
    }

    /// Queues envelopes for opening. Refuses with `Overloaded` when the queue is full.
    pub fn submit(&self, envelopes: Vec<Envelope>, reply: Reply) -> Result<()> {
        let tx = self.tx.as_ref().ok_or_else(|| {
            LedgerError::new(Code::Overloaded, "the node is shutting down")
                .expected("retry on the restarted node")
        })?;
        tx.try_send(Work { envelopes, reply }).map_err(|e| match e {
            TrySendError::Full(_) => {
                LedgerError::new(Code::Overloaded, "the signature-check queue is full")
                    .expected("retry after a short wait (Retry-After)")
            }
            TrySendError::Disconnected(_) => {
                LedgerError::new(Code::Storage, "the verifier threads stopped")
                    .expected("restart the node; check its log for the cause")
            }
        })
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        // Closing the queue lets every thread finish what it holds and return.
        self.tx.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn run(rx: &Mutex<Receiver<Work>>, store: Option<&Store>, wait: Duration) {
    let mut gatherer = Gatherer::new(Gather {
        max: MAX_GATHER,
        wait,
    });
    loop {
        // Take the first waiting request (blocking), then whatever else is already
        // queued (a small batch under load waits for more first), and release the
        // queue for the other threads before verifying. The lock is held through
        // that wait on purpose: what arrives meanwhile is the batch's to take, and
        // another thread taking it would make a second small batch, each paying its
        // own batch equation and lookup. The other threads wait meanwhile (at most
        // the wait).
        let batch = {
            let rx = rx.lock().unwrap_or_else(|e| e.into_inner());
            match gatherer.next(&rx, |w: &Work| w.envelopes.len()) {
                Some(batch) => batch,
                None => return,
            }
        };
        let counts: Vec<usize> = batch.iter().map(|w| w.envelopes.len()).collect();
        let mut replies = Vec::with_capacity(batch.len());
        let mut all = Vec::with_capacity(counts.iter().sum());
        for w in batch {
            all.extend(w.envelopes);
            replies.push(w.reply);
        }
        let verdicts = open_here(all);
        let mut priors = store
            .and_then(|s| look_up(s, &verdicts))
            .map(|p| p.split(&counts).into_iter());
        let mut verdicts = verdicts.into_iter();
        for (reply, n) in replies.into_iter().zip(counts) {
            let prior = priors.as_mut().and_then(|p| p.next());
            reply(verdicts.by_ref().take(n).collect(), prior);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::PAYLOAD_TYPE;
    use ed25519_dalek::SigningKey;

    fn envelope(n: u8) -> Envelope {
        let payload = format!(
            r#"{{"kind":"withdrawal","case":"c-{n}","claimed_at":"2026-11-01T10:00:00Z","body":{{"reason":"settled"}}}}"#
        );
        Envelope::sign(payload.as_bytes(), &SigningKey::from_bytes(&[n; 32]))
    }

    #[test]
    fn every_caller_gets_its_own_verdicts_in_order() {
        let v = Verifier::start(2, 1024, None, Duration::ZERO);
        let (tx, rx) = std::sync::mpsc::channel();
        for caller in 0..50u8 {
            let mut envs: Vec<Envelope> = (0..(caller % 4 + 1))
                .map(|i| envelope(caller * 4 + i + 1))
                .collect();
            if caller % 7 == 3 {
                envs[0].payload_type = "text/plain".into();
            }
            if caller % 5 == 2 {
                let other = envelope(250);
                envs.last_mut().unwrap().signatures = other.signatures;
            }
            let expected: Vec<bool> = envs.iter().cloned().map(|e| e.open().is_ok()).collect();
            let tx = tx.clone();
            v.submit(
                envs,
                Box::new(move |r, prior| {
                    assert!(prior.is_none(), "no store, no lookup");
                    let got: Vec<bool> = r.iter().map(|x| x.is_ok()).collect();
                    tx.send((caller, expected, got)).unwrap();
                }),
            )
            .unwrap();
        }
        drop(tx);
        let answers: Vec<_> = rx.iter().collect();
        assert_eq!(answers.len(), 50);
        for (caller, expected, got) in answers {
            assert_eq!(expected, got, "caller {caller}");
        }
        assert_eq!(PAYLOAD_TYPE, envelope(1).payload_type);
    }

    #[test]
    fn a_full_queue_is_refused_as_overloaded() {
        // One thread, held busy by a reply that waits; capacity one.
        let v = Verifier::start(1, 1, None, Duration::ZERO);
        let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        v.submit(
            vec![envelope(1)],
            Box::new(move |_, _| {
                started_tx.send(()).unwrap();
                hold_rx.recv().unwrap();
            }),
        )
        .unwrap();
        started_rx.recv().unwrap();
        v.submit(vec![envelope(2)], Box::new(|_, _| {})).unwrap();
        let e = v
            .submit(vec![envelope(3)], Box::new(|_, _| {}))
            .unwrap_err();
        assert_eq!(e.code, Code::Overloaded);
        hold_tx.send(()).unwrap();
    }
}
