//! Evidence bundles (spec/bundle.md): one JSON file a court can verify with no
//! network. It holds the log's origin and vkey, a signed checkpoint, and, each with
//! its inclusion proof: the subject entry, every entry it refers to (transitively),
//! every earlier entry of its case, the genesis and the registrations of every
//! signer. Verification replays them through the same rules the log enforced.

use crate::cases::Rules;
use crate::checkpoint::{CheckpointVerifier, SignedCheckpoint};
use crate::entry::leaf_hash;
use crate::error::{Code, LedgerError, Result};
use crate::event::Attachment;
use crate::replay::Replayer;
use crate::tree;
use crate::types::{Index, KeyId, LeafHash, RootHash};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const FORMAT: &str = "custody-bundle/v1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleEntry {
    pub index: Index,
    /// Standard base64 of the exact entry bytes.
    pub entry: String,
    pub inclusion_proof: Vec<RootHash>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    pub format: String,
    pub origin: String,
    pub log_vkey: String,
    pub checkpoint: String,
    pub subject: Index,
    /// The due-process parameters the log declares (clock skew, platform window);
    /// replay uses them, always enforcing.
    #[serde(default)]
    pub rules: Rules,
    pub entries: Vec<BundleEntry>,
}

/// One line of a verification report.
#[derive(Debug, Clone, Serialize)]
pub struct ReportLine {
    pub index: Index,
    pub kind: String,
    pub case: Option<String>,
    pub signer: KeyId,
    pub signer_name: String,
    pub signer_org: String,
    pub claimed_at: String,
    pub logged_at: String,
    pub leaf_hash: LeafHash,
    pub attachments: Vec<Attachment>,
    /// What due process noted on this accepted step (e.g. `late_reinstatement`,
    /// spec/due-process.md §Windows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flag: Option<String>,
}

/// What a successful verification established.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub origin: String,
    pub tree_size: u64,
    pub root: RootHash,
    pub subject: Index,
    pub entries: Vec<ReportLine>,
    /// Attachments whose bytes were checked against their BLAKE3 and size.
    pub attachments_checked: usize,
}

fn fail(detail: String) -> LedgerError {
    LedgerError::new(Code::VerificationFailed, detail)
}

/// Largest clock skew a bundle may declare: the node's `--clock-skew-secs` range.
pub const MAX_CLOCK_SKEW_SECS: i64 = 86_400;
/// Longest reinstatement window a bundle may declare, in business days.
pub const MAX_WINDOW_BUSINESS_DAYS: u32 = 366;

/// Refuses declared rules no node runs with. A bundle's `rules` are not signed, and
/// the replay does date arithmetic with them: an out-of-range skew panics in
/// `chrono`, a huge window loops for billions of days (found by fuzzing,
/// fuzz/README.md). Anyone replaying rules from outside should check them here.
pub fn check_rules(rules: &Rules) -> Result<()> {
    let w = rules.platform_window;
    let days_ok = |d: u32| d <= MAX_WINDOW_BUSINESS_DAYS;
    if !(0..=MAX_CLOCK_SKEW_SECS).contains(&rules.max_clock_skew_secs)
        || !days_ok(w.min_business_days)
        || !w.max_business_days.is_none_or(days_ok)
    {
        return Err(fail(format!(
            "the declared rules (max_clock_skew_secs {}, platform window {} to {:?} business days) are out of range",
            rules.max_clock_skew_secs, w.min_business_days, w.max_business_days
        ))
        .field("rules")
        .expected(format!(
            "max_clock_skew_secs from 0 to {MAX_CLOCK_SKEW_SECS} and windows of at most {MAX_WINDOW_BUSINESS_DAYS} business days"
        )));
    }
    Ok(())
}

impl Bundle {
    pub fn parse(bytes: &[u8]) -> Result<Bundle> {
        let b: Bundle = serde_json::from_slice(bytes).map_err(|e| {
            LedgerError::new(
                Code::MalformedEnvelope,
                format!("not an evidence bundle: {e}"),
            )
            .expected(format!("a {FORMAT} JSON document from `custody bundle`"))
        })?;
        if b.format != FORMAT {
            return Err(LedgerError::new(
                Code::MalformedEnvelope,
                format!("format is {:?}", b.format),
            )
            .field("format")
            .expected(FORMAT));
        }
        Ok(b)
    }

