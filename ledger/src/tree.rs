//! The RFC 6962 / RFC 9162 Merkle tree: leaf and node hashing, inclusion and
//! consistency proofs, and C2SP tlog-tiles addressing. The math is `tlog_tiles`
//! (a port of Go's `sumdb/tlog`); this module adapts it to our types, parses tile
//! paths from outside without panicking, and keeps a compact "frontier" for replay.

use crate::error::{Code, LedgerError, Result};
use crate::types::{Index, LeafHash, RootHash, TreeSize};
use tlog_tiles::{Hash, Tile};
pub use tlog_tiles::{HashReader, EMPTY_HASH};

/// Tile height fixed by C2SP tlog-tiles: 256 hashes or entries per full tile.
pub const TILE_HEIGHT: u8 = 8;
/// Entries (or hashes) in a full tile.
pub const TILE_WIDTH: u64 = 1 << TILE_HEIGHT;

fn out_of_range(detail: String, expected: String) -> LedgerError {
    LedgerError::new(Code::OutOfRange, detail).expected(expected)
}

/// Largest tree size the prover accepts: `tlog_tiles` numbers stored hashes up to
/// about twice the tree size in a u64 and overflows (panics) beyond 2^63.
pub const MAX_TREE_SIZE: TreeSize = 1 << 62;

fn too_big(field: &str, size: TreeSize) -> LedgerError {
    out_of_range(
        format!("{field} {size} is beyond any tree this log can hold"),
        format!("a tree size of at most {MAX_TREE_SIZE}"),
    )
    .field(field)
}

fn storage(e: tlog_tiles::Error) -> LedgerError {
    LedgerError::storage(format!("reading tree hashes: {e}"))
}

/// Inclusion proof (RFC 9162 §2.1.3) that leaf `index` is in the tree of `size`.
pub fn prove_inclusion<R: HashReader>(
    index: Index,
    size: TreeSize,
    r: &R,
) -> Result<Vec<RootHash>> {
    if size > MAX_TREE_SIZE {
        return Err(too_big("tree_size", size));
    }
    if index >= size {
        return Err(out_of_range(
            format!("index {index} is not in a tree of size {size}"),
            format!("an index below {size}"),
        )
        .field("index"));
    }
    let p = tlog_tiles::prove_record(size, index, r).map_err(storage)?;
    Ok(p.into_iter().map(RootHash::from).collect())
}

/// An inclusion proof and the stored leaf hash it proves, read from `r` together
/// (one read of the store instead of two).
pub fn prove_inclusion_with_leaf<R: HashReader>(
    index: Index,
    size: TreeSize,
    r: &R,
) -> Result<(LeafHash, Vec<RootHash>)> {
    let leaf_at = tlog_tiles::stored_hash_index(0, index.min(MAX_TREE_SIZE));
    let reader = AndLeaf {
        r,
        leaf_at,
        leaf: std::cell::Cell::new(None),
    };
    // A hash missing below the tree size is damage to the store, named by entry.
    let missing = |e: LedgerError| match e.code {
        Code::Storage => LedgerError::corrupt(format!(
            "the tree hashes for entry {index}'s inclusion proof in the tree of size \
             {size} cannot be read: {}",
            e.detail
        )),
        _ => e,
    };
    let proof = prove_inclusion(index, size, &reader).map_err(missing)?;
    let leaf = match reader.leaf.get() {
        Some(h) => h,
        // A tree of one entry has an empty proof: nothing was read yet.
        None => r
            .read_hashes(&[leaf_at])
            .map_err(storage)
            .and_then(|mut v| {
                v.pop()
                    .ok_or_else(|| storage(tlog_tiles::Error::IndexesNotInTree))
            })
            .map_err(missing)?,
    };
    Ok((LeafHash::from(leaf), proof))
}

/// Adds the leaf's stored hash to the first read of a proof's hashes.
struct AndLeaf<'r, R> {
    r: &'r R,
    leaf_at: u64,
    leaf: std::cell::Cell<Option<Hash>>,
}

