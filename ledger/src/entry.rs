//! The entry: the tree's leaf bytes, `{"logged_at":"<RFC 3339 UTC, ms>","envelope":{…}}`
//! as the node first wrote it (spec/envelope.md §Entries). The bytes are stored and served
//! verbatim, never re-serialised: the leaf hash is over exactly these bytes.

use crate::envelope::Envelope;
use crate::error::{Code, LedgerError, Result};
use crate::types::LeafHash;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;

/// Largest entry (bytes): a C2SP entry bundle frames each entry with a u16 length.
pub const MAX_ENTRY_BYTES: usize = 65_535;

/// A parsed entry; `bytes` are the leaf bytes it was parsed from.
#[derive(Debug, Clone)]
pub struct Entry {
    pub logged_at: DateTime<Utc>,
    pub envelope: Envelope,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    logged_at: String,
    envelope: Envelope,
}

/// Formats the log's timestamp: UTC, millisecond precision, `Z`.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Writes the leaf bytes for an envelope received at `logged_at`. The one place
/// entry bytes are produced.
pub fn encode(logged_at: DateTime<Utc>, envelope: &Envelope) -> Vec<u8> {
    // 51 bytes before the envelope, its JSON (which `write_json` makes room for
    // beyond what is already written), and the closing brace.
    let mut out = Vec::with_capacity(51 + envelope.json_len() + 1);
    out.extend_from_slice(b"{\"logged_at\":\"");
    out.extend_from_slice(format_time(logged_at).as_bytes());
    out.extend_from_slice(b"\",\"envelope\":");
    envelope.write_json(&mut out);
    out.push(b'}');
    out
}

/// RFC 6962 leaf hash of entry bytes.
pub fn leaf_hash(bytes: &[u8]) -> LeafHash {
    tlog_tiles::record_hash(bytes).into()
}

impl Entry {
    /// Parses leaf bytes (from a store, a tile or a bundle: outside input).
    pub fn parse(bytes: &[u8]) -> Result<Entry> {
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(LedgerError::new(
                Code::TooLarge,
                format!("entry is {} bytes", bytes.len()),
            )
            .expected(format!("at most {MAX_ENTRY_BYTES} bytes")));
        }
        let w: Wire = serde_json::from_slice(bytes).map_err(|e| {
            LedgerError::new(Code::MalformedEnvelope, format!("not a Custody entry: {e}"))
                .field("entry")
                .expected("{\"logged_at\": RFC 3339, \"envelope\": DSSE envelope}")
        })?;
        let logged_at = DateTime::parse_from_rfc3339(&w.logged_at)
            .map_err(|e| {
                LedgerError::new(Code::InvalidEvent, format!("logged_at: {e}"))
                    .field("entry.logged_at")
                    .expected("an RFC 3339 UTC timestamp")
            })?
            .with_timezone(&Utc);
        // Read exactly what `encode` writes: UTC, milliseconds, `Z`.
        if format_time(logged_at) != w.logged_at {
            return Err(LedgerError::new(
                Code::InvalidEvent,
                format!("logged_at {:?} is not in the log's form", w.logged_at),
            )
            .field("entry.logged_at")
            .expected("UTC with millisecond precision, e.g. 2026-11-22T10:00:00.123Z"));
        }
        Ok(Entry {
            logged_at,
            envelope: w.envelope,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_parse_keeps_the_envelope_and_time() {
        let env = Envelope {
            payload_type: "t".into(),
            payload: "cA==".into(),
            signatures: vec![],
        };
        let t = DateTime::parse_from_rfc3339("2026-11-22T10:00:00.123Z")
            .unwrap()
            .with_timezone(&Utc);
        let bytes = encode(t, &env);
        assert!(bytes.starts_with(b"{\"logged_at\":\"2026-11-22T10:00:00.123Z\""));
        let e = Entry::parse(&bytes).unwrap();
        assert_eq!(e.envelope, env);
        assert_eq!(e.logged_at, t);
    }
}
