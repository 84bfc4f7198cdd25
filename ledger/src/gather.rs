//! How the verifier threads and the sequencer take work off their queues: the first
//! item (waiting for it), then whatever else is already queued, up to a maximum.
//!
//! Under moderate load that gathers little: at 15,000 single appends a second the
//! sequencer's groups held ~9 events and each verifier batch a few, so every event
//! paid a share of a sync, a checkpoint signature and a small signature batch, and
//! the node spent ~83 µs of CPU per append against ~62 µs when fully loaded. So a
//! small batch may wait, once, a short while for more ([`Gather::wait`]): only while
//! requests are arriving one after another (the previous batch held more than one
//! request, and this one's first was already queued or came within
//! [`IDLE_AFTER_WAITS`] waits), so an idle node answers a lone request at once; and
//! only when the batch is small ([`SMALL_BATCH`]), so a loaded one never waits.

use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

/// A batch holding fewer than this (counted by size: events) may wait for more.
pub const SMALL_BATCH: usize = 16;

/// A first request that took longer than this many waits to come finds the
/// consumer idle: its batch does not wait.
pub const IDLE_AFTER_WAITS: u32 = 10;

/// What one consumer of a queue takes per batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gather {
    /// Most items (counted by their size) in one batch.
    pub max: usize,
    /// How long a small batch waits for more while work is arriving (zero: never).
    pub wait: Duration,
}

/// One consumer's gathering: what it took last time decides whether it waits.
#[derive(Debug)]
pub struct Gatherer {
    gather: Gather,
    /// Requests (not their sizes) in the previous batch; 0 once the consumer has
    /// been idle.
    previous: usize,
}

impl Gatherer {
    pub fn new(gather: Gather) -> Gatherer {
        Gatherer {
            gather,
            previous: 0,
        }
    }

    /// Whether a batch of size `n` waits for more: requests are arriving and the
    /// batch is small.
    fn waits(&self, n: usize) -> bool {
        !self.gather.wait.is_zero() && self.previous > 1 && n < SMALL_BATCH.min(self.gather.max)
    }

    /// Blocks for the first item, then takes what else is queued until the batch
    /// holds `max` (each item counted by `size`); a small batch waits once
    /// ([`Gatherer::waits`]) and takes what came meanwhile. `None` once the queue
    /// is closed and empty.
    pub fn next<T>(&mut self, rx: &Receiver<T>, size: impl Fn(&T) -> usize) -> Option<Vec<T>> {
        self.take(rx, size, std::thread::sleep)
    }

    /// [`Gatherer::next`], with the wait done by `sleep`.
    fn take<T>(
        &mut self,
        rx: &Receiver<T>,
        size: impl Fn(&T) -> usize,
        sleep: impl FnOnce(Duration),
    ) -> Option<Vec<T>> {
        let first = match rx.try_recv() {
            Ok(item) => item,
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) => {
                let asked = Instant::now();
                let item = rx.recv().ok()?;
                if asked.elapsed() > self.gather.wait * IDLE_AFTER_WAITS {
                    self.previous = 0;
                }
                item
            }
        };
        let mut n = size(&first);
        let mut batch = vec![first];
        let drain = |batch: &mut Vec<T>, n: &mut usize| {
            while *n < self.gather.max {
                match rx.try_recv() {
                    Ok(item) => {
                        *n += size(&item);
                        batch.push(item);
                    }
                    Err(_) => break,
                }
            }
        };
        drain(&mut batch, &mut n);
        if self.waits(n) {
            sleep(self.gather.wait);
            drain(&mut batch, &mut n);
        }
        self.previous = batch.len();
        Some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::{channel, Sender};

    fn gatherer(wait_ms: u64) -> Gatherer {
        Gatherer::new(Gather {
            max: 100,
            wait: Duration::from_millis(wait_ms),
        })
    }

