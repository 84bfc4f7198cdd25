//! The sequencer: the one writer that orders the log (DESIGN.md §The write path).
//!
//! Callers open envelopes (signature checks run in the caller's thread, in parallel,
//! before ordering) and hand them to [`Sequencer::submit`]. The sequencer thread
//! drains its bounded queue into a group, judges each event against the log state
//! (roles, refs, due process) in order, commits the group as ONE synced RocksDB write
//! batch with ONE checkpoint signature, and only then answers every waiter: a
//! second thread builds the group's receipts and answers, while this one judges and
//! commits the next group. A refused event gets its error and never blocks or
//! alters the others.

use crate::cases::{CaseState, Rules};
use crate::checkpoint::SignedCheckpoint;
use crate::entry::{self, format_time};
use crate::envelope::Opened;
use crate::error::{Code, LedgerError, Result};
use crate::gather::{Gather, Gatherer};
use crate::replay::{judge, LogView};
use crate::roles::Actor;
use crate::store::{CachedHashes, GroupHashes, NewEntry, Store};
use crate::tree;
use crate::types::{CaseId, EventId, Index, KeyId};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

pub use crate::receipt::Receipt;

/// Called once with one result per submitted item, in order.
pub type Reply = Box<dyn FnOnce(Vec<Result<(Receipt, bool)>>) + Send>;

struct Job {
    items: Vec<Result<Opened>>,
    reply: Reply,
    prior: Option<Prior>,
}

/// Which of a job's events the log already held when its submitter looked them up
/// ([`look_up`]), so the sequencer's serial thread need not read them from disk.
pub struct Prior {
    /// The log's size before the lookup: events committed at or after it are not
    /// covered and the sequencer checks them against what it committed since.
    size: Index,
    /// Per item, in order: the index of the event if the log held it (None also for
    /// items that failed to open).
    found: Vec<Option<Index>>,
}

/// Looks up, on the calling thread, which of `items` the log already holds: a batch
/// submitter does this while other requests are judged and committed, so a log
/// too large for the page cache does not put a disk read per event on the one
/// thread that orders the log. None if the read failed (the sequencer then reads).
pub fn look_up(store: &Store, items: &[Result<Opened>]) -> Option<Prior> {
    // The size first: an event whose commit the size already shows is in the
    // store's tail of recent ids or in RocksDB before the read below starts; later
    // commits the sequencer remembers itself.
    let size = store.size();
    let ids: Vec<EventId> = items
        .iter()
        .filter_map(|i| i.as_ref().ok().map(|o| o.event_id()))
        .collect();
    let mut found = store.indexes_of_events(&ids).ok()?.into_iter();
    let found = items
        .iter()
        .map(|i| match i {
            Ok(_) => found.next().flatten(),
            Err(_) => None,
        })
        .collect();
    Some(Prior { size, found })
}

impl Prior {
    /// Cuts a lookup of several requests' items into one per request, `counts`
    /// their numbers of items in order (which must add up to the lookup's).
    pub(crate) fn split(self, counts: &[usize]) -> Vec<Prior> {
        let mut found = self.found.into_iter();
        counts
            .iter()
            .map(|&n| Prior {
                size: self.size,
                found: found.by_ref().take(n).collect(),
            })
            .collect()
    }
}

/// The events this sequencer committed most recently, by event id: what a [`Prior`]
/// taken a few groups ago cannot know. Holds the last [`RECENT`] entries.
struct Recent {
    /// Index of `order[0]`.
    floor: Index,
    order: std::collections::VecDeque<EventId>,
    /// Keyed with the standard library's random hasher: event ids are hashes of
    /// payloads a signer chooses, so their own bits could be ground to collide.
    index: HashMap<EventId, Index>,
}

/// Entries [`Recent`] remembers: a lookup older than this many entries (a deep queue)
/// is not trusted and the sequencer reads for it instead.
const RECENT: usize = 1 << 16;

