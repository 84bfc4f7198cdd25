//! Actor key files: a small JSON document holding an Ed25519 seed, always created
//! with mode 0600 and never overwritten. The CLI signs with them; the node writes
//! the first admin's key into one when it creates a log on first start.

use crate::error::{Code, LedgerError, Result};
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: String,
    public_key: String,
    seed: String,
}

fn bad(path: &Path, why: &str) -> LedgerError {
    LedgerError::new(
        Code::BadEncoding,
        format!("key file {}: {why}", path.display()),
    )
    .expected("a key file written by `custody keygen`")
}

/// Creates a new random key in a new file (mode 0600); refuses to overwrite.
pub fn generate(path: &Path) -> Result<SigningKey> {
    let key = SigningKey::generate(&mut rand_core::OsRng);
    write(path, &key)?;
    Ok(key)
}

/// Writes `key` to a new file (mode 0600); refuses to overwrite.
pub fn write(path: &Path, key: &SigningKey) -> Result<()> {
    use std::io::Write;
    let file = KeyFile {
        kind: "ed25519".into(),
        public_key: hex::encode(key.verifying_key().as_bytes()),
        seed: hex::encode(key.to_bytes()),
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| {
        LedgerError::storage(format!(
            "creating key file {} (it must not exist yet): {e}",
            path.display()
        ))
    })?;
    let text = serde_json::to_string_pretty(&file).expect("key file serialises") + "\n";
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| LedgerError::storage(format!("writing key file {}: {e}", path.display())))
}

/// Loads a key file, checking that its public key matches its seed.
pub fn load(path: &Path) -> Result<SigningKey> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| LedgerError::storage(format!("reading key file {}: {e}", path.display())))?;
    let file: KeyFile = serde_json::from_str(&text).map_err(|e| bad(path, &e.to_string()))?;
    if file.kind != "ed25519" {
        return Err(bad(
            path,
            &format!("key type {:?} is not supported (only ed25519)", file.kind),
        ));
    }
    let seed: [u8; 32] = hex::decode(&file.seed)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| bad(path, "seed is not 64 hex characters"))?;
    let key = SigningKey::from_bytes(&seed);
    if hex::encode(key.verifying_key().as_bytes()) != file.public_key {
        return Err(bad(
            path,
            "public_key does not match the seed; the file is damaged",
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_0600_reloads_and_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.key");
        let k = generate(&p).unwrap();
        assert_eq!(load(&p).unwrap().to_bytes(), k.to_bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        assert!(generate(&p).is_err());
    }
}
