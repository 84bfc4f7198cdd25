//! The rules one entry must satisfy at its place in the log (spec/roles.md,
//! spec/due-process.md): who signed it, with which role, what it refers to, when it
//! claims to have happened, and what it does to its case. The sequencer calls
//! [`judge`] before an event gets an index; the audit calls it again on replay.

use crate::cases::{self, CaseEvent, CaseState, RefInfo, Rules};
use crate::entry::{leaf_hash, Entry};
use crate::envelope::Opened;
use crate::error::{Code, LedgerError, Result};
use crate::event::{Body, Event};
use crate::roles::{unknown_key, Actor, Role};
use crate::types::{CaseId, Index, KeyId};
use base64::Engine;
use chrono::{DateTime, Duration, Utc};

/// What the rules need to read from the log so far.
pub trait LogView {
    /// The exact bytes of entry `index`, if it exists.
    fn entry_bytes(&self, index: Index) -> Result<Option<Vec<u8>>>;
    /// The actor registered with `key`, as of now.
    fn actor(&self, key: &KeyId) -> Result<Option<Actor>>;
    /// A case's state, as of now.
    fn case(&self, id: &CaseId) -> Result<Option<CaseState>>;
}

/// The changes an accepted entry makes to the log's state.
#[derive(Debug, Clone, Default)]
pub struct Effects {
    pub actor: Option<Actor>,
    pub case: Option<CaseState>,
    /// Due-process refusals that were not enforced (`Rules::enforce == false`).
    pub waived: Option<LedgerError>,
}

/// Decodes a logged entry's event without re-verifying its signature (it was
/// verified before it was logged; the audit verifies every entry separately).
pub fn logged_event(bytes: &[u8]) -> Result<(Entry, Event, KeyId)> {
    let entry = Entry::parse(bytes)?;
    let payload = base64::engine::general_purpose::STANDARD
        .decode(&entry.envelope.payload)
        .map_err(|e| LedgerError::corrupt(format!("logged payload is not base64: {e}")))?;
    let event = Event::parse(&payload)?;
    let signer = entry
        .envelope
        .signatures
        .first()
        .and_then(|s| KeyId::parse(&s.keyid).ok())
        .ok_or_else(|| LedgerError::corrupt("logged envelope has no valid keyid"))?;
    Ok((entry, event, signer))
}

/// The event id of logged entry bytes: BLAKE3 of its envelope's payload, decoded
/// (spec/envelope.md §Event id), without parsing the event.
pub fn logged_event_id(bytes: &[u8]) -> Result<crate::types::EventId> {
    let entry = Entry::parse(bytes)?;
    let payload = base64::engine::general_purpose::STANDARD
        .decode(&entry.envelope.payload)
        .map_err(|e| LedgerError::corrupt(format!("logged payload is not base64: {e}")))?;
    Ok(crate::types::EventId::of_payload(&payload))
}

fn resolve_refs<V: LogView>(view: &V, index: Index, ev: &Event) -> Result<Vec<RefInfo>> {
    let mut out = Vec::with_capacity(ev.refs.len());
    for (i, r) in ev.refs.iter().enumerate() {
        let field = format!("payload.refs[{i}]");
        if r.index >= index {
            return Err(LedgerError::new(
                Code::RefNotFound,
                format!("entry {} is not before this entry ({index})", r.index),
            )
            .field(field)
            .expected("a ref to an earlier entry"));
        }
        let bytes = view.entry_bytes(r.index)?.ok_or_else(|| {
            LedgerError::new(
                Code::RefNotFound,
                format!("entry {} does not exist", r.index),
            )
            .field(&field)
            .expected("a ref to an entry already in the log")
        })?;
        let actual = leaf_hash(&bytes);
        if actual != r.leaf_hash {
            return Err(LedgerError::new(
                Code::RefMismatch,
                format!(
                    "entry {} has leaf hash {actual}, not {} as the event claims",
                    r.index, r.leaf_hash
                ),
            )
            .field(format!("{field}.leaf_hash"))
            .expected("the leaf hash of the entry at that index (GET /v1/entries/<index>)"));
        }
        let (_, refd, signer) = logged_event(&bytes)?;
        let org = view.actor(&signer)?.map(|a| a.org).unwrap_or_default();
        out.push(RefInfo {
            index: r.index,
            kind: refd.kind,
            case: refd.case,
            org,
            claimed_at: refd.claimed_at,
            body: refd.body,
        });
    }
    Ok(out)
}