    #[test]
    fn a_batch_takes_what_is_queued_up_to_its_maximum() {
        let (tx, rx) = channel();
        for i in 0..10 {
            tx.send(i).unwrap();
        }
        let mut g = Gatherer::new(Gather {
            max: 4,
            wait: Duration::ZERO,
        });
        // Sizes count: items of size 2 fill a batch of 4 with two.
        assert_eq!(g.next(&rx, |_| 2), Some(vec![0, 1]));
        assert_eq!(g.next(&rx, |_| 1), Some(vec![2, 3, 4, 5]));
        drop(tx);
        assert_eq!(g.next(&rx, |_| 1), Some(vec![6, 7, 8, 9]));
        assert_eq!(g.next(&rx, |_| 1), None, "closed and empty");
    }

    /// One batch from a queue holding `queued` (each item of size `size`), whose
    /// wait, if it waits, is the moment `late` arrives.
    fn batch(g: &mut Gatherer, queued: &[u32], size: usize, late: u32) -> (Vec<u32>, bool) {
        let (tx, rx) = channel();
        for &i in queued {
            tx.send(i).unwrap();
        }
        let mut waited = false;
        let wait = g.gather.wait;
        let sleep = |d: Duration| {
            assert_eq!(d, wait);
            waited = true;
            tx.send(late).unwrap();
        };
        let got = g.take(&rx, |_| size, sleep).unwrap();
        (got, waited)
    }

    #[test]
    fn a_small_batch_waits_for_more_only_while_requests_are_arriving() {
        let mut g = gatherer(1);
        // A lone request on a fresh consumer is taken at once: no wait.
        assert_eq!(batch(&mut g, &[1], 1, 2), (vec![1], false));
        // The previous batch held one request: still no wait.
        assert_eq!(batch(&mut g, &[3], 1, 4), (vec![3], false));
        // Two at once: requests are arriving, but this batch's previous held one.
        assert_eq!(batch(&mut g, &[5, 6], 1, 7), (vec![5, 6], false));
        // Now the previous held two: a small batch waits, and takes what came.
        assert_eq!(batch(&mut g, &[8], 1, 9), (vec![8, 9], true));
        // Without a wait configured, never.
        let mut g = gatherer(0);
        g.previous = 10;
        assert_eq!(batch(&mut g, &[1], 1, 2), (vec![1], false));
    }

    #[test]
    fn requests_are_counted_by_number_for_arriving_and_by_size_for_small() {
        let mut g = gatherer(1);
        // One client sending batches of 5 events one after another: each batch is
        // one request, so the consumer is not seen as busy and never waits.
        for k in 0..3 {
            assert_eq!(batch(&mut g, &[k], 5, 99), (vec![k], false));
        }
        // Two requests of 8 events: 16, not small; then a request of 1 waits.
        assert_eq!(batch(&mut g, &[1, 2], 8, 99), (vec![1, 2], false));
        assert_eq!(g.previous, 2);
        assert_eq!(batch(&mut g, &[3], 1, 4), (vec![3, 4], true));
        // A batch of SMALL_BATCH single events is not small either.
        g.previous = 50;
        let queued: Vec<u32> = (0..SMALL_BATCH as u32).collect();
        assert_eq!(batch(&mut g, &queued, 1, 99), (queued, false));
    }

    /// Sends `item` on `tx` after `after`, from another thread.
    fn send_later(tx: Sender<u32>, item: u32, after: Duration) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            std::thread::sleep(after);
            tx.send(item).unwrap();
        })
    }

    #[test]
    fn a_request_after_an_idle_spell_is_taken_at_once() {
        // 1 ms waits: idle after 10 ms. The previous batch held two requests, but
        // the next comes only after 50 ms (a lower bound: it cannot come sooner).
        let mut g = gatherer(1);
        g.previous = 2;
        let (tx, rx) = channel();
        let later = send_later(tx.clone(), 7, Duration::from_millis(50));
        let got = g
            .take(&rx, |_| 1, |_| panic!("waited after an idle spell"))
            .unwrap();
        later.join().unwrap();
        assert_eq!(got, vec![7]);
        // Had the request been queued already, the batch would have waited.
        g.previous = 2;
        tx.send(8).unwrap();
        let mut waited = false;
        let got = g.take(&rx, |_| 1, |_| waited = true).unwrap();
        assert_eq!((got, waited), (vec![8], true));
    }
}
