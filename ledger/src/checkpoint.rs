//! Checkpoints (C2SP tlog-checkpoint) signed as C2SP signed-notes with the log's
//! Ed25519 key, through `signed_note`; the log key itself (created 0600, stored in
//! signed-note private-key form) and its public vkey.

use crate::error::{Code, LedgerError, Result};
use crate::types::{RootHash, TreeSize};
use ed25519_dalek::SigningKey;
use signed_note::{Note, Signer as _, StandardSigner, StandardVerifier, VerifierList};
use std::path::Path;

/// A checkpoint whose signature by the log key has been verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub origin: String,
    pub size: TreeSize,
    pub root: RootHash,
    /// The whole signed note, as published (text, blank line, signature lines).
    pub note: String,
}

/// The log's signing key. Its secret never leaves this struct except into the 0600
/// key file written by [`LogKey::create`].
pub struct LogKey {
    origin: String,
    skey: String,
    signer: StandardSigner,
    key: SigningKey,
}

impl std::fmt::Debug for LogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        write!(f, "LogKey({})", self.vkey())
    }
}

/// Checks that an origin is usable as a checkpoint origin and a signed-note key name.
pub fn check_origin(origin: &str) -> Result<()> {
    let ok = !origin.is_empty()
        && origin.len() <= 256
        && origin.chars().all(|c| c.is_ascii_graphic() && c != '+');
    if ok {
        Ok(())
    } else {
        Err(LedgerError::new(
            Code::InvalidEvent,
            format!("origin {origin:?} is not usable"),
        )
        .field("origin")
        .expected(
            "a schemaless URL-like name without spaces or '+', e.g. custody.example/acme-2026",
        ))
    }
}

impl LogKey {
    /// A fresh random key for `origin`.
    pub fn generate(origin: &str) -> Result<LogKey> {
        check_origin(origin)?;
        let (skey, _vkey) = signed_note::generate_key(&mut rand_core::OsRng, origin);
        Self::from_skey(&skey)
    }

    /// A key from a fixed 32-byte seed (test vectors, reproducible fixtures).
    pub fn from_seed(origin: &str, seed: [u8; 32]) -> Result<LogKey> {
        use base64::Engine;
        check_origin(origin)?;
        let key = SigningKey::from_bytes(&seed);
        let mut public = vec![1u8];
        public.extend_from_slice(key.verifying_key().as_bytes());
        let mut private = vec![1u8];
        private.extend_from_slice(&seed);
        let skey = format!(
            "PRIVATE+KEY+{origin}+{:08x}+{}",
            signed_note::key_id(origin, &public),
            base64::engine::general_purpose::STANDARD.encode(private)
        );
        Self::from_skey(&skey)
    }

