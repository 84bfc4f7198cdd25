//! Actor key files (format and permissions in `ledger::keyfile`). The private key
//! never leaves the machine: the CLI signs locally.

use anyhow::Result;
use ed25519_dalek::SigningKey;
use std::path::Path;

pub fn generate(path: &Path) -> Result<SigningKey> {
    Ok(ledger::keyfile::generate(path)?)
}

pub fn load(path: &Path) -> Result<SigningKey> {
    Ok(ledger::keyfile::load(path)?)
}
