//! The RocksDB store: the only module that touches disk (spec/storage.md).
//!
//! Five column families (layout 5), one-byte key prefixes:
//! - `entries`: `e`+index → entry bytes (verbatim);
//! - `hashes`: `t`+n → the 510 stored hashes below level 8 of full tile n (leaves
//!   256n..256n+255), concatenated in stored-hash order: a proof's lower levels are
//!   one read;
//! - `ids`: `d`+event_id → index (de-duplication), and `w` → the index of the first
//!   entry whose `d` key is not yet there. The keys are written as sorted tables of
//!   [`ID_RUN`] entries at a time and ingested, never through the write-ahead log and
//!   memtables; the newest entries' ids are held in memory ([`IdTail`]) and, on
//!   open, read again from the entries from `w` on;
//! - `leaves`: `l`+epoch+leaf hash → index, the epoch being index >> 20: the keys of
//!   one million entries at a time are random among themselves but come after every
//!   older epoch's, so compaction rewrites only the current epoch;
//! - default: `c`+size → checkpoint note (history), `a`+key → actor (JSON),
//!   `s`+case → case state (JSON), `b`+blake3 → blob bytes, `u`+level+n → a tree
//!   hash at level 8 or above, `m` → latest checkpoint size, `v` → layout version.
//!
//! The hashes of the partial tile at the right edge (fewer than 256 leaves) are not
//! stored: they are kept in memory and, on open, hashed again from those entries.
//! The full tiles' `t` values are copied into the tile file ([`crate::tilefile`]),
//! which proofs read instead of RocksDB, each hash checked as it is taken.
//!
//! `entries` and `hashes` are written in key order only, so their files are moved
//! down the levels, never rewritten. The `ids` keys are random and most lookups of
//! them miss (every new event's de-duplication check), so only that family carries
//! Bloom filters; the others' keys are sequential or always found, and go without.
//!
//! Every group of entries is written as ONE write batch with a synced WAL, so a
//! crash leaves either the whole group (and its checkpoint) or none of it.

use crate::cases::CaseState;
use crate::checkpoint::{CheckpointVerifier, LogKey, SignedCheckpoint};
use crate::entry::{self, leaf_hash};
use crate::envelope::Envelope;
use crate::error::{LedgerError, Result};
use crate::event::{Body, Event, Genesis, Kind};
use crate::replay::logged_event_id;
use crate::roles::Actor;
use crate::tilefile::{TileFile, Verified, TILE_BYTES, TILE_HASHES};
use crate::tree;
use crate::types::{BlobId, CaseId, EventId, Index, KeyId, LeafHash, RootHash, TreeSize};
use chrono::Utc;
use rocksdb::{BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, Options};
use rocksdb::{WriteBatch, WriteOptions, DB};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use tlog_tiles::{Hash, HashReader};

const KEY_FILE: &str = "log.key";
const DB_DIR: &str = "db";
/// The tile file ([`crate::tilefile`]), beside the database.
const TILE_FILE: &str = "tiles";
const META_SIZE: &[u8] = b"m";
const META_LAYOUT: &[u8] = b"v";
/// The column family of the random-key de-duplication index (`d` keys).
const IDS: &str = "ids";
/// The column family of the leaf index (`l` keys, by epoch).
const LEAVES: &str = "leaves";
/// Every column family of this layout.
const FAMILIES: [&str; 5] = [
    rocksdb::DEFAULT_COLUMN_FAMILY_NAME,
    IDS,
    LEAVES,
    ENTRIES,
    HASHES,
];
/// Entries per epoch of the leaf index, 2^20: a lookup by leaf hash reads one key
/// per epoch (ten at 10M entries), and compaction rewrites at most one epoch's keys.
#[cfg(not(test))]
const LEAF_EPOCH_BITS: u32 = 20;
/// Unit tests' logs are small: epochs of 256 entries make them span several.
#[cfg(test)]
const LEAF_EPOCH_BITS: u32 = 8;
/// The column family of the entries (`e` keys), written in index order.
const ENTRIES: &str = "entries";
/// The column family of the full tiles' lower hashes (`t` keys), written in order.
const HASHES: &str = "hashes";
/// The key layout this code writes: 6 = entries, tiles of tree hashes, the
/// de-duplication index (written as ingested tables, with its `w` key) and the leaf
/// index (keyed by epoch) each in a column family of their own, and `u` keys. Older
/// layouts are migrated when opened: 5 (every `d` key put with its entry's commit,
/// no `w`), 4 (also the leaf index as `l` ‖ leaf hash in `ids`), 3 (also every
/// stored hash its own `h` key in `hashes`), 2 (also entries and `h` hashes in the
/// default family) and 1 (every key in the default family, no `u` or `v` key). An
/// older release cannot open the store afterwards.
const LAYOUT: u64 = 6;
/// `w` in `ids`: the index of the first entry whose `d` key is not in the family,
/// written in the same table as the keys it covers.
const IDS_FROM: &[u8] = b"w";
/// Entries per table of `d` keys, at least (~10.5 MB). Each table is ingested into level 0,
/// which is compacted once it holds 8: tables half this size took ~0.5 µs more of
/// RocksDB's background CPU per batch-appended event (fresh logs 0 -> 1M, two
/// alternated pairs), and more tables in level 0 to look through per lookup. The
/// cost: a table's ids and more in memory (~21 MB), and after a crash, an open
/// that reads up to a table's entries or more again.
#[cfg(not(test))]
pub const ID_RUN: u64 = 1 << 18;
/// Unit tests' logs are small: tables of 256 entries make them span several.
#[cfg(test)]
pub const ID_RUN: u64 = 256;
/// Entries per table of `d` keys: [`ID_RUN`], unless `CUSTODY_ID_RUN` says
/// otherwise (tests that kill a node while it writes tables set a small one).
fn id_run() -> u64 {
    if cfg!(test) {
        // Unit tests count tables exactly, whatever the shell says.
        return ID_RUN;
    }
    std::env::var("CUSTODY_ID_RUN")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| (1..=1 << 24).contains(&n))
        .unwrap_or(ID_RUN)
}
/// The table being written, in the log's directory (outside RocksDB's own), until
/// it is ingested; one left by a crash is removed on open.
const ID_RUN_FILE: &str = "ids-run.sst";

fn k(prefix: u8, id: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + id.len());
    v.push(prefix);
    v.extend_from_slice(id);
    v
}
fn ku(prefix: u8, n: u64) -> Vec<u8> {
    k(prefix, &n.to_be_bytes())
}
/// `d` ‖ event id: the key of an event's index in the de-duplication family.
fn id_key(id: &EventId) -> [u8; 33] {
    let mut key = [b'd'; 33];
    key[1..].copy_from_slice(&id.0);
    key
}
/// `t` ‖ n: the key of full tile n's lower hashes.
fn tile_key(n: u64) -> [u8; 9] {
    let mut key = [b't'; 9];
    key[1..].copy_from_slice(&n.to_be_bytes());
    key
}

/// The stored-hash index of tile n's first hash (its first leaf's).
fn tile_base(n: u64) -> u64 {
    tlog_tiles::stored_hash_index(0, n * tree::TILE_WIDTH)
}

/// Where a stored hash below level 8 lives: (tile, position in the tile's hashes).
fn in_tile(index: u64) -> Option<(u64, usize)> {
    let (level, k) = tlog_tiles::split_stored_hash_index(index);
    if level >= UPPER_LEVEL {
        return None;
    }
    let n = k >> (UPPER_LEVEL - level);
    Some((n, (index - tile_base(n)) as usize))
}

/// The stored hashes of the partial tile at the tree's right edge, in stored-hash
/// order from [`tile_base`]`(tile)`: fewer than [`TILE_HASHES`].
#[derive(Debug, Clone, Default)]
struct Edge {
    tile: u64,
    hashes: Vec<Hash>,
}

/// The de-duplication index's newest part: the ids of entries `from..next`, whose
/// `d` keys are not in `ids` yet. A commit adds its entries' ids here instead of
/// putting their keys (random, so every put searched the memtable's skip list and
/// every flush and compaction rewrote them). Once [`id_run`] of them are held,
/// [`Store::index_ids`] seals them (`sealed`; new ids go to a fresh `map`), writes
/// them as one sorted table, ingests it, and only then drops them, so a lookup
/// that misses here finds the key in RocksDB. Whole maps are swapped rather than
/// emptied key by key: removals leave tombstones, and a map full of them rehashed
/// every id in place, a pause on the committing thread. After a crash the ids are
/// read again from the entries (the `w` key says from where).
struct IdTail {
    /// Entries per table, at least ([`id_run`]). Past three tables' worth of ids
    /// held (the tile thread that writes them has fallen behind, or none runs: a
    /// store used without a sequencer), a commit writes the tables itself.
    run: u64,
    from: Index,
    next: Index,
    /// The ids of entries `from..to`, being written as a table, and that `to`.
    /// Shared, so the table's keys are read from it without holding the lock.
    sealed: Option<(Index, std::sync::Arc<IdMap>)>,
    /// The ids of the entries after `sealed`'s (or from `from`) up to `next`.
    map: IdMap,
    /// A commit that found the tail past three tables and failed to write one does
    /// not try again before `next` reaches this.
    retry_at: Index,
}

/// Keyed with the standard library's random hasher: event ids are hashes of
/// payloads a signer chooses, so their bits could be ground to collide.
type IdMap = HashMap<EventId, Index>;

impl IdTail {
    fn new(from: Index) -> IdTail {
        let empty = IdTail::unloaded();
        IdTail {
            from,
            next: from,
            map: IdTail::fresh_map(empty.run),
            ..empty
        }
    }

    /// Until [`Store::load_id_tail`] replaces it: no map allocated.
    fn unloaded() -> IdTail {
        IdTail {
            run: id_run(),
            from: 0,
            next: 0,
            sealed: None,
            map: HashMap::new(),
            retry_at: 0,
        }
    }

    /// Room for a table's ids and half a table's lag (2^19 slots, ~21 MB, for runs
    /// of 2^18): growing the map rehashes every id in it, a pause on the committing
    /// thread, so it happens only if the tile thread lags.
    fn fresh_map(run: u64) -> IdMap {
        HashMap::with_capacity((run + run / 2).min(1 << 20) as usize)
    }

    /// The index of `id`, if committed since the last table.
    fn get(&self, id: &EventId) -> Option<Index> {
        // The open map first: were an id there and sealed, the later index wins.
        self.map
            .get(id)
            .or_else(|| self.sealed.as_ref().and_then(|(_, m)| m.get(id)))
            .copied()
    }

    /// Slots allocated, both maps (each slot an id, an index and a control byte):
    /// a map of capacity c has c × 8 / 7 slots, rounded up to a power of two.
    fn slots(&self) -> u64 {
        let slots = |m: &IdMap| match m.capacity() as u64 {
            0 => 0,
            c => (c * 8).div_ceil(7).next_power_of_two(),
        };
        slots(&self.map) + self.sealed.as_ref().map_or(0, |(_, m)| slots(m))
    }
}

/// `l` ‖ epoch (u32) ‖ leaf hash: the leaf index's key for the entry at `index`.
fn leaf_key(index: Index, leaf: &[u8; 32]) -> [u8; 37] {
    epoch_leaf_key(index >> LEAF_EPOCH_BITS, leaf)
}

fn epoch_leaf_key(epoch: u64, leaf: &[u8; 32]) -> [u8; 37] {
    let mut key = [b'l'; 37];
    // Indexes below 2^52: the epoch fits in 32 bits.
    key[1..5].copy_from_slice(&(epoch as u32).to_be_bytes());
    key[5..].copy_from_slice(leaf);
    key
}

/// `u` ‖ level ‖ n: the copy of stored hash (level, n), for levels ≥ [`UPPER_LEVEL`].
fn upper_key(level: u8, n: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(10);
    v.push(b'u');
    v.push(level);
    v.extend_from_slice(&n.to_be_bytes());
    v
}
/// The event id of entry `index`, read from its `bytes` ([`logged_event_id`]); an
/// entry that does not parse is named as altered.
fn entry_event_id(index: Index, bytes: &[u8]) -> Result<EventId> {
    logged_event_id(bytes).map_err(|e| {
        LedgerError::corrupt(format!(
            "entry {index} does not parse as an entry ({}): its bytes were altered",
            e.detail
        ))
    })
}

fn be(bytes: &[u8]) -> Option<u64> {
    bytes.try_into().ok().map(u64::from_be_bytes)
}

/// One entry ready to be committed.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// The entry in the log's form ([`entry::encode`]).
    pub bytes: Vec<u8>,
    /// BLAKE3 of the envelope's payload: on open the store reads it again from
    /// `bytes` for the entries whose ids it held only in memory ([`IdTail`]).
    pub event_id: EventId,
    pub case: Option<CaseState>,
    pub actor: Option<Actor>,
}

impl NewEntry {
    /// An entry in the log's form carrying `payload` in an envelope with no
    /// signature: for benchmarks and tests that fill a store without signing or
    /// judging, never for a log that is served.
    #[doc(hidden)]
    pub fn unsigned(payload: &[u8]) -> NewEntry {
        use base64::Engine;
        let envelope = Envelope {
            payload_type: crate::event::PAYLOAD_TYPE.to_owned(),
            payload: base64::engine::general_purpose::STANDARD.encode(payload),
            signatures: Vec::new(),
        };
        let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("a valid time");
        NewEntry {
            bytes: entry::encode(at, &envelope),
            event_id: EventId::of_payload(payload),
            case: None,
            actor: None,
        }
    }
}

/// Memory held by the store, in bytes ([`Store::memory`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreMemory {
    pub block_cache: u64,
    pub table_readers: u64,
    pub memtables: u64,
    /// The tree hashes kept in memory: the upper levels and the partial tile's.
    pub upper_levels: u64,
    /// The ids of the entries committed since the last table of `d` keys.
    pub recent_ids: u64,
}

/// What a commit made durable.
pub struct Committed {
    pub checkpoint: SignedCheckpoint,
    /// Index and leaf hash of each entry, in the order given.
    pub placed: Vec<Placed>,
    /// Every stored hash the commit computed or read: enough to prove most of the
    /// new entries without reading RocksDB again (see [`CachedHashes`]).
    pub hashes: GroupHashes,
}

/// The stored hashes a group knows. Those it computes have consecutive stored-hash
/// indexes (each leaf's hashes follow the previous leaf's), so they are a `Vec`
/// from the group's first one; the few older ones it reads (left neighbours, upper
/// levels) are in a map. A receipt's proof looks up some twenty hashes, and with
/// every one in a SipHash map those lookups cost ~2% of a batch's CPU.
#[derive(Debug, Default)]
pub struct GroupHashes {
    /// Stored-hash index of `new[0]`.
    base: u64,
    new: Vec<Hash>,
    old: HashMap<u64, Hash, BuildIndexHasher>,
}

impl GroupHashes {
    /// Empty, for a group whose first new hash has stored-hash index `base`.
    pub fn starting_at(base: u64) -> Self {
        GroupHashes {
            base,
            ..Default::default()
        }
    }

    pub fn get(&self, i: u64) -> Option<Hash> {
        match i.checked_sub(self.base) {
            Some(at) if at < self.new.len() as u64 => Some(self.new[at as usize]),
            _ => self.old.get(&i).copied(),
        }
    }

    /// Records the hash at stored-hash index `i`. An index kept aside and later
    /// reached by the run is then found in the run, the later of the two.
    pub fn insert(&mut self, i: u64, h: Hash) {
        if i == self.base + self.new.len() as u64 {
            self.new.push(h);
        } else if let Some(at) = i
            .checked_sub(self.base)
            .filter(|&at| at < self.new.len() as u64)
        {
            self.new[at as usize] = h;
        } else {
            self.old.insert(i, h);
        }
    }
}

/// Hashes stored-hash indexes (our own numbers, not a client's, so no keyed hash is
/// needed against collisions chosen on purpose): one multiplication.
#[derive(Debug, Default, Clone, Copy)]
struct IndexHasher(u64);

impl std::hash::Hasher for IndexHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn finish(&self) -> u64 {
        // The map takes its buckets from the low bits and its tags from the top
        // ones: fold the well-mixed top half into the bottom.
        self.0 ^ (self.0 >> 32)
    }
}

type BuildIndexHasher = std::hash::BuildHasherDefault<IndexHasher>;

/// A committed entry's place in the tree.
#[derive(Debug, Clone, Copy)]
pub struct Placed {
    pub index: Index,
    pub leaf_hash: LeafHash,
}

pub struct Store {
    db: DB,
    dir: PathBuf,
    key: LogKey,
    verifier: CheckpointVerifier,
    checkpoint: RwLock<SignedCheckpoint>,
    actors: RwLock<HashMap<KeyId, Actor>>,
    /// Every stored hash at level [`UPPER_LEVEL`] and above, `upper[l - UPPER_LEVEL][k]`:
    /// about one hash in 128, 2.5 MB for 10M entries. Every proof and root needs
    /// about log₂(n) - 8 of them, so proofs read RocksDB only for the levels below.
    upper: RwLock<Vec<Vec<Hash>>>,
    /// The partial tile's hashes; every tile left of it is a `t` key.
    edge: RwLock<Edge>,
    /// Serialises commits: one writer orders the log.
    commit_lock: Mutex<()>,
    /// Full tiles' hashes for proofs to read past RocksDB; `None` if it could not
    /// be opened (proofs then read RocksDB).
    tile_file: Option<TileFile>,
    /// Why flushes and compactions go through the page cache, if they do
    /// ([`direct_io_refusal`]); `None`: they write with O_DIRECT.
    page_cache_writes: Option<String>,
    /// The ids committed since the last table of `d` keys.
    id_tail: RwLock<IdTail>,
    /// Held while a table of `d` keys is written and ingested: one at a time.
    id_runs: Mutex<()>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({}, size {})", self.dir.display(), self.size())
    }
}

