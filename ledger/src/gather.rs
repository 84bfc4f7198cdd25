//! How the verifier threads and the sequencer take work off their queues: the first
//! item (waiting for it), then whatever else is already queued, up to a maximum.
//!
//! Under moderate load that gathers little: at 15,000 single appends a second the
//! sequencer's groups held ~9 events and each verifier batch a few, so every event
//! paid a share of a sync, a checkpoint signature and a small signature batch, and
//! the node spent ~83 µs of CPU per append against ~62 µs when fully loaded. So a
//! small batch may wait, once, a short while for more ([`Gather::wait`]): only while
//! work is arriving (the previous batch held more than one item), so an idle node
//! answers a lone request at once, and only when the batch is small
//! ([`SMALL_BATCH`]), so a loaded one never waits.

use std::sync::mpsc::Receiver;
use std::time::Duration;

/// A batch holding fewer items than this may wait for more.
pub const SMALL_BATCH: usize = 16;

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
    /// Items in the previous batch.
    previous: usize,
}

impl Gatherer {
    pub fn new(gather: Gather) -> Gatherer {
        Gatherer {
            gather,
            previous: 0,
        }
    }

    /// Whether a batch of `n` items waits for more: work is arriving and the batch
    /// is small.
    fn waits(&self, n: usize) -> bool {
        !self.gather.wait.is_zero() && self.previous > 1 && n < SMALL_BATCH.min(self.gather.max)
    }

    /// Blocks for the first item, then takes what else is queued until the batch
    /// holds `max` (each item counted by `size`); a small batch waits once
    /// ([`Gatherer::waits`]) and takes what came meanwhile. `None` once the queue
    /// is closed and empty.
    pub fn next<T>(&mut self, rx: &Receiver<T>, size: impl Fn(&T) -> usize) -> Option<Vec<T>> {
        let first = rx.recv().ok()?;
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
            std::thread::sleep(self.gather.wait);
            drain(&mut batch, &mut n);
        }
        self.previous = n;
        Some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

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

    /// Sends `first`, then `later` from another thread 100 ms on; returns what one
    /// batch took.
    fn batch_with_a_late_item(g: &mut Gatherer, first: &[u32], later: u32) -> Vec<u32> {
        let (tx, rx) = channel();
        for &i in first {
            tx.send(i).unwrap();
        }
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            tx.send(later).unwrap();
        });
        let batch = g.next(&rx, |_| 1).unwrap();
        late.join().unwrap();
        batch
    }

    #[test]
    fn a_small_batch_waits_for_more_only_while_work_is_arriving() {
        let mut g = gatherer(1_000);
        // A lone request on an idle consumer is taken at once: no wait.
        assert_eq!(batch_with_a_late_item(&mut g, &[1], 2), vec![1]);
        // The previous batch held one: still no wait.
        assert_eq!(batch_with_a_late_item(&mut g, &[3], 4), vec![3]);
        // Two at once: work is arriving, but this batch had nothing to wait for
        // before (its previous held one), so it does not wait either.
        assert_eq!(batch_with_a_late_item(&mut g, &[5, 6], 7), vec![5, 6]);
        // Now the previous held two: a small batch waits, and takes the late one.
        assert_eq!(batch_with_a_late_item(&mut g, &[8], 9), vec![8, 9]);
        // Without a wait configured, never.
        let mut g = gatherer(0);
        g.previous = 10;
        assert_eq!(batch_with_a_late_item(&mut g, &[1], 2), vec![1]);
    }

    #[test]
    fn a_batch_that_is_not_small_does_not_wait() {
        let mut g = gatherer(1_000);
        g.previous = 50;
        let queued: Vec<u32> = (0..SMALL_BATCH as u32).collect();
        assert_eq!(batch_with_a_late_item(&mut g, &queued, 99), queued);
        // And its size is what the next batch goes by.
        assert_eq!(g.previous, SMALL_BATCH);
    }
}
