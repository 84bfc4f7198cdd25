//! The RocksDB store: the only module that touches disk (spec/storage.md).
//!
//! Four column families (layout 3), one-byte key prefixes:
//! - `entries`: `e`+index → entry bytes (verbatim);
//! - `hashes`: `h`+stored-hash index → 32-byte hash;
//! - `ids`: `d`+event_id → index (de-duplication), `l`+leaf hash → index;
//! - default: `c`+size → checkpoint note (history), `a`+key → actor (JSON),
//!   `s`+case → case state (JSON), `b`+blake3 → blob bytes, `u`+level+n → copy of an
//!   upper tree hash, `m` → latest checkpoint size, `v` → layout version.
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
use crate::roles::Actor;
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
const META_SIZE: &[u8] = b"m";
const META_LAYOUT: &[u8] = b"v";
/// The column family of the random-key indexes `d` and `l`.
const IDS: &str = "ids";
/// The column family of the entries (`e` keys), written in index order.
const ENTRIES: &str = "entries";
/// The column family of the stored tree hashes (`h` keys), written in index order.
const HASHES: &str = "hashes";
/// The key layout this code writes: 3 = entries, tree hashes and the indexes each in
/// a column family of their own, and `u` keys. Layout 2 (entries and hashes in the
/// default family) and layout 1 (every key in the default family, no `u` or `v`
/// key) are migrated when opened; an older release cannot open the store afterwards.
const LAYOUT: u64 = 3;

fn k(prefix: u8, id: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + id.len());
    v.push(prefix);
    v.extend_from_slice(id);
    v
}
fn ku(prefix: u8, n: u64) -> Vec<u8> {
    k(prefix, &n.to_be_bytes())
}
/// `ku(b'h', i)` without an allocation.
fn hash_key(i: u64) -> [u8; 9] {
    let mut key = [b'h'; 9];
    key[1..].copy_from_slice(&i.to_be_bytes());
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
fn be(bytes: &[u8]) -> Option<u64> {
    bytes.try_into().ok().map(u64::from_be_bytes)
}

/// One entry ready to be committed.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub bytes: Vec<u8>,
    pub event_id: EventId,
    pub case: Option<CaseState>,
    pub actor: Option<Actor>,
}

/// Memory held by the store, in bytes ([`Store::memory`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreMemory {
    pub block_cache: u64,
    pub table_readers: u64,
    pub memtables: u64,
    /// The tree's upper levels kept in memory.
    pub upper_levels: u64,
}

/// What a commit made durable.
pub struct Committed {
    pub checkpoint: SignedCheckpoint,
    /// Index and leaf hash of each entry, in the order given.
    pub placed: Vec<Placed>,
    /// Every stored hash the commit computed or read: enough to prove most of the
    /// new entries without reading RocksDB again (see [`CachedHashes`]).
    pub hashes: HashMap<u64, Hash>,
}

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
    /// Serialises commits: one writer orders the log.
    commit_lock: Mutex<()>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({}, size {})", self.dir.display(), self.size())
    }
}