impl<R: HashReader> HashReader for AndLeaf<'_, R> {
    fn read_hashes(&self, indexes: &[u64]) -> std::result::Result<Vec<Hash>, tlog_tiles::Error> {
        if self.leaf.get().is_some() {
            return self.r.read_hashes(indexes);
        }
        let mut all = Vec::with_capacity(indexes.len() + 1);
        all.extend_from_slice(indexes);
        all.push(self.leaf_at);
        let mut got = self.r.read_hashes(&all)?;
        if got.len() != all.len() {
            return Err(tlog_tiles::Error::IndexesNotInTree);
        }
        self.leaf.set(got.pop());
        Ok(got)
    }
}

/// Consistency proof (RFC 9162 §2.1.4) that the tree of `first` entries is a prefix of
/// the tree of `second` entries.
pub fn prove_consistency<R: HashReader>(
    first: TreeSize,
    second: TreeSize,
    r: &R,
) -> Result<Vec<RootHash>> {
    if first > second {
        return Err(out_of_range(
            format!("first ({first}) is larger than second ({second})"),
            "first ≤ second".into(),
        )
        .field("first"));
    }
    if second > MAX_TREE_SIZE {
        return Err(too_big("second", second));
    }
    if first == 0 || first == second {
        return Ok(vec![]);
    }
    let p = tlog_tiles::prove_tree(second, first, r).map_err(storage)?;
    Ok(p.into_iter().map(RootHash::from).collect())
}

/// Root of the tree of `size` entries from stored hashes.
pub fn root<R: HashReader>(size: TreeSize, r: &R) -> Result<RootHash> {
    if size > MAX_TREE_SIZE {
        return Err(too_big("tree_size", size));
    }
    tlog_tiles::tree_hash(size, r)
        .map(RootHash::from)
        .map_err(storage)
}

fn to_hashes(p: &[RootHash]) -> Vec<Hash> {
    p.iter().map(|h| Hash::from(*h)).collect()
}

/// Checks an inclusion proof against a root.
pub fn verify_inclusion(
    proof: &[RootHash],
    size: TreeSize,
    root: RootHash,
    index: Index,
    leaf: LeafHash,
) -> Result<()> {
    if index >= size {
        return Err(LedgerError::new(
            Code::VerificationFailed,
            format!("index {index} is not below tree size {size}"),
        ));
    }
    tlog_tiles::check_record(&to_hashes(proof), size, root.into(), index, leaf.into()).map_err(|_| {
        LedgerError::new(
            Code::VerificationFailed,
            format!("inclusion proof for entry {index} (leaf {leaf}) does not lead to root {root} of tree size {size}"),
        )
        .expected("a proof from the log for this entry and tree size")
    })
}

/// Checks a consistency proof between two roots.
pub fn verify_consistency(
    proof: &[RootHash],
    first: TreeSize,
    first_root: RootHash,
    second: TreeSize,
    second_root: RootHash,
) -> Result<()> {
    let fail = |why: String| {
        LedgerError::new(Code::VerificationFailed, why)
            .expected("the later tree to extend the earlier one (no rewritten history)")
    };
    if first > second {
        return Err(fail(format!(
            "first size {first} is larger than second {second}"
        )));
    }
    if first == second {
        return if first_root == second_root && proof.is_empty() {
            Ok(())
        } else {
            Err(fail(format!(
                "two different roots ({first_root} and {second_root}) for the same size {first}: the log forked"
            )))
        };
    }
    if first == 0 {
        return if proof.is_empty() && first_root == RootHash::from(EMPTY_HASH) {
            Ok(())
        } else {
            Err(fail(
                "the empty tree needs an empty proof and the empty root".into(),
            ))
        };
    }
    tlog_tiles::check_tree(&to_hashes(proof), second, second_root.into(), first, first_root.into())
        .map_err(|_| {
            fail(format!(
                "tree {first} (root {first_root}) is not a prefix of tree {second} (root {second_root}): the log rewrote its history or the proof is wrong"
            ))
        })
}