/// The database's options and those of its five column families: `ids` has a
/// block cache of its own, the other four share one.
fn db_options(direct_io: bool) -> (Options, Vec<(&'static str, Options)>) {
    let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
    // Four shards: RocksDB's default for this size is 64 shards of 1 MiB, and a
    // block larger than its shard is not kept. A store written before filters were
    // partitioned has whole-file filters of up to ~2 MB until compaction rewrites
    // them, and those were then read back from disk at every check.
    let ids_cache = {
        let mut c = rocksdb::LruCacheOptions::default();
        c.set_capacity(IDS_CACHE_BYTES);
        c.set_num_shard_bits(2);
        Cache::new_lru_cache_opts(&c)
    };
    let mut o = Options::default();
    // Keep file handles bounded on machines with a low ulimit.
    o.set_max_open_files(512);
    // A write-ahead log file is kept until every family with data in it has flushed,
    // and the default family's small memtable fills slowly: without a bound the
    // node kept ~560 MB of log at 24M entries, and a start after a crash replayed
    // it all (2.2 s). Past 128 MiB RocksDB flushes the families that hold the oldest
    // file, so the replay after a crash stays about that size. (At 64 MiB that
    // flush came every ~80,000 single appends, before `ids` filled its memtable:
    // twice as many level-0 files of half the size, and twice the compactions
    // into its base level. Measured at 22.4M entries, 1M single appends per run:
    // 5 flushes of `ids` instead of 11, RocksDB's background CPU 2.6-2.7 µs per
    // append instead of 7.9-10.4, with the `leaves` settings below.)
    o.set_max_total_wal_size(128 << 20);
    // Flushes and compactions write their files with O_DIRECT, a buffer at a time,
    // where the filesystem takes it ([`direct_io_refusal`]). Through the page cache a
    // table file is synced when finished, so the disk's queue held a whole file's
    // writeback ahead of the next WAL sync, and commits waited 50-500 ms. A 4 KiB
    // write-and-sync probe beside a 1 GiB write: slowest sync 300-422 ms through the
    // page cache, 4-5 ms with O_DIRECT. Sustained runs of 1M single appends at
    // 15,000/s on a 25-41M log: p99 <= 25 ms in 4 of 7 with it against 1 of 4
    // without; slowest commit <= 25 ms in 6 of 7 against none of 4; batch appends
    // unchanged (PERFORMANCE.md, stop 34). Reads, compactions' included, stay
    // buffered; a table file just written is not in the page cache, so its first
    // reads come from the disk.
    o.set_use_direct_io_for_flush_and_compaction(direct_io);
    // Every family: LZ4 (but `ids`, `leaves` and `hashes`, below), memtables bounded
    // (two per family), so that with the block cache what RocksDB holds in memory is
    // bounded whatever the log's size. (32 MiB memtables and a 64 MiB cache held
    // ~60 MB more at 10M entries for no measured gain in appends or proofs: random
    // proofs miss any cache of this size.)
    let family = |memtable: usize, bloom: bool, cache: &Cache| {
        let mut f = Options::default();
        f.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let mut t = BlockBasedOptions::default();
        if bloom {
            t.set_bloom_filter(10.0, false);
            t.set_optimize_filters_for_memory(true);
            // Filters partitioned into 4 KiB blocks, like the index, and held in
            // a block cache: outside any cache they grew ~1.5 B per entry without
            // bound (35 MB at 22.5M entries). `ids` has a cache of its own
            // (`ids_cache` above), which keeps the data blocks that proofs read from
            // evicting them. They stay in it until the log outgrows it; past that a
            // check reads the partition it needs, usually from the page cache, and
            // memory stays bounded.
            t.set_partition_filters(true);
        }
        // 4 KiB blocks (RocksDB's default): 16 KiB ones compress better but made
        // random proofs 10-25% slower.
        t.set_block_size(4 << 10);
        t.set_block_cache(cache);
        // Index (and filter) blocks in the block cache, charged to it, partitioned
        // into 4 KiB blocks cached like data, each file's top-level index and level
        // 0's pinned: outside the cache they grew with every table file (the
        // entries' index ~30 MB at 18M entries).
        t.set_cache_index_and_filter_blocks(true);
        t.set_cache_index_and_filter_blocks_with_high_priority(true);
        t.set_pin_l0_filter_and_index_blocks_in_cache(true);
        t.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
        t.set_pin_top_level_index_and_filter(true);
        t.set_metadata_block_size(4 << 10);
        f.set_block_based_table_factory(&t);
        f.set_write_buffer_size(memtable);
        f.set_max_write_buffer_number(2);
        f
    };
    let families = vec![
        // Checkpoints, records, blobs, `u` copies: small.
        (
            rocksdb::DEFAULT_COLUMN_FAMILY_NAME,
            family(4 << 20, false, &cache),
        ),
        // 32-byte random keys, and most lookups miss (the de-duplication check of
        // every new event): a Bloom filter answers those without reading index
        // blocks. (Until layout 5 the leaf index shared this family and doubled
        // its keys, its filters and its compactions.) (Ribbon filters take ~30%
        // less memory but cost enough CPU to build, at every flush and compaction,
        // to cut batch appends by ~15% on 2 cores.)
        // Random keys: every file flushed (since layout 6, ingested) to level 0
        // overlaps the whole base level,
        // so each level-0 compaction rewrites all of it. 16 MiB memtables and 8
        // level-0 files per compaction (instead of 8 MiB and 4) merge 4x as much new
        // data per rewrite: at 25M-27M entries the family's compactions wrote
        // 0.6-1.2 GB instead of 1.9-2.2 GB per 1.2M entries, for 16 MB more memory.
        (IDS, {
            let mut f = family(16 << 20, true, &ids_cache);
            // Random keys and small values: LZ4 saved ~11 B per entry (3% of the
            // disk) and cost 17% of the compaction CPU (two fresh logs grown 0 -> 5M
            // alternated: 17.8 against 21.6 s of RocksDB background CPU). Files
            // written before keep their codec until compaction rewrites them.
            f.set_compression_type(rocksdb::DBCompressionType::None);
            // A Bloom filter over each memtable's keys (2% of its size, ~14 bits a
            // key): the de-duplication check of a new event, which almost always
            // misses, then skipped the two memtables' skip lists. Since layout 6 the
            // keys arrive as ingested tables and the memtables stay empty (but for
            // `w` at a migration), so neither the filter nor their size costs memory.
            f.set_memtable_prefix_bloom_ratio(0.02);
            f.set_memtable_whole_key_filtering(true);
            f.set_level_zero_file_num_compaction_trigger(8);
            f.set_level_zero_slowdown_writes_trigger(24);
            f.set_level_zero_stop_writes_trigger(40);
            f
        }),
        // The leaf index, read only by proofs asked for by leaf hash, one key per
        // epoch: a Bloom filter answers the epochs that do not hold the leaf
        // (without one, each cost an index and a data block read: 0.5-0.8 ms a
        // lookup at 12M entries); its partitions are cached with the data of
        // `entries` and `hashes`, so memory stays bounded. Random bytes: no codec.
        // Its keys are random within the current epoch but after every older
        // epoch's, so a compaction merges only the current epoch's files and moves
        // the others down the levels unchanged.
        (LEAVES, {
            let mut f = family(8 << 20, true, &cache);
            f.set_compression_type(rocksdb::DBCompressionType::None);
            // 16 MiB files (RocksDB's default is 64): the file that straddles the
            // current epoch's start, rewritten with it, is smaller. Eight level-0
            // files per compaction: more new keys merged per rewrite of the epoch,
            // and only lookups by leaf hash read level 0.
            f.set_target_file_size_base(16 << 20);
            f.set_level_zero_file_num_compaction_trigger(8);
            f
        }),
        // Keys that only ever arrive in increasing order, each in a family of its
        // own, so a flushed file overlaps no older one and moves down the levels
        // without being rewritten.
        // Reads hit (an entry, a hash below the tree size) or run in order
        // (bundles, tiles): no filter.
        (ENTRIES, family(16 << 20, false, &cache)),
        // Tiles of hashes, 16 KiB each: random bytes, which no codec shrinks.
        (HASHES, {
            let mut f = family(8 << 20, false, &cache);
            f.set_compression_type(rocksdb::DBCompressionType::None);
            f
        }),
    ];
    (o, families)
}

/// Opens the database with the families it has (`create`: a new database with all
/// of them), flushing and compacting with O_DIRECT if `direct_io`. Answers the
/// families of this layout that it lacks (an older layout's store), with their
/// options, for a migration to create. A family this release does not know is
/// refused: a newer release wrote the store.
fn open_db(
    path: &Path,
    create: bool,
    direct_io: bool,
) -> Result<(DB, Vec<(&'static str, Options)>)> {
    let (mut o, families) = db_options(direct_io);
    o.create_if_missing(create);
    o.create_missing_column_families(create);
    let present = if create {
        families.iter().map(|(n, _)| n.to_string()).collect()
    } else {
        DB::list_cf(&Options::default(), path).map_err(|e| {
            LedgerError::storage(format!(
                "{} is not a RocksDB database this node can open: {e}",
                path.display()
            ))
        })?
    };
    if let Some(unknown) = present
        .iter()
        .find(|p| !families.iter().any(|(n, _)| n == p))
    {
        return Err(LedgerError::storage(format!(
            "{} has a column family `{unknown}` that this custody-node does not know: a newer \
             release wrote it; serve it with that release or a later one",
            path.display()
        )));
    }
    let (open, missing): (Vec<_>, Vec<_>) = families
        .into_iter()
        .partition(|(n, _)| present.iter().any(|p| p == n));
    let descriptors = open
        .into_iter()
        .map(|(n, f)| ColumnFamilyDescriptor::new(n, f));
    let db = DB::open_cf_descriptors(&o, path, descriptors).map_err(LedgerError::storage)?;
    Ok((db, missing))
}

/// Why RocksDB's flushes and compactions cannot write with O_DIRECT in `db_dir`
/// (`Ok(None)`: they can, and do, see [`db_options`]). Some filesystems refuse it
/// (tmpfs before Linux 6.6, some network and FUSE filesystems), and RocksDB would
/// then refuse to open the store. Writes one aligned 4 KiB block to a probe file
/// of this process's own (`direct-io-probe.<pid>`, which RocksDB ignores) and
/// removes it. Only a refusal of O_DIRECT itself (EINVAL, EOPNOTSUPP) means the
/// page cache; any other failure (a full disk, permissions) is an error naming the
/// probe file. Anything but Linux: the page cache.
fn direct_io_refusal(db_dir: &Path) -> Result<Option<String>> {
    #[cfg(target_os = "linux")]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        /// O_DIRECT wants the buffer, the offset and the length aligned to the
        /// device's logical block, as RocksDB does (4 KiB unless the device says
        /// otherwise); a filesystem that wants more answers no.
        #[repr(align(4096))]
        struct Block([u8; 4096]);
        let probe = db_dir.join(format!("direct-io-probe.{}", std::process::id()));
        let _ = std::fs::remove_file(&probe);
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_DIRECT | libc::O_NOFOLLOW)
            .open(&probe)
            .and_then(|mut f| f.write_all(&Block([0; 4096]).0));
        let _ = std::fs::remove_file(&probe);
        match written {
            Ok(()) => Ok(None),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP)) => {
                Ok(Some(format!(
                    "{} refused an O_DIRECT write: {e}",
                    db_dir.display()
                )))
            }
            Err(e) => Err(LedgerError::storage(format!(
                "writing the probe file {} (to learn whether this filesystem takes \
                 O_DIRECT writes): {e}",
                probe.display()
            ))),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = db_dir;
        Ok(Some("O_DIRECT is not used on this platform".to_owned()))
    }
}

/// The lowest tree level whose hashes [`Store`] keeps in memory (one C2SP tile up).
pub const UPPER_LEVEL: u8 = 8;

/// RocksDB's block cache: data and index blocks of every family but `ids`.
const BLOCK_CACHE_BYTES: usize = 32 << 20;

/// The `ids` family's own block cache: its filters and indexes (~1.5 B per entry),
/// and the data blocks that duplicates and false positives read.
const IDS_CACHE_BYTES: usize = 64 << 20;

fn synced() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.set_sync(true);
    w
}

/// A key and its value, as RocksDB's iterators give them.
type KeyValue = (Box<[u8]>, Box<[u8]>);

/// The keys of `family` (the default one if `None`) that start with `prefix`, in
/// key order, with their values.
fn prefixed<'a>(
    db: &'a DB,
    family: Option<&str>,
    prefix: u8,
) -> impl Iterator<Item = std::result::Result<KeyValue, rocksdb::Error>> + 'a {
    let keys = match family {
        Some(name) => db.prefix_iterator_cf(
            db.cf_handle(name)
                .expect("a store of the layout being migrated has this family"),
            [prefix],
        ),
        None => db.prefix_iterator([prefix]),
    };
    // An error is passed on, for the caller to report.
    keys.take_while(move |r| r.as_ref().map_or(true, |(k, _)| k.first() == Some(&prefix)))
}

/// Copies every default-family key that starts with one of `moves`' prefixes into
/// that prefix's family, in unsynced batches; [`Store::finish_migration`] then removes
/// the originals and records the layout in one synced batch, so a crash part-way
/// leaves the old layout intact and the next open copies again (the same keys to the
/// same values).
///
/// Answers how many keys of each prefix were copied. `total(prefix)`, if known, is
/// how many the copy should find (for the progress lines).
fn copy_prefixes(
    db: &DB,
    moves: &[(u8, &str)],
    total: impl Fn(u8) -> Option<u64>,
) -> Result<Vec<u64>> {
    let mut counts = Vec::with_capacity(moves.len());
    for &(prefix, family) in moves {
        let cf = db
            .cf_handle(family)
            .expect("a migration creates the families it copies into");
        let of = total(prefix)
            .map(|t| format!(" of {t}"))
            .unwrap_or_default();
        let mut copied = 0u64;
        let mut next_report = 1_000_000u64;
        let mut batch = WriteBatch::default();
        let fail = |e: rocksdb::Error| {
            LedgerError::storage(format!(
                "copying '{}' keys into {family}: {e}; the store is unchanged in its old \
                 layout, open it again to retry",
                prefix as char
            ))
        };
        for item in prefixed(db, None, prefix) {
            let (k, v) = item.map_err(fail)?;
            batch.put_cf(cf, k, v);
            copied += 1;
            // Bounded by bytes as well as keys: an entry may be 64 KiB.
            if batch.len() >= 100_000 || batch.size_in_bytes() >= 8 << 20 {
                db.write(std::mem::take(&mut batch)).map_err(fail)?;
                if copied >= next_report {
                    crate::to_stderr!(
                        "custody: {copied}{of} '{}' keys copied to {family}",
                        prefix as char
                    );
                    next_report = copied + 1_000_000;
                }
            }
        }
        db.write(batch).map_err(fail)?;
        crate::to_stderr!(
            "custody: {copied}{of} '{}' keys copied to {family}",
            prefix as char
        );
        counts.push(copied);
    }
    Ok(counts)
}

/// Copies the leaf index of layouts 1 to 4 (`l` ‖ leaf hash → index, in the family
/// `from`, the default one if `None`) into `leaves`, keyed by epoch, in unsynced
/// batches; [`Store::finish_migration`] then removes the originals, and a crash
/// before that leaves the old layout, whose next open copies the same keys again.
/// Every entry of a tree of `size` has one.
fn copy_leaf_index(db: &DB, from: Option<&str>, size: u64) -> Result<()> {
    let leaves = db
        .cf_handle(LEAVES)
        .expect("a migration creates the families it copies into");
    let fail = |e: rocksdb::Error| {
        LedgerError::storage(format!(
            "copying the leaf index into {LEAVES}: {e}; the store is unchanged in its old \
             layout, open it again to retry"
        ))
    };
    // Whatever an earlier attempt cut short left there goes first: the index is
    // copied whole, and nothing else may answer a lookup.
    let mut batch = WriteBatch::default();
    batch.delete_range_cf(leaves, b"l", b"m");
    let mut copied = 0u64;
    let mut next_report = 1_000_000u64;
    for item in prefixed(db, from, b'l') {
        let (k, v) = item.map_err(fail)?;
        let leaf = k.get(1..).and_then(|h| <&[u8; 32]>::try_from(h).ok());
        let (Some(leaf), Some(index)) = (leaf, be(&v).filter(|&i| i < size)) else {
            return Err(LedgerError::corrupt(format!(
                "the leaf index holds {} -> {}, not a leaf hash and the index of an entry of \
                 a tree of size {size}",
                hex::encode(&k),
                hex::encode(&v)
            )));
        };
        batch.put_cf(leaves, leaf_key(index, leaf), &v);
        copied += 1;
        if batch.len() >= 100_000 {
            db.write(std::mem::take(&mut batch)).map_err(fail)?;
            if copied >= next_report {
                crate::to_stderr!("custody: {copied} of {size} leaf index keys copied to {LEAVES}");
                next_report = copied + 1_000_000;
            }
        }
    }
    db.write(batch).map_err(fail)?;
    crate::to_stderr!("custody: {copied} of {size} leaf index keys copied to {LEAVES}");
    if copied != size {
        return Err(LedgerError::corrupt(format!(
            "the leaf index holds {copied} keys; a tree of size {size} has {size}"
        )));
    }
    Ok(())
}

/// Whether a migration from layout `from` writes tiles: layouts 1 to 3 kept every
/// stored hash as an `h` key; from layout 4 on the tiles are the store's own.
fn writes_tiles(from: u64) -> bool {
    from <= 3
}

/// Writes the `t` key of every full tile of a tree of `size` from the `h` keys of
/// layouts 1 to 3 (one per stored hash, in the family `from`, default if `None`), in
/// unsynced batches. [`Store::finish_migration`] then removes the `h` keys; a crash
/// before that leaves the old layout, whose next open writes the same tiles again.
fn write_tiles(db: &DB, from: Option<&str>, size: u64) -> Result<()> {
    let hashes = db
        .cf_handle(HASHES)
        .expect("a migration creates the families it writes into");
    let full = size / tree::TILE_WIDTH;
    let fail = |e: rocksdb::Error| {
        LedgerError::storage(format!(
            "writing tiles of tree hashes: {e}; the store is unchanged in its old layout, \
             open it again to retry"
        ))
    };
    let mut tile = 0u64;
    let mut value: Vec<u8> = Vec::with_capacity(TILE_BYTES);
    let mut batch = WriteBatch::default();
    for item in prefixed(db, from, b'h') {
        if tile == full {
            break;
        }
        let (k, v) = item.map_err(fail)?;
        let index = k.get(1..).and_then(be).ok_or_else(|| {
            LedgerError::corrupt(format!(
                "the tree hash key {} is malformed",
                hex::encode(&k)
            ))
        })?;
        // Levels 8 and up are kept as `u` keys only: each `h` one, about to be
        // deleted, must equal its `u` copy where there is one (layout 1 has none).
        let Some((n, at)) = in_tile(index) else {
            let (level, k) = tlog_tiles::split_stored_hash_index(index);
            let copy = db.get(upper_key(level, k)).map_err(fail)?;
            if copy.as_deref().is_some_and(|c| c != v.as_ref()) {
                return Err(LedgerError::corrupt(format!(
                    "the copy of tree hash (level {level}, {k}) differs from the stored hash: \
                     one of them was altered"
                )));
            }
            continue;
        };
        if n != tile || at != value.len() / 32 || v.len() != 32 {
            let expected = tile_base(tile) + (value.len() / 32) as u64;
            return Err(LedgerError::corrupt(format!(
                "tree hash {expected} (tile {tile}, hash {} of {TILE_HASHES}) is missing or \
                 malformed: the next stored one is {index}, of {} bytes",
                value.len() / 32,
                v.len()
            )));
        }
        value.extend_from_slice(&v);
        if value.len() == TILE_BYTES {
            batch.put_cf(hashes, tile_key(tile), &value);
            value.clear();
            tile += 1;
            if batch.size_in_bytes() >= 8 << 20 {
                db.write(std::mem::take(&mut batch)).map_err(fail)?;
            }
            if tile.is_multiple_of(100_000) {
                crate::to_stderr!("custody: {tile} of {full} tiles of tree hashes written");
            }
        }
    }
    db.write(batch).map_err(fail)?;
    if tile != full {
        return Err(LedgerError::corrupt(format!(
            "the store holds the tree hashes of {tile} full tiles; a tree of size {size} has {full}"
        )));
    }
    crate::to_stderr!("custody: {tile} of {full} tiles of tree hashes written");
    Ok(())
}

