//! The tile file: a copy of every full tile's lower hashes (the `t` keys of the
//! `hashes` family) in one flat file, `DATA/tiles`, which inclusion and consistency
//! proofs read instead of RocksDB (spec/storage.md §Tile file).
//!
//! Tile n's 510 hashes (16,320 bytes, as in its `t` key) are at offset
//! `HEADER + n × SLOT`, one read of four pages. A proof reads one such tile;
//! through RocksDB that read was ~38% of the node's CPU per proof at 25.8M entries
//! (the table lookup, its index, checksum and block cache on top of the same
//! `pread`).
//!
//! The file is a cache, never the record: RocksDB holds every tile, and the file is
//! filled from it by [`crate::store::Store::extend_tile_file`] (the sequencer's tile
//! thread), never written by a commit. So it needs no crash ordering with the log:
//! - tiles below `valid` are in the file (but those a read found wrong, until
//!   written again); every other read goes to RocksDB;
//! - the header records how many tiles a `fdatasync` made durable, written only
//!   after that sync (an open may lower it to what it trusts); on open, tiles past
//!   it are written again from RocksDB;
//! - every hash a proof takes from the file is checked on the way out against the
//!   tile's level-8 hash, which the store keeps in memory ([`Verified`]): a tile
//!   torn by a crash, rotted on disk or overwritten is read from RocksDB instead,
//!   until the tile thread has written it again. A wrong hash never reaches a proof.
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
/// ... or sooner once this many tiles (16 MiB) wait for a sync, so that while the
/// file is filled (a large log's first start) no sync has more to write than that.
pub const SYNC_TILES: u64 = 1024;

pub struct TileFile {
    file: File,
    path: PathBuf,
    /// Tiles `0..valid` were written to the file as RocksDB holds them.
    valid: AtomicU64,
    /// Tiles below `valid` that a read found wrong: read from RocksDB until the
    /// tile thread has written them again ([`TileFile::repair`]).
    distrusted: Mutex<std::collections::BTreeSet<u64>>,
    /// `distrusted.len()`, so that reads look at the set only when it holds any.
    distrusted_count: AtomicU64,
    synced: Mutex<Synced>,
}

/// What the header says, and whether that is durable yet.
struct Synced {
    /// The count in the header as written.
    written: u64,
    /// Whether a sync has made that header durable.
    durable: bool,
    at: Instant,
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
        let ours =
            len >= HEADER && file.read_exact_at(&mut header, 0).is_ok() && &header[..8] == MAGIC;
        // Tile n is whole if the file reaches its last byte.
        let whole = len.saturating_sub(HEADER) + SLOT - TILE_BYTES as u64;
        let valid = if ours {
            count_in(&header).min(whole / SLOT).min(full)
        } else {
            0
        };
        // Whether the header already says what this start trusts.
        let header_says_valid = ours && count_in(&header) == valid;
        let t = TileFile {
            file,
            path: path.to_owned(),
            valid: AtomicU64::new(valid),
            distrusted: Default::default(),
            distrusted_count: AtomicU64::new(0),
            synced: Mutex::new(Synced {
                written: valid,
                // Rewritten below if it says more than this start trusts.
                durable: header_says_valid,
                at: Instant::now(),
            }),
        };
        // The header says what this start trusts: no more than the store's full
        // tiles and the file's whole ones, so the tile thread's syncs count from it.
        if !header_says_valid {
            t.write_header(valid)?;
        }
        Ok(t)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tiles `0..valid()` were written to the file (some may be distrusted).
    pub fn valid(&self) -> u64 {
        self.valid.load(Ordering::Acquire)
    }

    /// Tiles the file serves: those written, less those distrusted.
    pub fn serving(&self) -> u64 {
        self.valid()
            .saturating_sub(self.distrusted_count.load(Ordering::Acquire))
    }

    /// Tile `n`'s hashes into `buf`, or `false` if the file does not hold it (yet,
    /// or again).
    pub fn read(&self, n: u64, buf: &mut [u8; TILE_BYTES]) -> std::io::Result<bool> {
        if n >= self.valid() || self.is_distrusted(n) {
            return Ok(false);
        }
        self.file.read_exact_at(buf, HEADER + n * SLOT)?;
        Ok(true)
    }

