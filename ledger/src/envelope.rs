//! DSSE v1 envelopes (github.com/secure-systems-lab/dsse, "envelope.md" and
//! "protocol.md"): the signature covers PAE(payloadType, payload), never the JSON
//! around it. Ed25519 only; `keyid` is the lowercase hex of the 32-byte public key.

use crate::error::{Code, LedgerError, Result};
use crate::event::{Event, PAYLOAD_TYPE};
use crate::sig::{self, Pending, PublicKey};
use crate::types::{EventId, KeyId};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};

/// One DSSE signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    pub keyid: String,
    pub sig: String,
}

/// A DSSE v1 envelope as it travels and as it is logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// Standard base64 of the payload bytes.
    pub payload: String,
    pub signatures: Vec<Signature>,
}

/// DSSE pre-authentication encoding: `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = pae_head(payload_type, payload.len());
    out.extend_from_slice(payload);
    out
}

/// PAE up to the payload, so a verifier can hash it and then the payload without
/// copying the payload. Written by hand: `format!` here was ~1% of an audit's
/// instructions.
fn pae_head(payload_type: &str, payload_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload_type.len() + 48);
    out.extend_from_slice(b"DSSEv1 ");
    push_decimal(&mut out, payload_type.len());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    push_decimal(&mut out, payload_len);
    out.push(b' ');
    out
}

/// `n` in ASCII decimal, as PAE writes lengths (no sign, no leading zeros).
fn push_decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends `s` as a JSON string, byte for byte as serde_json writes it. A string
/// that needs no escaping (no `"`, `\\` or control character: base64, hex, a
/// checkpoint's text but its newlines) is checked many bytes at a time and copied;
/// serde's escaping looks at each byte in turn.
pub fn write_json_string(out: &mut Vec<u8>, s: &str) {
    // No early exit, so that the compiler checks many bytes at a time.
    let plain = s
        .bytes()
        .fold(true, |ok, b| ok & (b >= 0x20) & (b != b'"') & (b != b'\\'));
    if plain {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Infallible: a string into a Vec.
        serde_json::to_writer(&mut *out, s).expect("string serialises");
    }
}

/// An envelope whose signature verified and whose payload parsed as an event.
/// Only [`Envelope::open`] makes one, so holding one is proof of both.
#[derive(Debug, Clone)]
pub struct Opened {
    pub envelope: Envelope,
    pub payload: Vec<u8>,
    pub signer: KeyId,
    pub event: Event,
    /// Hashed when first asked for: an audit never asks (BLAKE3 of every payload
    /// was ~2.5% of its instructions); the node's verifier threads ask before the
    /// sequencer does, so the serial thread does not hash.
    event_id: std::sync::OnceLock<EventId>,
}

impl Opened {
    /// The event's id: BLAKE3 of its payload bytes (spec/envelope.md §Event id).
    pub fn event_id(&self) -> EventId {
        *self
            .event_id
            .get_or_init(|| EventId::of_payload(&self.payload))
    }
}

/// What opening an envelope needs besides its signature's verdict. The decoded
/// signature (`Pending`, 512 bytes) is handed back apart from it, so a batch moves
/// each into its list of signatures instead of cloning it and carrying the
/// original along with the envelope.
struct Decoded {
    payload: Vec<u8>,
    keyid: KeyId,
}

impl Envelope {
    /// Signs `payload` as a Custody event.
    pub fn sign(payload: &[u8], key: &SigningKey) -> Envelope {
        let sig = key.sign(&pae(PAYLOAD_TYPE, payload));
        Envelope {
            payload_type: PAYLOAD_TYPE.to_owned(),
            payload: B64.encode(payload),
            signatures: vec![Signature {
                keyid: hex::encode(key.verifying_key().as_bytes()),
                sig: B64.encode(sig.to_bytes()),
            }],
        }
    }