    /// Verifies everything with no network, trusting only `log_vkey`. `blob` returns
    /// an attachment's bytes by its BLAKE3 hex, if the verifier has them.
    pub fn verify(&self, log_vkey: &str, blob: &dyn Fn(&str) -> Option<Vec<u8>>) -> Result<Report> {
        if self.log_vkey.trim() != log_vkey.trim() {
            return Err(fail(format!(
                "the bundle names log key {:?}, not the trusted key {:?}",
                self.log_vkey, log_vkey
            )));
        }
        check_rules(&self.rules)?;
        let verifier = CheckpointVerifier::new(log_vkey)?;
        let cp: SignedCheckpoint = verifier.verify(&self.checkpoint)?;
        if self.origin != cp.origin {
            return Err(fail(format!(
                "the bundle says origin {:?}, its checkpoint {:?}",
                self.origin, cp.origin
            )));
        }
        let mut decoded: BTreeMap<Index, Vec<u8>> = BTreeMap::new();
        for (i, e) in self.entries.iter().enumerate() {
            let bytes = B64.decode(&e.entry).map_err(|err| {
                fail(format!(
                    "entries[{i}] (index {}): entry is not base64: {err}",
                    e.index
                ))
            })?;
            let leaf = leaf_hash(&bytes);
            tree::verify_inclusion(&e.inclusion_proof, cp.size, cp.root, e.index, leaf)
                .map_err(|err| fail(format!("entry {}: {}", e.index, err.detail)))?;
            if decoded.insert(e.index, bytes).is_some() {
                return Err(fail(format!("entry {} appears twice", e.index)));
            }
        }
        if !decoded.contains_key(&self.subject) {
            return Err(fail(format!(
                "the subject entry {} is not in the bundle",
                self.subject
            )));
        }
        let mut replay = Replayer::new(self.rules);
        let mut lines = Vec::new();
        let mut attachments_checked = 0;
        for (&index, bytes) in &decoded {
            let r = replay.apply(index, bytes).map_err(|e| {
                let mut e = e;
                e.detail = format!("entry {index}: {}", e.detail);
                e
            })?;
            let ev = &r.opened.event;
            if let crate::event::Body::Genesis(g) = &ev.body {
                if g.log_vkey.trim() != log_vkey.trim() || g.origin != cp.origin {
                    return Err(fail(format!(
                        "the genesis entry names log {} with key {}, not the trusted {} with key {log_vkey}",
                        g.origin, g.log_vkey, cp.origin
                    )));
                }
            }
            for a in &ev.attachments {
                if let Some(data) = blob(&a.blake3.to_hex()) {
                    let got = crate::types::BlobId::of(&data);
                    if got != a.blake3 || data.len() as u64 != a.size {
                        return Err(fail(format!(
                            "attachment {:?} of entry {index}: file has BLAKE3 {got} and {} bytes, the entry says {} and {} bytes",
                            a.name,
                            data.len(),
                            a.blake3,
                            a.size
                        )));
                    }
                    attachments_checked += 1;
                }
            }
            let actor = replay.actor_of(&r.opened.signer);
            let flag = ev.case.as_ref().and_then(|id| {
                let case = replay.case_of(id)?;
                let step = case.steps.iter().rev().find(|s| s.index == index)?;
                step.flag.clone()
            });
            lines.push(ReportLine {
                index,
                kind: ev.kind.as_str().to_owned(),
                case: ev.case.as_ref().map(|c| c.to_string()),
                signer: r.opened.signer,
                signer_name: actor
                    .map(|a| a.name.clone())
                    .unwrap_or_else(|| "the log".into()),
                signer_org: actor.map(|a| a.org.clone()).unwrap_or_default(),
                claimed_at: crate::entry::format_time(ev.claimed_at),
                logged_at: crate::entry::format_time(r.logged_at),
                leaf_hash: leaf_hash(bytes),
                attachments: ev.attachments.clone(),
                flag,
            });
        }
        Ok(Report {
            origin: cp.origin,
            tree_size: cp.size,
            root: cp.root,
            subject: self.subject,
            entries: lines,
            attachments_checked,
        })
    }
}

/// Builds a bundle from a store, declaring the default rules.
#[cfg(feature = "store")]
pub fn build(store: &crate::store::Store, subject: Index) -> Result<Bundle> {
    build_with_rules(store, subject, &Rules::default())
}

/// Builds a bundle from a store, declaring the rules the log runs with.
#[cfg(feature = "store")]
pub fn build_with_rules(
    store: &crate::store::Store,
    subject: Index,
    rules: &Rules,
) -> Result<Bundle> {
    use crate::replay::logged_event;
    use std::collections::BTreeSet;
    let cp = store.checkpoint();
    if subject >= cp.size {
        return Err(LedgerError::new(
            Code::NotFound,
            format!("entry {subject} is not in the log (size {})", cp.size),
        )
        .expected(format!("an index below {}", cp.size)));
    }
    let registrations: BTreeMap<KeyId, Index> = store
        .actors()
        .into_iter()
        .map(|a| (a.key, a.registered_at))
        .collect();
    // Everything replay needs to judge the subject as the log did: its refs
    // (transitively), the earlier steps of every case any included entry belongs
    // to, the registration of every signer and of every key an included
    // actor.revoke names, and the genesis.
    let mut want: BTreeSet<Index> = BTreeSet::new();
    let mut todo = vec![subject, 0];
    let mut cases: BTreeMap<crate::types::CaseId, Vec<Index>> = BTreeMap::new();
    while let Some(i) = todo.pop() {
        if !want.insert(i) {
            continue;
        }
        let bytes = store
            .entry(i)?
            .ok_or_else(|| LedgerError::corrupt(format!("entry {i} is missing")))?;
        let (_, ev, signer) = logged_event(&bytes)?;
        todo.extend(ev.refs.iter().map(|r| r.index));
        todo.extend(registrations.get(&signer));
        if let crate::event::Body::ActorRevoke(r) = &ev.body {
            todo.extend(registrations.get(&r.key));
        }
        if let (true, Some(case)) = (ev.kind.needs_case(), &ev.case) {
            if !cases.contains_key(case) {
                let steps = store
                    .case_state(case)?
                    .map(|s| s.steps.iter().map(|s| s.index).collect())
                    .unwrap_or_default();
                cases.insert(case.clone(), steps);
            }
            todo.extend(cases[case].iter().copied().filter(|&s| s < i));
        }
    }
    let mut entries = Vec::with_capacity(want.len());
    for i in want {
        let bytes = store
            .entry(i)?
            .ok_or_else(|| LedgerError::corrupt(format!("entry {i} is missing")))?;
        entries.push(BundleEntry {
            index: i,
            entry: B64.encode(&bytes),
            inclusion_proof: tree::prove_inclusion(i, cp.size, store)?,
        });
    }
    Ok(Bundle {
        format: FORMAT.into(),
        origin: cp.origin.clone(),
        log_vkey: store.vkey(),
        checkpoint: cp.note.clone(),
        subject,
        rules: *rules,
        entries,
    })
}
