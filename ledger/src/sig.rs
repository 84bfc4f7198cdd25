//! Ed25519 verification under one rule, whether a signature is checked alone or in a
//! batch (spec/envelope.md §Signature rule).
//!
//! The rule is RFC 8032 §5.1.7 with its cofactored group equation
//! `[8][s]B = [8]R + [8][k]A`, plus encoding checks: `s` canonical (< L), `R` and `A`
//! canonical encodings of points that are not of small order. Batch verification of
//! the cofactored equation accepts exactly the batches whose every signature passes
//! alone (up to a 2^-128 chance over the batch coefficients), so the log, the audit and
//! a bundle verifier reach the same verdict however they group their checks. The
//! cofactorless check used by some libraries (ed25519-dalek `verify_strict`, Go's
//! `crypto/ed25519`) accepts a subset: every signature an honest RFC 8032 signer makes
//! passes both; only a key holder who deliberately adds a torsion component to `R` can
//! make one that passes ours and not theirs, and nobody without the key can make
//! either.
//!
//! Batch coefficients are derived from a BLAKE3 hash of the whole batch (like
//! ed25519-dalek's own batch verification, which derives them from a transcript):
//! verdicts are reproducible, and a forger cannot choose signatures after seeing them.

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use sha2::{Digest, Sha512};

/// Above this many signatures a batch is split: a failed batch falls back to checking
/// its members alone, so smaller batches bound what one bad signature costs.
pub const MAX_BATCH: usize = 256;

/// Keys remembered per thread by [`PublicKey::from_bytes_cached`].
const KEY_CACHE: usize = 4096;

/// `y` is the low 255 bits; the encoding is canonical iff `y < p = 2^255 - 19`.
fn canonical_point_encoding(b: &[u8; 32]) -> bool {
    !(b[0] >= 0xed && b[1..31].iter().all(|&x| x == 0xff) && b[31] & 0x7f == 0x7f)
}

/// Every encoding with a canonical `y` that decodes to a point of small order: the
/// eight points of the 8-torsion subgroup, plus the two of them with `x = 0` (the
/// identity and the point of order 2) written with the sign bit set, which decodes
/// to the same point. A canonical-`y` encoding of a point `P` can differ from
/// `P`'s own encoding only in that bit, and only when `P`'s `x` is 0, so `P` has
/// small order exactly when its encoding is one of these ten.
static SMALL_ORDER_ENCODINGS: std::sync::LazyLock<Vec<[u8; 32]>> = std::sync::LazyLock::new(|| {
    let mut all = Vec::new();
    for t in curve25519_dalek::constants::EIGHT_TORSION {
        let b = t.compress().to_bytes();
        let mut flipped = b;
        flipped[31] ^= 0x80;
        for e in [b, flipped] {
            let decodes_to_t = CompressedEdwardsY(e).decompress() == Some(t);
            if decodes_to_t && !all.contains(&e) {
                all.push(e);
            }
        }
    }
    all
});

/// A point that passes the rule's encoding checks (canonical, decodes, not small
/// order). Small order is judged by the encoding ([`SMALL_ORDER_ENCODINGS`]): ten
/// comparisons instead of three point doublings, ~4% of an audit's CPU (and of
/// the node's checks of each signature's `R`), stop 40.
fn decode_point(b: &[u8; 32]) -> Option<EdwardsPoint> {
    if !canonical_point_encoding(b) || SMALL_ORDER_ENCODINGS.contains(b) {
        return None;
    }
    CompressedEdwardsY(*b).decompress()
}

/// A public key usable under the rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicKey {
    bytes: [u8; 32],
    point: EdwardsPoint,
}

impl PublicKey {
    /// `None` for a non-canonical encoding, a non-point, or a small-order point.
    pub fn from_bytes(bytes: &[u8; 32]) -> Option<PublicKey> {
        decode_point(bytes).map(|point| PublicKey {
            bytes: *bytes,
            point,
        })
    }
    /// [`PublicKey::from_bytes`] through a per-thread memory of recent keys: a log
    /// has few signers, and decoding a point costs a field exponentiation.
    pub fn from_bytes_cached(bytes: &[u8; 32]) -> Option<PublicKey> {
        thread_local! {
            static KEYS: std::cell::RefCell<std::collections::HashMap<[u8; 32], Option<PublicKey>>> =
                Default::default();
        }
        KEYS.with_borrow_mut(|keys| {
            if let Some(k) = keys.get(bytes) {
                return *k;
            }
            if keys.len() >= KEY_CACHE {
                keys.clear();
            }
            let k = PublicKey::from_bytes(bytes);
            keys.insert(*bytes, k);
            k
        })
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }
}