/// The database's options and those of its four column families, which share one
/// block cache.
fn db_options() -> (Options, Vec<(&'static str, Options)>) {
    let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
    let mut o = Options::default();
    // Keep file handles bounded on machines with a low ulimit.
    o.set_max_open_files(512);
    // Every family: LZ4, memtables bounded (two per family), so that with the block
    // cache what RocksDB holds in memory is bounded whatever the log's size. (32 MiB
    // memtables and a 64 MiB cache held ~60 MB more at 10M entries for no measured
    // gain in appends or proofs: random proofs miss any cache of this size.)
    let family = |memtable: usize, bloom: bool| {
        let mut f = Options::default();
        f.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let mut t = BlockBasedOptions::default();
        if bloom {
            t.set_bloom_filter(10.0, false);
            t.set_optimize_filters_for_memory(true);
        } else {
            // Reads hit (an entry, a hash below the tree size) or run in order
            // (bundles, tiles): no filter. 4 KiB blocks: 16 KiB ones compress better
            // but made random proofs 10-25% slower.
            t.set_block_size(4 << 10);
        }
        t.set_block_cache(&cache);
        f.set_block_based_table_factory(&t);
        f.set_write_buffer_size(memtable);
        f.set_max_write_buffer_number(2);
        f
    };
    let families = vec![
        // Checkpoints, records, blobs, `u` copies: small.
        (rocksdb::DEFAULT_COLUMN_FAMILY_NAME, family(4 << 20, false)),
        // 32-byte random keys, and most lookups miss (the de-duplication check of
        // every new event): a Bloom filter answers those without reading index
        // blocks. (Ribbon filters take ~30% less memory but cost enough CPU to build,
        // at every flush and compaction, to cut batch appends by ~15% on 2 cores.)
        (IDS, family(8 << 20, true)),
        // Keys that only ever arrive in increasing order, each in a family of its
        // own, so a flushed file overlaps no older one and moves down the levels
        // without being rewritten.
        (ENTRIES, family(16 << 20, false)),
        (HASHES, family(8 << 20, false)),
    ];
    (o, families)
}

/// Opens the database with the families it has (`create`: a new database with all
/// of them). Answers the families of this layout that it lacks (an older layout's
/// store), with their options, for a migration to create. A family this release
/// does not know is refused: a newer release wrote the store.
fn open_db(path: &Path, create: bool) -> Result<(DB, Vec<(&'static str, Options)>)> {
    let (mut o, families) = db_options();
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

/// The lowest tree level whose hashes [`Store`] keeps in memory (one C2SP tile up).
pub const UPPER_LEVEL: u8 = 8;

/// RocksDB's block cache (data blocks of both families).
const BLOCK_CACHE_BYTES: usize = 32 << 20;

fn synced() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.set_sync(true);
    w
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
        for item in db.prefix_iterator([prefix]) {
            let (k, v) = item.map_err(fail)?;
            if k.first() != Some(&prefix) {
                break;
            }
            batch.put_cf(cf, k, v);
            copied += 1;
            // Bounded by bytes as well as keys: an entry may be 64 KiB.
            if batch.len() >= 100_000 || batch.size_in_bytes() >= 8 << 20 {
                db.write(std::mem::take(&mut batch)).map_err(fail)?;
                if copied >= next_report {
                    eprintln!(
                        "custody: {copied}{of} '{}' keys copied to {family}",
                        prefix as char
                    );
                    next_report = copied + 1_000_000;
                }
            }
        }
        db.write(batch).map_err(fail)?;
        eprintln!(
            "custody: {copied}{of} '{}' keys copied to {family}",
            prefix as char
        );
        counts.push(copied);
    }
    Ok(counts)
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

/// A migration that failed before it removed anything: drops the families it
/// created (they hold only copies), so the store is as it was, and answers `e`.
fn undo(mut db: DB, created: &[&str], e: LedgerError) -> LedgerError {
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
        let (db, _) = open_db(&dir.join(DB_DIR), true)?;
        db.put(META_LAYOUT, LAYOUT.to_be_bytes())
            .map_err(LedgerError::storage)?;
        let verifier = CheckpointVerifier::new(&key.vkey())?;
        let empty = key.sign(0, tree::EMPTY_HASH.into())?;
        let store = Store {
            db,
            dir: dir.to_owned(),
            key,
            verifier,
            checkpoint: RwLock::new(empty),
            actors: RwLock::new(HashMap::new()),
            upper: RwLock::new(Vec::new()),
            commit_lock: Mutex::new(()),
        };
        let now = chrono::SubsecRound::trunc_subsecs(Utc::now(), 3);
        let effects =
            crate::replay::judge(&store, 0, now, &opened, &crate::cases::Rules::default())?;
        store.commit(vec![NewEntry {
            bytes: entry::encode(now, &opened.envelope),
            event_id: opened.event_id,
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
        let (mut db, missing) = open_db(&dir.join(DB_DIR), false)?;
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
                Some(2) => Some(2),
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
        if from.is_none() {
            if let Some((name, _)) = missing.first() {
                return Err(LedgerError::corrupt(format!(
                    "the store says key layout {LAYOUT} but has no column family `{name}`"
                )));
            }
        }
        // The families a migration creates, dropped again if it fails: the store is
        // then exactly as it was, and an older release can still open it.
        let mut created: Vec<&'static str> = Vec::new();
        if let Some(from) = from {
            eprintln!(
                "custody: {} uses key layout {from}; moving {} into column families of \
                 their own (once; this copies the whole log, so it needs as much free disk \
                 again as the log takes)",
                dir.display(),
                if from == 1 {
                    "its indexes, entries and tree hashes"
                } else {
                    "its entries and tree hashes"
                }
            );
            for (name, options) in &missing {
                if let Err(e) = db.create_cf(name, options) {
                    return Err(undo(db, &created, LedgerError::storage(e)));
                }
                created.push(name);
            }
            let mut moves = vec![(b'e', ENTRIES), (b'h', HASHES)];
            if from == 1 {
                moves.extend([(b'd', IDS), (b'l', IDS)]);
            }
            // Entries 0..size and the stored hashes of that tree, no more, no fewer.
            let hashes = tlog_tiles::stored_hash_index(0, size);
            let expect = |p: u8| match p {
                b'e' => Some(size),
                b'h' => Some(hashes),
                _ => None,
            };
            let copied = copy_prefixes(&db, &moves, expect).and_then(|counts| {
                match moves
                    .iter()
                    .zip(counts)
                    .find(|((p, _), n)| expect(*p).is_some_and(|e| e != *n))
                {
                    Some(((p, _), n)) => Err(LedgerError::corrupt(format!(
                        "the store holds {n} '{}' keys; a tree of size {size} has {}",
                        *p as char,
                        expect(*p).unwrap_or_default()
                    ))),
                    None => Ok(()),
                }
            });
            if let Err(e) = copied {
                return Err(undo(db, &created, e));
            }
        }
        let actors = match load_actors(&db) {
            Ok(a) => a,
            Err(e) => return Err(undo(db, &created, e)),
        };
        let store = Store {
            db,
            dir: dir.to_owned(),
            key,
            verifier,
            checkpoint: RwLock::new(checkpoint),
            actors: RwLock::new(actors),
            upper: RwLock::new(Vec::new()),
            commit_lock: Mutex::new(()),
        };
        if let Err(e) = store.load_upper().and_then(|_| store.check_tree()) {
            return Err(undo(store.db, &created, e));
        }
        if let Some(from) = from {
            store.finish_migration(from)?;
        }
        Ok(store)
    }

    /// Reads the upper levels of the tree into memory (see [`Store::upper`]) from
    /// their `u` copies, one short run of keys; whatever is missing there (a store
    /// from before layout 2) is read from the `h` hashes, spread over the whole tree.
    fn load_upper(&self) -> Result<()> {
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
        for (l, hashes) in levels.iter_mut().enumerate() {
            let level = UPPER_LEVEL + l as u8;
            let from = hashes.len() as u64;
            hashes.extend(self.read_level(level, from, size >> level)?);
        }
        *self.upper.write().expect("upper lock") = levels;
        Ok(())
    }

    /// The stored hashes (level, from..to) as `h` holds them, in MultiGets of 4,096.
    fn read_level(&self, level: u8, from: u64, to: u64) -> Result<Vec<Hash>> {
        let mut out = Vec::with_capacity(to.saturating_sub(from) as usize);
        let mut k = from;
        while k < to {
            let chunk: Vec<u64> = (k..to.min(k + 4096))
                .map(|n| tlog_tiles::stored_hash_index(level, n))
                .collect();
            out.extend(
                self.read_from_db(&chunk).map_err(|e| {
                    LedgerError::corrupt(format!("reading tree level {level}: {e}"))
                })?,
            );
            k += chunk.len() as u64;
        }
        Ok(out)
    }

    /// The last step of a migration from layout `from` (after [`copy_prefixes`],
    /// [`Store::load_upper`] and the tree check on the copies): one synced batch
    /// removes the originals of the copied keys, writes the `u` copies of the upper
    /// levels (layout 1 had none) and records the layout.
    fn finish_migration(&self, from: u64) -> Result<()> {
        let mut moved: Vec<[u8; 2]> = vec![*b"ef", *b"hi"];
        if from == 1 {
            moved.extend([*b"de", *b"lm"]);
        }
        let mut last = WriteBatch::default();
        for r in &moved {
            last.delete_range(&r[..1], &r[1..]);
        }
        if from == 1 {
            for (l, hashes) in self.upper.read().expect("upper lock").iter().enumerate() {
                for (n, h) in hashes.iter().enumerate() {
                    last.put(upper_key(UPPER_LEVEL + l as u8, n as u64), h.0);
                }
            }
        }
        last.put(META_LAYOUT, LAYOUT.to_be_bytes());
        self.db
            .write_opt(last, &synced())
            .map_err(LedgerError::storage)?;
        eprintln!(
            "custody: {} is now in key layout {LAYOUT}; reclaiming the old keys' space",
            self.dir.display()
        );
        // Reclaim the old keys' space (and their tables' filters) now rather than
        // whenever compaction reaches them.
        for r in &moved {
            self.db.compact_range(Some(&r[..1]), Some(&r[1..]));
        }
        eprintln!("custody: migration of {} done", self.dir.display());
        Ok(())
    }

    /// Stored hashes from `h`, in one batched MultiGet (RocksDB looks up keys that
    /// share a block together, and pins values instead of copying them).
    fn read_from_db(&self, indexes: &[u64]) -> std::result::Result<Vec<Hash>, tlog_tiles::Error> {
        let keys: Vec<[u8; 9]> = indexes.iter().map(|i| hash_key(*i)).collect();
        self.db
            .batched_multi_get_cf(self.hashes_cf(), &keys, false)
            .into_iter()
            .map(|r| match r {
                Ok(Some(v)) => <[u8; 32]>::try_from(&*v)
                    .map(Hash)
                    .map_err(|_| tlog_tiles::Error::MalformedHash),
                _ => Err(tlog_tiles::Error::IndexesNotInTree),
            })
            .collect()
    }

    fn check_tree(&self) -> Result<()> {
        let cp = self.checkpoint();
        let size = cp.size;
        let root = tree::root(size, self)?;
        if root != cp.root {
            return Err(LedgerError::corrupt(format!(
                "the stored tree of size {size} has root {root}, but the last signed checkpoint says {}",
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

    fn get_id(&self, key: &[u8]) -> Result<Option<Index>> {
        Ok(self
            .db
            .get_pinned_cf(self.ids(), key)
            .map_err(LedgerError::storage)?
            .and_then(|v| be(&v)))
    }

    /// Entry bytes, exactly as logged.
    pub fn entry(&self, index: Index) -> Result<Option<Vec<u8>>> {
        self.db
            .get_cf(self.entries_cf(), ku(b'e', index))
            .map_err(LedgerError::storage)
    }

    /// The stored leaf hash of entry `index`.
    pub fn leaf_hash(&self, index: Index) -> Result<Option<LeafHash>> {
        Ok(self
            .db
            .get_pinned_cf(
                self.hashes_cf(),
                hash_key(tlog_tiles::stored_hash_index(0, index)),
            )
            .map_err(LedgerError::storage)?
            .and_then(|v| <[u8; 32]>::try_from(&*v).ok())
            .map(LeafHash))
    }

    /// [`Store::index_of_event`] for many events in one RocksDB MultiGet.
    pub fn indexes_of_events(&self, ids: &[EventId]) -> Result<Vec<Option<Index>>> {
        let keys: Vec<Vec<u8>> = ids.iter().map(|id| k(b'd', &id.0)).collect();
        self.db
            .batched_multi_get_cf(self.ids(), &keys, false)
            .into_iter()
            .map(|r| Ok(r.map_err(LedgerError::storage)?.and_then(|v| be(&v))))
            .collect()
    }

    /// What RocksDB holds in memory, by RocksDB's own account (bytes): the block
    /// cache, the table readers (indexes and filters outside the cache), the memtables.
    pub fn memory(&self) -> StoreMemory {
        let prop = |name: &str| self.db.property_int_value(name).ok().flatten().unwrap_or(0);
        // Per family, except the block cache, which all share.
        let both = |name: &str| {
            prop(name)
                + [self.ids(), self.entries_cf(), self.hashes_cf()]
                    .into_iter()
                    .map(|cf| {
                        self.db
                            .property_int_value_cf(cf, name)
                            .ok()
                            .flatten()
                            .unwrap_or(0)
                    })
                    .sum::<u64>()
        };
        StoreMemory {
            block_cache: prop("rocksdb.block-cache-usage"),
            table_readers: both("rocksdb.estimate-table-readers-mem"),
            memtables: both("rocksdb.cur-size-all-mem-tables"),
            upper_levels: self
                .upper
                .read()
                .expect("upper lock")
                .iter()
                .map(|l| l.len() as u64 * 32)
                .sum(),
        }
    }

    /// RocksDB's background work now: flushes and compactions running, plus each
    /// family's flush and compaction that are due but not yet started. 0 when the
    /// store is idle.
    pub fn background_jobs(&self) -> u64 {
        let db_wide = |name: &str| self.db.property_int_value(name).ok().flatten().unwrap_or(0);
        let due = |cf: Option<&ColumnFamily>| {
            [
                "rocksdb.compaction-pending",
                "rocksdb.mem-table-flush-pending",
            ]
            .into_iter()
            .map(|name| {
                let v = match cf {
                    Some(cf) => self.db.property_int_value_cf(cf, name),
                    None => self.db.property_int_value(name),
                };
                v.ok().flatten().unwrap_or(0).min(1)
            })
            .sum::<u64>()
        };
        db_wide("rocksdb.num-running-compactions")
            + db_wide("rocksdb.num-running-flushes")
            + due(None)
            + [self.ids(), self.entries_cf(), self.hashes_cf()]
                .into_iter()
                .map(|cf| due(Some(cf)))
                .sum::<u64>()
    }

    pub fn index_of_event(&self, id: &EventId) -> Result<Option<Index>> {
        self.get_id(&k(b'd', &id.0))
    }

    pub fn index_of_leaf(&self, h: &LeafHash) -> Result<Option<Index>> {
        self.get_id(&k(b'l', &h.0))
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

    /// Commits a group: assigns indices from the current size, writes entries,
    /// stored hashes, de-dup and leaf indexes, actor and case changes and the new
    /// signed checkpoint in ONE synced write batch.
    pub fn commit(&self, group: Vec<NewEntry>) -> Result<Committed> {
        let _writer = self.commit_lock.lock().expect("commit lock");
        let start = self.size();
        let pending = CachedHashes::new(self, HashMap::new());
        let mut new_hashes: Vec<(u64, Hash)> = Vec::new();
        let mut new_upper: Vec<(usize, u64, Hash)> = Vec::new();
        let mut batch = WriteBatch::default();
        let ids = self.ids();
        let (entries_cf, hashes_cf) = (self.entries_cf(), self.hashes_cf());
        let mut placed = Vec::with_capacity(group.len());
        let mut actors = Vec::new();
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
                new_hashes.push((first + j as u64, h));
                // The j-th hash completes the subtree at level j ending at this leaf.
                if j >= usize::from(UPPER_LEVEL) {
                    new_upper.push((j - usize::from(UPPER_LEVEL), index >> j, h));
                    batch.put(upper_key(j as u8, index >> j), h.0);
                }
            }
            drop(known);
            batch.put_cf(entries_cf, ku(b'e', index), &e.bytes);
            batch.put_cf(ids, k(b'd', &e.event_id.0), index.to_be_bytes());
            batch.put_cf(ids, k(b'l', &leaf.0), index.to_be_bytes());
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
        let size = start + placed.len() as u64;
        let root: RootHash = tree::root(size, &pending)?;
        for (idx, h) in &new_hashes {
            batch.put_cf(hashes_cf, hash_key(*idx), h.0);
        }
        let cp = self.key.sign(size, root)?;
        batch.put(ku(b'c', size), cp.note.as_bytes());
        batch.put(META_SIZE, size.to_be_bytes());
        self.db
            .write_opt(batch, &synced())
            .map_err(LedgerError::storage)?;
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
            // Levels fill left to right; anything else stays readable from RocksDB.
            if let Some(level) = upper.get_mut(l) {
                if level.len() as u64 == k {
                    level.push(h);
                }
            }
        }
        drop(upper);
        *self.checkpoint.write().expect("checkpoint lock") = cp.clone();
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
            None => {
                let start = t.n * tree::TILE_WIDTH;
                let keys: Vec<Vec<u8>> = (start..start + u64::from(t.width))
                    .map(|i| ku(b'e', i))
                    .collect();
                let mut out = Vec::new();
                let got = self.db.batched_multi_get_cf(self.entries_cf(), &keys, true);
                for (i, got) in (start..).zip(got) {
                    let e = got
                        .map_err(LedgerError::storage)?
                        .ok_or_else(|| LedgerError::corrupt(format!("entry {i} is missing")))?;
                    tree::push_bundle_entry(&mut out, &e);
                }
                Ok(out)
            }
        }
    }

    /// A full check of the store (an operator's fsck): every entry hashes to its
    /// stored leaf hash, the tree recomputed from the entries alone has the signed
    /// root, and no entry lies beyond it. Slower than the checks on open (O(n)); the
    /// first problem is named by index. `progress` is called every 4,096 entries.
    pub fn verify_all(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<()> {
        let cp = self.checkpoint();
        let mut frontier = tree::Frontier::new();
        let mut it = self
            .db
            .iterator_cf(self.entries_cf(), rocksdb::IteratorMode::Start);
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
            if self.leaf_hash(index)? != Some(leaf) {
                return Err(LedgerError::corrupt(format!(
                    "entry {index}: its bytes hash to {leaf}, not to the leaf hash stored in the tree; the entry was altered"
                )));
            }
            frontier.push(leaf);
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
        // Proofs and roots read levels >= 8 from their `u` copies: they must equal
        // the hashes in `h`.
        let upper = self.upper.read().expect("upper lock").clone();
        for (l, copies) in upper.iter().enumerate() {
            let level = UPPER_LEVEL + l as u8;
            let stored = self.read_level(level, 0, copies.len() as u64)?;
            if let Some(n) = (0..copies.len()).find(|&n| copies[n] != stored[n]) {
                return Err(LedgerError::corrupt(format!(
                    "the copy of tree hash (level {level}, {n}) differs from the stored hash"
                )));
            }
        }
        progress(cp.size, cp.size);
        Ok(())
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
    known: RefCell<HashMap<u64, Hash>>,
}

impl<'a> CachedHashes<'a> {
    pub fn new(store: &'a Store, known: HashMap<u64, Hash>) -> Self {
        CachedHashes {
            store,
            known: RefCell::new(known),
        }
    }
}

impl HashReader for CachedHashes<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> std::result::Result<Vec<Hash>, tlog_tiles::Error> {
        let mut known = self.known.borrow_mut();
        let missing: Vec<u64> = indexes
            .iter()
            .copied()
            .filter(|i| !known.contains_key(i))
            .collect();
        if !missing.is_empty() {
            for (i, h) in missing.iter().zip(self.store.read_hashes(&missing)?) {
                known.insert(*i, h);
            }
        }
        // Infallible: every index is now known.
        Ok(indexes.iter().map(|i| known[i]).collect())
    }
}

impl HashReader for Store {
    fn read_hashes(&self, indexes: &[u64]) -> std::result::Result<Vec<Hash>, tlog_tiles::Error> {
        let mut out = vec![Hash([0; 32]); indexes.len()];
        let mut missing = Vec::new();
        let mut missing_at = Vec::new();
        {
            let upper = self.upper.read().expect("upper lock");
            for (pos, &i) in indexes.iter().enumerate() {
                let (level, k) = tlog_tiles::split_stored_hash_index(i);
                let cached = level
                    .checked_sub(UPPER_LEVEL)
                    .and_then(|l| upper.get(usize::from(l)))
                    .and_then(|v| v.get(usize::try_from(k).ok()?));
                match cached {
                    Some(h) => out[pos] = *h,
                    None => {
                        missing.push(i);
                        missing_at.push(pos);
                    }
                }
            }
        }
        if !missing.is_empty() {
            for (pos, h) in missing_at.into_iter().zip(self.read_from_db(&missing)?) {
                out[pos] = h;
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
            .map(|j| {
                let bytes = format!("{{\"synthetic\":{j}}}").into_bytes();
                NewEntry {
                    event_id: EventId::of_payload(&bytes),
                    bytes,
                    case: None,
                    actor: None,
                }
            })
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

    /// Every stored hash read through the in-memory upper levels equals the one in
    /// RocksDB, as groups of odd sizes complete subtrees, and again after reopening.
    #[test]
    fn upper_levels_in_memory_match_rocksdb() {
        let dir = tempfile::tempdir().unwrap();
        let store = new_store(dir.path(), "custody.test/upper");
        let mut n = store.size();
        for group in [1u64, 254, 1, 300, 77, 1024, 2, 513, 3000] {
            store.commit(synthetic(n, group)).unwrap();
            n += group;
        }
        let check = |s: &Store| {
            let size = s.size();
            let all: Vec<u64> = (0..tlog_tiles::stored_hash_count(size)).collect();
            assert_eq!(s.read_hashes(&all).unwrap(), s.read_from_db(&all).unwrap());
            let upper = s.upper.read().unwrap();
            // Levels 8.. of a tree of `size` leaves: size >> level complete subtrees each.
            for (l, level) in upper.iter().enumerate() {
                assert_eq!(level.len() as u64, size >> (l + usize::from(UPPER_LEVEL)));
            }
            assert!(upper.len() >= 5, "a tree of {size} has levels 8 to 12");
        };
        check(&store);
        let cp = store.checkpoint();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        check(&store);
        assert_eq!(store.checkpoint(), cp);
        store.verify_all(&mut |_, _| {}).unwrap();
        // A `u` copy missing in the middle of level 8: that level is read from `h`
        // from there on, and nothing else changes.
        store.db.delete(upper_key(UPPER_LEVEL, 7)).unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        check(&store);
        // A `u` copy that differs from `h` is named by the full check.
        store
            .db
            .put(upper_key(UPPER_LEVEL + 1, 2), [7u8; 32])
            .unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let e = store.verify_all(&mut |_, _| {}).unwrap_err().to_string();
        assert!(e.contains("level 9, 2"), "{e}");
        store
            .db
            .put(
                upper_key(UPPER_LEVEL + 1, 2),
                store
                    .read_from_db(&[tlog_tiles::stored_hash_index(UPPER_LEVEL + 1, 2)])
                    .unwrap()[0]
                    .0,
            )
            .unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        // Proofs through the cache verify against the signed root.
        for i in [0, 255, 256, 4000, n - 1] {
            let p = tree::prove_inclusion(i, n, &store).unwrap();
            let leaf = store.leaf_hash(i).unwrap().unwrap();
            tree::verify_inclusion(&p, n, cp.root, i, leaf).unwrap();
        }
    }

    /// A store written in key layout 1 (every key in the default family, no other
    /// family, no `u` keys, no layout key) opens: its indexes, entries and hashes
    /// move into their families, and every entry is still found and proved.
    #[test]
    fn a_layout_1_store_is_migrated_when_opened() {
        migrate(1, true);
    }

    /// A store written in key layout 2 (indexes in `ids`, entries and hashes in the
    /// default family) opens in layout 3.
    #[test]
    fn a_layout_2_store_is_migrated_when_opened() {
        migrate(2, true);
    }

    /// As after a crash part-way through a migration: the new families exist and
    /// already hold the copied keys, but the layout is still the old one.
    #[test]
    fn a_migration_cut_short_is_redone() {
        migrate(1, false);
        migrate(2, false);
    }

    /// A damaged layout-2 store is refused, and the attempt leaves it as it was: no
    /// new family (so the release that wrote it still opens it), still layout 2.
    #[test]
    fn a_refused_migration_leaves_the_store_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let store = new_store(dir.path(), "custody.test/layout");
        store.commit(synthetic(1, 300)).unwrap();
        let size = store.size();
        drop(store);
        let path = dir.path().join(DB_DIR);
        {
            let (mut db, _) = open_db(&path, false).unwrap();
            let mut batch = WriteBatch::default();
            for f in [ENTRIES, HASHES] {
                for item in db.iterator_cf(db.cf_handle(f).unwrap(), rocksdb::IteratorMode::Start) {
                    let (k, v) = item.unwrap();
                    batch.put(k, v);
                }
            }
            batch.put(META_LAYOUT, 2u64.to_be_bytes());
            // The newest leaf hash, altered: the root no longer matches.
            batch.put(
                hash_key(tlog_tiles::stored_hash_index(0, size - 1)),
                [0u8; 32],
            );
            db.write(batch).unwrap();
            db.drop_cf(ENTRIES).unwrap();
            db.drop_cf(HASHES).unwrap();
        }
        let e = Store::open(dir.path()).unwrap_err();
        assert_eq!(e.code, crate::error::Code::Corrupt, "{e}");
        let mut families = DB::list_cf(&Options::default(), &path).unwrap();
        families.sort();
        assert_eq!(
            families,
            ["default", "ids"],
            "the families it created are gone"
        );
        let (db, missing) = open_db(&path, false).unwrap();
        assert_eq!(missing.len(), 2);
        assert_eq!(
            db.get(META_LAYOUT).unwrap(),
            Some(2u64.to_be_bytes().to_vec())
        );
    }

    /// Writes a store, turns it back into layout `from` (the keys of the families
    /// that layout did not have copied back into the default family; those families
    /// dropped unless `cut_short`), and opens it.
    fn migrate(from: u64, drop_families: bool) {
        let dir = tempfile::tempdir().unwrap();
        let store = new_store(dir.path(), "custody.test/layout");
        let entries = synthetic(1, 700);
        let ids: Vec<EventId> = entries.iter().map(|e| e.event_id).collect();
        let bytes: Vec<Vec<u8>> = entries.iter().map(|e| e.bytes.clone()).collect();
        store.commit(entries).unwrap();
        let leaves: Vec<LeafHash> = (1..=700)
            .map(|i| store.leaf_hash(i).unwrap().unwrap())
            .collect();
        let cp = store.checkpoint();
        drop(store);
        {
            let (mut db, _) = open_db(&dir.path().join(DB_DIR), false).unwrap();
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
        for prefix in [b'd', b'e', b'h', b'l'] {
            let left = store
                .db
                .prefix_iterator([prefix])
                .next()
                .map(|r| r.unwrap().0);
            assert!(
                left.is_none_or(|k| k[0] != prefix),
                "old {prefix} keys removed"
            );
        }
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
        drop(store);
        Store::open(dir.path()).unwrap();
    }
}