    /// Parses envelope JSON, naming what is wrong with it.
    pub fn from_json(bytes: &[u8]) -> Result<Envelope> {
        serde_json::from_slice(bytes).map_err(|e| {
            LedgerError::new(Code::MalformedEnvelope, format!("not a DSSE envelope: {e}"))
                .field("envelope")
                .expected("{\"payloadType\", \"payload\" (base64), \"signatures\": [{\"keyid\", \"sig\"}]}")
        })
    }

    /// Compact JSON, as it is written into an entry.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_json(&mut out);
        out
    }

    /// Appends [`Envelope::to_json`] to `out`, with room made for it first (grown
    /// by doubling from serde's default, the buffer was reallocated about three
    /// times per entry). Its strings go through [`write_json_string`]: those of an
    /// envelope that opened need no escaping, and serde's escaping of them a byte at
    /// a time was ~2% of a batch's instructions.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.reserve(self.json_len());
        out.extend_from_slice(b"{\"payloadType\":");
        write_json_string(out, &self.payload_type);
        out.extend_from_slice(b",\"payload\":");
        write_json_string(out, &self.payload);
        out.extend_from_slice(b",\"signatures\":[");
        for (i, sig) in self.signatures.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"keyid\":");
            write_json_string(out, &sig.keyid);
            out.extend_from_slice(b",\"sig\":");
            write_json_string(out, &sig.sig);
            out.push(b'}');
        }
        out.extend_from_slice(b"]}");
    }

    /// About the length of [`Envelope::to_json`]: enough room for it unless its
    /// strings need escaping.
    pub fn json_len(&self) -> usize {
        let signatures = self
            .signatures
            .iter()
            .map(|s| s.keyid.len() + s.sig.len() + 24)
            .sum::<usize>();
        self.payload_type.len() + self.payload.len() + signatures + 64
    }

    fn decode(&self) -> Result<(Decoded, Pending)> {
        if self.payload_type != PAYLOAD_TYPE {
            return Err(LedgerError::new(
                Code::MalformedEnvelope,
                format!("payloadType is {:?}", self.payload_type),
            )
            .field("payloadType")
            .expected(PAYLOAD_TYPE));
        }
        let payload = B64.decode(&self.payload).map_err(|e| {
            LedgerError::new(Code::BadEncoding, format!("payload is not base64: {e}"))
                .field("payload")
                .expected("standard base64 (RFC 4648 §4, with padding)")
        })?;
        let [s] = self.signatures.as_slice() else {
            return Err(LedgerError::new(
                Code::MalformedEnvelope,
                format!("{} signatures", self.signatures.len()),
            )
            .field("signatures")
            .expected("exactly one signature"));
        };
        let keyid = KeyId::parse(&s.keyid).map_err(|e| {
            LedgerError::new(Code::BadEncoding, format!("keyid: {e}"))
                .field("signatures[0].keyid")
                .expected("the signer's Ed25519 public key as 64 lowercase hex characters")
        })?;
        let key = PublicKey::from_bytes_cached(&keyid.0).ok_or_else(|| {
            LedgerError::new(
                Code::BadSignature,
                "keyid is not a usable Ed25519 public key (not a canonical point encoding, or a point of small order)",
            )
            .field("signatures[0].keyid")
            .expected("a valid Ed25519 public key")
        })?;
        let sig_bytes = B64.decode(&s.sig).map_err(|e| {
            LedgerError::new(Code::BadEncoding, format!("sig is not base64: {e}"))
                .field("signatures[0].sig")
                .expected("standard base64 of a 64-byte Ed25519 signature")
        })?;
        let sig: [u8; 64] = sig_bytes.as_slice().try_into().map_err(|_| {
            LedgerError::new(
                Code::BadSignature,
                format!("signature is {} bytes", sig_bytes.len()),
            )
            .field("signatures[0].sig")
            .expected("a 64-byte Ed25519 signature")
        })?;
        // An encoding the rule refuses (s not below L, R not canonical or of small
        // order) is a signature that does not verify.
        let head = pae_head(PAYLOAD_TYPE, payload.len());
        let pending =
            Pending::new(&key, &sig, &[&head, &payload]).ok_or_else(|| bad_signature(&keyid))?;
        Ok((Decoded { payload, keyid }, pending))
    }

    fn finish(self, d: Decoded) -> Result<Opened> {
        let event = Event::parse(&d.payload).map_err(|e| e.within("payload"))?;
        Ok(Opened {
            signer: d.keyid,
            payload: d.payload,
            envelope: self,
            event,
            event_id: std::sync::OnceLock::new(),
        })
    }

    /// Verifies the signature and parses the event (spec/envelope.md §Verification).
    pub fn open(self) -> Result<Opened> {
        let (d, pending) = self.decode()?;
        if !pending.verify() {
            return Err(bad_signature(&d.keyid));
        }
        self.finish(d)
    }
}