impl Recent {
    fn new(floor: Index) -> Recent {
        Recent {
            floor,
            order: Default::default(),
            index: HashMap::with_capacity(RECENT + 1),
        }
    }

    /// Remembers a committed group's events, `start` the first one's index.
    fn committed(&mut self, start: Index, ids: &[EventId]) {
        if self.floor + self.order.len() as u64 != start {
            // Not contiguous (cannot happen with one writer): forget everything.
            *self = Recent::new(start);
        }
        for (i, id) in ids.iter().enumerate() {
            self.order.push_back(*id);
            self.index.insert(*id, start + i as u64);
        }
        while self.order.len() > RECENT {
            let old = self.order.pop_front().expect("longer than RECENT");
            if self.index.get(&old) == Some(&self.floor) {
                self.index.remove(&old);
            }
            self.floor += 1;
        }
    }

    /// Whether a lookup taken at `size` plus this memory covers every entry below
    /// `start` (the next entry's index).
    fn covers(&self, size: Index, start: Index) -> bool {
        size >= self.floor && size <= start && self.floor + self.order.len() as u64 == start
    }
}

/// Sequencer tuning.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Most events in one group (one fsync, one checkpoint).
    pub max_group: usize,
    /// Requests that may wait in the queue before submitters are told to back off.
    pub queue_capacity: usize,
    /// How long a small group waits for more events while requests keep arriving
    /// ([`crate::gather`]; zero: never, the default here; the node's
    /// `--gather-wait-us` sets it for the node).
    pub gather_wait: std::time::Duration,
    pub rules: Rules,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_group: 4096,
            queue_capacity: 1024,
            gather_wait: std::time::Duration::ZERO,
            rules: Rules::default(),
        }
    }
}

/// Counters the node exports as metrics.
#[derive(Debug, Default)]
pub struct Stats {
    pub groups: std::sync::atomic::AtomicU64,
    pub appended: std::sync::atomic::AtomicU64,
    pub duplicates: std::sync::atomic::AtomicU64,
    pub refused: std::sync::atomic::AtomicU64,
    /// Events the sequencer looked up in the store on its own thread, because their
    /// submitter had not ([`look_up`]) or its lookup was too old to trust.
    pub sequencer_lookups: std::sync::atomic::AtomicU64,
    /// Sum of commit latencies in microseconds.
    pub commit_micros: std::sync::atomic::AtomicU64,
    /// Commit latency histogram: counts of commits ≤ each bound in [`LATENCY_BOUNDS_MS`].
    pub commit_buckets: [std::sync::atomic::AtomicU64; LATENCY_BOUNDS_MS.len()],
    /// Group size histogram: counts of groups ≤ each bound in [`GROUP_BOUNDS`].
    pub group_buckets: [std::sync::atomic::AtomicU64; GROUP_BOUNDS.len()],
}

/// Fine below 25 ms, where a commit's usual 1-3 ms and a slow sync's 5-15 ms fall,
/// so a report of the commits' p99 tells the two apart.
pub const LATENCY_BOUNDS_MS: [f64; 14] = [
    0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0,
];
pub const GROUP_BOUNDS: [u64; 7] = [1, 4, 16, 64, 256, 1024, 4096];

/// [`LATENCY_BOUNDS_MS`] in nanoseconds (each is a whole number of them).
const LATENCY_BOUNDS_NS: [u64; LATENCY_BOUNDS_MS.len()] = {
    let mut ns = [0; LATENCY_BOUNDS_MS.len()];
    let mut i = 0;
    while i < ns.len() {
        ns[i] = (LATENCY_BOUNDS_MS[i] * 1e6) as u64;
        i += 1;
    }
    ns
};

/// The bucket of [`LATENCY_BOUNDS_MS`] a time falls in: the first bound it does not
/// exceed (`le`, at most), or `LATENCY_BOUNDS_MS.len()` past the last one.
pub fn latency_bucket(took: std::time::Duration) -> usize {
    // u64 nanoseconds hold 584 years: only a nonsense duration is cut.
    let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
    LATENCY_BOUNDS_NS.partition_point(|&b| b < ns)
}

