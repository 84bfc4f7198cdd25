//! What every handler shares: the store, the sequencer, the verifier threads, the
//! limits, the request-body budget and the metrics; plus the bridges from async
//! handlers to the ledger's blocking world (`open_and_submit`, `submit`, `blocking`).

use crate::body::BodyBudget;
use crate::config::Limits;
use crate::metrics::Metrics;
use crate::problem::Problem;
use ledger::cases::Rules;
use ledger::envelope::{Envelope, Opened};
use ledger::receipt::Receipt;
use ledger::sequencer::{Config, Prior, Reply, Sequencer, Stats, Submitter};
use ledger::store::Store;
use ledger::verifier::Verifier;
use ledger::{Code, LedgerError};
use std::sync::{Arc, RwLock};
use std::time::Instant;
use tokio::sync::oneshot;

pub type Shared = Arc<AppState>;

/// One submitted item's outcome: a receipt and whether it was a duplicate.
pub type Outcome = Result<(Receipt, bool), LedgerError>;

/// When a single append left the verifier threads (handed to the sequencer, or
/// refused) and when its outcome was sent: the boundaries of its stages on other
/// threads ([`crate::metrics::SINGLE_STAGES`]).
#[derive(Debug, Clone, Copy)]
pub struct Handoffs {
    pub verified: Instant,
    pub answered: Instant,
}

pub struct AppState {
    pub store: Arc<Store>,
    /// `None` once shutdown has begun; appends are then refused as overloaded.
    sequencer: RwLock<Option<Sequencer>>,
    pub stats: Arc<Stats>,
    pub limits: Limits,
    /// The rules the sequencer enforces (the case route reports deadlines by them).
    pub rules: Rules,
    pub queue_capacity: usize,
    pub metrics: Metrics,
    /// Opens single envelopes from concurrent requests in shared batches.
    verifier: Verifier,
    /// What request bodies may hold in memory at once.
    pub budget: BodyBudget,
}

impl AppState {
    /// `config`: what the sequencer was started with; the verifier threads take its
    /// queue capacity and gathering wait too.
    pub fn new(sequencer: Sequencer, limits: Limits, config: Config) -> AppState {
        let store = sequencer.store().clone();
        AppState {
            store: store.clone(),
            stats: sequencer.stats().clone(),
            sequencer: RwLock::new(Some(sequencer)),
            limits,
            rules: config.rules,
            queue_capacity: config.queue_capacity,
            metrics: Metrics::default(),
            budget: BodyBudget::new(limits.max_inflight_bytes),
            verifier: Verifier::start(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
                config.queue_capacity,
                Some(store),
                config.gather_wait,
            ),
        }
    }

    /// Appends one envelope with one hand-off: the verifier threads check its
    /// signature (batched with other requests' envelopes), look up whether the log
    /// holds the event already (one read for the batch), and pass it straight to
    /// the sequencer, whose reply is the only thing this task waits for. A full
    /// queue, of either, is answered at once with `Overloaded`.
    pub async fn open_and_submit(&self, env: Envelope) -> Result<(Outcome, Handoffs), Problem> {
        let submitter = self.submitter()?;
        let (tx, rx) = oneshot::channel::<(Outcome, Handoffs)>();
        self.verifier.submit(
            vec![env],
            Box::new(move |mut verdicts, prior| {
                let verified = Instant::now();
                // On a verifier thread: never block here.
                let answer = move |o: Outcome| {
                    let answered = Instant::now();
                    // The requester may have gone; a retry gets the same receipt.
                    let _ = tx.send((o, Handoffs { verified, answered }));
                };
                match verdicts.pop() {
                    Some(Ok(opened)) => {
                        let reply: Reply = Box::new(move |mut r| {
                            answer(r.pop().unwrap_or_else(|| {
                                Err(LedgerError::new(
                                    Code::Storage,
                                    "the sequencer answered no result",
                                ))
                            }))
                        });
                        let items = vec![Ok(opened)];
                        if let Err((e, reply)) = submitter.try_submit_looked_up(items, prior, reply)
                        {
                            reply(vec![Err(e)]);
                        }
                    }
                    Some(Err(e)) => answer(Err(e)),
                    None => answer(Err(LedgerError::new(
                        Code::Storage,
                        "the verifier answered no verdict",
                    ))),
                }
            }),
        )?;
        rx.await.map_err(|_| {
            Problem::internal(
                "the verifier threads or the sequencer stopped before answering; check the \
                 node's log",
            )
        })
    }

    fn submitter(&self) -> Result<Submitter, Problem> {
        let guard = self.sequencer.read().unwrap_or_else(|e| e.into_inner());
        Ok(guard.as_ref().ok_or_else(shutting_down)?.submitter())
    }

    /// Hands items to the sequencer and waits for their outcomes without blocking a
    /// runtime thread. A full queue is answered at once with `Overloaded`.
    /// `prior`: the submitter's own lookup of which events the log holds
    /// ([`ledger::sequencer::look_up`], done off the runtime threads), or None.
    pub async fn submit(
        &self,
        items: Vec<Result<Opened, LedgerError>>,
        prior: Option<Prior>,
    ) -> Result<Vec<Outcome>, Problem> {
        let (tx, rx) = oneshot::channel();
        {
            let guard = self.sequencer.read().unwrap_or_else(|e| e.into_inner());
            let seq = guard.as_ref().ok_or_else(shutting_down)?;
            seq.submit_looked_up(
                items,
                prior,
                Box::new(move |r| {
                    // The requester may have gone (timeout, disconnect); its events
                    // are logged all the same and a retry gets the same receipt.
                    let _ = tx.send(r);
                }),
            )?;
        }
        rx.await.map_err(|_| {
            Problem::internal("the sequencer stopped before answering; check the node's log")
        })
    }

    /// Takes the sequencer out so it can be shut down (it finishes queued groups).
    pub fn take_sequencer(&self) -> Option<Sequencer> {
        self.sequencer
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

fn shutting_down() -> Problem {
    Problem::from(
        LedgerError::new(Code::Overloaded, "the node is shutting down")
            .expected("retry once the node is back (Retry-After)"),
    )
}

/// Runs blocking ledger work (RocksDB reads, signature checks) off the runtime threads.
pub async fn blocking<T, F>(f: F) -> Result<T, Problem>
where
    F: FnOnce() -> Result<T, Problem> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Problem::internal(format!("a worker task failed: {e}")))?
}
