//! The RocksDB store: the only module that touches disk (spec/storage.md).
//!
//! One key space, one-byte prefixes:
//! - `e`+index → entry bytes (verbatim)         - `h`+stored-hash index → 32-byte hash
//! - `d`+event_id → index (de-duplication)      - `l`+leaf hash → index
//! - `c`+size → checkpoint note (history)       - `a`+key → actor (JSON)
//! - `s`+case → case state (JSON)               - `b`+blake3 → blob bytes
//! - `m` → latest checkpoint size
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
use rocksdb::{Options, WriteBatch, WriteOptions, DB};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use tlog_tiles::{Hash, HashReader};

const KEY_FILE: &str = "log.key";
const DB_DIR: &str = "db";
const META_SIZE: &[u8] = b"m";

fn k(prefix: u8, id: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + id.len());
    v.push(prefix);
    v.extend_from_slice(id);
    v
}
fn ku(prefix: u8, n: u64) -> Vec<u8> {
    k(prefix, &n.to_be_bytes())
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

fn db_options() -> Options {
    let mut o = Options::default();
    o.create_if_missing(true);
    o.set_compression_type(rocksdb::DBCompressionType::Lz4);
    // Keep file handles bounded on machines with a low ulimit.
    o.set_max_open_files(512);
    // Most point reads miss (the de-duplication lookup of every new event): a Bloom
    // filter answers those without reading index blocks. (Ribbon filters take ~30%
    // less memory but cost enough CPU to build, at every flush and compaction, to cut
    // batch appends by ~15% on 2 cores.)
    let mut t = rocksdb::BlockBasedOptions::default();
    t.set_bloom_filter(10.0, false);
    t.set_block_cache(&rocksdb::Cache::new_lru_cache(BLOCK_CACHE_BYTES));
    o.set_block_based_table_factory(&t);
    // Two memtables of 32 MiB at most: with the block cache, what RocksDB holds in
    // memory is bounded whatever the log's size.
    o.set_write_buffer_size(32 << 20);
    o.set_max_write_buffer_number(2);
    o
}

/// The lowest tree level whose hashes [`Store`] keeps in memory (one C2SP tile up).
pub const UPPER_LEVEL: u8 = 8;

/// RocksDB's block cache (data, index and filter blocks).
const BLOCK_CACHE_BYTES: usize = 64 << 20;

fn synced() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.set_sync(true);
    w
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
        let db = DB::open(&db_options(), dir.join(DB_DIR)).map_err(LedgerError::storage)?;
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
        let mut o = db_options();
        o.create_if_missing(false);
        let db = DB::open(&o, dir.join(DB_DIR)).map_err(LedgerError::storage)?;
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
        store.load_upper()?;
        store.check_tree()?;
        Ok(store)
    }

    /// Reads the upper levels of the tree into memory (see [`Store::upper`]).
    fn load_upper(&self) -> Result<()> {
        let size = self.size();
        let mut levels = Vec::new();
        for level in UPPER_LEVEL..64 {
            let count = size >> level;
            if count == 0 {
                break;
            }
            let mut hashes = Vec::with_capacity(count as usize);
            let mut k = 0u64;
            while k < count {
                let chunk: Vec<u64> = (k..count.min(k + 4096))
                    .map(|n| tlog_tiles::stored_hash_index(level, n))
                    .collect();
                hashes.extend(self.read_from_db(&chunk).map_err(|e| {
                    LedgerError::corrupt(format!("reading tree level {level}: {e}"))
                })?);
                k += chunk.len() as u64;
            }
            levels.push(hashes);
        }
        *self.upper.write().expect("upper lock") = levels;
        Ok(())
    }

    fn read_from_db(&self, indexes: &[u64]) -> std::result::Result<Vec<Hash>, tlog_tiles::Error> {
        let keys: Vec<Vec<u8>> = indexes.iter().map(|i| ku(b'h', *i)).collect();
        self.db
            .multi_get(keys)
            .into_iter()
            .map(|r| match r {
                Ok(Some(v)) => <[u8; 32]>::try_from(v.as_slice())
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

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get(key).map_err(LedgerError::storage)
    }

    /// Entry bytes, exactly as logged.
    pub fn entry(&self, index: Index) -> Result<Option<Vec<u8>>> {
        self.get(&ku(b'e', index))
    }

    /// The stored leaf hash of entry `index`.
    pub fn leaf_hash(&self, index: Index) -> Result<Option<LeafHash>> {
        Ok(self
            .get(&ku(b'h', tlog_tiles::stored_hash_index(0, index)))?
            .and_then(|v| <[u8; 32]>::try_from(v.as_slice()).ok())
            .map(LeafHash))
    }

    /// [`Store::index_of_event`] for many events in one RocksDB MultiGet.
    pub fn indexes_of_events(&self, ids: &[EventId]) -> Result<Vec<Option<Index>>> {
        let keys: Vec<Vec<u8>> = ids.iter().map(|id| k(b'd', &id.0)).collect();
        self.db
            .multi_get(keys)
            .into_iter()
            .map(|r| Ok(r.map_err(LedgerError::storage)?.and_then(|v| be(&v))))
            .collect()
    }

    /// What RocksDB holds in memory, by RocksDB's own account (bytes): the block
    /// cache, the table readers (indexes and filters outside the cache), the memtables.
    pub fn memory(&self) -> StoreMemory {
        let prop = |name: &str| self.db.property_int_value(name).ok().flatten().unwrap_or(0);
        StoreMemory {
            block_cache: prop("rocksdb.block-cache-usage"),
            table_readers: prop("rocksdb.estimate-table-readers-mem"),
            memtables: prop("rocksdb.cur-size-all-mem-tables"),
            upper_levels: self
                .upper
                .read()
                .expect("upper lock")
                .iter()
                .map(|l| l.len() as u64 * 32)
                .sum(),
        }
    }

    pub fn index_of_event(&self, id: &EventId) -> Result<Option<Index>> {
        Ok(self.get(&k(b'd', &id.0))?.and_then(|v| be(&v)))
    }

    pub fn index_of_leaf(&self, h: &LeafHash) -> Result<Option<Index>> {
        Ok(self.get(&k(b'l', &h.0))?.and_then(|v| be(&v)))
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
                }
            }
            drop(known);
            batch.put(ku(b'e', index), &e.bytes);
            batch.put(k(b'd', &e.event_id.0), index.to_be_bytes());
            batch.put(k(b'l', &leaf.0), index.to_be_bytes());
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
            batch.put(ku(b'h', *idx), h.0);
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
                for (i, got) in (start..).zip(self.db.multi_get(keys)) {
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
        let mut it = self.db.iterator(rocksdb::IteratorMode::From(
            &ku(b'e', 0),
            rocksdb::Direction::Forward,
        ));
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
        if let Some(Ok((k, _))) = it.next() {
            if k.first() == Some(&b'e') {
                return Err(LedgerError::corrupt(format!(
                    "an entry exists beyond the checkpoint of size {}",
                    cp.size
                )));
            }
        }
        if frontier.root() != cp.root {
            return Err(LedgerError::corrupt(format!(
                "the {} entries hash to root {}, not to the signed checkpoint's {}",
                cp.size,
                frontier.root(),
                cp.root
            )));
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

    /// Every stored hash read through the in-memory upper levels equals the one in
    /// RocksDB, as groups of odd sizes complete subtrees, and again after reopening.
    #[test]
    fn upper_levels_in_memory_match_rocksdb() {
        let dir = tempfile::tempdir().unwrap();
        let admin = KeyId(
            *ed25519_dalek::SigningKey::from_bytes(&[9; 32])
                .verifying_key()
                .as_bytes(),
        );
        let store = Store::init(dir.path(), "custody.test/upper", admin).unwrap();
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
        // Proofs through the cache verify against the signed root.
        for i in [0, 255, 256, 4000, n - 1] {
            let p = tree::prove_inclusion(i, n, &store).unwrap();
            let leaf = store.leaf_hash(i).unwrap().unwrap();
            tree::verify_inclusion(&p, n, cp.root, i, leaf).unwrap();
        }
    }
}