pub struct Sequencer {
    submitter: Submitter,
    thread: Option<JoinHandle<()>>,
    /// The tile thread ([`fill_tile_file`]), and the sender whose drop stops it.
    tiles: Option<(JoinHandle<()>, std::sync::mpsc::Sender<()>)>,
    store: Arc<Store>,
    stats: Arc<Stats>,
}

impl Sequencer {
    pub fn start(store: Arc<Store>, config: Config) -> Sequencer {
        let (tx, rx) = sync_channel(config.queue_capacity.max(1));
        let stats = Arc::new(Stats::default());
        // logged_at must not go backwards across restarts either: start from the
        // last entry's time.
        let last_logged = store
            .size()
            .checked_sub(1)
            .and_then(|i| store.entry(i).ok().flatten())
            .and_then(|b| entry::Entry::parse(&b).ok())
            .map(|e| e.logged_at);
        let worker = Worker {
            store: store.clone(),
            config,
            stats: stats.clone(),
            last_logged,
            recent: Recent::new(store.size()),
        };
        let thread = std::thread::Builder::new()
            .name("custody-sequencer".into())
            .spawn(move || worker.run(rx))
            .expect("spawning the sequencer thread");
        let (stop, stopped) = std::sync::mpsc::channel();
        let tiles = {
            let store = store.clone();
            std::thread::Builder::new()
                .name("custody-tiles".into())
                .spawn(move || fill_tile_file(&store, &stopped))
                .expect("spawning the tile thread")
        };
        Sequencer {
            submitter: Submitter {
                slot: Arc::new(RwLock::new(Some(tx))),
            },
            thread: Some(thread),
            tiles: Some((tiles, stop)),
            store,
            stats,
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Queues opened envelopes (or the errors from opening them, so each keeps its
    /// place in the reply). Refuses with `Overloaded` when the queue is full.
    pub fn submit(&self, items: Vec<Result<Opened>>, reply: Reply) -> Result<()> {
        self.submitter.submit(items, reply)
    }

    /// [`Sequencer::submit`] with the events already looked up ([`look_up`]).
    pub fn submit_looked_up(
        &self,
        items: Vec<Result<Opened>>,
        prior: Option<Prior>,
        reply: Reply,
    ) -> Result<()> {
        self.submitter
            .try_submit_looked_up(items, prior, reply)
            .map_err(|(e, _)| e)
    }

    /// A handle that submits from any thread (a verifier thread handing over what it
    /// just opened) until [`Sequencer::shutdown`] begins.
    pub fn submitter(&self) -> Submitter {
        self.submitter.clone()
    }

    /// Submits and waits (for tools and tests that are not async).
    pub fn append_blocking(
        &self,
        items: Vec<Result<Opened>>,
    ) -> Result<Vec<Result<(Receipt, bool)>>> {
        let (tx, rx) = sync_channel(1);
        self.submit(
            items,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )?;
        rx.recv()
            .map_err(|_| LedgerError::new(Code::Storage, "the sequencer stopped before answering"))
    }

    /// Stops taking work, finishes every queued group, and joins the thread.
    pub fn shutdown(&mut self) {
        self.submitter
            .slot
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some((t, stop)) = self.tiles.take() {
            drop(stop);
            if t.join().is_err() {
                crate::to_stderr!(
                    "custody: the tile thread had stopped on a panic (above); proofs read \
                     the tiles it had not copied from RocksDB. The next start copies them"
                );
            }
        }
    }
}

/// Tiles the tile thread copies between looks at whether it should stop.
const TILES_PER_ROUND: u64 = 256;

/// The tile thread: copies full tiles from RocksDB into the tile file as commits
/// complete them (a tile every 256 entries), writes each [`crate::store::ID_RUN`]
/// entries' ids into the de-duplication index as one table, and syncs the file when due
/// ([`crate::tilefile::TileFile::sync`]); the whole
/// file on a log's first start with this release, in the background. A last sync
/// when the sequencer shuts down, so the next start trusts every tile written.
fn fill_tile_file(store: &Store, stopped: &Receiver<()>) {
    // Waits up to `d` for the sequencer to drop its end (shutdown); true then.
    let wait = |d| {
        !matches!(
            stopped.recv_timeout(d),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout)
        )
    };
    let (first, _) = store.tile_file_tiles();
    let mut reported = std::time::Instant::now();
    // A failed table of event ids is tried again after this, at the tile file's
    // own pace meanwhile.
    let mut ids_retry = std::time::Instant::now();
    loop {
        // The de-duplication index's newest ids, a table at a time (Store::index_ids),
        // whatever becomes of the tile file.
        if std::time::Instant::now() >= ids_retry {
            if let Err(e) = store.index_ids(false) {
                crate::to_stderr!(
                    "custody: {e}; the newest entries' ids stay in memory meanwhile \
                     (lookups still find them). Trying again in 10 s"
                );
                ids_retry = std::time::Instant::now() + std::time::Duration::from_secs(10);
            }
        }
        let idle = match store.extend_tile_file(TILES_PER_ROUND, false) {
            Ok(copied) => copied < TILES_PER_ROUND,
            Err(e) => {
                crate::to_stderr!(
                    "custody: the tile file fell behind ({e}); proofs read the newer tiles from \
                     RocksDB meanwhile. Trying again in 10 s"
                );
                if wait(std::time::Duration::from_secs(10)) {
                    break;
                }
                continue;
            }
        };
        let (have, full) = store.tile_file_tiles();
        // A long fill (a large log's first start) says how far it is.
        if !idle && reported.elapsed().as_secs() >= 10 {
            crate::to_stderr!(
                "custody: tile file: {have} of {full} tiles written ({} this start)",
                have.saturating_sub(first)
            );
            reported = std::time::Instant::now();
        }
        let pause = if idle { 50 } else { 0 };
        if wait(std::time::Duration::from_millis(pause)) {
            break;
        }
    }
    if let Err(e) = store.extend_tile_file(0, true) {
        crate::to_stderr!("custody: syncing the tile file at shutdown: {e}; the next start writes the unsynced tiles again");
    }
}

impl Drop for Sequencer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Submits to a sequencer from any thread. Every handle shares one slot, which
/// shutdown empties: the sequencer's queue then closes once drained, however many
/// handles are still held.
#[derive(Clone)]
pub struct Submitter {
    slot: Arc<RwLock<Option<SyncSender<Job>>>>,
}

impl Submitter {
    /// As [`Sequencer::submit`].
    pub fn submit(&self, items: Vec<Result<Opened>>, reply: Reply) -> Result<()> {
        self.try_submit(items, reply).map_err(|(e, _)| e)
    }

    /// As [`Sequencer::submit`], but a refusal hands the reply back, so the caller
    /// can still answer through it.
    pub fn try_submit(
        &self,
        items: Vec<Result<Opened>>,
        reply: Reply,
    ) -> std::result::Result<(), (LedgerError, Reply)> {
        self.try_submit_looked_up(items, None, reply)
    }

    /// [`Submitter::try_submit`] with the events already looked up ([`look_up`]).
    pub fn try_submit_looked_up(
        &self,
        items: Vec<Result<Opened>>,
        prior: Option<Prior>,
        reply: Reply,
    ) -> std::result::Result<(), (LedgerError, Reply)> {
        let slot = self.slot.read().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = slot.as_ref() else {
            return Err((
                LedgerError::new(Code::Overloaded, "the log is shutting down")
                    .expected("retry on the restarted node"),
                reply,
            ));
        };
        tx.try_send(Job {
            items,
            reply,
            prior,
        })
        .map_err(|e| match e {
            TrySendError::Full(job) => (
                LedgerError::new(Code::Overloaded, "the append queue is full")
                    .expected("retry after a short wait (Retry-After)"),
                job.reply,
            ),
            TrySendError::Disconnected(job) => (
                LedgerError::new(Code::Storage, "the sequencer stopped")
                    .expected("restart the node; check its log for the cause"),
                job.reply,
            ),
        })
    }
}

struct Worker {
    store: Arc<Store>,
    config: Config,
    stats: Arc<Stats>,
    last_logged: Option<DateTime<Utc>>,
    recent: Recent,
}

/// What the events placed so far in a group changed: actors and cases.
#[derive(Default)]
struct GroupState {
    actors: HashMap<KeyId, Actor>,
    cases: HashMap<CaseId, CaseState>,
}

/// The store as seen by an event in the middle of a group: earlier events of the
/// same group are visible. Their entries are read from the group's own list (no
/// copy of each kept aside: one allocation and copy per event saved).
struct GroupView<'a> {
    store: &'a Store,
    start: Index,
    new: &'a [NewEntry],
    state: &'a GroupState,
}

impl LogView for GroupView<'_> {
    fn entry_bytes(&self, index: Index) -> Result<Option<Vec<u8>>> {
        let placed = index
            .checked_sub(self.start)
            .and_then(|i| self.new.get(usize::try_from(i).ok()?));
        match placed {
            Some(e) => Ok(Some(e.bytes.clone())),
            None => self.store.entry_bytes(index),
        }
    }
    fn actor(&self, key: &KeyId) -> Result<Option<Actor>> {
        match self.state.actors.get(key) {
            Some(a) => Ok(Some(a.clone())),
            None => self.store.actor(key),
        }
    }
    fn case(&self, id: &CaseId) -> Result<Option<CaseState>> {
        match self.state.cases.get(id) {
            Some(c) => Ok(Some(c.clone())),
            None => self.store.case(id),
        }
    }
}

