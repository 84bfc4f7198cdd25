//! The tile file: a copy of every full tile's lower hashes (the `t` keys of the
//! `hashes` family) in one flat file, `DATA/tiles`, which inclusion and consistency
//! proofs read instead of RocksDB (spec/storage.md §Tile file).
//!
//! Tile n's 510 hashes (16,320 bytes, as in its `t` key) are at offset
//! `HEADER + n × SLOT`, one read of four pages. A proof against a 10M-entry log
//! reads one such tile; through RocksDB that read was ~38% of the node's CPU per
//! proof (the table lookup, its index, checksum and block cache on top of the
//! same `pread`).
//!
//! The file is a cache, never the record: RocksDB holds every tile, and the file is
//! filled from it by [`crate::store::Store::extend_tile_file`] (the sequencer's tile
//! thread), never written by a commit. So it needs no crash ordering with the log:
//! - tiles below `valid` are in the file; every other read goes to RocksDB;
//! - the header records how many tiles a `fdatasync` made durable, written only
//!   after that sync; on open, tiles past it are written again from RocksDB;
//! - every hash a proof takes from the file is checked on the way out against the
//!   tile's level-8 hash, which the store keeps in memory ([`Verified`]): a tile
//!   torn by a crash, rotted on disk or overwritten is read from RocksDB instead and
//!   written again. A wrong hash never reaches a proof.
//!
//! A missing or unreadable file costs only speed: the store then reads RocksDB.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tlog_tiles::Hash;

/// Stored hashes of a full tile below level 8 (256 + 128 + … + 2).
pub const TILE_HASHES: usize = 510;
/// Bytes of one tile's hashes.
pub const TILE_BYTES: usize = TILE_HASHES * 32;
/// Room for one tile: four pages, so a tile is read from exactly four.
const SLOT: u64 = 16 << 10;
/// The header's page: magic, then the count of synced tiles (u64, big-endian).
const HEADER: u64 = 4 << 10;
const MAGIC: &[u8; 8] = b"custody\x01";
/// How often the tile thread syncs what it wrote (and then says so in the header):
/// rarely, so its syncs seldom meet the commits' WAL syncs on the disk. A crash costs
/// the copying of at most this long's tiles again, in the background.
pub const SYNC_EVERY: Duration = Duration::from_secs(10);

pub struct TileFile {
    file: File,
    path: PathBuf,
    /// Tiles `0..valid` are in the file as RocksDB holds them.
    valid: AtomicU64,
    /// (Tiles the header says are synced, when the last sync was.)
    synced: Mutex<(u64, Instant)>,
}

impl std::fmt::Debug for TileFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TileFile({}, {} tiles)",
            self.path.display(),
            self.valid()
        )
    }
}

impl TileFile {
    /// Opens (or creates) the file at `path` for a store holding `full` full tiles.
    /// The tiles it vouches for are those its header says were synced, at most
    /// `full` and at most what the file's length holds; a file with another header
    /// (or none) vouches for none and is filled again.
    pub fn open(path: &Path, full: u64) -> std::io::Result<TileFile> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut header = [0u8; 16];
        let len = file.metadata()?.len();
        let synced = if len >= HEADER && file.read_exact_at(&mut header, 0).is_ok() {
            let count = u64::from_be_bytes(header[8..].try_into().expect("8 bytes"));
            // Tile n is whole if the file reaches its last byte.
            let whole = (len - HEADER + SLOT - TILE_BYTES as u64) / SLOT;
            if &header[..8] == MAGIC {
                count.min(whole)
            } else {
                0
            }
        } else {
            0
        };
        let t = TileFile {
            file,
            path: path.to_owned(),
            valid: AtomicU64::new(synced.min(full)),
            synced: Mutex::new((synced, Instant::now())),
        };
        if &header[..8] != MAGIC {
            t.write_header(0)?;
        }
        Ok(t)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tiles `0..valid()` are read from the file.
    pub fn valid(&self) -> u64 {
        self.valid.load(Ordering::Acquire)
    }

    /// Tile `n`'s hashes into `buf`, or `false` if the file does not hold it (yet).
    pub fn read(&self, n: u64, buf: &mut [u8; TILE_BYTES]) -> std::io::Result<bool> {
        if n >= self.valid() {
            return Ok(false);
        }
        self.file.read_exact_at(buf, HEADER + n * SLOT)?;
        Ok(true)
    }

    /// Writes tile `valid()` (its bytes as RocksDB holds them) and counts it in.
    /// `n` must be `valid()`: the file grows one tile at a time, in order.
    pub fn append(&self, n: u64, bytes: &[u8]) -> std::io::Result<()> {
        assert_eq!(bytes.len(), TILE_BYTES, "a tile holds {TILE_HASHES} hashes");
        self.file.write_all_at(bytes, HEADER + n * SLOT)?;
        // A reader that found a tile below n wrong lowered `valid` meanwhile: its
        // tile is written again first, and this one after it.
        let _ = self
            .valid
            .compare_exchange(n, n + 1, Ordering::AcqRel, Ordering::Acquire);
        Ok(())
    }