fn bad_signature(keyid: &KeyId) -> LedgerError {
    LedgerError::new(
        Code::BadSignature,
        format!("the signature does not verify for key {keyid}"),
    )
    .field("signatures[0].sig")
    .expected("an Ed25519 signature over PAE(payloadType, payload) by the key named in keyid")
}

/// Opens many envelopes, spreading the work over all cores. Each core's share is
/// checked with one batch equation ([`sig::verify_each`]), which gives every envelope
/// the same verdict as [`Envelope::open`] would: a bad signature in the share costs
/// the share a check of each signature alone, never a good envelope its place.
pub fn open_all(envelopes: Vec<Envelope>) -> Vec<Result<Opened>> {
    on_all_cores(envelopes, open_here)
}

/// Splits `items` into one share per core, runs `f` on each share on a thread of its
/// own, and returns the results in the order of the items (a small input runs here).
pub(crate) fn on_all_cores<T: Send, R: Send>(items: Vec<T>, f: fn(Vec<T>) -> Vec<R>) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if items.len() < 2 * threads.max(8) || threads == 1 {
        return f(items);
    }
    let chunk = items.len().div_ceil(threads);
    let mut parts: Vec<Vec<T>> = Vec::new();
    let mut it = items.into_iter().peekable();
    while it.peek().is_some() {
        parts.push(it.by_ref().take(chunk).collect());
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = parts.into_iter().map(|p| s.spawn(move || f(p))).collect();
        handles
            .into_iter()
            // A panic in a verifier thread is a bug in our code, not bad input.
            .flat_map(|h| h.join().expect("verifier thread panicked"))
            .collect()
    })
}

/// Opens envelopes on the calling thread, batch-verifying their signatures; each
/// gets the verdict [`Envelope::open`] would give it.
pub fn open_here(envelopes: Vec<Envelope>) -> Vec<Result<Opened>> {
    open_here_in(envelopes, sig::MAX_BATCH)
}