/// The actor records (`a` keys), by key.
fn load_actors(db: &DB) -> Result<HashMap<KeyId, Actor>> {
    let mut actors = HashMap::new();
    for item in db.prefix_iterator([b'a']) {
        let (k, v) = item.map_err(LedgerError::storage)?;
        if k.first() != Some(&b'a') {
            break;
        }
        let a: Actor = serde_json::from_slice(&v)
            .map_err(|e| LedgerError::corrupt(format!("actor record: {e}")))?;
        actors.insert(a.key, a);
    }
    Ok(actors)
}

/// A migration from layout `from` that failed before it removed anything: drops the
/// families it created (they hold only copies) and, when it wrote tiles (from
/// layouts 1 to 3) into a `hashes` it did not create (layout 3, or a migration
/// from 1 or 2 cut short after creating it), those tiles, so the store is as it
/// was, and answers `e`. A layout-4 store's tiles are its own: they stay, as they
/// do outside a migration (`from` None), where it only answers `e`. Copies left in
/// a `leaves` it did not create (a migration cut short) are harmless: the next
/// attempt clears them before it copies.
fn undo(mut db: DB, created: &[&str], from: Option<u64>, e: LedgerError) -> LedgerError {
    if from.is_some_and(writes_tiles) && !created.contains(&HASHES) {
        if let Some(hashes) = db.cf_handle(HASHES) {
            if let Err(d) = db.delete_range_cf(hashes, b"t", b"u") {
                return LedgerError::new(
                    e.code,
                    format!(
                        "{}; and the tiles it wrote could not be removed ({d})",
                        e.detail
                    ),
                );
            }
        }
    }
    for name in created {
        if let Err(d) = db.drop_cf(name) {
            return LedgerError::new(
                e.code,
                format!(
                    "{}; and the column family `{name}` this attempt created could not be \
                     removed ({d}), so an older release will not open the store",
                    e.detail
                ),
            );
        }
    }
    e
}

impl Store {
    /// Creates a new log in `dir`: the database with entry 0 (the genesis recording
    /// `origin` and the admin key), then the log key file (0600), written last and
    /// renamed into place, so a directory with `log.key` always holds a complete
    /// log. Refuses a directory that already holds one; an init that crashed before
    /// the key was in place (a `db/` without `log.key`, never served) is redone.
    pub fn init(dir: &Path, origin: &str, admin: KeyId) -> Result<Store> {
        if dir.join(KEY_FILE).exists() {
            return Err(LedgerError::storage(format!(
                "{} already holds a log; choose an empty directory or serve the existing one",
                dir.display()
            )));
        }
        if dir.join(DB_DIR).exists() {
            std::fs::remove_dir_all(dir.join(DB_DIR)).map_err(|e| {
                LedgerError::storage(format!(
                    "removing the incomplete init in {}: {e}",
                    dir.display()
                ))
            })?;
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| LedgerError::storage(format!("creating {}: {e}", dir.display())))?;
        let key = LogKey::generate(origin)?;
        let genesis = Event {
            kind: Kind::Genesis,
            case: None,
            claimed_at: Utc::now(),
            refs: vec![],
            attachments: vec![],
            body: Body::Genesis(Genesis {
                origin: origin.to_owned(),
                admin_key: admin,
                log_vkey: key.vkey(),
            }),
        };
        let env = Envelope::sign(&genesis.to_payload(), key.signing_key());
        let opened = env.open()?;
        let db_dir = dir.join(DB_DIR);
        std::fs::create_dir_all(&db_dir)
            .map_err(|e| LedgerError::storage(format!("creating {}: {e}", db_dir.display())))?;
        let page_cache_writes = direct_io_refusal(&db_dir)?;
        let (db, _) = open_db(&db_dir, true, page_cache_writes.is_none())?;
        let mut first = WriteBatch::default();
        first.put(META_LAYOUT, LAYOUT.to_be_bytes());
        first.put_cf(
            db.cf_handle(IDS).expect("a new store has every family"),
            IDS_FROM,
            0u64.to_be_bytes(),
        );
        db.write_opt(first, &synced())
            .map_err(LedgerError::storage)?;
        let verifier = CheckpointVerifier::new(&key.vkey())?;
        let empty = key.sign(0, tree::EMPTY_HASH.into())?;
        let mut store = Store {
            db,
            dir: dir.to_owned(),
            key,
            verifier,
            checkpoint: RwLock::new(empty),
            actors: RwLock::new(HashMap::new()),
            upper: RwLock::new(Vec::new()),
            edge: RwLock::new(Edge::default()),
            commit_lock: Mutex::new(()),
            tile_file: None,
            page_cache_writes,
            id_tail: RwLock::new(IdTail::new(0)),
            id_runs: Mutex::new(()),
        };
        let now = chrono::SubsecRound::trunc_subsecs(Utc::now(), 3);
        let effects =
            crate::replay::judge(&store, 0, now, &opened, &crate::cases::Rules::default())?;
        store.commit(vec![NewEntry {
            bytes: entry::encode(now, &opened.envelope),
            event_id: opened.event_id(),
            case: None,
            actor: effects.actor,
        }])?;
        // The key file is written last: a directory with a key is a complete log.
        let tmp = dir.join(format!("{KEY_FILE}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        store.key.create(&tmp)?;
        std::fs::rename(&tmp, dir.join(KEY_FILE))
            .and_then(|_| std::fs::File::open(dir).and_then(|d| d.sync_all()))
            .map_err(|e| {
                LedgerError::storage(format!("installing {KEY_FILE} in {}: {e}", dir.display()))
            })?;
        store.tile_file = store.open_tile_file();
        Ok(store)
    }

    /// Opens an existing log and checks it: the latest checkpoint verifies with the
    /// log key, the stored tree has exactly that root, and no entry lies beyond it.
    pub fn open(dir: &Path) -> Result<Store> {
        let key_path = dir.join(KEY_FILE);
        if !key_path.exists() {
            return Err(LedgerError::storage(format!(
                "{} holds no log (no {KEY_FILE}); create one with `custody-node init`",
                dir.display()
            )));
        }
        let key = LogKey::load(&key_path)?;
        let verifier = CheckpointVerifier::new(&key.vkey())?;
        let db_dir = dir.join(DB_DIR);
        let page_cache_writes = if db_dir.is_dir() {
            direct_io_refusal(&db_dir)?
        } else {
            None // open_db says what is wrong
        };
        let (mut db, missing) = open_db(&db_dir, false, page_cache_writes.is_none())?;
        let size = db
            .get(META_SIZE)
            .map_err(LedgerError::storage)?
            .and_then(|v| be(&v))
            .ok_or_else(|| LedgerError::corrupt("the store has no checkpoint"))?;
        let note = db
            .get(ku(b'c', size))
            .map_err(LedgerError::storage)?
            .ok_or_else(|| {
                LedgerError::corrupt(format!("checkpoint for size {size} is missing"))
            })?;
        let note = String::from_utf8(note)
            .map_err(|_| LedgerError::corrupt("the stored checkpoint is not UTF-8"))?;
        let checkpoint = verifier.verify(&note).map_err(|e| {
            LedgerError::corrupt(format!(
                "the stored checkpoint does not verify with the log key: {e}"
            ))
        })?;
        if checkpoint.size != size {
            return Err(LedgerError::corrupt(format!(
                "the stored checkpoint says size {}, the store says {size}",
                checkpoint.size
            )));
        }
        // The layout is checked, and an older store migrated, only once its
        // checkpoint verifies: a store that fails that is refused before anything is
        // written, and one that fails a later check is put back as it was (`undo`).
        let from = match db.get(META_LAYOUT).map_err(LedgerError::storage)? {
            None => Some(1),
            Some(v) => match be(&v) {
                Some(LAYOUT) => None,
                Some(old @ 2..LAYOUT) => Some(old),
                Some(other) if other > LAYOUT => {
                    return Err(LedgerError::storage(format!(
                        "{} was written in key layout {other}, newer than this custody-node's \
                         ({LAYOUT}); serve it with the release that wrote it, or a later one",
                        dir.display()
                    )))
                }
                _ => {
                    return Err(LedgerError::corrupt(format!(
                        "the store's layout key holds {}, not a layout this node wrote",
                        hex::encode(&v)
                    )))
                }
            },
        };
        // Layout 5 had every family of this one: its migration creates none.
        let says = from.unwrap_or(LAYOUT);
        if says >= 5 {
            if let Some((name, _)) = missing.first() {
                return Err(LedgerError::corrupt(format!(
                    "the store says key layout {says} but has no column family `{name}`"
                )));
            }
        }
        // The families a migration creates, dropped again if it fails: the store is
        // then exactly as it was, and an older release can still open it.
        let mut created: Vec<&'static str> = Vec::new();
        if from == Some(5) {
            crate::to_stderr!(
                "custody: {} uses key layout 5; recording where its de-duplication index \
                 ends (once)",
                dir.display()
            );
        } else if let Some(from) = from {
            crate::to_stderr!(
                "custody: {} uses key layout {from}; {} (once; this copies the log's {}, so \
                 it needs as much free disk again)",
                dir.display(),
                match from {
                    1 =>
                        "moving its indexes and entries into column families of their own \
                          and its tree hashes into tiles",
                    2 =>
                        "moving its entries and leaf index into column families of their \
                          own and its tree hashes into tiles",
                    3 =>
                        "moving its tree hashes into tiles and its leaf index into a column \
                          family of its own",
                    _ => "moving its leaf index into a column family of its own",
                },
                match from {
                    1 | 2 => "entries, tree hashes and leaf index",
                    3 => "tree hashes and leaf index",
                    _ => "leaf index",
                }
            );
            for (name, options) in &missing {
                if let Err(e) = db.create_cf(name, options) {
                    return Err(undo(db, &created, Some(from), LedgerError::storage(e)));
                }
                created.push(name);
            }
            let mut moves = Vec::new();
            if from <= 2 {
                moves.push((b'e', ENTRIES));
            }
            if from == 1 {
                moves.push((b'd', IDS));
            }
            // Entries 0..size, no more, no fewer.
            let expect = |p: u8| (p == b'e').then_some(size);
            let copied = copy_prefixes(&db, &moves, expect)
                .and_then(|counts| {
                    match moves
                        .iter()
                        .zip(counts)
                        .find(|((p, _), n)| expect(*p).is_some_and(|e| e != *n))
                    {
                        Some(((p, _), n)) => Err(LedgerError::corrupt(format!(
                            "the store holds {n} '{}' keys; a tree of size {size} has {size}",
                            *p as char,
                        ))),
                        None => Ok(()),
                    }
                })
                // Layouts 1 and 2 keep the `h` hashes in the default family.
                .and_then(|()| {
                    if writes_tiles(from) {
                        write_tiles(&db, (from == 3).then_some(HASHES), size)
                    } else {
                        Ok(())
                    }
                })
                // Layout 1 keeps the leaf index in the default family, 2 to 4 in `ids`
                // (5 in `leaves` already).
                .and_then(|()| {
                    if from <= 4 {
                        copy_leaf_index(&db, (from >= 2).then_some(IDS), size)
                    } else {
                        Ok(())
                    }
                });
            if let Err(e) = copied {
                return Err(undo(db, &created, Some(from), e));
            }
        }
        let actors = match load_actors(&db) {
            Ok(a) => a,
            Err(e) => return Err(undo(db, &created, from, e)),
        };
        let mut store = Store {
            db,
            dir: dir.to_owned(),
            key,
            verifier,
            checkpoint: RwLock::new(checkpoint),
            actors: RwLock::new(actors),
            upper: RwLock::new(Vec::new()),
            edge: RwLock::new(Edge::default()),
            commit_lock: Mutex::new(()),
            tile_file: None,
            page_cache_writes,
            id_tail: RwLock::new(IdTail::unloaded()),
            id_runs: Mutex::new(()),
        };
        let loaded = store.load_edge().and_then(|_| {
            let rebuilt = store.load_upper()?;
            store.check_tree()?;
            Ok(rebuilt)
        });
        let rebuilt = match loaded {
            Ok(rebuilt) => rebuilt,
            Err(e) => return Err(undo(store.db, &created, from, e)),
        };
        // Upper hashes that had no `u` key (layout 1, or one lost), now checked
        // against the root: written, so the next open reads them instead.
        if !rebuilt.is_empty() {
            let mut batch = WriteBatch::default();
            for (level, n, h) in &rebuilt {
                batch.put(upper_key(*level, *n), h.0);
            }
            store
                .db
                .write_opt(batch, &synced())
                .map_err(LedgerError::storage)?;
        }
        if let Some(from) = from {
            store.finish_migration(from)?;
        }
        store.load_id_tail()?;
        store.tile_file = store.open_tile_file();
        Ok(store)
    }

    /// Opens the tile file for the tiles the store holds, or says on stderr why
    /// proofs will read RocksDB instead.
    fn open_tile_file(&self) -> Option<TileFile> {
        let path = self.dir.join(TILE_FILE);
        let full = self.edge.read().expect("edge lock").tile;
        match TileFile::open(&path, full) {
            Ok(f) => Some(f),
            Err(e) => {
                crate::to_stderr!(
                    "custody: cannot open the tile file {} ({e}); proofs will read the \
                     tiles from RocksDB, which costs more CPU per proof. Check the file's \
                     permissions and the disk, then restart the node",
                    path.display()
                );
                None
            }
        }
    }

    /// Tile `n`'s wanted hashes (`these`: tile, position in it, position in `out`)
    /// from the tile file into `out`, each checked against the tile's level-8 hash
    /// `root`. False if the file could not vouch for them: the tile is then
    /// distrusted (written again from RocksDB by the tile thread) and the caller
    /// reads it from RocksDB.
    fn read_from_file(
        &self,
        file: &TileFile,
        n: u64,
        root: Hash,
        these: &[(u64, usize, usize)],
        buf: &mut [u8; TILE_BYTES],
        out: &mut [Hash],
    ) -> bool {
        let why = match file.read(n, buf) {
            Ok(false) => return false,
            Ok(true) => {
                let mut tile = Verified::new(buf, tile_base(n), root);
                let mut all = true;
                for &(_, at, pos) in these {
                    match tile.get(at) {
                        Some(h) => out[pos] = h,
                        None => {
                            all = false;
                            break;
                        }
                    }
                }
                if all {
                    return true;
                }
                "its hashes do not lead to the tree's".to_string()
            }
            Err(e) => e.to_string(),
        };
        file.distrust(n);
        crate::to_stderr!(
            "custody: tile {n} in {} is unusable ({why}); proofs read it from RocksDB until \
             the tile thread has written it again",
            file.path().display()
        );
        false
    }

    /// Copies up to `most` full tiles from RocksDB into the tile file, those a read
    /// found wrong there first, then those it lacks, in order; then syncs it when
    /// due (at once with `sync_now`: [`TileFile::sync`]). Returns how many it
    /// copied. The sequencer's tile thread calls this.
    pub fn extend_tile_file(&self, most: u64, sync_now: bool) -> Result<u64> {
        let Some(file) = &self.tile_file else {
            return Ok(0);
        };
        let full = self.edge.read().expect("edge lock").tile;
        let mut copied = 0;
        let failed = |e: std::io::Error| {
            LedgerError::storage(format!(
                "writing the tile file {}: {e}",
                file.path().display()
            ))
        };
        while let Some(n) = file.first_distrusted().filter(|_| copied < most) {
            file.repair(n, &self.db_tile(n, false)?).map_err(failed)?;
            copied += 1;
        }
        while copied < most {
            let n = file.valid();
            if n >= full {
                break;
            }
            file.append(n, &self.db_tile(n, false)?).map_err(failed)?;
            copied += 1;
        }
        file.sync(sync_now).map_err(failed)?;
        Ok(copied)
    }

    /// Full tile `n`'s hashes as RocksDB holds them (the record, which the tile
    /// file copies), kept in the block cache only if `cache` (not when it is read
    /// once, to be copied or checked).
    fn db_tile(&self, n: u64, cache: bool) -> Result<rocksdb::DBPinnableSlice<'_>> {
        let mut opts = rocksdb::ReadOptions::default();
        opts.fill_cache(cache);
        let value = self
            .db
            .get_pinned_cf_opt(self.hashes_cf(), tile_key(n), &opts)
            .map_err(LedgerError::storage)?
            .ok_or_else(|| LedgerError::corrupt(format!("tile {n} of tree hashes is missing")))?;
        if value.len() != TILE_BYTES {
            return Err(LedgerError::corrupt(format!(
                "tile {n} of tree hashes is {} bytes, not {TILE_BYTES}",
                value.len()
            )));
        }
        Ok(value)
    }

    /// Full tiles the tile file holds (proofs read those from it), and full tiles
    /// in all.
    pub fn tile_file_tiles(&self) -> (u64, u64) {
        let full = self.edge.read().expect("edge lock").tile;
        (self.tile_file.as_ref().map_or(0, TileFile::serving), full)
    }

    /// Hashes the partial tile's entries again (fewer than 256): its stored hashes
    /// are kept in memory only.
    fn load_edge(&self) -> Result<()> {
        let size = self.size();
        let tile = size / tree::TILE_WIDTH;
        let first = tile * tree::TILE_WIDTH;
        let keys: Vec<Vec<u8>> = (first..size).map(|i| ku(b'e', i)).collect();
        let mut leaves = tree::MemoryTree::new();
        let got = self.db.batched_multi_get_cf(self.entries_cf(), &keys, true);
        for (i, got) in (first..).zip(got) {
            let e = got
                .map_err(LedgerError::storage)?
                .ok_or_else(|| LedgerError::corrupt(format!("entry {i} is missing")))?;
            leaves.push(leaf_hash(&e));
        }
        *self.edge.write().expect("edge lock") = Edge {
            tile,
            hashes: leaves.hashes().to_vec(),
        };
        Ok(())
    }

    /// Reads the upper levels of the tree into memory (see [`Store::upper`]) from
    /// their `u` copies, one short run of keys; whatever is missing there (a store
    /// from layout 1) is hashed from the level below, level 8 from the tiles, and
    /// answered as (level, n, hash), for the caller to write once the root is checked.
    fn load_upper(&self) -> Result<Vec<(u8, u64, Hash)>> {
        let size = self.size();
        let mut levels: Vec<Vec<Hash>> = (UPPER_LEVEL..64)
            .map(|level| size >> level)
            .take_while(|&count| count > 0)
            .map(|count| Vec::with_capacity(count as usize))
            .collect();
        for item in self.db.prefix_iterator([b'u']) {
            let (k, v) = item.map_err(LedgerError::storage)?;
            if k.first() != Some(&b'u') {
                break;
            }
            let bad = || {
                LedgerError::corrupt(format!(
                    "the upper tree hash {} is malformed",
                    hex::encode(&k)
                ))
            };
            let (level, n) = match (k.get(1), k.get(2..).and_then(be)) {
                (Some(&l), Some(n)) if l >= UPPER_LEVEL => (l, n),
                _ => return Err(bad()),
            };
            let hash = <[u8; 32]>::try_from(v.as_ref())
                .map(Hash)
                .map_err(|_| bad())?;
            // In key order each level's hashes come left to right; a gap ends what
            // can be taken from here.
            if let Some(l) = levels.get_mut(usize::from(level - UPPER_LEVEL)) {
                if l.len() as u64 == n && n < size >> level {
                    l.push(hash);
                }
            }
        }
        let mut rebuilt = Vec::new();
        for l in 0..levels.len() {
            let (below, rest) = levels.split_at_mut(l);
            let hashes = &mut rest[0];
            let level = UPPER_LEVEL + l as u8;
            let from = hashes.len();
            let mut n = hashes.len() as u64;
            while n < size >> level {
                match below.last() {
                    Some(below) => {
                        let i = 2 * n as usize;
                        hashes.push(tlog_tiles::node_hash(below[i], below[i + 1]));
                        n += 1;
                    }
                    // Level 8: the two level-7 hashes of tile n, in MultiGets of
                    // 2,048 tiles.
                    None => {
                        let to = (size >> level).min(n + 2048);
                        let halves: Vec<u64> = (n..to)
                            .flat_map(|t| {
                                [2 * t, 2 * t + 1]
                                    .map(|k| tlog_tiles::stored_hash_index(UPPER_LEVEL - 1, k))
                            })
                            .collect();
                        let read = self.read_hashes(&halves).map_err(|e| {
                            LedgerError::corrupt(format!("reading tiles {n}..{to}: {e}"))
                        })?;
                        hashes.extend(read.chunks(2).map(|p| tlog_tiles::node_hash(p[0], p[1])));
                        n = to;
                    }
                }
            }
            rebuilt.extend((from..hashes.len()).map(|k| (level, k as u64, hashes[k])));
        }
        *self.upper.write().expect("upper lock") = levels;
        Ok(rebuilt)
    }

    /// The last step of a migration from layout `from` (after [`copy_prefixes`],
    /// [`write_tiles`], [`copy_leaf_index`], [`Store::load_upper`], the tree check
    /// on the copies and the `u` keys layout 1 lacked): one synced batch removes the
    /// originals of the copied keys, every `h` hash and the `l` keys left in `ids`,
    /// and records the layout.
    fn finish_migration(&self, from: u64) -> Result<()> {
        // Every `d` key of layouts 1 to 5 is in `ids` now (copied there from layout
        // 1's default family): the index is complete up to the tree size.
        let complete = self.size().to_be_bytes();
        // Key ranges [from, to) of the default family, and of `hashes`.
        let mut moved: Vec<[u8; 2]> = Vec::new();
        if from <= 2 {
            moved.extend([*b"ef", *b"hi"]);
        }
        if from == 1 {
            moved.extend([*b"de", *b"lm"]);
        }
        let mut last = WriteBatch::default();
        // Layout 5 moved nothing: it only needs `w`.
        if from <= 4 {
            for r in &moved {
                last.delete_range(&r[..1], &r[1..]);
            }
            // The leaf index, copied into `leaves` from `ids` (layouts 2 to 4; from
            // layout 1, a migration cut short by an older release left copies there).
            last.delete_range_cf(self.ids(), b"l", b"m");
            // Layout 3's hashes; or copies left in `hashes` by an older release's
            // migration from layout 1 or 2 that was cut short.
            last.delete_range_cf(self.hashes_cf(), b"h", b"i");
        }
        last.put_cf(self.ids(), IDS_FROM, complete);
        last.put(META_LAYOUT, LAYOUT.to_be_bytes());
        self.db
            .write_opt(last, &synced())
            .map_err(LedgerError::storage)?;
        if from == 5 {
            crate::to_stderr!(
                "custody: {} is now in key layout {LAYOUT}",
                self.dir.display()
            );
            return Ok(());
        }
        crate::to_stderr!(
            "custody: {} is now in key layout {LAYOUT}; reclaiming the old keys' space",
            self.dir.display()
        );
        // Reclaim the old keys' space (and their tables' filters) now rather than
        // whenever compaction reaches them: through the last level too, which
        // RocksDB otherwise leaves as it is (the deleted keys there were then purged
        // by a compaction under load: 14 s of CPU after the 61.6M-entry migration).
        let mut o = rocksdb::CompactOptions::default();
        o.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::ForceOptimized);
        let default = self.family(rocksdb::DEFAULT_COLUMN_FAMILY_NAME);
        for r in &moved {
            self.db
                .compact_range_cf_opt(default, Some(&r[..1]), Some(&r[1..]), &o);
        }
        self.db
            .compact_range_cf_opt(self.hashes_cf(), Some(b"h"), Some(b"i"), &o);
        self.db
            .compact_range_cf_opt(self.ids(), Some(b"l"), Some(b"m"), &o);
        crate::to_stderr!("custody: migration of {} done", self.dir.display());
        Ok(())
    }