/// What a group knows of the events already in the log.
struct Seen {
    /// Events placed earlier in this group, by their slot.
    in_group: HashMap<EventId, usize>,
    /// Events of this group already in the log (one MultiGet for the group); `None`
    /// if that read failed, and each event then looks itself up.
    prior: Option<HashMap<EventId, Index>>,
}

enum Slot {
    Refused(LedgerError),
    New(usize, EventId),
    /// The same event earlier in this group.
    RepeatInGroup(usize, EventId),
    Duplicate(Index, EventId),
}

/// A committed (or wholly refused) group on its way to its waiters: what the
/// answering thread needs to build their receipts.
struct Answer {
    slots: Vec<Vec<Slot>>,
    replies: Vec<Reply>,
    committed: Result<Option<SignedCheckpoint>>,
    /// The checkpoint the receipts are proved against.
    cp: SignedCheckpoint,
    placed: Vec<crate::store::Placed>,
    /// The hashes the commit computed, most of what the receipts' proofs need.
    hashes: GroupHashes,
    start: Index,
    logged_at: DateTime<Utc>,
}

impl Worker {
    /// Groups, judges and commits on this thread; the receipts of each group are
    /// built, and its waiters answered, on a second thread, so the next group can be
    /// judged and committed meanwhile. Both end, in order, when the queue closes.
    fn run(mut self, rx: Receiver<Job>) {
        // Two groups may wait for their receipts; then the committing thread waits.
        let (tx, answers) = sync_channel::<Answer>(2);
        let (store, stats) = (self.store.clone(), self.stats.clone());
        let answering = std::thread::Builder::new()
            .name("custody-receipts".into())
            .spawn(move || {
                for a in answers {
                    answer(&store, &stats, a);
                }
            })
            .expect("spawning the receipts thread");
        let mut gatherer = Gatherer::new(Gather {
            max: self.config.max_group,
            wait: self.config.gather_wait,
        });
        while let Some(jobs) = gatherer.next(&rx, |j: &Job| j.items.len()) {
            let a = self.group(jobs);
            if tx.send(a).is_err() {
                // The answering thread is gone (it panicked): stop committing, so
                // nothing more is logged that nobody will be told of.
                break;
            }
        }
        drop(tx);
        let _ = answering.join();
    }