    /// Parses a signed-note private key (`PRIVATE+KEY+<origin>+<id>+<base64>`).
    pub fn from_skey(skey: &str) -> Result<LogKey> {
        let skey = skey.trim().to_owned();
        let signer = StandardSigner::new(&skey).map_err(|e| {
            LedgerError::new(
                Code::BadEncoding,
                format!("log key file does not parse: {e}"),
            )
            .expected("a signed-note private key PRIVATE+KEY+<origin>+<id>+<base64>")
        })?;
        let origin = signer.name().to_owned();
        // The signed-note form is 0x01 (Ed25519) followed by the 32-byte seed.
        // Base64 may itself contain '+': the key is everything after the 4th '+'.
        let raw = skey.splitn(5, '+').nth(4).unwrap_or_default();
        let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, raw)
            .map_err(|e| LedgerError::new(Code::BadEncoding, format!("log key: {e}")))?;
        let seed: [u8; 32] = bytes
            .get(1..33)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| LedgerError::new(Code::BadEncoding, "log key is not an Ed25519 seed"))?;
        Ok(LogKey {
            origin,
            skey,
            signer,
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Writes the key to a new file created with mode 0600; refuses to overwrite.
    pub fn create(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(path).map_err(|e| {
            LedgerError::storage(format!("creating log key file {}: {e}", path.display()))
        })?;
        f.write_all(self.skey.as_bytes())
            .and_then(|_| f.write_all(b"\n"))
            .and_then(|_| f.sync_all())
            .map_err(|e| LedgerError::storage(format!("writing {}: {e}", path.display())))
    }

    pub fn load(path: &Path) -> Result<LogKey> {
        let s = std::fs::read_to_string(path).map_err(|e| {
            LedgerError::storage(format!("reading log key file {}: {e}", path.display()))
        })?;
        Self::from_skey(&s)
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The signed-note verifier key: `<origin>+<id>+<base64(0x01‖pub)>`.
    pub fn vkey(&self) -> String {
        signed_note::new_ed25519_verifier_key(&self.origin, &self.key.verifying_key())
    }

    /// The raw Ed25519 key, used to sign the genesis envelope.
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// Signs a checkpoint for `size` and `root`.
    pub fn sign(&self, size: TreeSize, root: RootHash) -> Result<SignedCheckpoint> {
        let cp = tlog_tiles::Checkpoint::new(&self.origin, size, root.into(), "")
            .map_err(|e| LedgerError::new(Code::InvalidEvent, e.to_string()))?;
        let mut note = Note::new(&cp.to_bytes(), &[])
            .map_err(|e| LedgerError::new(Code::InvalidEvent, format!("checkpoint note: {e}")))?;
        note.add_sigs(&[&self.signer]).map_err(|e| {
            LedgerError::new(Code::InvalidEvent, format!("signing checkpoint: {e}"))
        })?;
        let note = String::from_utf8(note.to_bytes()).expect("notes are UTF-8");
        Ok(SignedCheckpoint {
            origin: self.origin.clone(),
            size,
            root,
            note,
        })
    }
}

/// Verifies checkpoints of one log.
#[derive(Clone)]
pub struct CheckpointVerifier {
    origin: String,
    verifier: StandardVerifier,
}

impl CheckpointVerifier {
    /// From the log's signed-note vkey.
    pub fn new(vkey: &str) -> Result<CheckpointVerifier> {
        let v = StandardVerifier::new(vkey.trim()).map_err(|e| {
            LedgerError::new(
                Code::BadEncoding,
                format!("log key {vkey:?} does not parse: {e}"),
            )
            .field("log_key")
            .expected(
                "a signed-note verifier key <origin>+<8 hex id>+<base64>, as served by GET /v1/log",
            )
        })?;
        let origin = signed_note::Verifier::name(&v).to_owned();
        Ok(CheckpointVerifier {
            origin,
            verifier: v,
        })
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Verifies the log's signature on a checkpoint note and parses its body.
    /// Other signatures (witness cosignatures) are carried but not required.
    pub fn verify(&self, note: &str) -> Result<SignedCheckpoint> {
        let fail = |why: String| {
            LedgerError::new(Code::VerificationFailed, why)
                .field("checkpoint")
                .expected(format!(
                    "a checkpoint note signed by the key of log {}",
                    self.origin
                ))
        };
        let n = Note::from_bytes(note.as_bytes())
            .map_err(|e| fail(format!("checkpoint is not a signed note: {e}")))?;
        n.verify(&VerifierList::new(vec![Box::new(self.verifier.clone())]))
            .map_err(|e| fail(format!("checkpoint signature does not verify: {e}")))?;
        let cp = tlog_tiles::Checkpoint::from_bytes(n.text())
            .map_err(|e| fail(format!("checkpoint body: {e}")))?;
        if cp.origin() != self.origin {
            return Err(fail(format!(
                "checkpoint origin {:?} is not this log's origin {:?}",
                cp.origin(),
                self.origin
            )));
        }
        Ok(SignedCheckpoint {
            origin: cp.origin().to_owned(),
            size: cp.size(),
            root: (*cp.hash()).into(),
            note: note.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_checkpoint_verifies_and_tampering_fails() {
        let k = LogKey::generate("custody.example/test").unwrap();
        let cp = k.sign(5, RootHash([7; 32])).unwrap();
        assert!(cp.note.starts_with("custody.example/test\n5\n"));
        let v = CheckpointVerifier::new(&k.vkey()).unwrap();
        assert_eq!(v.verify(&cp.note).unwrap(), cp);
        let forged = cp.note.replacen("\n5\n", "\n6\n", 1);
        assert!(v.verify(&forged).is_err());
        let other = LogKey::generate("custody.example/test").unwrap();
        assert!(CheckpointVerifier::new(&other.vkey())
            .unwrap()
            .verify(&cp.note)
            .is_err());
    }

    #[test]
    fn key_file_is_private_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.key");
        let k = LogKey::generate("custody.example/t").unwrap();
        k.create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(LogKey::load(&path).unwrap().vkey(), k.vkey());
        assert!(k.create(&path).is_err(), "must not overwrite a key");
    }

    #[test]
    fn origin_with_space_is_refused() {
        assert!(LogKey::generate("bad origin").is_err());
    }
}
