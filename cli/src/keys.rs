//! Actor key files: a JSON document holding the Ed25519 seed, created 0600. The
//! private key never leaves the machine: the CLI signs locally.

use anyhow::{bail, Context, Result};
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Serialize, Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: String,
    public_key: String,
    seed: String,
}

pub fn generate(path: &Path) -> Result<SigningKey> {
    let key = SigningKey::generate(&mut rand_core::OsRng);
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
    let mut f = opts.open(path).with_context(|| {
        format!(
            "creating key file {} (it must not exist yet)",
            path.display()
        )
    })?;
    use std::io::Write;
    f.write_all(serde_json::to_string_pretty(&file)?.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    Ok(key)
}

pub fn load(path: &Path) -> Result<SigningKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading key file {}", path.display()))?;
    let file: KeyFile = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a custody key file (make one with `custody keygen`)",
            path.display()
        )
    })?;
    if file.kind != "ed25519" {
        bail!(
            "{}: key type {:?} is not supported; expected ed25519",
            path.display(),
            file.kind
        );
    }
    let seed: [u8; 32] = hex::decode(&file.seed)
        .ok()
        .and_then(|s| s.try_into().ok())
        .with_context(|| format!("{}: seed is not 64 hex characters", path.display()))?;
    let key = SigningKey::from_bytes(&seed);
    if hex::encode(key.verifying_key().as_bytes()) != file.public_key {
        bail!(
            "{}: public_key does not match the seed; the file is damaged",
            path.display()
        );
    }
    Ok(key)
}