    fn group(&mut self, jobs: Vec<Job>) -> Answer {
        use std::sync::atomic::Ordering::Relaxed;
        let started = std::time::Instant::now();
        // logged_at never goes backwards, even if the wall clock does, and has the
        // millisecond precision the entry bytes carry, so that every record of it
        // (case steps, stats) equals what a reader of the entry sees.
        let now = chrono::SubsecRound::trunc_subsecs(Utc::now(), 3);
        let logged_at = match self.last_logged {
            Some(last) if last > now => last,
            _ => now,
        };
        self.last_logged = Some(logged_at);
        let store = self.store.clone();
        let start = store.size();
        let mut state = GroupState::default();
        let mut new: Vec<NewEntry> = Vec::new();
        // Which events the log already holds: from the submitters' own lookups where
        // they are recent enough (plus what this thread committed since), and for the
        // rest one MultiGet for the group; if that fails, each event looks itself up
        // (and is refused if that fails too).
        let mut prior: HashMap<EventId, Index> = HashMap::new();
        let mut ids: Vec<EventId> = Vec::new();
        for j in &jobs {
            let opened = j.items.iter().filter_map(|i| i.as_ref().ok());
            match &j.prior {
                Some(p) if p.found.len() == j.items.len() && self.recent.covers(p.size, start) => {
                    for (item, found) in j.items.iter().zip(&p.found) {
                        let Ok(o) = item else { continue };
                        let id = o.event_id();
                        if let Some(i) = found.or_else(|| self.recent.index.get(&id).copied()) {
                            prior.insert(id, i);
                        }
                    }
                }
                _ => ids.extend(opened.map(|o| o.event_id())),
            }
        }
        let read = if ids.is_empty() {
            Ok(Vec::new())
        } else {
            self.stats
                .sequencer_lookups
                .fetch_add(ids.len() as u64, Relaxed);
            store.indexes_of_events(&ids)
        };
        let mut seen = Seen {
            in_group: HashMap::new(),
            prior: read.ok().map(|v| {
                prior.extend(ids.iter().zip(v).filter_map(|(id, i)| i.map(|i| (*id, i))));
                prior
            }),
        };
        let mut slots: Vec<Vec<Slot>> = Vec::with_capacity(jobs.len());
        let mut replies = Vec::with_capacity(jobs.len());
        for job in jobs {
            let mut js = Vec::with_capacity(job.items.len());
            for item in job.items {
                js.push(self.place(item, start, logged_at, &mut state, &mut new, &mut seen));
            }
            slots.push(js);
            replies.push(job.reply);
        }
        let mut placed = Vec::new();
        let mut hashes = GroupHashes::default();
        let committed: Result<Option<SignedCheckpoint>> = if new.is_empty() {
            Ok(None)
        } else {
            let count = new.len() as u64;
            let new_ids: Vec<EventId> = new.iter().map(|e| e.event_id).collect();
            store.commit(new).map(|c| {
                if let Some(first) = c.placed.first() {
                    self.recent.committed(first.index, &new_ids);
                }
                placed = c.placed;
                hashes = c.hashes;
                let cp = c.checkpoint;
                self.stats.groups.fetch_add(1, Relaxed);
                self.stats.appended.fetch_add(count, Relaxed);
                if let Some(b) = GROUP_BOUNDS.iter().position(|&b| count <= b) {
                    self.stats.group_buckets[b].fetch_add(1, Relaxed);
                }
                Some(cp)
            })
        };
        let elapsed = started.elapsed();
        if committed.as_ref().is_ok_and(|c| c.is_some()) {
            self.stats
                .commit_micros
                .fetch_add(elapsed.as_micros() as u64, Relaxed);
            // A commit past the last bound is counted only in the total.
            if let Some(b) = self.stats.commit_buckets.get(latency_bucket(elapsed)) {
                b.fetch_add(1, Relaxed);
            }
        }
        let cp = match &committed {
            Ok(Some(cp)) => cp.clone(),
            _ => store.checkpoint(),
        };
        Answer {
            slots,
            replies,
            committed,
            cp,
            placed,
            hashes,
            start,
            logged_at,
        }
    }

