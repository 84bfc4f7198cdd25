//! The receipt an appender gets back, and its check: the checkpoint is signed by
//! the log key and the inclusion proof leads from the leaf to that checkpoint.

use crate::checkpoint::{CheckpointVerifier, SignedCheckpoint};
use crate::error::{Code, LedgerError, Result};
use crate::tree;
use crate::types::{EventId, Index, LeafHash, RootHash, TreeSize};
use serde::{Deserialize, Serialize};

/// What an appender gets back: where its event is and the proof that it is there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub index: Index,
    pub leaf_hash: LeafHash,
    pub event_id: EventId,
    pub logged_at: String,
    pub tree_size: TreeSize,
    /// The signed checkpoint note the proof leads to.
    pub checkpoint: String,
    pub inclusion_proof: Vec<RootHash>,
}

impl Receipt {
    /// Verifies the receipt against the log's key; returns the checkpoint it proves against.
    pub fn verify(&self, log: &CheckpointVerifier) -> Result<SignedCheckpoint> {
        let cp = log.verify(&self.checkpoint)?;
        if cp.size != self.tree_size {
            return Err(LedgerError::new(
                Code::VerificationFailed,
                format!(
                    "receipt for entry {} says tree_size {} but its checkpoint is for size {}",
                    self.index, self.tree_size, cp.size
                ),
            ));
        }
        tree::verify_inclusion(
            &self.inclusion_proof,
            cp.size,
            cp.root,
            self.index,
            self.leaf_hash,
        )?;
        Ok(cp)
    }
}