    fn is_distrusted(&self, n: u64) -> bool {
        self.distrusted_count.load(Ordering::Acquire) > 0
            && self
                .distrusted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&n)
    }

    /// Writes tile `valid()` (its bytes as RocksDB holds them) and counts it in:
    /// the file grows one tile at a time, in order.
    pub fn append(&self, n: u64, bytes: &[u8]) -> std::io::Result<()> {
        assert_eq!(n, self.valid(), "tiles are appended in order");
        self.write_tile(n, bytes)?;
        self.valid.store(n + 1, Ordering::Release);
        Ok(())
    }

    fn write_tile(&self, n: u64, bytes: &[u8]) -> std::io::Result<()> {
        assert_eq!(bytes.len(), TILE_BYTES, "a tile holds {TILE_HASHES} hashes");
        self.file.write_all_at(bytes, HEADER + n * SLOT)
    }

    /// Stops serving tile `n` (a read found it wrong) until [`TileFile::repair`]
    /// has written it again.
    pub fn distrust(&self, n: u64) {
        let mut set = self.distrusted.lock().unwrap_or_else(|e| e.into_inner());
        if set.insert(n) {
            self.distrusted_count
                .store(set.len() as u64, Ordering::Release);
        }
    }

    /// The first distrusted tile, if any, for the tile thread to write again.
    pub fn first_distrusted(&self) -> Option<u64> {
        if self.distrusted_count.load(Ordering::Acquire) == 0 {
            return None;
        }
        let set = self.distrusted.lock().unwrap_or_else(|e| e.into_inner());
        set.first().copied()
    }

    /// Writes distrusted tile `n` again (its bytes as RocksDB holds them) and
    /// serves it from then on. A crash before the next sync leaves the old bytes,
    /// which a read rejects again.
    pub fn repair(&self, n: u64, bytes: &[u8]) -> std::io::Result<()> {
        self.write_tile(n, bytes)?;
        let mut set = self.distrusted.lock().unwrap_or_else(|e| e.into_inner());
        set.remove(&n);
        self.distrusted_count
            .store(set.len() as u64, Ordering::Release);
        Ok(())
    }

    /// Makes the tiles written so far durable and then records their count in the
    /// header, once [`SYNC_EVERY`] has passed since the last time or
    /// [`SYNC_TILES`] tiles wait; with `now` (at shutdown) at once, the header
    /// made durable too, so the next start trusts every tile written.
    pub fn sync(&self, now: bool) -> std::io::Result<()> {
        let mut synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        let valid = self.valid();
        let waiting = valid.saturating_sub(synced.written);
        let needed = if now {
            waiting > 0 || !synced.durable
        } else {
            waiting > 0 && (synced.at.elapsed() >= SYNC_EVERY || waiting >= SYNC_TILES)
        };
        if !needed {
            return Ok(());
        }
        // Tiles first, then the header that counts them: the header is durable at
        // the next sync, and until then the older count stands.
        self.file.sync_data()?;
        synced.durable = true;
        if waiting > 0 {
            self.write_header(valid)?;
            *synced = Synced {
                written: valid,
                durable: false,
                at: Instant::now(),
            };
        }
        if now {
            self.file.sync_data()?;
            synced.durable = true;
        }
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

/// The synced count a header holds.
fn count_in(header: &[u8; 16]) -> u64 {
    u64::from_be_bytes(header[8..].try_into().expect("8 bytes"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::MemoryTree;
    use crate::types::LeafHash;

    /// Tile 5 of a tree (its stored-hash base) hashed from 256 made-up leaves, and
    /// its level-8 hash.
    fn tile() -> (Box<[u8; TILE_BYTES]>, u64, Hash) {
        let mut t = MemoryTree::new();
        for i in 0..256u32 {
            t.push(LeafHash(*blake3::hash(&i.to_le_bytes()).as_bytes()));
        }
        let mut bytes = Box::new([0u8; TILE_BYTES]);
        for (i, h) in t.hashes()[..TILE_HASHES].iter().enumerate() {
            bytes[i * 32..i * 32 + 32].copy_from_slice(&h.0);
        }
        let base = tlog_tiles::stored_hash_index(0, 5 * 256);
        (bytes, base, t.hashes()[TILE_HASHES])
    }

    fn pos(base: u64, level: u8, k_in_tile: u64) -> usize {
        let k = ((5 * 256) >> level) + k_in_tile;
        (tlog_tiles::stored_hash_index(level, k) - base) as usize
    }

    #[test]
    fn every_hash_of_an_honest_tile_is_vouched_for() {
        let (bytes, base, root) = tile();
        let mut v = Verified::new(&bytes, base, root);
        for p in (0..TILE_HASHES).rev() {
            assert!(v.get(p).is_some(), "position {p}");
        }
        assert_eq!(v.get(TILE_HASHES), None);
        // Against another tile's top, nothing is.
        let mut wrong = Verified::new(&bytes, base, Hash([7; 32]));
        assert!((0..TILE_HASHES).all(|p| wrong.get(p).is_none()));
    }

    /// An altered stored hash (level 3, node 6 of the tile) is refused, and so is a
    /// hash whose only way up known so far leans on it (leaf 56, whose level-3
    /// neighbour it is); once a path around it is known (from leaf 48, below it,
    /// through node 7), the right hashes are all served, and it never is.
    #[test]
    fn an_altered_hash_is_never_served_and_right_ones_are() {
        let (mut bytes, base, root) = tile();
        let bad = pos(base, 3, 6);
        bytes[bad * 32] ^= 1;
        let mut v = Verified::new(&bytes, base, root);
        assert_eq!(v.get(pos(base, 0, 56)), None);
        assert_eq!(v.get(bad), None);
        assert!(v.get(pos(base, 0, 48)).is_some());
        assert!(v.get(pos(base, 0, 56)).is_some());
        for p in 0..TILE_HASHES {
            assert_eq!(v.get(p).is_none(), p == bad, "position {p}");
        }
    }
}