    fn place(
        &self,
        item: Result<Opened>,
        start: Index,
        logged_at: DateTime<Utc>,
        state: &mut GroupState,
        new: &mut Vec<NewEntry>,
        seen: &mut Seen,
    ) -> Slot {
        let opened = match item {
            Ok(o) => o,
            Err(e) => return Slot::Refused(e),
        };
        let id = opened.event_id();
        let view = GroupView {
            store: &self.store,
            start,
            new: new.as_slice(),
            state: &*state,
        };
        // The same payload again is the same event: answer with the original
        // receipt, but only to its original signer.
        let earlier = match seen.in_group.get(&id) {
            Some(&i) => Some((start + i as u64, Slot::RepeatInGroup(i, id))),
            None => match seen.prior.as_ref().map_or_else(
                || view.store.index_of_event(&id),
                |p| Ok(p.get(&id).copied()),
            ) {
                Ok(Some(index)) => Some((index, Slot::Duplicate(index, id))),
                Ok(None) => None,
                Err(e) => return Slot::Refused(e),
            },
        };
        if let Some((index, slot)) = earlier {
            let signer = view
                .entry_bytes(index)
                .and_then(|b| {
                    b.ok_or_else(|| LedgerError::corrupt(format!("entry {index} is missing")))
                })
                .and_then(|b| crate::replay::logged_event(&b).map(|(_, _, s)| s));
            return match signer {
                Ok(s) if s == opened.signer => slot,
                Ok(s) => Slot::Refused(
                    LedgerError::new(
                        Code::Conflict,
                        format!(
                            "this event is already entry {index}, signed by {s}, not by {}",
                            opened.signer
                        ),
                    )
                    .field("payload")
                    .expected(
                        "a new event (change claimed_at or the body), or the original signer",
                    ),
                ),
                Err(e) => Slot::Refused(e),
            };
        }
        let index = start + new.len() as u64;
        let effects = match judge(&view, index, logged_at, &opened, &self.config.rules) {
            Ok(e) => e,
            Err(e) => return Slot::Refused(e),
        };
        let bytes = entry::encode(logged_at, &opened.envelope);
        if bytes.len() > entry::MAX_ENTRY_BYTES {
            return Slot::Refused(
                LedgerError::new(
                    Code::TooLarge,
                    format!("the entry would be {} bytes", bytes.len()),
                )
                .field("payload")
                .expected(format!(
                    "an envelope whose entry fits {} bytes",
                    entry::MAX_ENTRY_BYTES
                )),
            );
        }
        if let Some(a) = &effects.actor {
            state.actors.insert(a.key, a.clone());
        }
        if let Some(c) = &effects.case {
            state.cases.insert(c.id.clone(), c.clone());
        }
        let slot = new.len();
        seen.in_group.insert(id, slot);
        new.push(NewEntry {
            bytes,
            event_id: id,
            case: effects.case,
            actor: effects.actor,
        });
        Slot::New(slot, id)
    }
}

