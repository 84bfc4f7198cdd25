//! Every proof we generate verifies with our verifier AND with an independent
//! RFC 6962 implementation (`ct-merkle`); every tampered proof, root, size or entry
//! is rejected. Property-based over tree sizes up to a few thousand.

use ct_merkle::mem_backed_tree::MemoryBackedTree;
use ct_merkle::{ConsistencyProof, InclusionProof, RootHash as OracleRoot};
use ledger::entry::leaf_hash;
use ledger::tree::{self, MemoryTree};
use ledger::types::RootHash;
use proptest::prelude::*;
use sha2_oracle::Sha256;

struct Trees {
    ours: MemoryTree,
    oracle: MemoryBackedTree<Sha256, Vec<u8>>,
    entries: Vec<Vec<u8>>,
}

fn build(n: u64) -> Trees {
    let mut ours = MemoryTree::new();
    let mut oracle = MemoryBackedTree::new();
    let mut entries = Vec::new();
    for i in 0..n {
        let e = format!("{{\"entry\":{i}}}").into_bytes();
        ours.push(leaf_hash(&e));
        oracle.push(e.clone());
        entries.push(e);
    }
    Trees {
        ours,
        oracle,
        entries,
    }
}

fn concat(p: &[RootHash]) -> Vec<u8> {
    p.iter().flat_map(|h| h.0).collect()
}

fn oracle_root(r: RootHash, size: u64) -> OracleRoot<Sha256> {
    let digest = r.0.into();
    OracleRoot::new(digest, size)
}

fn sizes() -> impl Strategy<Value = (u64, u64, u64)> {
    // (tree size, an index in it, an earlier size)
    (1u64..3000).prop_flat_map(|n| (Just(n), 0..n, 1..=n))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn inclusion_proofs_verify_here_and_with_the_oracle((n, i, _m) in sizes()) {
        let t = build(n);
        let root = t.ours.root();
        let oracle_root = t.oracle.root();
        prop_assert_eq!(root.0.as_slice(), oracle_root.as_bytes().as_slice());
        let leaf = leaf_hash(&t.entries[i as usize]);
        let proof = tree::prove_inclusion(i, n, &t.ours).unwrap();
        prop_assert!(tree::verify_inclusion(&proof, n, root, i, leaf).is_ok());
        let op = InclusionProof::<Sha256>::from_bytes(concat(&proof));
        prop_assert!(t.oracle.root().verify_inclusion(&t.entries[i as usize], i, &op).is_ok());
        // And the oracle's own proof verifies with ours.
        let theirs = t.oracle.prove_inclusion(i as usize);
        let theirs: Vec<RootHash> = theirs.as_bytes().chunks(32)
            .map(|c| RootHash(c.try_into().unwrap())).collect();
        prop_assert!(tree::verify_inclusion(&theirs, n, root, i, leaf).is_ok());
    }

    #[test]
    fn consistency_proofs_verify_here_and_with_the_oracle((n, _i, m) in sizes()) {
        let t = build(n);
        let new_root = t.ours.root();
        let old_root = tree::root(m, &t.ours).unwrap();
        let proof = tree::prove_consistency(m, n, &t.ours).unwrap();
        prop_assert!(tree::verify_consistency(&proof, m, old_root, n, new_root).is_ok());
        if m < n {
            let op = ConsistencyProof::<Sha256>::try_from_bytes(concat(&proof)).unwrap();
            prop_assert!(oracle_root(new_root, n).verify_consistency(&oracle_root(old_root, m), &op).is_ok());
        }
    }

    #[test]
    fn tampered_inclusion_is_rejected((n, i, _m) in sizes(), flip in 0usize..32, which in 0usize..4) {
        let t = build(n);
        let root = t.ours.root();
        let leaf = leaf_hash(&t.entries[i as usize]);
        let mut proof = tree::prove_inclusion(i, n, &t.ours).unwrap();
        let bad = match which {
            0 if !proof.is_empty() => {
                let k = flip % proof.len();
                proof[k].0[flip] ^= 1;
                tree::verify_inclusion(&proof, n, root, i, leaf)
            }
            1 => {
                let mut r = root;
                r.0[flip] ^= 1;
                tree::verify_inclusion(&proof, n, r, i, leaf)
            }
            2 => tree::verify_inclusion(&proof, n, root, i, leaf_hash(b"another entry")),
            _ => {
                // The same proof claimed for another index. (A different *size* can
                // legitimately share a proof and root — RFC 6962 proofs do not bind
                // the size; the signed checkpoint does.)
                if n < 2 {
                    return Ok(());
                }
                tree::verify_inclusion(&proof, n, root, (i + 1) % n, leaf)
            }
        };
        prop_assert!(bad.is_err());
    }

    #[test]
    fn tampered_consistency_is_rejected((n, _i, m) in sizes(), flip in 0usize..32) {
        prop_assume!(m < n);
        let t = build(n);
        let new_root = t.ours.root();
        let old_root = tree::root(m, &t.ours).unwrap();
        let mut proof = tree::prove_consistency(m, n, &t.ours).unwrap();
        let mut forged_old = old_root;
        forged_old.0[flip] ^= 1;
        prop_assert!(tree::verify_consistency(&proof, m, forged_old, n, new_root).is_err());
        if !proof.is_empty() {
            let k = flip % proof.len();
            proof[k].0[flip] ^= 1;
            prop_assert!(tree::verify_consistency(&proof, m, old_root, n, new_root).is_err());
        }
    }
}

#[test]
fn empty_tree_root_is_sha256_of_nothing() {
    assert_eq!(
        MemoryTree::new().root().to_hex(),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}