/// The right edge of a tree: the roots of its perfect subtrees, largest first.
/// Appending a leaf costs O(1) amortised; the root costs O(log n). Replay and audit
/// use it to recompute a root without storing every hash.
#[derive(Debug, Clone, Default)]
pub struct Frontier {
    size: TreeSize,
    /// (height, hash), heights strictly decreasing.
    nodes: Vec<(u32, Hash)>,
}

impl Frontier {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn size(&self) -> TreeSize {
        self.size
    }
    pub fn push(&mut self, leaf: LeafHash) {
        let mut node = (0u32, Hash::from(leaf));
        while let Some(&(h, left)) = self.nodes.last() {
            if h != node.0 {
                break;
            }
            self.nodes.pop();
            node = (h + 1, tlog_tiles::node_hash(left, node.1));
        }
        self.nodes.push(node);
        self.size += 1;
    }
    pub fn root(&self) -> RootHash {
        let mut it = self.nodes.iter().rev();
        let Some(&(_, mut acc)) = it.next() else {
            return EMPTY_HASH.into();
        };
        for &(_, left) in it {
            acc = tlog_tiles::node_hash(left, acc);
        }
        acc.into()
    }
}

/// What a C2SP tile path asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileRef {
    /// `None` for an entry bundle (`tile/entries/…`), else the hash tile level.
    pub level: Option<u8>,
    /// Tile index within its level.
    pub n: u64,
    /// Width: 1..=256 (256 = full tile).
    pub width: u32,
}

impl TileRef {
    /// Parses the part after `tile/`: `<L>/<N>[.p/<W>]` or `entries/<N>[.p/<W>]`,
    /// where N is written in groups of three digits, all but the last prefixed `x`
    /// (C2SP tlog-tiles §"Merkle Tree"). Refuses non-canonical forms.
    pub fn parse(path: &str) -> Result<TileRef> {
        let bad = |why: &str| {
            LedgerError::new(Code::NotFound, format!("tile path {path:?}: {why}"))
                .field("path")
                .expected(
                    "tile/<L>/<N>[.p/<W>] or tile/entries/<N>[.p/<W>], N as x123/456, 0 < W < 256",
                )
        };
        if path.len() > 80 {
            return Err(bad("too long"));
        }
        let (first, rest) = path
            .split_once('/')
            .ok_or_else(|| bad("missing tile index"))?;
        let level = if first == "entries" {
            None
        } else {
            // Levels 0..=7 cover every u64 index at height 8; the level must be
            // written without leading zeros.
            let l: u8 = first.parse().map_err(|_| bad("level is not a number"))?;
            if l > 7 || first != l.to_string() {
                return Err(bad("level must be 0 to 7"));
            }
            Some(l)
        };
        let (n_part, width) = match rest.split_once(".p/") {
            Some((n, w)) => {
                let w: u32 = w.parse().map_err(|_| bad("width is not a number"))?;
                if w == 0 || w >= TILE_WIDTH as u32 {
                    return Err(bad("partial width must be 1 to 255"));
                }
                (n, w)
            }
            None => (rest, TILE_WIDTH as u32),
        };
        let groups: Vec<&str> = n_part.split('/').collect();
        let mut n: u64 = 0;
        for (i, g) in groups.iter().enumerate() {
            let last = i + 1 == groups.len();
            let digits = if last {
                *g
            } else {
                g.strip_prefix('x')
                    .ok_or_else(|| bad("inner groups must start with x"))?
            };
            if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("each group must be exactly three digits"));
            }
            let v: u64 = digits.parse().map_err(|_| bad("bad digits"))?;
            n = n
                .checked_mul(1000)
                .and_then(|n| n.checked_add(v))
                .ok_or_else(|| bad("tile index overflows"))?;
        }
        let t = TileRef { level, n, width };
        if t.path() != path {
            return Err(bad("not in canonical form"));
        }
        Ok(t)
    }

    /// The canonical path after `tile/`.
    pub fn path(&self) -> String {
        let mut n = self.n;
        let mut s = format!("{:03}", n % 1000);
        while n >= 1000 {
            n /= 1000;
            s = format!("x{:03}/{s}", n % 1000);
        }
        let l = match self.level {
            Some(l) => l.to_string(),
            None => "entries".into(),
        };
        if u64::from(self.width) == TILE_WIDTH {
            format!("{l}/{s}")
        } else {
            format!("{l}/{s}.p/{}", self.width)
        }
    }

    /// Whether the tile lies within a tree of `size` entries. Any partial width
    /// whose hashes (or entries) exist is served, not only the current right edge:
    /// a client holding an older checkpoint asks for the partial tile of its size
    /// (C2SP tlog-tiles §Partial Tiles).
    pub fn fits(&self, size: TreeSize) -> bool {
        let shift = u32::from(self.level.unwrap_or(0)) * u32::from(TILE_HEIGHT);
        // Number of complete nodes at level 8L in the tree.
        let nodes = if shift >= 64 { 0 } else { size >> shift };
        let Some(start) = self.n.checked_mul(TILE_WIDTH) else {
            return false;
        };
        let Some(end) = start.checked_add(u64::from(self.width)) else {
            return false;
        };
        end <= nodes
    }

    /// The `tlog_tiles` tile for a hash tile (None for entries).
    pub fn hash_tile(&self) -> Option<Tile> {
        // Safe: level ≤ 7 < 64 and 1 ≤ width ≤ 256 are checked by `parse`.
        self.level
            .map(|l| Tile::new(TILE_HEIGHT, l, self.n, self.width, false))
    }
}