/// One signature decoded and hashed, ready for the group equation.
#[derive(Clone, Debug)]
pub struct Pending {
    r: EdwardsPoint,
    a: EdwardsPoint,
    s: Scalar,
    /// `k = SHA-512(R || A || M) mod L`.
    k: Scalar,
    /// What the batch coefficients commit to: `R`, `A`, `s`, `k`.
    transcript: [u8; 128],
}

impl Pending {
    /// Decodes `sig` by `key` over the message `msg` (given in parts, concatenated).
    /// `None` when an encoding check fails: the signature is invalid whatever the
    /// equation says.
    pub fn new(key: &PublicKey, sig: &[u8; 64], msg: &[&[u8]]) -> Option<Pending> {
        let r_bytes: [u8; 32] = sig[..32].try_into().expect("64 = 32 + 32");
        let s_bytes: [u8; 32] = sig[32..].try_into().expect("64 = 32 + 32");
        let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes))?;
        let r = decode_point(&r_bytes)?;
        let mut h = Sha512::new();
        h.update(r_bytes);
        h.update(key.bytes);
        for part in msg {
            h.update(part);
        }
        let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
        let mut transcript = [0u8; 128];
        transcript[..32].copy_from_slice(&r_bytes);
        transcript[32..64].copy_from_slice(&key.bytes);
        transcript[64..96].copy_from_slice(&s_bytes);
        transcript[96..].copy_from_slice(k.as_bytes());
        Some(Pending {
            r,
            a: key.point,
            s,
            k,
            transcript,
        })
    }

    /// The signer's key as encoded in the signature's transcript.
    fn key_bytes(&self) -> &[u8] {
        &self.transcript[32..64]
    }

    /// The cofactored equation for this signature alone.
    pub fn verify(&self) -> bool {
        // [s]B - [k]A - R, times the cofactor.
        let sb_minus_ka =
            EdwardsPoint::vartime_double_scalar_mul_basepoint(&self.k, &-self.a, &self.s);
        (sb_minus_ka - self.r).mul_by_cofactor().is_identity()
    }
}

/// Checks `[8]( -(Σ zᵢsᵢ)B + Σ zᵢRᵢ + Σ (zᵢkᵢ)Aᵢ ) = 0` with 128-bit coefficients zᵢ
/// derived from the whole batch. True iff (with overwhelming probability) every
/// signature passes [`Pending::verify`].
///
/// Signatures by the same key share one term: `Σ (zᵢkᵢ)A` over them is
/// `(Σ zᵢkᵢ)A`, so a batch from one signer (a brand's scans, a bench run) is a
/// multiscalar multiplication over n + 2 points instead of 2n + 1. The equation is
/// the same; only the arithmetic is shorter.
pub fn verify_batch(items: &[Pending]) -> bool {
    match items {
        [] => return true,
        [one] => return one.verify(),
        _ => {}
    }
    let mut h = blake3::Hasher::new_derive_key("custody 2026 ed25519 batch coefficients");
    h.update(&(items.len() as u64).to_le_bytes());
    for p in items {
        h.update(&p.transcript);
    }
    let mut xof = h.finalize_xof();
    let mut b_coeff = Scalar::ZERO;
    let mut zs = Vec::with_capacity(items.len());
    // One coefficient per distinct key: (index of its first signature, Σ zᵢkᵢ). A
    // key's bytes name one point (only canonical encodings pass), so grouping by
    // bytes is grouping by point. The sums are reduced mod L, which changes a key's
    // torsion component (if it has one) before the cofactor clears it: the merged
    // equation equals the unmerged one only because the check is cofactored.
    let mut keys: Vec<(usize, Scalar)> = Vec::new();
    // Built only once a second key appears.
    let mut index: std::collections::HashMap<&[u8], usize> = Default::default();
    let mut last_slot = 0;
    for (i, p) in items.iter().enumerate() {
        let mut z = [0u8; 16];
        xof.fill(&mut z);
        let z = Scalar::from(u128::from_le_bytes(z));
        b_coeff += z * p.s;
        zs.push(z);
        let key = p.key_bytes();
        // Most batches hold one signer, or runs of one: the previous signature's key
        // first.
        let same_as_last = keys
            .get(last_slot)
            .is_some_and(|&(first, _)| items[first].key_bytes() == key);
        if !same_as_last {
            if keys.len() == 1 {
                index.insert(items[keys[0].0].key_bytes(), 0);
            }
            last_slot = match index.get(key) {
                Some(&slot) => slot,
                None => {
                    keys.push((i, Scalar::ZERO));
                    if keys.len() > 1 {
                        index.insert(key, keys.len() - 1);
                    }
                    keys.len() - 1
                }
            };
        }
        keys[last_slot].1 += z * p.k;
    }
    let scalars = std::iter::once(-b_coeff)
        .chain(zs)
        .chain(keys.iter().map(|&(_, coeff)| coeff));
    let points = std::iter::once(ED25519_BASEPOINT_POINT)
        .chain(items.iter().map(|p| p.r))
        .chain(keys.iter().map(|&(first, _)| items[first].a));
    EdwardsPoint::vartime_multiscalar_mul(scalars, points)
        .mul_by_cofactor()
        .is_identity()
}