/// [`open_here`] with signatures checked in batches of at most `batch`
/// ([`sig::verify_each_in`]).
pub fn open_here_in(envelopes: Vec<Envelope>, batch: usize) -> Vec<Result<Opened>> {
    let mut pending: Vec<Pending> = Vec::with_capacity(envelopes.len());
    let decoded: Vec<(Envelope, Result<Decoded>)> = envelopes
        .into_iter()
        .map(|e| {
            let d = e.decode().map(|(d, p)| {
                pending.push(p);
                d
            });
            (e, d)
        })
        .collect();
    let mut verdicts = sig::verify_each_in(&pending, batch).into_iter();
    decoded
        .into_iter()
        .map(|(e, d)| {
            let d = d?;
            // One verdict per decoded envelope, in order.
            if !verdicts.next().expect("a verdict for every signature") {
                return Err(bad_signature(&d.keyid));
            }
            e.finish(d)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn payload() -> Vec<u8> {
        br#"{"kind":"withdrawal","case":"c-1","claimed_at":"2026-11-01T10:00:00Z","body":{"reason":"settled"}}"#.to_vec()
    }

    /// The hand-written JSON is serde's, byte for byte: for a signed envelope and for
    /// strings that need escaping, with no signature or with two.
    #[test]
    fn written_json_equals_serde_json() {
        let signed = Envelope::sign(&payload(), &key(1));
        let odd = Envelope {
            payload_type: "a \"quoted\" \\ type\n\u{1}\u{7f}é".into(),
            payload: "line\tbreak\r\u{1f} edge".into(),
            signatures: vec![
                Signature {
                    keyid: "k\\".into(),
                    sig: String::new(),
                },
                signed.signatures[0].clone(),
            ],
        };
        let none = Envelope {
            signatures: vec![],
            ..signed.clone()
        };
        for e in [&signed, &odd, &none] {
            assert_eq!(e.to_json(), serde_json::to_vec(e).unwrap(), "{e:?}");
            let mut appended = b"prefix".to_vec();
            e.write_json(&mut appended);
            assert_eq!(&appended[6..], serde_json::to_vec(e).unwrap());
        }
    }

    #[test]
    fn pae_matches_dsse_example() {
        // The DSSE protocol document's worked example.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn pae_writes_every_length_in_plain_decimal() {
        for n in [0usize, 1, 9, 10, 99, 100, 12_345, 1 << 20] {
            let payload = vec![b'x'; n];
            let mut want = format!("DSSEv1 1 t {n} ").into_bytes();
            want.extend_from_slice(&payload);
            assert_eq!(pae("t", &payload), want, "length {n}");
        }
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
    }

    #[test]
    fn open_all_agrees_with_open_on_mixed_input() {
        let mut envs: Vec<Envelope> = (0..64)
            .map(|i| Envelope::sign(&payload(), &key(i + 1)))
            .collect();
        envs[3].signatures[0].sig = envs[4].signatures[0].sig.clone();
        envs[10].payload = "not base64!".into();
        envs[20].signatures[0].keyid = "00".repeat(32); // small order (y = 0)
        envs[40].signatures.clear();
        let alone: Vec<_> = envs
            .iter()
            .cloned()
            .map(|e| e.open().map(|o| o.event_id()))
            .collect();
        let together: Vec<_> = open_all(envs)
            .into_iter()
            .map(|r| r.map(|o| o.event_id()))
            .collect();
        assert_eq!(alone.len(), together.len());
        for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
            match (a, t) {
                (Ok(a), Ok(t)) => assert_eq!(a, t, "envelope {i}"),
                (Err(a), Err(t)) => assert_eq!(a.code, t.code, "envelope {i}"),
                _ => panic!("envelope {i}: open says {a:?}, open_all says {t:?}"),
            }
        }
        assert_eq!(together.iter().filter(|r| r.is_err()).count(), 4);
    }

    #[test]
    fn signed_envelope_opens() {
        let env = Envelope::sign(&payload(), &key(1));
        let opened = env.open().unwrap();
        assert_eq!(opened.signer.0, *key(1).verifying_key().as_bytes());
        assert_eq!(opened.event_id(), EventId::of_payload(&payload()));
    }

    #[test]
    fn tampered_payload_fails_signature() {
        let mut env = Envelope::sign(&payload(), &key(1));
        let mut p = payload();
        p[10] ^= 1;
        env.payload = B64.encode(&p);
        assert_eq!(env.open().unwrap_err().code, Code::BadSignature);
    }

    #[test]
    fn signature_by_another_key_fails() {
        let mut env = Envelope::sign(&payload(), &key(1));
        env.signatures[0].keyid = hex::encode(key(2).verifying_key().as_bytes());
        assert_eq!(env.open().unwrap_err().code, Code::BadSignature);
    }

    #[test]
    fn open_all_gives_each_envelope_its_verdict() {
        let mut envs: Vec<Envelope> = (0..40)
            .map(|i| Envelope::sign(&payload(), &key(i + 1)))
            .collect();
        envs[7].signatures[0].sig = envs[8].signatures[0].sig.clone();
        let results = open_all(envs);
        assert_eq!(results.len(), 40);
        for (i, r) in results.iter().enumerate() {
            assert_eq!(r.is_ok(), i != 7, "envelope {i}");
        }
    }
}