/// Builds a group's receipts and answers its waiters (on the answering thread).
fn answer(store: &Store, stats: &Stats, a: Answer) {
    use std::sync::atomic::Ordering::Relaxed;
    let (committed, cp, placed, start) = (&a.committed, &a.cp, &a.placed, a.start);
    // The new entries' proofs mostly need hashes the commit just computed.
    let hashes = CachedHashes::new(store, a.hashes);
    let logged_at = format_time(a.logged_at);
    for (js, reply) in a.slots.into_iter().zip(a.replies) {
        let results = js
            .into_iter()
            .map(|slot| match slot {
                Slot::Refused(e) => {
                    stats.refused.fetch_add(1, Relaxed);
                    Err(e)
                }
                Slot::New(i, id) => match committed {
                    // Built from what was just written: no read back, no parse.
                    Ok(_) => {
                        tree::prove_inclusion(placed[i].index, cp.size, &hashes).map(|proof| {
                            let r = Receipt {
                                index: placed[i].index,
                                leaf_hash: placed[i].leaf_hash,
                                event_id: id,
                                logged_at: logged_at.clone(),
                                tree_size: cp.size,
                                checkpoint: cp.note.clone(),
                                inclusion_proof: proof,
                            };
                            (r, false)
                        })
                    }
                    Err(e) => Err(e.clone()),
                },
                Slot::RepeatInGroup(i, id) => match committed {
                    Ok(_) => {
                        stats.duplicates.fetch_add(1, Relaxed);
                        receipt(store, cp, start + i as u64, id).map(|r| (r, true))
                    }
                    Err(e) => Err(e.clone()),
                },
                Slot::Duplicate(index, id) => {
                    stats.duplicates.fetch_add(1, Relaxed);
                    receipt(store, cp, index, id).map(|r| (r, true))
                }
            })
            .collect();
        reply(results);
    }
}