/// Each signature's verdict, checked in batches of at most [`MAX_BATCH`]; a batch
/// that fails is checked one by one, so a bad signature never condemns a good one.
pub fn verify_each(items: &[Pending]) -> Vec<bool> {
    verify_each_in(items, MAX_BATCH)
}

/// [`verify_each`] in batches of at most `batch` (at least 1): larger batches cost
/// less per signature (wider windows in the multiscalar multiplication) and more
/// when one fails. The audit, which reads a log whose every signature should pass,
/// uses larger ones than the node, which takes anyone's input.
pub fn verify_each_in(items: &[Pending], batch: usize) -> Vec<bool> {
    let mut out = Vec::with_capacity(items.len());
    for chunk in items.chunks(batch.max(1)) {
        if verify_batch(chunk) {
            out.extend(std::iter::repeat_n(true, chunk.len()));
        } else {
            out.extend(chunk.iter().map(Pending::verify));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::constants::EIGHT_TORSION;
    use ed25519_dalek::{Signer, SigningKey};

    fn signed(n: u8, msg: &[u8]) -> (PublicKey, [u8; 64]) {
        let sk = SigningKey::from_bytes(&[n; 32]);
        let pk = PublicKey::from_bytes(sk.verifying_key().as_bytes()).unwrap();
        (pk, sk.sign(msg).to_bytes())
    }

    #[test]
    fn honest_signatures_pass_alone_and_in_batch() {
        let items: Vec<Pending> = (1..=40u8)
            .map(|n| {
                let msg = [n; 10];
                let (pk, sig) = signed(n, &msg);
                Pending::new(&pk, &sig, &[&msg[..5], &msg[5..]]).unwrap()
            })
            .collect();
        assert!(items.iter().all(Pending::verify));
        assert!(verify_batch(&items));
        assert_eq!(verify_each(&items), vec![true; 40]);
    }

    #[test]
    fn one_bad_signature_fails_the_batch_and_only_itself() {
        let mut items: Vec<Pending> = (1..=20u8)
            .map(|n| {
                let (pk, sig) = signed(n, b"m");
                Pending::new(&pk, &sig, &[b"m"]).unwrap()
            })
            .collect();
        let (pk, sig) = signed(99, b"m");
        items[13] = Pending::new(&pk, &sig, &[b"other message"]).unwrap();
        assert!(!verify_batch(&items));
        let verdicts = verify_each(&items);
        for (i, v) in verdicts.iter().enumerate() {
            assert_eq!(*v, i != 13, "signature {i}");
        }
        // The same verdicts whatever the batch size (0 is taken as 1).
        for batch in [0, 1, 7, 13, 14, 1024] {
            assert_eq!(verify_each_in(&items, batch), verdicts, "batch {batch}");
        }
    }

    /// Signatures by one key share a term of the batch equation; a bad one among them
    /// still fails the batch and only itself, wherever the key's runs begin and end.
    #[test]
    fn signatures_sharing_a_key_are_judged_as_alone() {
        let msgs: Vec<Vec<u8>> = (0..60u32).map(|i| i.to_le_bytes().to_vec()).collect();
        // Runs of key 1, interleaved with keys 2 and 3, then key 1 again.
        let signer = |i: usize| match i {
            0..20 => 1,
            20..30 => 2 + (i % 2) as u8,
            _ => 1,
        };
        let good: Vec<Pending> = msgs
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let (pk, sig) = signed(signer(i), m);
                Pending::new(&pk, &sig, &[m]).unwrap()
            })
            .collect();
        assert!(verify_batch(&good));
        for bad in [0, 19, 25, 59] {
            let mut items = good.clone();
            let (pk, sig) = signed(signer(bad), b"not this message");
            items[bad] = Pending::new(&pk, &sig, &[&msgs[bad]]).unwrap();
            assert!(!verify_batch(&items), "bad signature at {bad}");
            let verdicts = verify_each(&items);
            for (i, v) in verdicts.iter().enumerate() {
                assert_eq!(*v, i != bad, "signature {i} with the bad one at {bad}");
            }
        }
        // Two signatures swapped between messages of the same key: each is wrong.
        let mut swapped = good.clone();
        let (pk, s0) = signed(1, &msgs[0]);
        let (_, s1) = signed(1, &msgs[1]);
        swapped[0] = Pending::new(&pk, &s1, &[&msgs[0]]).unwrap();
        swapped[1] = Pending::new(&pk, &s0, &[&msgs[1]]).unwrap();
        assert!(!verify_batch(&swapped));
    }

    /// A key with a torsion component (A + T): its merged term differs from the sum
    /// of its unmerged ones by a torsion point, which the cofactor clears. Valid
    /// signatures by it pass together; a bad one still fails the batch and only itself.
    #[test]
    fn signatures_by_a_key_with_torsion_share_a_term_soundly() {
        let a = Scalar::from(987_654_321u64);
        let big_a = ED25519_BASEPOINT_POINT * a + EIGHT_TORSION[1];
        let pk = PublicKey::from_bytes(&big_a.compress().to_bytes()).unwrap();
        let sign = |n: u64, msg: &[u8]| -> [u8; 64] {
            let r = Scalar::from(1_000 + n);
            let r_bytes = (ED25519_BASEPOINT_POINT * r).compress().to_bytes();
            let mut h = Sha512::new();
            h.update(r_bytes);
            h.update(pk.bytes);
            h.update(msg);
            let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
            let mut sig = [0u8; 64];
            sig[..32].copy_from_slice(&r_bytes);
            sig[32..].copy_from_slice((r + k * a).as_bytes());
            sig
        };
        let msgs: Vec<[u8; 8]> = (0..24u64).map(u64::to_le_bytes).collect();
        let good: Vec<Pending> = msgs
            .iter()
            .enumerate()
            .map(|(i, m)| {
                if i % 4 == 3 {
                    let (other, sig) = signed(i as u8, m);
                    Pending::new(&other, &sig, &[m]).unwrap()
                } else {
                    Pending::new(&pk, &sign(i as u64, m), &[m]).unwrap()
                }
            })
            .collect();
        assert!(good.iter().all(Pending::verify));
        assert!(verify_batch(&good));
        let mut items = good.clone();
        items[5] = Pending::new(&pk, &sign(5, b"another message"), &[&msgs[5]]).unwrap();
        assert!(!verify_batch(&items));
        let verdicts = verify_each(&items);
        for (i, v) in verdicts.iter().enumerate() {
            assert_eq!(*v, i != 5, "signature {i}");
        }
    }

    #[test]
    fn encoding_checks() {
        let (pk, sig) = signed(1, b"m");
        // s + L is the same scalar, not canonical.
        let mut big_s = sig;
        // L = 2^252 + 27742317777372353535851937790883648493, little-endian.
        let mut l = [0u8; 32];
        l[..16].copy_from_slice(&0x14def9dea2f79cd65812631a5cf5d3ed_u128.to_le_bytes());
        l[31] = 0x10;
        let mut carry = 0u16;
        for i in 0..32 {
            let v = big_s[32 + i] as u16 + l[i] as u16 + carry;
            big_s[32 + i] = v as u8;
            carry = v >> 8;
        }
        assert!(Pending::new(&pk, &big_s, &[b"m"]).is_none());
        // Small-order keys and R are refused.
        for t in EIGHT_TORSION {
            let b = t.compress().to_bytes();
            assert!(PublicKey::from_bytes(&b).is_none());
            let mut small_r = sig;
            small_r[..32].copy_from_slice(&b);
            assert!(Pending::new(&pk, &small_r, &[b"m"]).is_none());
        }
        // A non-canonical y (p + 1 encodes y = 1 again).
        let mut p_plus_1 = [0xffu8; 32];
        p_plus_1[0] = 0xee;
        p_plus_1[31] = 0x7f;
        assert!(!canonical_point_encoding(&p_plus_1));
        assert!(PublicKey::from_bytes(&p_plus_1).is_none());
    }

    #[test]
    fn small_order_is_judged_by_encoding_exactly_as_by_the_point() {
        assert_eq!(
            SMALL_ORDER_ENCODINGS.len(),
            10,
            "8 torsion points, 2 with x = 0"
        );
        // Written out, independently of how the list is made: the identity (y = 1)
        // and the point of order 2 (y = p - 1), each with the sign bit set.
        let mut identity_signed = [0u8; 32];
        identity_signed[0] = 1;
        identity_signed[31] = 0x80;
        let mut order_two_signed = [0xffu8; 32];
        order_two_signed[0] = 0xec;
        for e in [identity_signed, order_two_signed] {
            assert!(SMALL_ORDER_ENCODINGS.contains(&e), "{}", hex::encode(e));
            assert!(canonical_point_encoding(&e));
            let p = CompressedEdwardsY(e).decompress().expect("decodes");
            assert!(p.is_small_order() && p.compress().to_bytes() != e);
        }
        for e in SMALL_ORDER_ENCODINGS.iter() {
            let p = CompressedEdwardsY(*e).decompress().expect("decodes");
            assert!(p.is_small_order() && canonical_point_encoding(e));
            assert!(decode_point(e).is_none());
        }
        // Points of large order, and the same points moved by every torsion point
        // (mixed order): none is refused, with either sign bit.
        let mut checked = 0;
        for k in 1..200u64 {
            let base = ED25519_BASEPOINT_POINT * Scalar::from(k * 7919 + 3);
            for t in EIGHT_TORSION {
                let p = base + t;
                let b = p.compress().to_bytes();
                let mut flipped = b;
                flipped[31] ^= 0x80;
                for e in [b, flipped] {
                    let old_rule = CompressedEdwardsY(e)
                        .decompress()
                        .filter(|q| !q.is_small_order());
                    assert_eq!(decode_point(&e), old_rule, "{}", hex::encode(e));
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 199 * 8 * 2);
        // Arbitrary bytes: most do not decode at all; the verdicts agree.
        for i in 0..2000u32 {
            let e: [u8; 32] = *blake3::hash(&i.to_le_bytes()).as_bytes();
            let old_rule = Some(e)
                .filter(canonical_point_encoding)
                .and_then(|e| CompressedEdwardsY(e).decompress())
                .filter(|q| !q.is_small_order());
            assert_eq!(decode_point(&e), old_rule);
        }
    }

    /// A signer who adds a torsion point to R makes a signature the cofactorless
    /// check refuses; our rule accepts it alone and in a batch alike, so no grouping
    /// of checks can change a verdict.
    #[test]
    fn torsion_in_r_gets_the_same_verdict_alone_and_in_batch() {
        let sk = SigningKey::from_bytes(&[7; 32]);
        let pk = PublicKey::from_bytes(sk.verifying_key().as_bytes()).unwrap();
        let a = pk.point;
        let msg = b"torsion";
        // Sign by hand: r a nonce, R = rB + T (T of order 2), s = r + k·a.
        let expanded = {
            let h = Sha512::digest([7u8; 32]);
            let mut lo = [0u8; 32];
            lo.copy_from_slice(&h[..32]);
            lo[0] &= 248;
            lo[31] &= 127;
            lo[31] |= 64;
            Scalar::from_bytes_mod_order(lo)
        };
        assert_eq!(ED25519_BASEPOINT_POINT * expanded, a);
        let r = Scalar::from(123_456_789u64);
        let big_r = ED25519_BASEPOINT_POINT * r + EIGHT_TORSION[4];
        let r_bytes = big_r.compress().to_bytes();
        let mut h = Sha512::new();
        h.update(r_bytes);
        h.update(pk.bytes);
        h.update(msg);
        let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
        let s = r + k * expanded;
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&r_bytes);
        sig[32..].copy_from_slice(s.as_bytes());
        // The cofactorless check refuses it…
        let vk = sk.verifying_key();
        assert!(vk
            .verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&sig))
            .is_err());
        // …ours accepts it, alone and among others, every time.
        let odd = Pending::new(&pk, &sig, &[msg]).unwrap();
        assert!(odd.verify());
        for n in 1..=8u8 {
            let mut items: Vec<Pending> = (1..=n)
                .map(|m| {
                    let (pk, sig) = signed(m, b"x");
                    Pending::new(&pk, &sig, &[b"x"]).unwrap()
                })
                .collect();
            items.push(odd.clone());
            items.push(odd.clone());
            assert!(verify_batch(&items), "batch of {}", items.len());
        }
    }
}
