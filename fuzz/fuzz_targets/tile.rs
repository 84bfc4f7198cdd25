//! C2SP tile paths from a URL (`GET /tile/…`) and entry bundles from a mirror:
//! `TileRef::parse`, `fits`, the hash tile read for a tile that fits, and
//! `split_bundle`. Must never panic; parsed paths are canonical; a tile that fits
//! the tree can be read; split entries re-frame to the same bytes.
#![no_main]
use custody_fuzz::{tree, TREE_SIZE};
use ledger::tree::{hash_tile_bytes, push_bundle_entry, split_bundle, TileRef};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(path) = std::str::from_utf8(data) {
        // Both the part after `tile/` (what the route hands over) and a whole path.
        for p in [path, path.strip_prefix("tile/").unwrap_or(path)] {
            let Ok(t) = TileRef::parse(p) else { continue };
            assert_eq!(t.path(), p, "parsed paths are canonical");
            for size in [0, 1, 255, 256, 257, 65_535, 65_536, u64::MAX - 1, u64::MAX] {
                let _ = t.fits(size);
            }
            let _ = t.hash_tile();
            if t.level.is_some() && t.fits(TREE_SIZE) {
                let bytes = hash_tile_bytes(&t, tree()).expect("a tile that fits is readable");
                assert_eq!(bytes.len(), t.width as usize * 32);
            }
        }
    }
    if let Ok(entries) = split_bundle(data) {
        let mut again = Vec::with_capacity(data.len());
        for e in entries {
            push_bundle_entry(&mut again, e);
        }
        assert_eq!(again, data);
    }
});