/// A receipt for entry `index` with its inclusion proof against `cp`.
pub fn receipt(
    store: &Store,
    cp: &SignedCheckpoint,
    index: Index,
    event_id: EventId,
) -> Result<Receipt> {
    let bytes = store
        .entry(index)?
        .ok_or_else(|| LedgerError::corrupt(format!("entry {index} is missing")))?;
    let entry = entry::Entry::parse(&bytes)?;
    Ok(Receipt {
        index,
        leaf_hash: entry::leaf_hash(&bytes),
        event_id,
        logged_at: format_time(entry.logged_at),
        tree_size: cp.size,
        checkpoint: cp.note.clone(),
        inclusion_proof: tree::prove_inclusion(index, cp.size, store)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> EventId {
        // Spread over all bytes, like a BLAKE3 hash.
        EventId(*blake3::hash(&n.to_le_bytes()).as_bytes())
    }

    #[test]
    fn recent_remembers_the_last_entries_and_says_what_it_covers() {
        let mut r = Recent::new(100);
        assert!(r.covers(100, 100) && !r.covers(99, 100));
        // A lookup from the future, or a start it does not reach, is not covered.
        assert!(!r.covers(101, 100) && !r.covers(100, 101));
        let ids: Vec<EventId> = (0..RECENT as u64 + 10).map(id).collect();
        // Two groups, contiguous: 100.. and then the rest.
        r.committed(100, &ids[..1000]);
        assert_eq!(r.index.get(&ids[5]), Some(&105));
        r.committed(1100, &ids[1000..]);
        // The oldest ten fell out; what a lookup at 110 or later missed is all here.
        assert_eq!(r.floor, 110);
        assert_eq!(r.order.len(), RECENT);
        let next = 100 + RECENT as u64 + 10;
        assert!(!r.covers(109, next) && r.covers(110, next) && r.covers(next, next));
        assert_eq!(r.index.get(&ids[9]), None);
        assert_eq!(r.index.get(&ids[10]), Some(&110));
        assert_eq!(
            r.index.get(ids.last().unwrap()),
            Some(&(100 + RECENT as u64 + 9))
        );
        assert_eq!(r.index.len(), RECENT);
        // A gap (another writer) makes it forget rather than answer wrongly.
        r.committed(1_000_000, &[id(u64::MAX)]);
        assert_eq!((r.floor, r.order.len(), r.index.len()), (1_000_000, 1, 1));
        assert!(!r.covers(999_999, 1_000_001) && r.covers(1_000_000, 1_000_001));
    }
}