/// Judges one opened envelope at `index`, received at `logged_at`.
pub fn judge<V: LogView>(
    view: &V,
    index: Index,
    logged_at: DateTime<Utc>,
    opened: &Opened,
    rules: &Rules,
) -> Result<Effects> {
    let ev = &opened.event;
    if let Body::Genesis(g) = &ev.body {
        if index != 0 {
            return Err(
                LedgerError::new(Code::RoleNotPermitted, "log.genesis is only entry 0")
                    .field("payload.kind")
                    .expected("an event kind other than log.genesis"),
            );
        }
        let log_key = signed_note_key(&g.log_vkey)?;
        if log_key != opened.signer {
            return Err(LedgerError::new(
                Code::BadSignature,
                "the genesis entry is not signed by the log key it names",
            ));
        }
        return Ok(Effects {
            actor: Some(Actor {
                key: g.admin_key,
                name: "admin".into(),
                org: g.origin.clone(),
                roles: vec![Role::Admin],
                registered_at: 0,
                revoked_at: None,
            }),
            ..Effects::default()
        });
    }
    if index == 0 {
        return Err(
            LedgerError::new(Code::InvalidEvent, "entry 0 must be the log's genesis")
                .expected("a log.genesis event signed by the log key"),
        );
    }
    let actor = view
        .actor(&opened.signer)?
        .ok_or_else(|| unknown_key(&opened.signer))?;
    actor.authorise(ev.kind)?;

    let refs = resolve_refs(view, index, ev)?;
    let mut effects = Effects::default();
    let checked: Result<()> = (|| {
        if ev.claimed_at > logged_at + Duration::seconds(rules.max_clock_skew_secs) {
            return Err(cases::refuse(
                "claimed_in_future",
                format!(
                    "claimed_at {} is after the log received it ({})",
                    ev.claimed_at, logged_at
                ),
                &format!(
                    "a time no more than {} s after the log's clock",
                    rules.max_clock_skew_secs
                ),
            ));
        }
        if let Some(r) = refs.iter().find(|r| r.claimed_at > ev.claimed_at) {
            return Err(cases::refuse(
                "claimed_before_ref",
                format!(
                    "claimed_at {} is before entry {} it refers to ({})",
                    ev.claimed_at, r.index, r.claimed_at
                ),
                "an event claimed no earlier than the events it rests on",
            ));
        }
        match &ev.body {
            Body::ActorRegister(a) => {
                if view.actor(&a.key)?.is_some() {
                    return Err(cases::refuse(
                        "actor_exists",
                        format!("key {} is already registered", a.key),
                        "a new key (a revoked key cannot be registered again)",
                    ));
                }
                effects.actor = Some(Actor {
                    key: a.key,
                    name: a.name.clone(),
                    org: a.org.clone(),
                    roles: a.roles.clone(),
                    registered_at: index,
                    revoked_at: None,
                });
            }
            Body::ActorRevoke(r) => match view.actor(&r.key)? {
                Some(mut a) if a.revoked_at.is_none() => {
                    a.revoked_at = Some(index);
                    effects.actor = Some(a);
                }
                _ => {
                    return Err(cases::refuse(
                        "actor_not_active",
                        format!("key {} is not an active actor", r.key),
                        "the key of a registered, unrevoked actor",
                    ))
                }
            },
            _ => {}
        }
        if let (true, Some(case)) = (ev.kind.needs_case(), &ev.case) {
            let prev = view.case(case)?;
            let next = cases::transition(
                prev.as_ref(),
                &CaseEvent {
                    index,
                    case,
                    kind: ev.kind,
                    body: &ev.body,
                    signer: opened.signer,
                    org: &actor.org,
                    claimed_at: ev.claimed_at,
                    logged_at,
                    refs: &refs,
                },
                rules,
            )?;
            effects.case = Some(next);
        }
        Ok(())
    })();
    match checked {
        Ok(()) => Ok(effects),
        Err(e) if e.code == Code::DueProcess && !rules.enforce => Ok(Effects {
            waived: Some(e),
            ..Effects::default()
        }),
        Err(e) => Err(e),
    }
}

