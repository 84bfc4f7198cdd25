//! Fixtures shared by the fuzz targets: a fixed log key (so a fuzzed checkpoint or
//! bundle can carry a valid signature and reach the code behind it), fixed actor
//! keys, an in-memory tree, and the scenario builder of `bundle_replay`.
//!
//! Nothing here is secret: the seeds are constants, used only to fuzz.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, Utc};
use ed25519_dalek::SigningKey;
use ledger::checkpoint::LogKey;
use ledger::entry::{self, leaf_hash, MAX_ENTRY_BYTES};
use ledger::envelope::Envelope;
use ledger::tree::{self, MemoryTree};
use ledger::types::LeafHash;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::sync::OnceLock;

/// The fuzzing log's origin.
pub const ORIGIN: &str = "custody.example/fuzz";
/// Seed of the fuzzing log's key; `ledger/tests/fuzz_regressions.rs` uses the same.
pub const LOG_SEED: [u8; 32] = [0x11; 32];
/// Leaves in [`tree`]: more than one full level-1 tile (65,536) plus a partial one.
pub const TREE_SIZE: u64 = 70_000;

/// The fuzzing log's key.
pub fn log_key() -> &'static LogKey {
    static K: OnceLock<LogKey> = OnceLock::new();
    K.get_or_init(|| LogKey::from_seed(ORIGIN, LOG_SEED).expect("fixed origin is valid"))
}

/// The fuzzing log's signed-note vkey: the one key every verifier here trusts.
pub fn vkey() -> &'static str {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| log_key().vkey())
}

/// Signer `n` of a scenario: 0 is the log key (it signs the genesis), 1–4 the
/// actors a scenario registers (1 is the admin named by the seeds' genesis), any
/// other number a key from that seed byte.
pub fn signer(n: u8) -> SigningKey {
    match n {
        0 => log_key().signing_key().clone(),
        n => SigningKey::from_bytes(&[n; 32]),
    }
}

/// A tree of [`TREE_SIZE`] leaves, built once.
pub fn tree() -> &'static MemoryTree {
    static T: OnceLock<MemoryTree> = OnceLock::new();
    T.get_or_init(|| {
        let mut t = MemoryTree::new();
        for i in 0..TREE_SIZE {
            t.push(leaf_hash(&i.to_be_bytes()));
        }
        t
    })
}

/// Leaf `i` of [`tree`].
pub fn tree_leaf(i: u64) -> LeafHash {
    leaf_hash(&i.to_be_bytes())
}

/// The attachments a fuzzed verifier holds: only the empty file (the seeds attach
/// it), so the attachment check runs without failing every bundle that has one.
pub fn empty_blob(blake3_hex: &str) -> Option<Vec<u8>> {
    static EMPTY: OnceLock<String> = OnceLock::new();
    let empty = EMPTY.get_or_init(|| ledger::types::BlobId::of(b"").to_hex());
    (blake3_hex == empty).then(Vec::new)
}

/// A `bundle_replay` input: a log written entry by entry, each signed here with a
/// fixed key, so that fuzzed events get past the signature and through the replay
/// rules. Payloads may name `@LOGVKEY@`, `@KEY<n>@` (hex public key of signer n,
/// n = 0–9) and `@LEAF<i>@` (leaf hash of an earlier entry i), replaced before signing.
#[derive(Deserialize)]
struct Scenario<'a> {
    /// Put verbatim into the bundle's `rules` (which the bundle does not sign).
    #[serde(default, borrow)]
    rules: Option<&'a RawValue>,
    #[serde(default)]
    subject: Option<u64>,
    /// Entries to leave out of the bundle.
    #[serde(default)]
    omit: Vec<u64>,
    #[serde(borrow)]
    entries: Vec<ScenarioEntry<'a>>,
}

#[derive(Deserialize)]
struct ScenarioEntry<'a> {
    signer: u8,
    logged_at: String,
    #[serde(borrow)]
    payload: &'a RawValue,
}

/// Most entries a scenario may write: keeps one run in milliseconds.
const MAX_SCENARIO_ENTRIES: usize = 48;

fn substitute(payload: &str, leaves: &[LeafHash]) -> String {
    let mut out = String::with_capacity(payload.len());
    let mut rest = payload;
    while let Some(start) = rest.find('@') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('@') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let token = &after[..end];
        let value = if token == "LOGVKEY" {
            Some(vkey().to_owned())
        } else if let Some(n) = token.strip_prefix("KEY").and_then(|n| n.parse::<u8>().ok()) {
            (n < 10).then(|| hex::encode(signer(n).verifying_key().as_bytes()))
        } else if let Some(i) = token
            .strip_prefix("LEAF")
            .and_then(|i| i.parse::<usize>().ok())
        {
            leaves.get(i).map(|l| l.to_hex())
        } else {
            None
        };
        match value {
            Some(v) => {
                out.push_str(&v);
                rest = &after[end + 1..];
            }
            None => {
                out.push('@');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Builds a signed evidence bundle (JSON bytes) from a scenario, or `None` if the
/// input is not a scenario.
pub fn scenario_bundle(bytes: &[u8]) -> Option<Vec<u8>> {
    let s: Scenario = serde_json::from_slice(bytes).ok()?;
    if s.entries.len() > MAX_SCENARIO_ENTRIES {
        return None;
    }
    let mut leaves = Vec::with_capacity(s.entries.len());
    let mut entries = Vec::with_capacity(s.entries.len());
    let mut t = MemoryTree::new();
    for e in &s.entries {
        let payload = substitute(e.payload.get(), &leaves);
        let logged_at: DateTime<Utc> = DateTime::parse_from_rfc3339(&e.logged_at)
            .ok()?
            .with_timezone(&Utc);
        let env = Envelope::sign(payload.as_bytes(), &signer(e.signer));
        let bytes = entry::encode(logged_at, &env);
        if bytes.len() > MAX_ENTRY_BYTES {
            return None;
        }
        let leaf = leaf_hash(&bytes);
        t.push(leaf);
        leaves.push(leaf);
        entries.push(bytes);
    }
    let size = t.size();
    let cp = log_key().sign(size, t.root()).ok()?;
    let listed: Vec<Value> = entries
        .iter()
        .enumerate()
        .map(|(i, b)| (i as u64, b))
        .filter(|(i, _)| !s.omit.contains(i))
        .map(|(i, b)| {
            let proof = tree::prove_inclusion(i, size, &t).expect("the tree holds entry i");
            json!({"index": i, "entry": B64.encode(b), "inclusion_proof": proof})
        })
        .collect();
    let mut bundle = json!({
        "format": ledger::bundle::FORMAT,
        "origin": ORIGIN,
        "log_vkey": vkey(),
        "checkpoint": cp.note,
        "subject": s.subject.unwrap_or(size.saturating_sub(1)),
        "entries": listed,
    });
    if let Some(r) = s.rules {
        bundle["rules"] = serde_json::from_str(r.get()).ok()?;
    }
    serde_json::to_vec(&bundle).ok()
}