    /// Reads where the tables of `d` keys end (`w`) and takes the ids of the entries
    /// from there to the tree size into memory: what a stop took from memory before
    /// their table was ingested (none after a clean stop, which ingests them).
    fn load_id_tail(&self) -> Result<()> {
        // A table written but not ingested when the node stopped.
        self.remove_id_run_file()?;
        let from = self
            .db
            .get_cf(self.ids(), IDS_FROM)
            .map_err(LedgerError::storage)?
            .and_then(|v| be(&v))
            .ok_or_else(|| {
                LedgerError::corrupt(
                    "the de-duplication index has no `w` key saying where its tables end",
                )
            })?;
        let size = self.size();
        if from > size {
            return Err(LedgerError::corrupt(format!(
                "the de-duplication index says its tables hold the ids of entries up to \
                 {from}, beyond the tree size {size}"
            )));
        }
        let mut tail = IdTail::new(from);
        // Parsing the entries is most of an open after a crash (~3 µs each on a slow
        // core, up to a few hundred thousand of them): one slice per core.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let step = (size - from).div_ceil(threads).max(1);
        let slices: Vec<Result<Vec<EventId>>> = std::thread::scope(|s| {
            let parts: Vec<_> = (from..size)
                .step_by(step as usize)
                .map(|a| s.spawn(move || self.event_ids(a, (a + step).min(size))))
                .collect();
            parts
                .into_iter()
                .map(|p| p.join().expect("reading event ids does not panic"))
                .collect()
        });
        for (slice, first) in slices.into_iter().zip((from..size).step_by(step as usize)) {
            // In index order: were an id logged twice, the later index wins.
            tail.map.extend(slice?.into_iter().zip(first..));
        }
        tail.next = size;
        *self.id_tail.write().expect("id tail lock") = tail;
        Ok(())
    }

    /// The event ids of entries `from..to`, read from the entries in one scan.
    fn event_ids(&self, from: Index, to: Index) -> Result<Vec<EventId>> {
        let mut opts = rocksdb::ReadOptions::default();
        opts.set_iterate_upper_bound(ku(b'e', to));
        opts.fill_cache(false);
        opts.set_readahead_size(1 << 20);
        let mut it = self.db.raw_iterator_cf_opt(self.entries_cf(), opts);
        it.seek(ku(b'e', from));
        let mut ids = Vec::with_capacity((to - from) as usize);
        for i in from..to {
            ids.push(match (it.key(), it.value()) {
                (Some([b'e', n @ ..]), Some(value)) if be(n) == Some(i) => {
                    entry_event_id(i, value)?
                }
                _ => {
                    it.status().map_err(LedgerError::storage)?;
                    return Err(LedgerError::corrupt(format!("entry {i} is missing")));
                }
            });
            it.next();
        }
        Ok(ids)
    }

    /// Writes the ids held in memory ([`IdTail`]) into `ids` as a sorted table,
    /// if at least [`id_run`] entries' are held (with `all`, any: a clean stop),
    /// and forgets them once RocksDB has it; a table sealed by a try that failed
    /// first. Answers how many ids it
    /// wrote. The sequencer's tile thread calls this; a commit too if the ids held
    /// pass three tables' worth.
    pub fn index_ids(&self, all: bool) -> Result<u64> {
        let _one = self.id_runs.lock().expect("id runs lock");
        let mut written = 0;
        loop {
            let (from, to, mut keys) = {
                // Looked at under the read lock (the tile thread asks every 50 ms);
                // only this function, under `id_runs`, seals, so the answer holds.
                let fresh = {
                    let tail = self.id_tail.read().expect("id tail lock");
                    let held = tail.next - tail.from;
                    // A table that failed to be written is tried again as it was.
                    match tail.sealed {
                        Some(_) => None,
                        None if held == 0 || (!all && held < tail.run) => return Ok(written),
                        None => Some(tail.run),
                    }
                }
                .map(IdTail::fresh_map);
                let mut tail = self.id_tail.write().expect("id tail lock");
                if let Some(fresh) = fresh {
                    let map = std::mem::replace(&mut tail.map, fresh);
                    tail.sealed = Some((tail.next, std::sync::Arc::new(map)));
                }
                let Some((to, sealed)) = tail.sealed.clone() else {
                    unreachable!("sealed above")
                };
                let from = tail.from;
                // Read while commits go on: only this function, under `id_runs`,
                // changes `sealed`.
                drop(tail);
                let keys: Vec<([u8; 33], Index)> =
                    sealed.iter().map(|(id, &i)| (id_key(id), i)).collect();
                (from, to, keys)
            };
            keys.sort_unstable_by_key(|k| k.0);
            self.ingest_ids(from, to, &keys)?;
            let mut tail = self.id_tail.write().expect("id tail lock");
            let done = tail.sealed.take();
            tail.from = to;
            drop(tail);
            // Freed outside the lock.
            drop(done);
            written += to - from;
        }
    }