/// The raw Ed25519 key inside a signed-note vkey.
pub fn signed_note_key(vkey: &str) -> Result<KeyId> {
    let bad = || {
        LedgerError::new(
            Code::BadEncoding,
            format!("{vkey:?} is not a signed-note Ed25519 vkey"),
        )
        .expected("<origin>+<8 hex>+<base64 of 0x01 and 32 key bytes>")
    };
    // `<name>+<id>+<base64>`; the base64 may itself contain '+'.
    let b64 = vkey.splitn(3, '+').nth(2).ok_or_else(bad)?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| bad())?;
    match raw.as_slice() {
        [1, rest @ ..] if rest.len() == 32 => {
            let mut k = [0u8; 32];
            k.copy_from_slice(rest);
            Ok(KeyId(k))
        }
        _ => Err(bad()),
    }
}

/// Parses entries and opens their envelopes, the signatures checked in batches on
/// all cores: what [`Replayer::apply`] does first, for many entries at once.
pub fn prepare(entries: &[&[u8]]) -> Vec<Result<(DateTime<Utc>, Opened)>> {
    crate::envelope::on_all_cores(entries.to_vec(), prepare_here)
}

/// [`prepare`] on the calling thread only: for callers that already keep every core
/// busy with a share of their own (the audit verifies groups of whole tiles, one
/// group per core).
pub fn prepare_here(entries: Vec<&[u8]>) -> Vec<Result<(DateTime<Utc>, Opened)>> {
    prepare_here_in(entries, crate::sig::MAX_BATCH)
}

/// [`prepare_here`] with signatures checked in batches of at most `batch`
/// ([`crate::sig::verify_each_in`]).
pub fn prepare_here_in(entries: Vec<&[u8]>, batch: usize) -> Vec<Result<(DateTime<Utc>, Opened)>> {
    // Each parsed entry's time, its envelope moved out to be opened with the others.
    let mut envelopes = Vec::with_capacity(entries.len());
    let times: Vec<Result<DateTime<Utc>>> = entries
        .iter()
        .map(|b| {
            let e = Entry::parse(b)?;
            envelopes.push(e.envelope);
            Ok(e.logged_at)
        })
        .collect();
    let mut opened = crate::envelope::open_here_in(envelopes, batch).into_iter();
    times
        .into_iter()
        .map(|t| {
            let t = t?;
            // Infallible: open_here answers once per envelope given, in order.
            let o = opened.next().expect("one verdict per envelope")?;
            Ok((t, o))
        })
        .collect()
}

/// An in-memory log state fed entry by entry: the audit and the offline bundle
/// verifier replay entries through it with the same [`judge`] the sequencer used.
#[derive(Debug, Default)]
pub struct Replayer {
    entries: Entries,
    actors: std::collections::HashMap<KeyId, Actor>,
    cases: std::collections::HashMap<CaseId, CaseState>,
    rules: Rules,
}

/// One replayed entry.
#[derive(Debug, Clone)]
pub struct Replayed {
    pub logged_at: DateTime<Utc>,
    pub opened: Opened,
}