/// The bytes of a hash tile: the `width` stored hashes at level 8L, concatenated.
pub fn hash_tile_bytes<R: HashReader>(t: &TileRef, r: &R) -> Result<Vec<u8>> {
    let tile = t
        .hash_tile()
        .ok_or_else(|| LedgerError::new(Code::NotFound, "an entry bundle is not a hash tile"))?;
    tile.read_data(r).map_err(storage)
}

/// Appends one entry to a C2SP entry bundle (big-endian u16 length, then bytes).
pub fn push_bundle_entry(bundle: &mut Vec<u8>, entry: &[u8]) {
    // Entries are ≤ MAX_ENTRY_BYTES = 65,535, enforced at append.
    let len = u16::try_from(entry.len()).expect("entry fits a u16 length");
    bundle.extend_from_slice(&len.to_be_bytes());
    bundle.extend_from_slice(entry);
}

/// Splits an entry bundle into its entries.
pub fn split_bundle(mut bytes: &[u8]) -> Result<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 2 {
            return Err(LedgerError::new(
                Code::VerificationFailed,
                "entry bundle ends inside a length prefix",
            ));
        }
        let len = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
        if bytes.len() < 2 + len {
            return Err(LedgerError::new(
                Code::VerificationFailed,
                "entry bundle ends inside an entry",
            ));
        }
        out.push(&bytes[2..2 + len]);
        bytes = &bytes[2 + len..];
    }
    Ok(out)
}

/// In-memory hash storage: every stored hash in `stored_hash_index` order. Used by
/// tests, vectors and the offline tools; the node reads hashes from RocksDB instead.
#[derive(Debug, Default, Clone)]
pub struct MemoryTree {
    hashes: Vec<Hash>,
    size: TreeSize,
}