    /// Removes a table file left at [`ID_RUN_FILE`] (by a stop before it was
    /// ingested, or after, as a link into the database), if there is one.
    fn remove_id_run_file(&self) -> Result<()> {
        let path = self.dir.join(ID_RUN_FILE);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(LedgerError::storage(format!(
                    "removing {}, a table of event ids left from before: {e}; check the \
                     log directory's permissions, or remove it by hand",
                    path.display()
                )))
            }
            _ => Ok(()),
        }
    }

    /// One table: `keys` (sorted, the ids of entries `from..to`) and `w` = `to`,
    /// ingested into `ids` in one step, so the `w` key never says more than the
    /// family holds.
    fn ingest_ids(&self, from: Index, to: Index, keys: &[([u8; 33], Index)]) -> Result<()> {
        let path = self.dir.join(ID_RUN_FILE);
        let failed = |what: &str, e: rocksdb::Error| {
            let _ = std::fs::remove_file(&path);
            LedgerError::storage(format!(
                "{what} the table of the ids of entries {from}..{to} ({}): {e}",
                path.display()
            ))
        };
        let (_, families) = db_options(false);
        let options = &families
            .iter()
            .find(|(name, _)| *name == IDS)
            .expect("the layout has `ids`")
            .1;
        // Once ingested, the file is linked into the database: were the name outside
        // it left over, writing there would overwrite a live table. So it goes first.
        self.remove_id_run_file().map_err(|e| {
            LedgerError::storage(format!(
                "writing the table of the ids of entries {from}..{to}: {}",
                e.detail
            ))
        })?;
        let mut w = rocksdb::SstFileWriter::create(options);
        w.open(&path).map_err(|e| failed("creating", e))?;
        for (key, index) in keys {
            w.put(key, index.to_be_bytes())
                .map_err(|e| failed("writing", e))?;
        }
        w.put(IDS_FROM, to.to_be_bytes())
            .and_then(|()| w.finish())
            .map_err(|e| failed("writing", e))?;
        let mut o = rocksdb::IngestExternalFileOptions::default();
        // Linked into the database, not copied; RocksDB syncs it and records it in
        // its manifest before answering.
        o.set_move_files(true);
        self.db
            .ingest_external_file_cf_opts(self.ids(), &o, vec![&path])
            .map_err(|e| failed("ingesting", e))?;
        // Linked, the name outside the database is no longer needed.
        let _ = std::fs::remove_file(&path);
        Ok(())
    }

    fn check_tree(&self) -> Result<()> {
        let cp = self.checkpoint();
        let size = cp.size;
        let root = tree::root(size, self)?;
        if root != cp.root {
            // The partial tile's hashes come from its entries: one whose leaf hash
            // is not indexed at its own place was altered.
            let first = self.edge.read().expect("edge lock").tile * tree::TILE_WIDTH;
            for i in first..size {
                let bytes = self
                    .entry(i)?
                    .ok_or_else(|| LedgerError::corrupt(format!("entry {i} is missing")))?;
                if self.index_of_leaf(&leaf_hash(&bytes))? != Some(i) {
                    return Err(LedgerError::corrupt(format!(
                        "entry {i} does not hash to the leaf hash indexed for it: its bytes \
                         were altered (the tree of size {size} has root {root}, the last signed \
                         checkpoint says {})",
                        cp.root
                    )));
                }
            }
            return Err(LedgerError::corrupt(format!(
                "the stored tree of size {size} has root {root}, but the last signed checkpoint \
                 says {}: a stored tree hash was altered",
                cp.root
            )));
        }
        if size > 0 {
            let last = self
                .entry(size - 1)?
                .ok_or_else(|| LedgerError::corrupt(format!("entry {} is missing", size - 1)))?;
            let stored = self.leaf_hash(size - 1)?;
            if Some(leaf_hash(&last)) != stored {
                return Err(LedgerError::corrupt(format!(
                    "entry {} does not hash to its stored leaf hash: its bytes were altered",
                    size - 1
                )));
            }
        }
        if self.entry(size)?.is_some() {
            return Err(LedgerError::corrupt(format!(
                "entry {size} exists beyond the checkpoint of size {size}"
            )));
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Why RocksDB's flushes and compactions go through the page cache, if they
    /// do: the filesystem refused O_DIRECT ([`direct_io_refusal`]), and commits may
    /// then wait behind their writeback. `None`: they write with O_DIRECT.
    pub fn page_cache_writes(&self) -> Option<&str> {
        self.page_cache_writes.as_deref()
    }
    pub fn origin(&self) -> &str {
        self.key.origin()
    }
    pub fn vkey(&self) -> String {
        self.key.vkey()
    }
    pub fn size(&self) -> TreeSize {
        self.checkpoint.read().expect("checkpoint lock").size
    }
    /// The latest signed checkpoint; every entry below its size is durable.
    pub fn checkpoint(&self) -> SignedCheckpoint {
        self.checkpoint.read().expect("checkpoint lock").clone()
    }

    /// The latest signed checkpoint once it covers entry `index`: for a reader that
    /// read something naming that entry (a case's steps) from the database, which
    /// a commit writes just before it publishes its checkpoint. Waits for that
    /// publication (microseconds), at most `patience`; then the latest checkpoint,
    /// which may not cover it.
    pub fn checkpoint_covering(
        &self,
        index: Index,
        patience: std::time::Duration,
    ) -> SignedCheckpoint {
        let started = std::time::Instant::now();
        loop {
            let cp = self.checkpoint();
            if cp.size > index || started.elapsed() >= patience {
                return cp;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }

    /// The latest signed size and root, without copying the note.
    pub fn head(&self) -> (TreeSize, RootHash) {
        let cp = self.checkpoint.read().expect("checkpoint lock");
        (cp.size, cp.root)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get(key).map_err(LedgerError::storage)
    }

    /// One of the families `open` checked (or a migration created).
    fn family(&self, name: &str) -> &ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("every family of the layout is open once the store is")
    }

    fn entries_cf(&self) -> &ColumnFamily {
        self.family(ENTRIES)
    }

    fn hashes_cf(&self) -> &ColumnFamily {
        self.family(HASHES)
    }

    fn ids(&self) -> &ColumnFamily {
        self.family(IDS)
    }

    fn leaves_cf(&self) -> &ColumnFamily {
        self.family(LEAVES)
    }

    /// Entry bytes, exactly as logged.
    pub fn entry(&self, index: Index) -> Result<Option<Vec<u8>>> {
        self.db
            .get_cf(self.entries_cf(), ku(b'e', index))
            .map_err(LedgerError::storage)
    }

    /// The stored leaf hash of entry `index`.
    pub fn leaf_hash(&self, index: Index) -> Result<Option<LeafHash>> {
        if index >= self.size() {
            return Ok(None);
        }
        let h = self
            .read_hashes(&[tlog_tiles::stored_hash_index(0, index)])
            .map_err(|e| LedgerError::corrupt(format!("the leaf hash of entry {index}: {e}")))?;
        Ok(Some(LeafHash(h[0].0)))
    }

    /// [`Store::index_of_event`] for many events: those committed since the last
    /// table of `d` keys from memory, the others in one RocksDB MultiGet.
    pub fn indexes_of_events(&self, ids: &[EventId]) -> Result<Vec<Option<Index>>> {
        let mut found = vec![None; ids.len()];
        let mut keys: Vec<[u8; 33]> = Vec::new();
        let mut places: Vec<usize> = Vec::new();
        {
            // Before RocksDB: a table is ingested before its ids leave the tail, so an
            // id not here is there by the time the read below starts.
            let tail = self.id_tail.read().expect("id tail lock");
            for (n, id) in ids.iter().enumerate() {
                match tail.get(id) {
                    Some(i) => found[n] = Some(i),
                    None => {
                        keys.push(id_key(id));
                        places.push(n);
                    }
                }
            }
        }
        if keys.is_empty() {
            // Every one committed recently, or a batch whose every envelope was
            // refused: nothing to read.
            return Ok(found);
        }
        for (n, got) in
            places
                .into_iter()
                .zip(self.db.batched_multi_get_cf(self.ids(), &keys, false))
        {
            found[n] = got.map_err(LedgerError::storage)?.and_then(|v| be(&v));
        }
        Ok(found)
    }

    /// Writes every family's memtables to table files, so that the next open has no
    /// write-ahead log to replay: a node stopped cleanly starts in a fraction of a
    /// second instead of replaying up to ~90 MB of log (1.2-2.7 s measured at
    /// 1M-18M entries). Nothing depends on it for durability: what it flushes was
    /// synced to the log already, and after a crash the replay recovers it.
    pub fn flush_memtables(&self) -> Result<()> {
        // The ids held in memory too: the next start then reads no entries for them.
        // The flush goes on if that fails; the first error is answered.
        let ids = self.index_ids(true).map(|_| ());
        let mut o = rocksdb::FlushOptions::default();
        o.set_wait(true);
        let families: Vec<&ColumnFamily> =
            FAMILIES.into_iter().map(|name| self.family(name)).collect();
        let flushed = self
            .db
            .flush_cfs_opt(&families, &o)
            .map_err(LedgerError::storage);
        ids.and(flushed)
    }

    /// What RocksDB holds in memory, by RocksDB's own account (bytes): the block
    /// cache, the table readers (indexes and filters outside the cache), the memtables.
    pub fn memory(&self) -> StoreMemory {
        let prop = |cf: &ColumnFamily, name: &str| {
            self.db
                .property_int_value_cf(cf, name)
                .ok()
                .flatten()
                .unwrap_or(0)
        };
        let default = self.family(rocksdb::DEFAULT_COLUMN_FAMILY_NAME);
        // Per family, except the block caches.
        let both = |name: &str| {
            FAMILIES
                .into_iter()
                .map(|f| prop(self.family(f), name))
                .sum::<u64>()
        };
        StoreMemory {
            // Two caches: the default family's (shared with entries, hashes and
            // leaves) and the one of `ids`.
            block_cache: prop(default, "rocksdb.block-cache-usage")
                + prop(self.ids(), "rocksdb.block-cache-usage"),
            table_readers: both("rocksdb.estimate-table-readers-mem"),
            memtables: both("rocksdb.cur-size-all-mem-tables"),
            upper_levels: self
                .upper
                .read()
                .expect("upper lock")
                .iter()
                .map(|l| l.len() as u64 * 32)
                .sum::<u64>()
                + self.edge.read().expect("edge lock").hashes.len() as u64 * 32,
            // The map's table: an id, an index and a control byte per slot.
            recent_ids: self.id_tail.read().expect("id tail lock").slots() * (32 + 8 + 1),
        }
    }

    /// RocksDB's background work now: flushes and compactions running, plus each
    /// family's flush and compaction that are due but not yet started. 0 when the
    /// store is idle.
    pub fn background_jobs(&self) -> u64 {
        let db_wide = |name: &str| self.db.property_int_value(name).ok().flatten().unwrap_or(0);
        let due = |cf: &ColumnFamily| {
            [
                "rocksdb.compaction-pending",
                "rocksdb.mem-table-flush-pending",
            ]
            .into_iter()
            .map(|name| {
                let v = self.db.property_int_value_cf(cf, name);
                v.ok().flatten().unwrap_or(0).min(1)
            })
            .sum::<u64>()
        };
        db_wide("rocksdb.num-running-compactions")
            + db_wide("rocksdb.num-running-flushes")
            + FAMILIES
                .into_iter()
                .map(|f| due(self.family(f)))
                .sum::<u64>()
    }

    pub fn index_of_event(&self, id: &EventId) -> Result<Option<Index>> {
        Ok(self.indexes_of_events(std::slice::from_ref(id))?[0])
    }

    /// The index of the entry with leaf hash `h`: one key per epoch of the log, read
    /// in one MultiGet.
    pub fn index_of_leaf(&self, h: &LeafHash) -> Result<Option<Index>> {
        let epochs = self.size().div_ceil(1 << LEAF_EPOCH_BITS);
        let keys: Vec<[u8; 37]> = (0..epochs).map(|e| epoch_leaf_key(e, &h.0)).collect();
        let got = self.db.batched_multi_get_cf(self.leaves_cf(), &keys, true);
        for (epoch, got) in (0..).zip(got) {
            if let Some(v) = got.map_err(LedgerError::storage)? {
                return match be(&v) {
                    Some(index) if index >> LEAF_EPOCH_BITS == epoch => Ok(Some(index)),
                    _ => Err(LedgerError::corrupt(format!(
                        "the leaf index places leaf hash {h} in epoch {epoch} at {}, not an \
                         index of that epoch",
                        hex::encode(&v)
                    ))),
                };
            }
        }
        Ok(None)
    }

    /// A checkpoint the log published at exactly `size`, if any.
    pub fn checkpoint_at(&self, size: TreeSize) -> Result<Option<String>> {
        Ok(self
            .get(&ku(b'c', size))?
            .and_then(|v| String::from_utf8(v).ok()))
    }

    pub fn actors(&self) -> Vec<Actor> {
        self.actors
            .read()
            .expect("actors lock")
            .values()
            .cloned()
            .collect()
    }

    pub fn case_state(&self, id: &CaseId) -> Result<Option<CaseState>> {
        match self.get(&k(b's', id.as_str().as_bytes()))? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| LedgerError::corrupt(format!("case {id}: {e}"))),
        }
    }

    /// Every case state (for read models and stats).
    pub fn case_states(&self) -> Result<Vec<CaseState>> {
        let mut out = Vec::new();
        for item in self.db.prefix_iterator([b's']) {
            let (k, v) = item.map_err(LedgerError::storage)?;
            if k.first() != Some(&b's') {
                break;
            }
            out.push(
                serde_json::from_slice(&v)
                    .map_err(|e| LedgerError::corrupt(format!("case record: {e}")))?,
            );
        }
        Ok(out)
    }

    pub fn put_blob(&self, bytes: &[u8]) -> Result<BlobId> {
        let id = BlobId::of(bytes);
        self.db
            .put_opt(k(b'b', &id.0), bytes, &synced())
            .map_err(LedgerError::storage)?;
        Ok(id)
    }

    pub fn blob(&self, id: &BlobId) -> Result<Option<Vec<u8>>> {
        self.get(&k(b'b', &id.0))
    }

    /// Commits a group: assigns indices from the current size, writes entries, the
    /// tiles of hashes it completes, the leaf index, actor and case changes and the
    /// new signed checkpoint in ONE synced write batch, then adds the group's event
    /// ids to the de-duplication index's tail ([`IdTail`]).
    pub fn commit(&self, group: Vec<NewEntry>) -> Result<Committed> {
        let _writer = self.commit_lock.lock().expect("commit lock");
        let start = self.size();
        let pending = CachedHashes::new(
            self,
            GroupHashes::starting_at(tlog_tiles::stored_hash_index(0, start)),
        );
        let mut edge = self.edge.read().expect("edge lock").clone();
        let mut new_upper: Vec<(usize, u64, Hash)> = Vec::new();
        // Sized for the group up front: grown by doubling, the batch's buffer was
        // copied some ten times per group of a thousand.
        let tiles = group.len() / tree::TILE_WIDTH as usize + 1;
        let mut batch = WriteBatch::with_capacity_bytes(
            group.iter().map(|e| e.bytes.len() + 160).sum::<usize>()
                + tiles * (TILE_BYTES + 64)
                + 4096,
        );
        let leaves = self.leaves_cf();
        let (entries_cf, hashes_cf) = (self.entries_cf(), self.hashes_cf());
        let mut placed = Vec::with_capacity(group.len());
        let mut actors = Vec::new();
        // The leaf keys are random. Put in key order, each memtable insert still
        // searches its skip list from the top, but keys in order walk the same upper
        // nodes, which stay in the CPU's cache: the search fell from 29% to 16% of
        // the sequencer thread's samples in batches of 1,000 (PERFORMANCE.md, stop
        // 38). The event ids go to the tail in memory once the batch is written.
        let mut new_ids: Vec<EventId> = Vec::with_capacity(group.len());
        let mut leaf_keys: Vec<([u8; 37], Index)> = Vec::with_capacity(group.len());
        for (i, e) in group.into_iter().enumerate() {
            let index = start + i as u64;
            if e.bytes.len() > entry::MAX_ENTRY_BYTES {
                return Err(LedgerError::new(
                    crate::error::Code::TooLarge,
                    format!("entry {index} would be {} bytes", e.bytes.len()),
                )
                .expected(format!(
                    "at most {} bytes per entry",
                    entry::MAX_ENTRY_BYTES
                )));
            }
            let leaf = leaf_hash(&e.bytes);
            let hashes = tlog_tiles::stored_hashes_for_record_hash(index, leaf.into(), &pending)
                .map_err(|err| LedgerError::storage(format!("computing tree hashes: {err}")))?;
            let first = tlog_tiles::stored_hash_index(0, index);
            let mut known = pending.known.borrow_mut();
            for (j, h) in hashes.into_iter().enumerate() {
                known.insert(first + j as u64, h);
                // The j-th hash completes the subtree at level j ending at this leaf.
                if j >= usize::from(UPPER_LEVEL) {
                    new_upper.push((j - usize::from(UPPER_LEVEL), index >> j, h));
                    batch.put(upper_key(j as u8, index >> j), h.0);
                } else {
                    edge.hashes.push(h);
                }
            }
            drop(known);
            // The last leaf of a tile: its lower hashes are complete.
            if index % tree::TILE_WIDTH == tree::TILE_WIDTH - 1 {
                if edge.hashes.len() != TILE_HASHES {
                    return Err(LedgerError::corrupt(format!(
                        "tile {} would hold {} hashes, not {TILE_HASHES}; nothing was written",
                        edge.tile,
                        edge.hashes.len()
                    )));
                }
                let value: Vec<u8> = edge.hashes.iter().flat_map(|h| h.0).collect();
                batch.put_cf(hashes_cf, tile_key(edge.tile), value);
                edge = Edge {
                    tile: edge.tile + 1,
                    hashes: Vec::with_capacity(TILE_HASHES),
                };
            }
            batch.put_cf(entries_cf, ku(b'e', index), &e.bytes);
            new_ids.push(e.event_id);
            leaf_keys.push((leaf_key(index, &leaf.0), index));
            if let Some(a) = e.actor {
                batch.put(
                    k(b'a', &a.key.0),
                    serde_json::to_vec(&a).expect("actor serialises"),
                );
                actors.push(a);
            }
            if let Some(c) = e.case {
                batch.put(
                    k(b's', c.id.as_str().as_bytes()),
                    serde_json::to_vec(&c).expect("case serialises"),
                );
            }
            placed.push(Placed {
                index,
                leaf_hash: leaf,
            });
        }
        // A stable sort: were a key put twice, the later put still wins.
        leaf_keys.sort_by_key(|put| put.0);
        for (key, index) in &leaf_keys {
            batch.put_cf(leaves, key, index.to_be_bytes());
        }
        let size = start + placed.len() as u64;
        let root: RootHash = tree::root(size, &pending)?;
        let cp = self.key.sign(size, root)?;
        batch.put(ku(b'c', size), cp.note.as_bytes());
        batch.put(META_SIZE, size.to_be_bytes());
        self.db
            .write_opt(batch, &synced())
            .map_err(LedgerError::storage)?;
        // Before the new size is published: a lookup that sees it finds each id.
        let mut tail = self.id_tail.write().expect("id tail lock");
        // Were an id committed twice, the later index wins, as a later put would.
        tail.map.extend(new_ids.into_iter().zip(start..));
        tail.next = size;
        let valve = tail.next - tail.from >= 3 * tail.run && tail.next >= tail.retry_at;
        drop(tail);
        let mut known = self.actors.write().expect("actors lock");
        for a in actors {
            known.insert(a.key, a);
        }
        drop(known);
        let mut upper = self.upper.write().expect("upper lock");
        for (l, k, h) in new_upper {
            if upper.len() == l {
                upper.push(Vec::new());
            }
            // Levels fill left to right, one commit after another, so `k` is always
            // the next place (the `u` key is written in any case).
            if let Some(level) = upper.get_mut(l) {
                if level.len() as u64 == k {
                    level.push(h);
                }
            }
        }
        drop(upper);
        // Before the new size is published: a reader that sees it finds every hash.
        *self.edge.write().expect("edge lock") = edge;
        *self.checkpoint.write().expect("checkpoint lock") = cp.clone();
        if valve {
            // No tile thread is writing the tables (a store used without a
            // sequencer), or it has fallen far behind: bound the memory here.
            if let Err(e) = self.index_ids(false) {
                let mut tail = self.id_tail.write().expect("id tail lock");
                tail.retry_at = size + tail.run;
                let run = tail.run;
                drop(tail);
                crate::to_stderr!(
                    "custody: {e}; the ids of the newest entries stay in memory \
                     (lookups still find them), and the next try is after {run} more \
                     entries. Check the disk"
                );
            }
        }
        Ok(Committed {
            checkpoint: cp,
            placed,
            hashes: pending.known.into_inner(),
        })
    }

    /// The bytes of a C2SP tile of the current tree: a hash tile (the stored hashes
    /// at level 8L) or an entry bundle (u16-length-prefixed entries). Refuses tiles
    /// that do not lie within the tree as a `NotFound`.
    pub fn tile(&self, t: &tree::TileRef) -> Result<Vec<u8>> {
        let size = self.size();
        if !t.fits(size) {
            return Err(LedgerError::new(
                crate::error::Code::NotFound,
                format!("tile {} is not part of the tree of size {size}", t.path()),
            )
            .field("path")
            .expected("a full tile below the tree size, or the partial tile at its right edge"));
        }
        match t.level {
            Some(_) => tree::hash_tile_bytes(t, self),
            None => self.entry_bundle(t.n * tree::TILE_WIDTH, u64::from(t.width)),
        }
    }

    /// The C2SP entry bundle of entries `start..start + width`: one scan of their
    /// keys, which are adjacent, read ahead and not kept in the block cache (a
    /// bundle is fetched once, by a mirror or an auditor). A `MultiGet` of the 256
    /// keys took ~20% more of the node's CPU while it served an audit.
    fn entry_bundle(&self, start: Index, width: u64) -> Result<Vec<u8>> {
        let mut opts = rocksdb::ReadOptions::default();
        opts.set_iterate_upper_bound(ku(b'e', start + width));
        opts.fill_cache(false);
        opts.set_readahead_size(256 << 10);
        let mut it = self.db.raw_iterator_cf_opt(self.entries_cf(), opts);
        it.seek(ku(b'e', start));
        let mut out = Vec::new();
        for i in start..start + width {
            let value = match (it.key(), it.value()) {
                (Some([b'e', n @ ..]), Some(value)) if be(n) == Some(i) => value,
                _ => {
                    it.status().map_err(LedgerError::storage)?;
                    return Err(LedgerError::corrupt(format!("entry {i} is missing")));
                }
            };
            tree::push_bundle_entry(&mut out, value);
            it.next();
        }
        Ok(out)
    }

    /// A full check of the store (an operator's fsck): every entry hashes to its
    /// stored leaf hash, every stored tree hash (tiles and upper levels) is the hash
    /// of the entries below it, the tree recomputed from the entries alone has the
    /// signed root, no entry lies beyond it, and each entry's event id is found in
    /// the de-duplication index at that entry. Slower than the checks on open
    /// (O(n)); the first problem is named by index. `progress` is called every
    /// 4,096 entries.
    pub fn verify_all(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<()> {
        let cp = self.checkpoint();
        let mut frontier = tree::Frontier::new();
        let mut it = self
            .db
            .iterator_cf(self.entries_cf(), rocksdb::IteratorMode::Start);
        // The current tile's leaves, hashed as a tree of their own: its stored
        // hashes are those the store keeps for that tile, in the same order.
        let mut tile = tree::MemoryTree::new();
        let mut level8 = Vec::new();
        // The tile's event ids, checked against the de-duplication index once its
        // hashes are (an altered entry is named as such first).
        let mut ids: Vec<Result<EventId>> = Vec::with_capacity(tree::TILE_WIDTH as usize);
        for index in 0..cp.size {
            let (k, bytes) = match it.next() {
                Some(Ok(kv)) => kv,
                Some(Err(e)) => return Err(LedgerError::storage(e)),
                None => return Err(LedgerError::corrupt(format!("entry {index} is missing"))),
            };
            if k.as_ref() != ku(b'e', index).as_slice() {
                return Err(LedgerError::corrupt(format!("entry {index} is missing")));
            }
            let leaf = leaf_hash(&bytes);
            frontier.push(leaf);
            tile.push(leaf);
            ids.push(entry_event_id(index, &bytes));
            if tile.size() == tree::TILE_WIDTH {
                let n = index / tree::TILE_WIDTH;
                self.check_tile(n, &tile)?;
                self.check_ids(n * tree::TILE_WIDTH, std::mem::take(&mut ids))?;
                level8.push(tile.hashes()[TILE_HASHES]);
                tile = tree::MemoryTree::new();
            }
            if index % 4096 == 0 {
                progress(index, cp.size);
            }
        }
        match it.next() {
            Some(Err(e)) => return Err(LedgerError::storage(e)),
            Some(Ok(_)) => {
                return Err(LedgerError::corrupt(format!(
                    "an entry exists beyond the checkpoint of size {}",
                    cp.size
                )))
            }
            None => {}
        }
        if frontier.root() != cp.root {
            return Err(LedgerError::corrupt(format!(
                "the {} entries hash to root {}, not to the signed checkpoint's {}",
                cp.size,
                frontier.root(),
                cp.root
            )));
        }
        self.check_ids(cp.size - cp.size % tree::TILE_WIDTH, ids)?;
        // Proofs and roots read levels >= 8 from memory, loaded from their `u`
        // copies: each must be the hash of the entries below it.
        let upper = self.upper.read().expect("upper lock").clone();
        let mut below = level8;
        for (l, copies) in upper.iter().enumerate() {
            let level = UPPER_LEVEL + l as u8;
            if let Some(n) = (0..copies.len()).find(|&n| below.get(n) != Some(&copies[n])) {
                return Err(LedgerError::corrupt(format!(
                    "the copy of tree hash (level {level}, {n}) differs from the hash of the \
                     entries {}..{}",
                    (n as u64) << level,
                    (n as u64 + 1) << level
                )));
            }
            below = below
                .chunks_exact(2)
                .map(|p| tlog_tiles::node_hash(p[0], p[1]))
                .collect();
        }
        progress(cp.size, cp.size);
        Ok(())
    }

    /// The event ids of entries `first..` (`ids`, read from them) against the
    /// de-duplication index: each must be found at its own entry, or an event sent
    /// again would be logged twice, or answered with another entry's receipt.
    fn check_ids(&self, first: Index, ids: Vec<Result<EventId>>) -> Result<()> {
        let ids: Vec<EventId> = ids.into_iter().collect::<Result<_>>()?;
        let found = self.indexes_of_events(&ids)?;
        match found.iter().zip(first..).find(|(f, i)| **f != Some(*i)) {
            None => Ok(()),
            Some((f, i)) => Err(LedgerError::corrupt(format!(
                "the de-duplication index holds {} for the event of entry {i} ({})",
                f.map_or("nothing".to_owned(), |f| format!("entry {f}")),
                ids[(i - first) as usize]
            ))),
        }
    }

    /// Full tile `n`'s stored hashes against `leaves`, the tree of its 256 entries;
    /// names the first entry, or the first hash, that differs.
    fn check_tile(&self, n: u64, leaves: &tree::MemoryTree) -> Result<()> {
        let base = tile_base(n);
        // RocksDB's copy, the record: the tile file is a cache of it, and checks
        // every hash it serves itself.
        let stored: Vec<Hash> = self
            .db_tile(n, false)?
            .chunks_exact(32)
            .map(|h| Hash(h.try_into().expect("32 bytes")))
            .collect();
        let Some(at) = (0..TILE_HASHES).find(|&i| stored[i] != leaves.hashes()[i]) else {
            return Ok(());
        };
        let (level, k) = tlog_tiles::split_stored_hash_index(base + at as u64);
        let hashed = LeafHash(leaves.hashes()[at].0);
        Err(LedgerError::corrupt(
            if level == 0 && self.index_of_leaf(&hashed)? == Some(k) {
                // The entry is the one the leaf index knows: the tile is what changed.
                format!(
                "entry {k}: tile {n} stores {} as its leaf hash, but the entry hashes to {hashed}, \
                 which the leaf index places at {k}: the tile's stored hash was altered",
                LeafHash(stored[at].0)
            )
            } else if level == 0 {
                format!(
                "entry {k}: its bytes hash to {hashed}, not to the leaf hash stored in the tree; \
                 the entry was altered"
            )
            } else {
                format!(
                    "the stored tree hash (level {level}, {k}) of tile {n} differs from the hash \
                 of the entries {}..{}",
                    k << level,
                    (k + 1) << level
                )
            },
        ))
    }

    /// Verifies a checkpoint note with this log's key.
    pub fn verify_checkpoint(&self, note: &str) -> Result<SignedCheckpoint> {
        self.verifier.verify(note)
    }
}

/// The store's stored hashes seen through a memory of those already known: the
/// hashes a group computes before they are written, and every hash read once. The
/// entries of one group share most of their tree neighbours, so a group's hashing
/// and its receipts' proofs read each old hash from RocksDB at most once.
pub struct CachedHashes<'a> {
    store: &'a Store,
    known: RefCell<GroupHashes>,
}