    /// Stops vouching for tile `n` and every later one (a read found it wrong): the
    /// tile thread writes them again from RocksDB.
    pub fn distrust_from(&self, n: u64) {
        self.valid.fetch_min(n, Ordering::AcqRel);
    }

    /// Makes the tiles written so far durable and records their count in the
    /// header, if [`SYNC_EVERY`] has passed since the last time (or `now`). At once
    /// if a read distrusted tiles the header still counts.
    pub fn sync(&self, now: bool) -> std::io::Result<()> {
        let mut synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        let valid = self.valid();
        if valid == synced.0 || (valid > synced.0 && !now && synced.1.elapsed() < SYNC_EVERY) {
            return Ok(());
        }
        // Tiles first, then the header that vouches for them: the header is
        // durable at the next sync, and until then the older count stands.
        self.file.sync_data()?;
        self.write_header(valid)?;
        // A lowered count must stand before the tiles are written again; at
        // shutdown, the count too, so the next start trusts every tile.
        if valid < synced.0 || now {
            self.file.sync_data()?;
        }
        *synced = (valid, Instant::now());
        Ok(())
    }

    fn write_header(&self, synced: u64) -> std::io::Result<()> {
        let mut header = [0u8; 16];
        header[..8].copy_from_slice(MAGIC);
        header[8..].copy_from_slice(&synced.to_be_bytes());
        self.file.write_all_at(&header, 0)?;
        if self.file.metadata()?.len() < HEADER {
            self.file.set_len(HEADER)?;
        }
        Ok(())
    }
}

/// Checks hashes read from a tile against the tile's level-8 hash: a hash is
/// vouched for once the path from it to the top, hashed with its stored
/// neighbours, gives that hash. Each check marks the positions it used, so a
/// proof's eight siblings cost one path (eight node hashes), and a whole tile's
/// 256 leaves about one hash each.
pub struct Verified<'a> {
    tile: &'a [u8; TILE_BYTES],
    /// Stored-hash index of the tile's first hash.
    base: u64,
    root: Hash,
    /// Positions (in the tile's stored-hash order) whose stored hash is vouched for.
    good: [u64; TILE_HASHES.div_ceil(64)],
}

impl<'a> Verified<'a> {
    /// `base`: the stored-hash index of the tile's first hash; `root`: its level-8
    /// hash.
    pub fn new(tile: &'a [u8; TILE_BYTES], base: u64, root: Hash) -> Self {
        Verified {
            tile,
            base,
            root,
            good: [0; TILE_HASHES.div_ceil(64)],
        }
    }

    fn at(&self, pos: usize) -> Hash {
        Hash(
            self.tile[pos * 32..pos * 32 + 32]
                .try_into()
                .expect("32 bytes"),
        )
    }
    fn is_good(&self, pos: usize) -> bool {
        self.good[pos / 64] >> (pos % 64) & 1 == 1
    }
    fn mark(&mut self, pos: usize) {
        self.good[pos / 64] |= 1 << (pos % 64);
    }
    /// Position in the tile of stored hash (level, k).
    fn pos(&self, level: u8, k: u64) -> usize {
        (tlog_tiles::stored_hash_index(level, k) - self.base) as usize
    }

    /// The stored hash at position `pos`, if the tile vouches for it.
    pub fn get(&mut self, pos: usize) -> Option<Hash> {
        if pos >= TILE_HASHES {
            return None;
        }
        if self.is_good(pos) {
            return Some(self.at(pos));
        }
        let (level, mut k) = tlog_tiles::split_stored_hash_index(self.base + pos as u64);
        let mut node = self.at(pos);
        // The stored hashes read (this one and its neighbours up the path), and the
        // path's hashes as computed, with where each is stored (below level 8).
        let mut read = [pos; 9];
        let mut computed = [(0usize, Hash([0; 32])); 8];
        let (mut reads, mut steps) = (1, 0);
        let mut reached = false;
        for l in level..8 {
            let sibling = self.pos(l, k ^ 1);
            read[reads] = sibling;
            reads += 1;
            let s = self.at(sibling);
            node = if k & 1 == 0 {
                tlog_tiles::node_hash(node, s)
            } else {
                tlog_tiles::node_hash(s, node)
            };
            k >>= 1;
            if l + 1 == 8 {
                reached = node == self.root;
                break;
            }
            let parent = self.pos(l + 1, k);
            if self.is_good(parent) {
                reached = self.at(parent) == node;
                break;
            }
            computed[steps] = (parent, node);
            steps += 1;
        }
        if !reached {
            return None;
        }
        for &p in &read[..reads] {
            self.mark(p);
        }
        // A stored hash on the path is vouched for only if it is what was computed.
        for &(p, h) in &computed[..steps] {
            if self.at(p) == h {
                self.mark(p);
            }
        }
        Some(self.at(pos))
    }
}
