//! Proof requests and proofs from outside. The node's own query parsing (`number`
//! in node/src/body.rs) lives in a binary crate and cannot be linked here, so this
//! fuzzes what it hands the ledger: any index, tree size, first and second size
//! (the node caps tree sizes at the log's size), leaf-hash hex, and proofs, roots
//! and sizes as a hostile log or mirror would send them to a verifier.
//! Must never panic; every proof the tree makes verifies; a tampered one does not.
#![no_main]
use custody_fuzz::{tree, tree_leaf, TREE_SIZE};
use ledger::tree::{
    prove_consistency, prove_inclusion, root, verify_consistency, verify_inclusion,
};
use ledger::types::{CaseId, LeafHash, RootHash};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    index: u64,
    size: u64,
    first: u64,
    second: u64,
    proof: Vec<[u8; 32]>,
    root_a: [u8; 32],
    root_b: [u8; 32],
    leaf: [u8; 32],
    /// Which proof element to flip, and how.
    tamper_at: u8,
    tamper_bit: u8,
    /// Keep the index (or first size) as sent instead of bringing it into range.
    raw_index: bool,
    raw_first: bool,
    leaf_hash_param: String,
}

fuzz_target!(|i: Input| {
    let proof: Vec<RootHash> = i.proof.iter().map(|h| RootHash(*h)).collect();
    // A verifier given anything at all.
    let _ = verify_inclusion(
        &proof,
        i.size,
        RootHash(i.root_a),
        i.index,
        LeafHash(i.leaf),
    );
    let _ = verify_consistency(
        &proof,
        i.first,
        RootHash(i.root_a),
        i.second,
        RootHash(i.root_b),
    );
    let _ = LeafHash::parse(&i.leaf_hash_param);
    let _ = CaseId::parse(&i.leaf_hash_param);

    let t = tree();
    // Unchecked sizes straight into the prover must be refused, not panic.
    let _ = prove_inclusion(i.index, i.size, t);
    let _ = prove_consistency(i.first, i.second, t);

    // What the node does: sizes capped at the log's size, index and first as given.
    let size = i.size % (TREE_SIZE + 1);
    let second = i.second % (TREE_SIZE + 1);
    let index = if i.raw_index {
        i.index
    } else {
        i.index % (size + 1)
    };
    let first = if i.raw_first {
        i.first
    } else {
        i.first % (second + 1)
    };
    if let Ok(p) = prove_inclusion(index, size, t) {
        let r = root(size, t).expect("root of a size within the tree");
        verify_inclusion(&p, size, r, index, tree_leaf(index))
            .expect("our inclusion proof verifies");
        // A real proof offered for another index or size: refused, never a panic.
        let _ = verify_inclusion(&p, i.second, r, i.first, tree_leaf(index));
        let mut bad = p.clone();
        if !bad.is_empty() {
            let k = usize::from(i.tamper_at) % bad.len();
            bad[k].0[usize::from(i.tamper_bit) % 32] ^= 1 << (i.tamper_bit % 8);
            assert!(verify_inclusion(&bad, size, r, index, tree_leaf(index)).is_err());
        }
    }
    if let Ok(p) = prove_consistency(first, second, t) {
        let r1 = root(first, t).expect("root of first");
        let r2 = root(second, t).expect("root of second");
        verify_consistency(&p, first, r1, second, r2).expect("our consistency proof verifies");
        let mut bad = p.clone();
        if !bad.is_empty() {
            let k = usize::from(i.tamper_at) % bad.len();
            bad[k].0[usize::from(i.tamper_bit) % 32] ^= 1 << (i.tamper_bit % 8);
            assert!(verify_consistency(&bad, first, r1, second, r2).is_err());
        }
    }
});