impl<'a> CachedHashes<'a> {
    pub fn new(store: &'a Store, known: GroupHashes) -> Self {
        CachedHashes {
            store,
            known: RefCell::new(known),
        }
    }
}

impl HashReader for CachedHashes<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> std::result::Result<Vec<Hash>, tlog_tiles::Error> {
        let mut known = self.known.borrow_mut();
        let mut out = Vec::with_capacity(indexes.len());
        // (position in `out`, stored-hash index) of those not known yet.
        let mut missing = Vec::new();
        for (pos, &i) in indexes.iter().enumerate() {
            out.push(known.get(i).unwrap_or_else(|| {
                missing.push((pos, i));
                Hash([0; 32])
            }));
        }
        if missing.is_empty() {
            return Ok(out);
        }
        let wanted: Vec<u64> = missing.iter().map(|&(_, i)| i).collect();
        let read = self.store.read_hashes(&wanted)?;
        if read.len() != wanted.len() {
            return Err(tlog_tiles::Error::IndexesNotInTree);
        }
        for ((pos, i), h) in missing.into_iter().zip(read) {
            out[pos] = h;
            known.insert(i, h);
        }
        Ok(out)
    }
}

impl HashReader for Store {
    /// Levels 8 and up from memory, the partial tile's from memory, every other
    /// hash from its tile: one read per tile, however many of its hashes are asked
    /// for (a proof's lower levels share one tile), from the tile file where it
    /// holds the tile and vouches for each hash taken, from RocksDB otherwise.
    fn read_hashes(&self, indexes: &[u64]) -> std::result::Result<Vec<Hash>, tlog_tiles::Error> {
        let mut out = vec![Hash([0; 32]); indexes.len()];
        // (tile, position in the tile, position in `out`)
        let mut wanted: Vec<(u64, usize, usize)> = Vec::new();
        // Each wanted tile, with its level-8 hash if the tile file may hold it.
        let mut tiles: Vec<(u64, Option<Hash>)> = Vec::new();
        {
            let upper = self.upper.read().expect("upper lock");
            let edge = self.edge.read().expect("edge lock");
            for (pos, &i) in indexes.iter().enumerate() {
                let found = match in_tile(i) {
                    None => {
                        let (level, k) = tlog_tiles::split_stored_hash_index(i);
                        upper
                            .get(usize::from(level - UPPER_LEVEL))
                            .and_then(|v| v.get(usize::try_from(k).ok()?))
                    }
                    Some((n, at)) if n == edge.tile => edge.hashes.get(at),
                    Some((n, at)) if n < edge.tile => {
                        wanted.push((n, at, pos));
                        continue;
                    }
                    Some(_) => None,
                };
                out[pos] = *found.ok_or(tlog_tiles::Error::IndexesNotInTree)?;
            }
            wanted.sort_unstable();
            let in_file = self.tile_file.as_ref().map_or(0, TileFile::valid);
            for &(n, _, _) in &wanted {
                if tiles.last().map(|t| t.0) != Some(n) {
                    let root = (n < in_file)
                        .then(|| upper.first()?.get(usize::try_from(n).ok()?).copied())
                        .flatten();
                    tiles.push((n, root));
                }
            }
        }
        if wanted.is_empty() {
            return Ok(out);
        }
        let mut rest = &wanted[..];
        let mut buf: Option<[u8; TILE_BYTES]> = None;
        for (n, root) in tiles {
            let split = rest.partition_point(|w| w.0 == n);
            let (these, after) = rest.split_at(split);
            rest = after;
            if let (Some(root), Some(file)) = (root, &self.tile_file) {
                let buf = buf.get_or_insert([0; TILE_BYTES]);
                if self.read_from_file(file, n, root, these, buf, &mut out) {
                    continue;
                }
            }
            // From RocksDB: a tile the file does not hold yet, or found wrong.
            let value = self
                .db_tile(n, true)
                .map_err(|e| tlog_tiles::Error::InvalidInput(e.to_string()))?;
            for &(_, at, pos) in these {
                out[pos] = Hash(
                    value[at * 32..at * 32 + 32]
                        .try_into()
                        .expect("32 bytes in a tile of 510 hashes"),
                );
            }
        }
        Ok(out)
    }
}