/// The entries replayed so far, kept so later refs to them resolve: in memory (a
/// bundle's few entries), or spooled to a file with only their offsets in memory
/// (an audit of millions, which must not need the log's size in RAM).
#[derive(Debug)]
enum Entries {
    Memory(std::collections::HashMap<Index, Vec<u8>>),
    Spool {
        file: std::cell::RefCell<std::fs::File>,
        /// Start of entry i in the spool; one more for the end of the last.
        offsets: Vec<u64>,
        /// The newest entries, not yet written: the file holds the spool's first
        /// `offsets.last() - tail.len()` bytes. Writing [`SPOOL_WRITE`] bytes at a
        /// time instead of each entry alone saved the audit two system calls per
        /// entry, 8% of its CPU.
        tail: Vec<u8>,
    },
}

/// Bytes of entries gathered before one write to the spool file.
const SPOOL_WRITE: usize = 1 << 20;

impl Default for Entries {
    fn default() -> Self {
        Entries::Memory(Default::default())
    }
}

impl Entries {
    fn insert(&mut self, index: Index, bytes: &[u8]) -> Result<()> {
        use std::io::{Seek, SeekFrom, Write};
        match self {
            Entries::Memory(m) => {
                m.insert(index, bytes.to_vec());
            }
            Entries::Spool {
                file,
                offsets,
                tail,
            } => {
                if index + 1 != offsets.len() as u64 {
                    return Err(LedgerError::storage(format!(
                        "spooled replay takes entries in order: got {index} after {}",
                        offsets.len() as u64 - 1
                    )));
                }
                let end = offsets[offsets.len() - 1];
                if tail.len() + bytes.len() > SPOOL_WRITE && !tail.is_empty() {
                    let written = end - tail.len() as u64;
                    let f = file.get_mut();
                    f.seek(SeekFrom::Start(written))
                        .and_then(|_| f.write_all(tail))
                        .map_err(|e| {
                            LedgerError::storage(format!("writing the replay spool: {e}"))
                        })?;
                    tail.clear();
                }
                tail.extend_from_slice(bytes);
                offsets.push(end + bytes.len() as u64);
            }
        }
        Ok(())
    }

    fn get(&self, index: Index) -> Result<Option<Vec<u8>>> {
        use std::io::{Read, Seek, SeekFrom};
        match self {
            Entries::Memory(m) => Ok(m.get(&index).cloned()),
            Entries::Spool {
                file,
                offsets,
                tail,
            } => {
                let i = index as usize;
                if i + 1 >= offsets.len() {
                    return Ok(None);
                }
                // An entry is either wholly in the file or wholly in the tail.
                let written = offsets[offsets.len() - 1] - tail.len() as u64;
                if offsets[i] >= written {
                    let at = (offsets[i] - written) as usize;
                    let len = (offsets[i + 1] - offsets[i]) as usize;
                    return Ok(Some(tail[at..at + len].to_vec()));
                }
                let mut buf = vec![0u8; (offsets[i + 1] - offsets[i]) as usize];
                let mut f = file.borrow_mut();
                f.seek(SeekFrom::Start(offsets[i]))
                    .and_then(|_| f.read_exact(&mut buf))
                    .map_err(|e| LedgerError::storage(format!("reading the replay spool: {e}")))?;
                Ok(Some(buf))
            }
        }
    }
}

impl Replayer {
    /// A replayer that keeps the entries it has seen in `spool` (a scratch file,
    /// read and written, e.g. from `tempfile`) instead of memory; entries must then
    /// be applied in order from 0.
    pub fn with_spool(rules: Rules, spool: std::fs::File) -> Self {
        Replayer {
            entries: Entries::Spool {
                file: std::cell::RefCell::new(spool),
                offsets: vec![0],
                tail: Vec::with_capacity(SPOOL_WRITE),
            },
            ..Replayer::new(rules)
        }
    }

