//! Custody's ledger: the functional core of a verifiable evidence log, plus its
//! one storage adapter.
//!
//! Rooms (one job each):
//! - [`types`]: validated newtypes (`Index`, `LeafHash`, `EventId`, `KeyId`, …).
//! - [`event`]: the event payload, every kind's body, strict validation.
//! - [`envelope`]: DSSE v1 envelopes, PAE, Ed25519 signing and verification.
//! - [`sig`]: the one Ed25519 rule (cofactored), alone and in batches.
//! - [`entry`]: the leaf bytes `{"logged_at", "envelope"}` and their parsing.
//! - [`tree`]: RFC 6962 hashing, proofs and C2SP tile paths, via `tlog_tiles`.
//! - [`checkpoint`]: C2SP checkpoints signed as signed-notes, the log key.
//! - [`keyfile`]: actor key files (0600 JSON holding an Ed25519 seed).
//! - [`roles`]: the actor registry and which role may emit which kind.
//! - [`cases`]: the due-process state machine shared by append and audit.
//! - [`replay`]: the rules applied to one entry at a given log state (shared by the
//!   sequencer and the audit, so the two can never disagree).
//! - [`verifier`]: verifier threads that open many callers' envelopes in shared batches.
//! - [`gather`]: how the verifier threads and the sequencer take work off their
//!   queues in batches.
//! - [`receipt`]: what an appender gets back, and its verification.
//! - [`stats`]: key indicators per brand and marketplace, each linked to its entries.
//! - [`bundle`]: self-contained evidence bundles and their offline verification.
//! - `store` (feature `store`): the RocksDB store, the only module touching disk.
//! - `sequencer` (feature `store`): validate → order → commit a group → checkpoint.
//!
//! Everything except `store` and `sequencer` builds without RocksDB and tokio, so a
//! verifier stays small.
#![forbid(unsafe_code)]

pub mod bundle;
pub mod cases;
pub mod checkpoint;
pub mod entry;
pub mod envelope;
pub mod error;
pub mod event;
pub mod gather;
pub mod keyfile;
pub mod receipt;
pub mod replay;
pub mod roles;
pub mod sig;
pub mod stats;
#[cfg(feature = "store")]
pub mod tilefile;
pub mod tree;
pub mod types;

#[cfg(feature = "store")]
pub mod sequencer;
#[cfg(feature = "store")]
pub mod store;
/// Needs the store: its threads look up what they open.
#[cfg(feature = "store")]
pub mod verifier;

pub use error::{Code, LedgerError};

/// `eprintln!`, except that a line stderr cannot take is dropped: `eprintln!`
/// panics then (stderr on a full disk, say), which would stop a migration, an audit
/// or a bench over a line about how far it got, or hide a command's error behind a
/// panic. (Unlike `eprintln!`, its lines are not captured by `cargo test`: a unit
/// test that migrates a store shows them.)
#[macro_export]
macro_rules! to_stderr {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(::std::io::stderr(), $($arg)*);
    }};
}

/// Writes a command's output to stdout, flushed: an error to report where `print!`
/// would panic (the output may then be cut short), saying what was `done` all the
/// same (the output is written last).
/// If stdout fails other than by a closed pipe (a full disk, say), the output goes
/// to stderr instead, so that what a command did (an entry's index, a log's vkey)
/// is not lost; a pipe's reader that stopped reading wanted no more of it.
pub fn to_stdout(text: &str, done: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| {
            let went = match e.kind() {
                std::io::ErrorKind::BrokenPipe => "the reader of stdout stopped reading",
                _ => {
                    let _ = std::io::stderr().write_all(text.as_bytes());
                    "written to stderr above instead"
                }
            };
            std::io::Error::new(
                e.kind(),
                format!("{done}, but the output could not be written to stdout ({went}): {e}"),
            )
        })
}