impl crate::replay::LogView for Store {
    fn entry_bytes(&self, index: Index) -> Result<Option<Vec<u8>>> {
        if index >= self.size() {
            return Ok(None);
        }
        self.entry(index)
    }
    fn actor(&self, key: &KeyId) -> Result<Option<Actor>> {
        Ok(self.actors.read().expect("actors lock").get(key).cloned())
    }
    fn case(&self, id: &CaseId) -> Result<Option<CaseState>> {
        self.case_state(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synthetic(from: u64, n: u64) -> Vec<NewEntry> {
        (from..from + n)
            .map(|j| NewEntry::unsigned(format!("{{\"synthetic\":{j}}}").as_bytes()))
            .collect()
    }

    /// A new log in `dir` whose admin key is made from the seed [9; 32].
    fn new_store(dir: &Path, origin: &str) -> Store {
        let admin = KeyId(
            *ed25519_dalek::SigningKey::from_bytes(&[9; 32])
                .verifying_key()
                .as_bytes(),
        );
        Store::init(dir, origin, admin).unwrap()
    }

    /// Flushes and compactions write with O_DIRECT exactly where the store's
    /// filesystem takes it: the probe leaves no file behind, a directory it cannot
    /// write in is an error naming the probe, and RocksDB's own record of its
    /// options (the newest `OPTIONS-*` file) agrees with the store at creation and at
    /// the next open. Entries flushed and compacted that way read back after it.
    #[test]
    fn direct_io_follows_the_probe_and_reaches_rocksdb() {
        let dir = tempfile::tempdir().unwrap();
        let absent = dir.path().join("absent");
        let e = direct_io_refusal(&absent).unwrap_err().to_string();
        assert!(e.contains("direct-io-probe."), "{e}");
        std::fs::create_dir(&absent).unwrap();
        let works = direct_io_refusal(&absent).unwrap().is_none();
        assert_eq!(std::fs::read_dir(&absent).unwrap().count(), 0);
        // Where the temporary directory is on a filesystem known to take O_DIRECT,
        // the probe must say so (from /proc/self/mounts: the longest mount point
        // holding the directory, the last mounted of equals).
        let path = dir.path().canonicalize().unwrap();
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let fs = mounts
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                let point = f.get(1)?.replace("\\040", " ");
                path.starts_with(&point).then(|| (point.len(), f[2]))
            })
            .max_by_key(|&(len, _)| len)
            .map(|(_, fs)| fs);
        if cfg!(target_os = "linux") && matches!(fs, Some("ext4" | "xfs")) {
            assert!(works, "the probe refused O_DIRECT on {fs:?}");
        }
        let db = dir.path().join(DB_DIR);
        let recorded = || {
            let newest = std::fs::read_dir(&db)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.starts_with("OPTIONS-"))
                .max_by_key(|n| n[8..].parse::<u64>().unwrap())
                .expect("RocksDB writes an OPTIONS file");
            let text = std::fs::read_to_string(db.join(newest)).unwrap();
            let line = text
                .lines()
                .find(|l| {
                    l.trim_start()
                        .starts_with("use_direct_io_for_flush_and_compaction=")
                })
                .expect("the OPTIONS file lists the option");
            line.trim().ends_with("=true")
        };
        let store = new_store(dir.path(), "custody.test/direct");
        assert_eq!(store.page_cache_writes().is_none(), works);
        assert_eq!(recorded(), works);
        store.commit(synthetic(1, 999)).unwrap();
        store.flush_memtables().unwrap();
        let mut o = rocksdb::CompactOptions::default();
        o.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        store
            .db
            .compact_range_cf_opt(store.ids(), None::<&[u8]>, None::<&[u8]>, &o);
        let last = store.entry(999).unwrap().unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.page_cache_writes().is_none(), works);
        assert_eq!(recorded(), works);
        assert_eq!(store.size(), 1000);
        assert_eq!(store.entry(999).unwrap().unwrap(), last);
        let id = EventId::of_payload(b"{\"synthetic\":999}");
        assert_eq!(store.index_of_event(&id).unwrap(), Some(999));
        assert!(!std::fs::read_dir(&db).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("probe")));
    }

    /// Every event of a large group is found at its own index, by one lookup and by
    /// the MultiGet, from the tail and after a clean stop wrote it as a table; an id
    /// committed twice in one group (the sequencer never does) ends at its later
    /// index, as puts in arrival order did.
    #[test]
    fn every_event_of_a_group_is_found_by_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = new_store(dir.path(), "custody.test/ids");
        let mut group = synthetic(1, 700);
        let twice = group[10].event_id;
        group.push(NewEntry {
            event_id: twice,
            bytes: b"{\"synthetic\":\"again\"}".to_vec(),
            case: None,
            actor: None,
        });
        let ids: Vec<EventId> = group.iter().map(|e| e.event_id).collect();
        store.commit(group).unwrap();
        let check = |s: &Store| {
            let found = s.indexes_of_events(&ids).unwrap();
            for (i, id) in ids.iter().enumerate() {
                let want = if *id == twice { 701 } else { i as u64 + 1 };
                assert_eq!(s.index_of_event(id).unwrap(), Some(want), "event {i}");
                assert_eq!(found[i], Some(want), "event {i} in the MultiGet");
            }
        };
        check(&store);
        store.flush_memtables().unwrap();
        check(&store);
    }

    /// The newest ids live in memory until their table is ingested (at least 256
    /// entries a table in tests). A stop at any point (after a table, with a table
    /// written but not ingested, with ids held since) loses none: the open reads
    /// the ids after the `w` key again from the entries. A table that cannot be
    /// written keeps its ids findable and is written as it was on the next try.
    /// Without a tile thread, commits write the tables past three tables' worth.
    #[test]
    fn ids_held_in_memory_survive_a_stop_at_any_point() {
        let dir = tempfile::tempdir().unwrap();
        let store = new_store(dir.path(), "custody.test/id-tail");
        let mut ids = vec![EventId([0; 32])];
        let commit = |s: &Store, ids: &mut Vec<EventId>, n: u64| {
            let group = synthetic(ids.len() as u64, n);
            ids.extend(group.iter().map(|e| e.event_id));
            s.commit(group).unwrap();
        };
        commit(&store, &mut ids, 300);
        let tail = |s: &Store| {
            let t = s.id_tail.read().unwrap();
            let sealed = t.sealed.as_ref().map_or(0, |(_, m)| m.len());
            (t.from, t.next, (t.map.len() + sealed) as u64)
        };
        assert_eq!(tail(&store), (0, 301, 301), "nothing written yet");
        assert_eq!(store.index_ids(false).unwrap(), 301, "one table");
        assert_eq!(tail(&store), (301, 301, 0));
        commit(&store, &mut ids, 200);
        assert_eq!(store.index_ids(false).unwrap(), 0, "less than a table held");
        assert_eq!(tail(&store), (301, 501, 200));
        let all_found = |s: &Store, ids: &[EventId]| {
            let found = s.indexes_of_events(ids).unwrap();
            for (i, id) in ids.iter().enumerate().skip(1) {
                assert_eq!(found[i], Some(i as u64), "event {i}");
                assert_eq!(s.index_of_event(id).unwrap(), Some(i as u64), "event {i}");
            }
        };
        all_found(&store, &ids);
        // The table cannot be written (a directory where its file goes): its ids
        // stay sealed, found; the next try writes the same table, newer ids aside.
        let blocked = dir.path().join(ID_RUN_FILE);
        std::fs::create_dir(&blocked).unwrap();
        commit(&store, &mut ids, 100);
        let e = store.index_ids(false).unwrap_err().to_string();
        assert!(e.contains("the ids of entries 301..601"), "{e}");
        commit(&store, &mut ids, 50);
        assert_eq!(tail(&store), (301, 651, 350));
        all_found(&store, &ids);
        std::fs::remove_dir(&blocked).unwrap();
        assert_eq!(
            store.index_ids(false).unwrap(),
            300,
            "the sealed table alone"
        );
        assert_eq!(tail(&store), (601, 651, 50));
        all_found(&store, &ids);
        // A crash: no clean stop, and a table left written but not ingested.
        drop(store);
        std::fs::write(&blocked, b"cut short").unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(!blocked.exists(), "the stale table is removed");
        assert_eq!(tail(&store), (601, 651, 50), "read again from the entries");
        all_found(&store, &ids);
        // 1,200 more without a tile thread: past 768 held, the commit writes.
        commit(&store, &mut ids, 1200);
        assert_eq!(tail(&store), (1851, 1851, 0), "the commit wrote the table");
        commit(&store, &mut ids, 100);
        all_found(&store, &ids);
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(tail(&store), (1851, 1951, 100));
        all_found(&store, &ids);
        // A clean stop writes the rest: the next open reads no entry.
        store.flush_memtables().unwrap();
        assert_eq!(tail(&store), (1951, 1951, 0));
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(tail(&store), (1951, 1951, 0));
        all_found(&store, &ids);
        assert_eq!(store.index_of_event(&EventId([7; 32])).unwrap(), None);
        // The `w` key never says more than the tables hold.
        let w = store.db.get_cf(store.ids(), IDS_FROM).unwrap();
        assert_eq!(w.as_deref().and_then(be), Some(1951));
    }

    /// The leaf index finds every entry by its leaf hash, whichever epoch it is in
    /// (256 entries each in tests), up to an epoch's last entry and from a group that
    /// spans two epochs; a hash the log does not hold is found nowhere. Its keys run
    /// epoch by epoch, each epoch's after every older one's.
    #[test]
    fn the_leaf_index_finds_entries_of_every_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let store = new_store(dir.path(), "custody.test/leaves");
        // 1 + 511 = 512 entries: exactly two epochs; then a group across the third
        // and fourth.
        store.commit(synthetic(1, 511)).unwrap();
        let check = |s: &Store| {
            for i in 0..s.size() {
                let leaf = s.leaf_hash(i).unwrap().unwrap();
                assert_eq!(s.index_of_leaf(&leaf).unwrap(), Some(i), "entry {i}");
            }
            assert_eq!(s.index_of_leaf(&LeafHash([7; 32])).unwrap(), None);
        };
        check(&store);
        store.commit(synthetic(512, 300)).unwrap();
        check(&store);
        let epochs: Vec<u32> = store
            .db
            .iterator_cf(store.leaves_cf(), rocksdb::IteratorMode::Start)
            .map(|r| {
                let (key, v) = r.unwrap();
                let epoch = u32::from_be_bytes(key[1..5].try_into().unwrap());
                assert_eq!(u64::from(epoch), be(&v).unwrap() >> LEAF_EPOCH_BITS);
                epoch
            })
            .collect();
        assert_eq!(epochs.len(), 812);
        assert!(epochs.is_sorted(), "keys in epoch order");
        assert_eq!(epochs.last(), Some(&3));
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        check(&store);
        // A key whose index is not of its epoch is named, not followed.
        let odd = LeafHash([8; 32]);
        store
            .db
            .put_cf(
                store.leaves_cf(),
                epoch_leaf_key(0, &odd.0),
                300u64.to_be_bytes(),
            )
            .unwrap();
        let e = store.index_of_leaf(&odd).unwrap_err();
        assert_eq!(e.code, crate::error::Code::Corrupt, "{e}");
        assert!(e.to_string().contains("epoch 0"), "{e}");
    }

    /// A reader that read something naming entry N from the database (a case's
    /// steps, written a moment before their commit publishes its checkpoint) gets a
    /// checkpoint covering N: it waits for that commit, and after its patience
    /// settles for the latest checkpoint.
    #[test]
    fn checkpoint_covering_waits_for_the_commit_that_covers_an_entry() {
        use std::time::{Duration, Instant};
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(new_store(dir.path(), "custody.test/covering"));
        let size = store.size();
        assert_eq!(
            store.checkpoint_covering(size - 1, Duration::ZERO).size,
            size
        );
        let started = Instant::now();
        let cp = store.checkpoint_covering(size + 4, Duration::from_millis(50));
        assert_eq!(cp.size, size, "nothing covers it yet");
        assert!(started.elapsed() >= Duration::from_millis(50), "it waited");
        let writer = {
            let store = store.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                store.commit(synthetic(size, 5)).unwrap();
            })
        };
        let cp = store.checkpoint_covering(size + 4, Duration::from_secs(30));
        assert_eq!(cp.size, size + 5, "the commit's checkpoint covers it");
        writer.join().unwrap();
    }

    /// A store whose flush has finished reports no background work (the bench waits
    /// for exactly that before measuring the limit).
    #[test]
    fn a_store_reports_no_background_work_once_idle() {
        let dir = tempfile::tempdir().unwrap();
        let store = new_store(dir.path(), "custody.test/jobs");
        store.commit(synthetic(store.size(), 500)).unwrap();
        store.db.flush_cf(store.entries_cf()).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while store.background_jobs() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "still busy after 30 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(store.background_jobs(), 0);
    }

    /// After `flush_memtables` no family holds an entry only in a memtable, so a
    /// reopen has nothing to replay, and the reopened store has every entry.
    #[test]
    fn flushed_memtables_leave_nothing_to_replay() {
        let dir = tempfile::tempdir().unwrap();
        let store = new_store(dir.path(), "custody.test/flush");
        store.commit(synthetic(store.size(), 300)).unwrap();
        let in_memtables = |s: &Store| -> u64 {
            FAMILIES
                .into_iter()
                .map(|name| {
                    s.db.property_int_value_cf(
                        s.family(name),
                        "rocksdb.num-entries-active-mem-table",
                    )
                    .unwrap()
                    .unwrap_or(0)
                })
                .sum()
        };
        assert!(
            in_memtables(&store) > 0,
            "the commit is in the memtables first"
        );
        store.flush_memtables().unwrap();
        assert_eq!(in_memtables(&store), 0);
        let (size, root) = store.head();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.head(), (size, root));
    }

    /// An entry bundle is its entries in order, each behind its u16 length, whether
    /// they are in the memtable or in table files and whether the tile is full or
    /// partial; an entry missing from the middle of one is named as damage.
    #[test]
    fn entry_bundles_hold_their_entries_in_order_and_name_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = new_store(dir.path(), "custody.test/bundles");
        store.commit(synthetic(store.size(), 300)).unwrap();
        let bundle = |n: u64, width: u32| {
            store.tile(&tree::TileRef {
                level: None,
                n,
                width,
            })
        };
        let expect = |range: std::ops::Range<u64>| -> Vec<u8> {
            let mut out = Vec::new();
            for i in range {
                tree::push_bundle_entry(&mut out, &store.entry(i).unwrap().unwrap());
            }
            out
        };
        let size = store.size();
        let partial = (size - 256) as u32;
        assert_eq!(bundle(0, 256).unwrap(), expect(0..256), "in the memtable");
        store.flush_memtables().unwrap();
        assert_eq!(bundle(0, 256).unwrap(), expect(0..256), "in a table file");
        assert_eq!(bundle(1, partial).unwrap(), expect(256..size));
        assert_eq!(bundle(0, 7).unwrap(), expect(0..7));
        // The last of a tile (the scan ends early), then one in the middle (the scan
        // finds the next key instead).
        for gone in [255, 100] {
            store
                .db
                .delete_cf(store.entries_cf(), ku(b'e', gone))
                .unwrap();
            let e = bundle(0, 256).unwrap_err();
            assert!(
                e.to_string().contains(&format!("entry {gone} is missing")),
                "{e}"
            );
        }
    }

    /// A group's hashes: its own run of consecutive indexes in order, any other
    /// index (an older hash read, or one out of order) kept aside; every one found.
    #[test]
    fn group_hashes_find_what_was_recorded() {
        let h = |n: u8| Hash([n; 32]);
        let mut g = GroupHashes::starting_at(100);
        assert_eq!(g.get(100), None);
        for i in 100..110 {
            g.insert(i, h(i as u8));
        }
        g.insert(7, h(7)); // older
        g.insert(200, h(200)); // beyond the run: not the next one
        g.insert(105, h(55)); // again, within the run
        g.insert(110, h(110)); // the next one
        g.insert(112, h(99)); // beyond the run, which then reaches it
        g.insert(111, h(111));
        g.insert(112, h(112));
        assert_eq!(g.new.len(), 13, "the run takes every next index");
        for i in (100..105).chain(106..113).chain([7, 200]) {
            assert_eq!(g.get(i), Some(h(i as u8)), "index {i}");
        }
        assert_eq!(g.get(105), Some(h(55)));
        for absent in [0, 6, 8, 99, 113, 199, 201, u64::MAX] {
            assert_eq!(g.get(absent), None, "index {absent}");
        }
    }

    /// The `ids` family's filters and index live in its own block cache, which the
    /// store's memory account counts beside the shared one.
    #[test]
    fn the_ids_filters_are_in_their_own_cache_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let store = new_store(dir.path(), "custody.test/ids-cache");
        store.commit(synthetic(store.size(), 3000)).unwrap();
        store.flush_memtables().unwrap();
        // Rewritten by a compaction, as every table of `ids` is once level 0's are
        // merged down: a table as `SstFileWriter` made it holds ~0.8 B per key more
        // in its reader (measured here: 4,998 B against 2,472), bounded by level 0's
        // few tables, and the first ones moved down unchanged into empty levels.
        let mut o = rocksdb::CompactOptions::default();
        o.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        store
            .db
            .compact_range_cf_opt(store.ids(), None::<&[u8]>, None::<&[u8]>, &o);
        // Misses only: what they read is the filters and the index, no data block.
        let absent: Vec<EventId> = (0..100u8).map(|i| EventId([i; 32])).collect();
        assert!(store
            .indexes_of_events(&absent)
            .unwrap()
            .iter()
            .all(Option::is_none));
        let usage = |cf: &ColumnFamily| prop_of(&store, cf, "rocksdb.block-cache-usage");
        let ids = usage(store.ids());
        assert!(ids > 0, "the ids filters and index are in its cache");
        // Outside the cache the table readers would hold the whole filter: 3,000
        // `d` keys at 10 bits each, 3,750 bytes, and twice that before layout 5.
        let readers = prop_of(&store, store.ids(), "rocksdb.estimate-table-readers-mem");
        assert!(readers < 7_500 / 2, "ids table readers hold {readers} B");
        let shared = usage(store.family(rocksdb::DEFAULT_COLUMN_FAMILY_NAME));
        assert_eq!(store.memory().block_cache, shared + ids);
    }

    fn prop_of(store: &Store, cf: &ColumnFamily, name: &str) -> u64 {
        store.db.property_int_value_cf(cf, name).unwrap().unwrap()
    }

    /// `ku(b'h', i)`: a stored hash's key in layouts 1 to 3.
    fn hash_key(i: u64) -> Vec<u8> {
        ku(b'h', i)
    }

    /// Every stored hash of the store's tree, hashed from its entries alone.
    fn hashed_from_entries(s: &Store) -> tree::MemoryTree {
        let mut t = tree::MemoryTree::new();
        for i in 0..s.size() {
            t.push(leaf_hash(&s.entry(i).unwrap().unwrap()));
        }
        t
    }

    /// The tile file: proofs read full tiles from it once the tile thread has
    /// copied them, every hash equal to the one hashed from the entries; a hash
    /// altered in the file is never served (the tile is read from RocksDB and
    /// written again); after a restart only the tiles a sync vouched for are trusted.
    #[test]
    fn the_tile_file_serves_only_hashes_that_lead_to_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let store = new_store(dir.path(), "custody.test/tile-file");
        store.commit(synthetic(1, 256 * 6 + 99)).unwrap();
        let size = store.size();
        let all: Vec<u64> = (0..tlog_tiles::stored_hash_count(size)).collect();
        let expected = hashed_from_entries(&store);
        assert_eq!(store.tile_file_tiles(), (0, 6));
        // Copied in rounds.
        assert_eq!(store.extend_tile_file(4, false).unwrap(), 4);
        assert_eq!(store.extend_tile_file(100, false).unwrap(), 2);
        assert_eq!(store.extend_tile_file(100, false).unwrap(), 0);
        assert_eq!(store.tile_file_tiles(), (6, 6));
        assert_eq!(store.read_hashes(&all).unwrap(), expected.hashes());
        for i in [0, size / 2, size - 100, size - 1] {
            let p = tree::prove_inclusion(i, size, &store).unwrap();
            let leaf = store.leaf_hash(i).unwrap().unwrap();
            tree::verify_inclusion(&p, size, store.checkpoint().root, i, leaf).unwrap();
        }

        // One hash of tile 3 altered on disk (a level-2 hash, then a leaf): its
        // readers get the true hashes, from RocksDB, and the file serves tile 3
        // again only once the tile thread has written it again.
        let path = dir.path().join(TILE_FILE);
        let tile3 = 3 * tree::TILE_WIDTH;
        for hash in [
            tlog_tiles::stored_hash_index(2, tile3 / 4 + 5),
            tlog_tiles::stored_hash_index(0, tile3 + 77),
        ] {
            let at = (hash - tile_base(3)) as usize;
            let offset = 4096 + 3 * 16384 + at as u64 * 32;
            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            std::os::unix::fs::FileExt::write_all_at(&f, &[0xee; 32], offset).unwrap();
            assert_eq!(store.read_hashes(&all).unwrap(), expected.hashes());
            assert_eq!(store.tile_file_tiles(), (5, 6));
            assert_eq!(store.extend_tile_file(100, false).unwrap(), 1);
            assert_eq!(store.tile_file_tiles(), (6, 6));
            assert_eq!(store.read_hashes(&all).unwrap(), expected.hashes());
        }

        // The header counts only synced tiles, and an open trusts only those: a
        // crash before the sync leaves them to be copied again.
        let header_count = |path: &Path| {
            let mut b = [0u8; 8];
            let f = std::fs::File::open(path).unwrap();
            std::os::unix::fs::FileExt::read_exact_at(&f, &mut b, 8).unwrap();
            u64::from_be_bytes(b)
        };
        assert_eq!(store.extend_tile_file(0, true).unwrap(), 0);
        assert_eq!(header_count(&path), 6);
        drop(store);
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &2u64.to_be_bytes(), 8).unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.tile_file_tiles(), (2, 6));
        assert_eq!(store.extend_tile_file(100, true).unwrap(), 4);
        assert_eq!(header_count(&path), 6);
        drop(store);
        // Reopened after a sync: the synced tiles are trusted, and read from it.
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.tile_file_tiles(), (6, 6));
        assert_eq!(store.read_hashes(&all).unwrap(), expected.hashes());
        // A header counting more tiles than the store has full: the open trusts
        // and records the store's count.
        drop(store);
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &9u64.to_be_bytes(), 8).unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.tile_file_tiles(), (6, 6));
        assert_eq!(header_count(&path), 6);
        // A file cut short vouches only for the tiles it still holds whole.
        drop(store);
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(4096 + 4 * 16384 + 100).unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.tile_file_tiles(), (4, 6));
        assert_eq!(
            header_count(&path),
            4,
            "the header says what the open trusts"
        );
        assert_eq!(store.read_hashes(&all).unwrap(), expected.hashes());
        // A missing file is made again, and filled.
        drop(store);
        std::fs::remove_file(&path).unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.tile_file_tiles(), (0, 6));
        assert_eq!(store.extend_tile_file(100, true).unwrap(), 6);
        assert_eq!(store.read_hashes(&all).unwrap(), expected.hashes());
    }

    /// Readers racing the commits that complete tiles (the partial tile's hashes
    /// move from memory to a `t` key) always find every hash of the tree they see:
    /// each proof read at a published size verifies against that size's root.
    #[test]
    fn proofs_read_while_commits_complete_tiles_verify() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(new_store(dir.path(), "custody.test/race"));
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (store, done) = (store.clone(), done.clone());
            std::thread::spawn(move || {
                let mut proved = 0u64;
                // At least one round even if the commits all finish first.
                while proved == 0 || !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let cp = store.checkpoint();
                    let last = cp.size - 1;
                    // The newest entry (in the partial tile, or the last of a tile
                    // just completed), the first of the partial tile, and one below.
                    for i in [last, last - last % 256, last / 2] {
                        let p = tree::prove_inclusion(i, cp.size, &*store).unwrap();
                        let leaf = store.leaf_hash(i).unwrap().unwrap();
                        tree::verify_inclusion(&p, cp.size, cp.root, i, leaf)
                            .unwrap_or_else(|e| panic!("entry {i} of {}: {e}", cp.size));
                        proved += 1;
                    }
                }
                proved
            })
        };
        let mut n = store.size();
        for group in [1u64, 254, 1, 1, 255, 256, 257, 3, 510, 2, 767, 1, 1024].repeat(3) {
            store.commit(synthetic(n, group)).unwrap();
            n += group;
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let proved = reader.join().unwrap();
        assert!(proved > 0);
        assert_eq!(store.edge.read().unwrap().tile, n / 256);
    }

    /// Every stored hash read through the tiles, the partial tile and the upper
    /// levels in memory equals the one hashed from the entries, as groups of odd
    /// sizes complete tiles and subtrees, and again after reopening.
    #[test]
    fn stored_hashes_match_the_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = new_store(dir.path(), "custody.test/upper");
        let mut n = store.size();
        for group in [1u64, 254, 1, 300, 77, 1024, 2, 513, 3000] {
            let committed = store.commit(synthetic(n, group)).unwrap();
            n += group;
            // The hashes the group computed are its run, so only the older ones
            // it read (a few per level) are kept aside.
            let g = &committed.hashes;
            assert_eq!(g.base, tlog_tiles::stored_hash_index(0, n - group));
            assert_eq!(
                g.new.len() as u64,
                tlog_tiles::stored_hash_count(n) - g.base
            );
            assert!(
                g.old.len() <= 2 * 64,
                "{} older hashes kept aside",
                g.old.len()
            );
        }
        let check = |s: &Store| {
            let size = s.size();
            let all: Vec<u64> = (0..tlog_tiles::stored_hash_count(size)).collect();
            assert_eq!(
                s.read_hashes(&all).unwrap(),
                hashed_from_entries(s).hashes()
            );
            // One at a time, and in an order no proof asks for: the same.
            for &i in all.iter().rev().step_by(97) {
                assert_eq!(
                    s.read_hashes(&[i]).unwrap(),
                    [hashed_from_entries(s).hashes()[i as usize]]
                );
            }
            assert!(
                s.read_hashes(&[all.len() as u64]).is_err(),
                "beyond the tree"
            );
            let upper = s.upper.read().unwrap();
            // Levels 8.. of a tree of `size` leaves: size >> level complete subtrees each.
            for (l, level) in upper.iter().enumerate() {
                assert_eq!(level.len() as u64, size >> (l + usize::from(UPPER_LEVEL)));
            }
            assert!(upper.len() >= 5, "a tree of {size} has levels 8 to 12");
            assert_eq!(s.edge.read().unwrap().tile, size / 256);
        };
        check(&store);
        let cp = store.checkpoint();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        check(&store);
        assert_eq!(store.checkpoint(), cp);
        store.verify_all(&mut |_, _| {}).unwrap();
        // A `u` copy missing in the middle of level 8: that level is hashed from
        // the tiles from there on, and nothing else changes.
        store.db.delete(upper_key(UPPER_LEVEL, 7)).unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        check(&store);
        // ... and written back once the root checks, so the next open reads it.
        assert_eq!(
            store.db.get(upper_key(UPPER_LEVEL, 7)).unwrap().as_deref(),
            Some(&store.upper.read().unwrap()[0][7].0[..])
        );
        // A `u` copy that differs from the entries below it is named by the full
        // check (level 9, 2 is not on the path of the root of 5,173).
        store
            .db
            .put(upper_key(UPPER_LEVEL + 1, 2), [7u8; 32])
            .unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let e = store.verify_all(&mut |_, _| {}).unwrap_err().to_string();
        assert!(
            e.contains("level 9, 2") && e.contains("entries 1024..1536"),
            "{e}"
        );
        let right = hashed_from_entries(&store).hashes()
            [tlog_tiles::stored_hash_index(UPPER_LEVEL + 1, 2) as usize];
        store
            .db
            .put(upper_key(UPPER_LEVEL + 1, 2), right.0)
            .unwrap();
        // A hash inside a full tile: the full check names it, by level and entries.
        let mut t = store
            .db
            .get_cf(store.hashes_cf(), tile_key(3))
            .unwrap()
            .unwrap();
        let at = (tlog_tiles::stored_hash_index(2, 3 * 64 + 5) - tile_base(3)) as usize;
        t[at * 32] ^= 1;
        store.db.put_cf(store.hashes_cf(), tile_key(3), &t).unwrap();
        let e = store.verify_all(&mut |_, _| {}).unwrap_err().to_string();
        assert!(
            e.contains("(level 2, 197) of tile 3") && e.contains("788..792"),
            "{e}"
        );
        t[at * 32] ^= 1;
        store.db.put_cf(store.hashes_cf(), tile_key(3), &t).unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        store.verify_all(&mut |_, _| {}).unwrap();
        // Proofs through tiles, edge and upper levels verify against the signed root.
        for i in [0, 255, 256, 4000, n - 1] {
            let p = tree::prove_inclusion(i, n, &store).unwrap();
            let leaf = store.leaf_hash(i).unwrap().unwrap();
            tree::verify_inclusion(&p, n, cp.root, i, leaf).unwrap();
        }
    }

    /// Turns a store of this layout back into layout 3: every stored hash its own
    /// `h` key in `hashes` (level 8 and up included), and no `t` key unless
    /// `keep_tiles` (as after a migration cut short).
    fn rewrite_as_layout_3(dir: &Path, keep_tiles: bool) {
        let hashes = {
            let store = Store::open(dir).unwrap();
            hashed_from_entries(&store).hashes().to_vec()
        };
        let (db, _) = open_db(&dir.join(DB_DIR), false, false).unwrap();
        let cf = db.cf_handle(HASHES).unwrap();
        let mut batch = WriteBatch::default();
        if !keep_tiles {
            batch.delete_range_cf(cf, b"t", b"u");
        }
        for (i, h) in hashes.iter().enumerate() {
            batch.put_cf(cf, hash_key(i as u64), h.0);
        }
        batch.put(META_LAYOUT, 3u64.to_be_bytes());
        db.write(batch).unwrap();
        // Into table files down to the last level, as in a store that has run for a
        // while: a migration must purge them there too.
        let mut o = rocksdb::CompactOptions::default();
        o.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        db.compact_range_cf_opt(cf, None::<&[u8]>, None::<&[u8]>, &o);
    }

    /// A store written in key layout 1 (every key in the default family, no other
    /// family, no `u` keys, no layout key) opens: its indexes, entries and hashes
    /// move into their families, and every entry is still found and proved.
    #[test]
    fn a_layout_1_store_is_migrated_when_opened() {
        migrate(1, true);
    }

    /// A store written in key layout 2 (indexes in `ids`, entries and hashes in the
    /// default family) opens in this layout.
    #[test]
    fn a_layout_2_store_is_migrated_when_opened() {
        migrate(2, true);
    }

    /// A store written in key layout 3 (every stored hash its own `h` key in
    /// `hashes`) opens with its hashes in tiles.
    #[test]
    fn a_layout_3_store_is_migrated_when_opened() {
        migrate(3, true);
    }

    /// As after a crash part-way through a migration: the new families exist and
    /// already hold the copied keys, but the layout is still the old one.
    #[test]
    fn a_migration_cut_short_is_redone() {
        migrate(1, false);
        migrate(2, false);
        migrate(3, false);
        migrate(4, false);
    }

    /// Moves the leaf index back into `ids` as layouts 1 to 4 kept it (`l` ‖ leaf
    /// hash), leaving the layout key as it is, and drops the family `leaves` unless
    /// `keep_leaves` (as after a migration cut short).
    fn move_leaf_index_back(dir: &Path, keep_leaves: bool) {
        let (mut db, _) = open_db(&dir.join(DB_DIR), false, false).unwrap();
        let mut batch = WriteBatch::default();
        let ids = db.cf_handle(IDS).unwrap();
        for item in db.iterator_cf(db.cf_handle(LEAVES).unwrap(), rocksdb::IteratorMode::Start) {
            let (key, v) = item.unwrap();
            assert_eq!(&key[..5], &leaf_key(be(&v).unwrap(), &[0; 32])[..5]);
            batch.put_cf(ids, k(b'l', &key[5..]), v);
        }
        db.write(batch).unwrap();
        if !keep_leaves {
            db.drop_cf(LEAVES).unwrap();
        }
    }

    /// Opens the store in `dir`, which must be refused as corrupt with a message
    /// holding each of `names`; reopens its database as the attempt left it, checks
    /// that it still says layout `layout`, and answers it with the families of this
    /// layout it lacks.
    fn refused(dir: &Path, names: &[&str], layout: u64) -> (DB, Vec<&'static str>) {
        let e = Store::open(dir).unwrap_err();
        assert_eq!(e.code, crate::error::Code::Corrupt, "{e}");
        for name in names {
            assert!(e.to_string().contains(name), "{e}");
        }
        let (db, missing) = open_db(&dir.join(DB_DIR), false, false).unwrap();
        assert_eq!(
            db.get(META_LAYOUT).unwrap(),
            Some(layout.to_be_bytes().to_vec()),
            "still layout {layout}"
        );
        (db, missing.into_iter().map(|(name, _)| name).collect())
    }

    /// A layout-4 store whose migration is refused (a key of its leaf index is
    /// missing) keeps its own tiles and its layout, whether this attempt created
    /// `leaves` or found it left by one cut short (then holding a stray key too);
    /// with the key back, the next open migrates it, the stray key is gone and
    /// proofs verify.
    #[test]
    fn a_refused_layout_4_migration_keeps_the_stores_tiles() {
        for cut_short in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let store = new_store(dir.path(), "custody.test/layout");
            store.commit(synthetic(1, 600)).unwrap();
            // Every `d` key in `ids`, as layout 4 had them.
            store.flush_memtables().unwrap();
            let cp = store.checkpoint();
            let leaf = store.leaf_hash(77).unwrap().unwrap();
            drop(store);
            move_leaf_index_back(dir.path(), cut_short);
            let path = dir.path().join(DB_DIR);
            let stray = LeafHash([7; 32]);
            {
                let (db, _) = open_db(&path, false, false).unwrap();
                db.put(META_LAYOUT, 4u64.to_be_bytes()).unwrap();
                let ids = db.cf_handle(IDS).unwrap();
                db.delete_cf(ids, k(b'l', &leaf.0)).unwrap();
                if cut_short {
                    let leaves = db.cf_handle(LEAVES).unwrap();
                    db.put_cf(leaves, leaf_key(5, &stray.0), 5u64.to_be_bytes())
                        .unwrap();
                }
            }
            {
                let (db, missing) = refused(dir.path(), &["holds 600 keys"], 4);
                assert_eq!(prefixed(&db, Some(HASHES), b't').count(), 2, "tiles kept");
                let expected: &[&str] = if cut_short { &[] } else { &[LEAVES] };
                assert_eq!(missing, expected);
                let ids = db.cf_handle(IDS).unwrap();
                db.put_cf(ids, k(b'l', &leaf.0), 77u64.to_be_bytes())
                    .unwrap();
            }
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.checkpoint(), cp);
            assert_eq!(store.index_of_leaf(&leaf).unwrap(), Some(77));
            assert_eq!(
                store.index_of_leaf(&stray).unwrap(),
                None,
                "stray key cleared"
            );
            let p = tree::prove_inclusion(77, cp.size, &store).unwrap();
            tree::verify_inclusion(&p, cp.size, cp.root, 77, leaf).unwrap();
            store.verify_all(&mut |_, _| {}).unwrap();
        }
    }

    /// A layout-4 store (the leaf index in `ids`) opens with it in `leaves`.
    #[test]
    fn a_layout_4_store_is_migrated_when_opened() {
        migrate(4, true);
    }

    /// While commits go on and tables are written and ingested beside them, every
    /// event below the size a reader sees is found by its id at its index: no id
    /// is ever between the tail and the tables.
    #[test]
    fn lookups_racing_commits_and_tables_find_every_committed_id() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let store = new_store(dir.path(), "custody.test/id-race");
        let ids = Mutex::new(vec![EventId([0; 32])]);
        let done = AtomicBool::new(false);
        let (mut checks, mut tables) = (0u64, 0u64);
        std::thread::scope(|s| {
            s.spawn(|| {
                for g in 0..80u64 {
                    let from = ids.lock().unwrap().len() as u64;
                    let group = synthetic(from, 1 + g % 53);
                    // Known before the commit publishes the size.
                    ids.lock().unwrap().extend(group.iter().map(|e| e.event_id));
                    store.commit(group).unwrap();
                }
                done.store(true, Ordering::SeqCst);
            });
            s.spawn(|| {
                while !done.load(Ordering::SeqCst) {
                    tables += store.index_ids(false).unwrap();
                }
            });
            while !done.load(Ordering::SeqCst) {
                let size = store.size();
                let seen: Vec<EventId> = ids.lock().unwrap()[1..size as usize].to_vec();
                let found = store.indexes_of_events(&seen).unwrap();
                for (n, got) in found.into_iter().enumerate() {
                    assert_eq!(got, Some(n as u64 + 1), "entry {} below size {size}", n + 1);
                }
                checks += 1;
            }
        });
        assert!(
            checks > 0 && tables >= 256,
            "{checks} checks, {tables} ids written"
        );
    }

    /// A store of this layout, or of layout 5 (whose migration creates no family),
    /// that lacks one of its families is refused, naming it, not opened.
    #[test]
    fn a_store_without_one_of_its_families_is_refused() {
        for layout in [5, LAYOUT] {
            let dir = tempfile::tempdir().unwrap();
            let store = new_store(dir.path(), "custody.test/families");
            store.commit(synthetic(1, 10)).unwrap();
            store.flush_memtables().unwrap();
            drop(store);
            let (mut db, _) = open_db(&dir.path().join(DB_DIR), false, false).unwrap();
            db.put(META_LAYOUT, layout.to_be_bytes()).unwrap();
            db.drop_cf(LEAVES).unwrap();
            drop(db);
            let e = Store::open(dir.path()).unwrap_err().to_string();
            assert!(
                e.contains(&format!("key layout {layout}")) && e.contains("`leaves`"),
                "{e}"
            );
        }
    }

    /// A layout-5 store (every `d` key put with its commit, no `w` key) opens with
    /// its de-duplication index complete up to its size, and the next commits'
    /// ids are found both before and after their table is written.
    #[test]
    fn a_layout_5_store_is_migrated_when_opened() {
        migrate(5, true);
    }

    /// A layout-3 store of the genesis and `n` synthetic entries: its directory and
    /// the database's path.
    fn layout_3_store(n: u64) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let store = new_store(dir.path(), "custody.test/layout");
        store.commit(synthetic(1, n)).unwrap();
        // Every `d` key in `ids`, as layout 3 had them.
        store.flush_memtables().unwrap();
        drop(store);
        rewrite_as_layout_3(dir.path(), false);
        move_leaf_index_back(dir.path(), false);
        let path = dir.path().join(DB_DIR);
        (dir, path)
    }

    /// A damaged layout-2 store is refused, and the attempt leaves it as it was: no
    /// new family (so the release that wrote it still opens it), still layout 2.
    /// Damaged twice over: a `u` copy on the root's path altered (the root differs),
    /// and a tree hash missing (a tile cannot be written).
    #[test]
    fn a_refused_migration_leaves_the_store_as_it_was() {
        for damage in [Damage::Upper, Damage::Hole] {
            let (dir, path) = layout_3_store(300);
            {
                let (mut db, _) = open_db(&path, false, false).unwrap();
                let mut batch = WriteBatch::default();
                for f in [ENTRIES, HASHES] {
                    for item in
                        db.iterator_cf(db.cf_handle(f).unwrap(), rocksdb::IteratorMode::Start)
                    {
                        let (k, v) = item.unwrap();
                        batch.put(k, v);
                    }
                }
                batch.put(META_LAYOUT, 2u64.to_be_bytes());
                damage.apply(&mut batch);
                db.write(batch).unwrap();
                db.drop_cf(ENTRIES).unwrap();
                db.drop_cf(HASHES).unwrap();
            }
            let (_db, missing) = refused(dir.path(), &[damage.named()], 2);
            assert_eq!(missing.len(), 3);
            let mut families = DB::list_cf(&Options::default(), &path).unwrap();
            families.sort();
            assert_eq!(
                families,
                ["default", "ids"],
                "the families it created are gone"
            );
        }
    }

    /// A damaged layout-3 store is refused, and the tiles the attempt wrote into
    /// its family `hashes` are removed again: still layout 3, no `t` key. The same
    /// for a layout-2 store whose earlier migration was cut short after it had
    /// created the families (so this attempt did not create `hashes`).
    #[test]
    fn a_refused_migration_removes_the_tiles_it_wrote() {
        for layout in [3u64, 2] {
            // None: a key of the leaf index missing, which the migration finds only
            // after it has written the tiles (the other two stop it before).
            for damage in [Some(Damage::Upper), Some(Damage::Hole), None] {
                let (dir, path) = layout_3_store(600);
                {
                    let (db, _) = open_db(&path, false, false).unwrap();
                    let hashes = db.cf_handle(HASHES).unwrap();
                    let mut batch = WriteBatch::default();
                    if layout == 2 {
                        // Entries and `h` hashes copied back into the default family;
                        // the families stay, as a cut-short migration leaves them.
                        for f in [ENTRIES, HASHES] {
                            let cf = db.cf_handle(f).unwrap();
                            for item in db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
                                let (k, v) = item.unwrap();
                                batch.put(k, v);
                            }
                        }
                        batch.put(META_LAYOUT, 2u64.to_be_bytes());
                    }
                    match (layout, damage) {
                        // The hole in tile 1: tile 0 is written first.
                        (3, Some(Damage::Hole)) => {
                            batch.delete_cf(hashes, hash_key(tlog_tiles::stored_hash_index(1, 200)))
                        }
                        (_, Some(damage)) => damage.apply(&mut batch),
                        (_, None) => {
                            let (key, _) = prefixed(&db, Some(IDS), b'l').next().unwrap().unwrap();
                            batch.delete_cf(db.cf_handle(IDS).unwrap(), key);
                        }
                    }
                    db.write(batch).unwrap();
                }
                let (db, missing) = refused(dir.path(), &[], layout);
                assert_eq!(missing, [LEAVES], "the family it created is gone");
                assert_eq!(
                    prefixed(&db, Some(HASHES), b't').count(),
                    0,
                    "no tile left behind (layout {layout})"
                );
            }
        }
    }

    /// A `u` copy off the root's path that differs from its `h` hash is caught by
    /// the migration (after it, only the full check would see it): 601 entries,
    /// whose root reads (9, 0), not (8, 0).
    #[test]
    fn a_migration_refuses_an_upper_copy_that_differs_from_its_hash() {
        let (dir, path) = layout_3_store(600);
        {
            let (db, _) = open_db(&path, false, false).unwrap();
            db.put(upper_key(UPPER_LEVEL, 0), [0u8; 32]).unwrap();
        }
        refused(dir.path(), &["(level 8, 0)"], 3);
    }

    #[derive(Clone, Copy)]
    enum Damage {
        /// The `u` copies (8, 0) and (9, 0): one of them is on the root's path.
        Upper,
        /// A level-1 hash of tile 0 deleted from the default family (layouts 1, 2).
        Hole,
    }

    impl Damage {
        fn apply(self, batch: &mut WriteBatch) {
            match self {
                Damage::Upper => {
                    batch.put(upper_key(UPPER_LEVEL, 0), [0u8; 32]);
                    batch.put(upper_key(UPPER_LEVEL + 1, 0), [0u8; 32]);
                }
                Damage::Hole => batch.delete(hash_key(tlog_tiles::stored_hash_index(1, 40))),
            }
        }
        fn named(self) -> &'static str {
            match self {
                Damage::Upper => "root",
                Damage::Hole => "tile 0",
            }
        }
    }

    /// Writes a store, turns it back into layout `from` (4: the leaf index in `ids`;
    /// 3: also `h` keys instead of tiles; 1 and 2: then the keys of the families that
    /// layout did not have copied back into the default family), and opens it.
    /// Unless `drop_families`, as after a migration cut short: the families stay (1,
    /// 2, 4) and the tiles too (3). 701 entries: three epochs of the leaf index.
    fn migrate(from: u64, drop_families: bool) {
        let dir = tempfile::tempdir().unwrap();
        let store = new_store(dir.path(), "custody.test/layout");
        let entries = synthetic(1, 700);
        let ids: Vec<EventId> = entries.iter().map(|e| e.event_id).collect();
        let bytes: Vec<Vec<u8>> = entries.iter().map(|e| e.bytes.clone()).collect();
        store.commit(entries).unwrap();
        // Every `d` key in `ids`, as layouts 1 to 5 had them.
        store.flush_memtables().unwrap();
        let leaves: Vec<LeafHash> = (1..=700)
            .map(|i| store.leaf_hash(i).unwrap().unwrap())
            .collect();
        let cp = store.checkpoint();
        drop(store);
        if from <= 3 {
            rewrite_as_layout_3(dir.path(), from == 3 && !drop_families);
        }
        if from <= 4 {
            move_leaf_index_back(dir.path(), from == 4 && !drop_families);
        }
        {
            // No layout before 6 had the `w` key.
            let (db, _) = open_db(&dir.path().join(DB_DIR), false, false).unwrap();
            db.delete_cf(db.cf_handle(IDS).unwrap(), IDS_FROM).unwrap();
            if from >= 4 {
                db.put(META_LAYOUT, from.to_be_bytes()).unwrap();
            }
        }
        if from < 3 {
            let (mut db, _) = open_db(&dir.path().join(DB_DIR), false, false).unwrap();
            let mut families = vec![ENTRIES, HASHES];
            if from == 1 {
                families.push(IDS);
            }
            let mut batch = WriteBatch::default();
            for f in &families {
                for item in db.iterator_cf(db.cf_handle(f).unwrap(), rocksdb::IteratorMode::Start) {
                    let (k, v) = item.unwrap();
                    batch.put(k, v);
                }
            }
            if from == 1 {
                batch.delete(META_LAYOUT);
                batch.delete_range(&[b'u'][..], &[b'v'][..]);
            } else {
                batch.put(META_LAYOUT, 2u64.to_be_bytes());
            }
            db.write(batch).unwrap();
            if drop_families {
                for f in families {
                    db.drop_cf(f).unwrap();
                }
            }
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.checkpoint(), cp);
        for (n, (id, leaf)) in ids.iter().zip(&leaves).enumerate() {
            assert_eq!(store.index_of_event(id).unwrap(), Some(n as u64 + 1));
            assert_eq!(store.index_of_leaf(leaf).unwrap(), Some(n as u64 + 1));
        }
        assert_eq!(
            store.indexes_of_events(&ids[..3]).unwrap(),
            [Some(1), Some(2), Some(3)]
        );
        for (n, b) in bytes.iter().enumerate() {
            assert_eq!(store.entry(n as u64 + 1).unwrap().as_ref(), Some(b));
        }
        let p = tree::prove_inclusion(350, cp.size, &store).unwrap();
        tree::verify_inclusion(&p, cp.size, cp.root, 350, leaves[349]).unwrap();
        store.verify_all(&mut |_, _| {}).unwrap();
        // The originals: `d`, `e`, `h` and `l` in the default family, `h` in
        // `hashes`, `l` in `ids`.
        let old = [b'd', b'e', b'h', b'l'].map(|p| (None, p));
        for (family, prefix) in old
            .into_iter()
            .chain([(Some(HASHES), b'h'), (Some(IDS), b'l')])
        {
            assert_eq!(
                prefixed(&store.db, family, prefix).count(),
                0,
                "old '{}' keys removed from {family:?}",
                prefix as char
            );
        }
        let leaf_keys = store
            .db
            .iterator_cf(store.leaves_cf(), rocksdb::IteratorMode::Start)
            .count();
        assert_eq!(leaf_keys, 701, "one leaf index key per entry");
        let tiles = store
            .db
            .prefix_iterator_cf(store.hashes_cf(), [b't'])
            .map(|r| r.unwrap().0)
            .take_while(|k| k[0] == b't')
            .count();
        assert_eq!(tiles, 2, "701 entries fill two tiles");
        // Gone from the table files too, not only hidden by a range deletion.
        let files: Vec<_> = store
            .db
            .live_files()
            .unwrap()
            .into_iter()
            .filter(|f| f.column_family_name == HASHES)
            .collect();
        assert_eq!(
            files.iter().map(|f| f.num_entries).sum::<u64>(),
            2,
            "{files:?}"
        );
        assert!(files
            .iter()
            .all(|f| f.start_key.as_deref().is_some_and(|k| k[0] == b't')));
        assert_eq!(
            store.get(META_LAYOUT).unwrap(),
            Some(LAYOUT.to_be_bytes().to_vec())
        );
        // The upper levels' copies were written: 700 leaves make two level-8 subtrees
        // and one at level 9.
        let copies = store
            .db
            .prefix_iterator([b'u'])
            .map(|r| r.unwrap().0)
            .take_while(|k| k[0] == b'u')
            .count();
        assert_eq!(copies, 3);
        // The index is complete up to the size it was migrated at: the next
        // commits' ids are held in memory, then written as tables from there.
        assert_eq!(store.id_tail.read().unwrap().from, 701);
        let more = synthetic(701, 600);
        let more_ids: Vec<EventId> = more.iter().map(|e| e.event_id).collect();
        store.commit(more).unwrap();
        assert_eq!(store.index_ids(false).unwrap(), 600);
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        for (n, id) in ids.iter().chain(&more_ids).enumerate() {
            assert_eq!(store.index_of_event(id).unwrap(), Some(n as u64 + 1));
        }
    }
}