    pub fn new(rules: Rules) -> Self {
        Replayer {
            rules: Rules {
                enforce: true,
                ..rules
            },
            ..Default::default()
        }
    }

    /// Verifies entry `index` (signature, event, roles, refs, due process) against
    /// the state so far and applies it. The entry is remembered even when it breaks
    /// a rule, so later refs to it still resolve; its effects are then not applied.
    pub fn apply(&mut self, index: Index, bytes: &[u8]) -> Result<Replayed> {
        let prepared = Entry::parse(bytes).and_then(|e| Ok((e.logged_at, e.envelope.open()?)));
        self.apply_prepared(index, bytes, prepared)
    }

    /// [`Replayer::apply`] for an entry already parsed and opened by [`prepare`]
    /// (which checks the signatures of many entries on all cores); the rules that
    /// depend on the log so far are checked here, in order.
    pub fn apply_prepared(
        &mut self,
        index: Index,
        bytes: &[u8],
        prepared: Result<(DateTime<Utc>, Opened)>,
    ) -> Result<Replayed> {
        self.entries.insert(index, bytes)?;
        let (logged_at, opened) = prepared?;
        let effects = judge(&*self, index, logged_at, &opened, &self.rules)?;
        if let Some(a) = effects.actor {
            self.actors.insert(a.key, a);
        }
        if let Some(c) = effects.case {
            self.cases.insert(c.id.clone(), c);
        }
        Ok(Replayed { logged_at, opened })
    }

    pub fn actor_of(&self, key: &KeyId) -> Option<&Actor> {
        self.actors.get(key)
    }
    pub fn case_of(&self, id: &CaseId) -> Option<&CaseState> {
        self.cases.get(id)
    }
    pub fn actors(&self) -> impl Iterator<Item = &Actor> {
        self.actors.values()
    }
    pub fn cases(&self) -> impl Iterator<Item = &CaseState> {
        self.cases.values()
    }
}

impl LogView for Replayer {
    fn entry_bytes(&self, index: Index) -> Result<Option<Vec<u8>>> {
        self.entries.get(index)
    }
    fn actor(&self, key: &KeyId) -> Result<Option<Actor>> {
        Ok(self.actors.get(key).cloned())
    }
    fn case(&self, id: &CaseId) -> Result<Option<CaseState>> {
        Ok(self.cases.get(id).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spooled_entries_read_back_exactly_and_only_in_order() {
        let path = std::env::temp_dir().join(format!("custody-spool-test-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let _ = std::fs::remove_file(&path);
        let mut e = Entries::Spool {
            file: std::cell::RefCell::new(file),
            offsets: vec![0],
            tail: Vec::new(),
        };
        // Sizes that fill the write buffer several times over, some entries larger
        // than it, so reads come from the file, from the unwritten tail, and from
        // entries on either side of a write.
        let items: Vec<Vec<u8>> = (0..50u8)
            .map(|i| vec![i; (i as usize * 37 % 11) * (SPOOL_WRITE / 8) + 1])
            .collect();
        for (i, b) in items.iter().enumerate() {
            e.insert(i as u64, b).unwrap();
            // Each entry reads back at once, while it may still be in the tail.
            assert_eq!(e.get(i as u64).unwrap().as_deref(), Some(b.as_slice()));
        }
        let Entries::Spool { file, tail, .. } = &e else {
            unreachable!()
        };
        assert!(!tail.is_empty(), "the newest entries wait in the tail");
        let on_disk = file.borrow().metadata().unwrap().len();
        assert!(on_disk > SPOOL_WRITE as u64, "older entries were written");
        for (i, b) in items.iter().enumerate() {
            assert_eq!(e.get(i as u64).unwrap().as_deref(), Some(b.as_slice()));
        }
        assert_eq!(e.get(50).unwrap(), None);
        assert!(e.insert(52, b"gap").is_err());
    }
}