impl MemoryTree {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn size(&self) -> TreeSize {
        self.size
    }
    pub fn push(&mut self, leaf: LeafHash) {
        // Infallible: the in-memory reader returns every index below len.
        let new = tlog_tiles::stored_hashes_for_record_hash(self.size, leaf.into(), self)
            .expect("memory tree holds every earlier hash");
        self.hashes.extend(new);
        self.size += 1;
    }
    pub fn root(&self) -> RootHash {
        root(self.size, self).expect("memory tree holds every hash")
    }
    /// Every stored hash, in `stored_hash_index` order.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }
}

impl HashReader for MemoryTree {
    fn read_hashes(&self, indexes: &[u64]) -> std::result::Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|&i| {
                usize::try_from(i)
                    .ok()
                    .and_then(|i| self.hashes.get(i).copied())
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::leaf_hash;

    fn tree(n: u64) -> MemoryTree {
        let mut t = MemoryTree::new();
        for i in 0..n {
            t.push(leaf_hash(format!("entry {i}").as_bytes()));
        }
        t
    }

    #[test]
    fn frontier_root_equals_stored_root() {
        let mut f = Frontier::new();
        let mut t = MemoryTree::new();
        assert_eq!(f.root(), t.root());
        for i in 0..300u64 {
            let l = leaf_hash(&i.to_be_bytes());
            f.push(l);
            t.push(l);
            assert_eq!(f.root(), t.root(), "size {}", i + 1);
        }
    }

    #[test]
    fn tile_paths_round_trip_and_refuse_odd_forms() {
        for p in [
            "0/000",
            "1/x001/234",
            "entries/x001/x234/067.p/1",
            "7/999.p/255",
        ] {
            assert_eq!(TileRef::parse(p).unwrap().path(), p);
        }
        for p in [
            "0/0",
            "8/000",
            "00/000",
            "0/000.p/0",
            "0/000.p/256",
            "0/1234",
            "0/x001",
            "entries/../../etc/passwd",
            "0/x999/x999/x999/x999/x999/x999/x999/999",
        ] {
            assert!(TileRef::parse(p).is_err(), "{p}");
        }
    }

    #[test]
    fn tile_fits_only_inside_the_tree() {
        let full = TileRef::parse("0/000").unwrap();
        assert!(full.fits(256) && full.fits(1000) && !full.fits(255));
        let part = TileRef::parse("0/001.p/5").unwrap();
        assert!(part.fits(261) && part.fits(262) && !part.fits(260));
        let l1 = TileRef::parse("1/000.p/1").unwrap();
        assert!(l1.fits(256) && l1.fits(512) && !l1.fits(255));
        let far = TileRef::parse("0/x072/x057/x594/x037/x927/936").unwrap(); // 2^56 tiles in: overflows
        assert!(!far.fits(u64::MAX));
    }

    #[test]
    fn a_proof_read_with_its_leaf_equals_the_two_read_apart() {
        for n in [1u64, 2, 3, 255, 256, 257, 1000] {
            let t = tree(n);
            for i in [0, n / 2, n - 1] {
                let (leaf, proof) = prove_inclusion_with_leaf(i, n, &t).unwrap();
                assert_eq!(
                    proof,
                    prove_inclusion(i, n, &t).unwrap(),
                    "size {n}, index {i}"
                );
                assert_eq!(leaf, leaf_hash(format!("entry {i}").as_bytes()));
                assert!(verify_inclusion(&proof, n, t.root(), i, leaf).is_ok());
            }
        }
        assert!(prove_inclusion_with_leaf(5, 5, &tree(5)).is_err());
    }

    #[test]
    fn consistency_refuses_a_fork() {
        let a = tree(10);
        let mut b = tree(5);
        b.push(leaf_hash(b"forged"));
        for i in 6..10u64 {
            b.push(leaf_hash(format!("entry {i}").as_bytes()));
        }
        let p = prove_consistency(6, 10, &a).unwrap();
        assert!(verify_consistency(&p, 6, root(6, &a).unwrap(), 10, a.root()).is_ok());
        assert!(verify_consistency(&p, 6, root(6, &b).unwrap(), 10, a.root()).is_err());
    }
}
