//! Command-line flags (clap) and the limits they set. Every flag can also come from
//! its environment variable; every parse error names the flag and what it expects.

use clap::{Args, Parser, Subcommand};
use ledger::types::KeyId;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "custody-node",
    version,
    about = "The HTTP server of a Custody evidence log: an append-only Merkle log of signed events.",
    long_about = "The HTTP server of a Custody evidence log: an append-only Merkle log (RFC 6962, C2SP \
tlog-tiles) of signed DSSE events.\n\nCreate a log once with `custody-node init`, then run \
`custody-node serve`. Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) for more."
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Create a new log in an empty data directory and print its origin and vkey.
    Init(InitArgs),
    /// Serve a log over HTTP until SIGTERM or Ctrl-C.
    Serve(Box<ServeArgs>),
    /// Check a stopped log in full (every entry against the tree, the root against
    /// the signed checkpoint, every event id against the de-duplication index); names
    /// the first damaged entry. Exits non-zero if any.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Data directory holding the log (the node must not be serving it).
    #[arg(long, env = "CUSTODY_DATA", default_value = "./custody-data")]
    pub data: PathBuf,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Data directory for the log (created if missing; must not hold a log yet).
    #[arg(long, env = "CUSTODY_DATA", default_value = "./custody-data")]
    pub data: PathBuf,
    /// The log's origin: the name its checkpoints carry, e.g. custody.example/acme-2026.
    #[arg(long, value_parser = parse_origin)]
    pub origin: String,
    /// Public key of the first admin (64 lowercase hex characters, Ed25519); only it can
    /// register actors at first.
    #[arg(long, value_name = "HEX64", value_parser = parse_admin_key)]
    pub admin_key: KeyId,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Data directory holding the log.
    #[arg(long, env = "CUSTODY_DATA", default_value = "./custody-data")]
    pub data: PathBuf,
    /// Address and port to listen on.
    #[arg(long, env = "CUSTODY_LISTEN", default_value = "127.0.0.1:7878")]
    pub listen: SocketAddr,
    /// If the data directory holds nothing yet, create a log whose first admin is
    /// this public key (64 lowercase hex characters). Without it, a new admin key is
    /// generated into DATA/admin.key (mode 0600). Ignored when a log exists.
    #[arg(long, value_name = "HEX64", value_parser = parse_admin_key)]
    pub init_admin_key: Option<KeyId>,
    /// The origin (the log's name in checkpoints) for a log created on first start.
    #[arg(long, value_parser = parse_origin, default_value = "custody.localhost/log")]
    pub origin: String,
    /// Largest body of POST /v1/events (one envelope), e.g. 1048576 or 1MiB.
    #[arg(long, value_name = "BYTES", default_value = "1MiB", value_parser = parse_bytes)]
    pub max_body_bytes: usize,
    /// Largest body of POST /v1/events:batch (up to --max-batch envelopes), e.g. 16MiB.
    #[arg(long, value_name = "BYTES", default_value = "16MiB", value_parser = parse_bytes)]
    pub max_batch_bytes: usize,
    /// Most envelopes in one POST /v1/events:batch.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_batch: u64,
    /// Largest attachment accepted by POST /v1/blobs, e.g. 16MiB.
    #[arg(long, value_name = "BYTES", default_value = "16MiB", value_parser = parse_bytes)]
    pub max_blob_bytes: usize,
    /// Most request-body bytes held in memory at once, all requests together; appends
    /// are charged 4× their body (what it becomes while handled), blobs 1×. A request
    /// beyond it gets 503 + Retry-After before its body is read. At least 4× the
    /// largest append body and 1× the largest blob.
    #[arg(long, value_name = "BYTES", default_value = "256MiB", value_parser = parse_bytes)]
    pub max_inflight_bytes: usize,
    /// Append requests that may wait for the sequencer; when full, appends get 503 +
    /// Retry-After.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub queue: u64,
    /// Most events committed together (one fsync and one checkpoint per group).
    #[arg(long, value_name = "N", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_group: u64,
    /// While requests keep arriving (the previous batch held more than one request,
    /// and the next came within ten of these waits), a signature batch or a commit
    /// group of fewer than 16 events waits this many microseconds, once, for more
    /// before it is checked or committed (0: never). Fewer, larger groups take fewer
    /// syncs, checkpoint signatures and signature batches per event, which leaves
    /// the cores room for bursts; a request waits up to about twice this longer. An
    /// idle node answers a lone request without waiting.
    #[arg(long, value_name = "MICROS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub gather_wait_us: u64,
    /// How far an event's claimed_at may lie ahead of the log's clock, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300, value_parser = clap::value_parser!(i64).range(0..=86_400))]
    pub clock_skew_secs: i64,
    /// Longest a request may take, body upload included, before it is answered 408.
    /// A connection that has not sent complete request headers within it (a new one,
    /// or a kept-alive one between requests) is closed.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout_secs: u64,
    /// Accept events that break due-process rules (tests and fixtures only: the audit
    /// still flags them).
    #[arg(long, hide = true)]
    pub no_enforce_due_process: bool,
}

/// The limits the HTTP adapter enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_batch_bytes: usize,
    pub max_batch: usize,
    pub max_blob_bytes: usize,
    pub max_inflight_bytes: usize,
    pub request_timeout: Duration,
}

impl ServeArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            max_body_bytes: self.max_body_bytes,
            max_batch_bytes: self.max_batch_bytes,
            max_batch: usize::try_from(self.max_batch).unwrap_or(usize::MAX),
            max_blob_bytes: self.max_blob_bytes,
            max_inflight_bytes: self.max_inflight_bytes,
            request_timeout: Duration::from_secs(self.request_timeout_secs),
        }
    }

    /// Limits that contradict each other, named with their flags.
    pub fn check_limits(&self) -> Result<(), String> {
        let append = self.max_body_bytes.max(self.max_batch_bytes);
        let need = append
            .saturating_mul(crate::body::APPEND_CHARGE)
            .max(self.max_blob_bytes);
        if self.max_inflight_bytes < need {
            return Err(format!(
                "--max-inflight-bytes {} cannot hold even one largest request: it must be at least {need} ({}× the larger of --max-body-bytes and --max-batch-bytes, and at least --max-blob-bytes)",
                self.max_inflight_bytes,
                crate::body::APPEND_CHARGE
            ));
        }
        Ok(())
    }

    pub fn sequencer_config(&self) -> ledger::sequencer::Config {
        ledger::sequencer::Config {
            max_group: usize::try_from(self.max_group).unwrap_or(usize::MAX),
            queue_capacity: usize::try_from(self.queue).unwrap_or(usize::MAX),
            gather_wait: Duration::from_micros(self.gather_wait_us),
            rules: self.rules(),
        }
    }

    pub fn rules(&self) -> ledger::cases::Rules {
        ledger::cases::Rules {
            max_clock_skew_secs: self.clock_skew_secs,
            enforce: !self.no_enforce_due_process,
            ..ledger::cases::Rules::default()
        }
    }
}

fn parse_admin_key(s: &str) -> Result<KeyId, String> {
    let key = KeyId::parse(s).map_err(|e| {
        format!("{e}: the admin's Ed25519 public key, as printed by `custody keygen`")
    })?;
    ledger::sig::PublicKey::from_bytes(&key.0).ok_or_else(|| {
        "these 32 bytes are not a usable Ed25519 public key (not a canonical point, or of small order); expected the key printed by `custody keygen`"
            .to_owned()
    })?;
    Ok(key)
}

fn parse_origin(s: &str) -> Result<String, String> {
    ledger::checkpoint::check_origin(s)
        .map(|_| s.to_owned())
        .map_err(|e| format!("{}; expected {}", e.detail, e.expected.unwrap_or_default()))
}

/// A byte count: digits with an optional K/KiB/M/MiB/G/GiB suffix (all powers of 1024).
fn parse_bytes(s: &str) -> Result<usize, String> {
    let expected = "expected a byte count such as 1048576, 512KiB, 1MiB or 16M";
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a number; {expected}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown unit {other:?}; {expected}")),
    };
    let v = n
        .checked_mul(mult)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| format!("{s:?} is too large; {expected}"))?;
    if v == 0 {
        return Err(format!("0 bytes would refuse everything; {expected}"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_accept_units() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("1MiB"), Ok(1 << 20));
        assert_eq!(parse_bytes("16M"), Ok(16 << 20));
        assert_eq!(parse_bytes("512KiB"), Ok(512 << 10));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("3 parsecs").is_err());
    }

    #[test]
    fn admin_key_must_be_lowercase_hex_of_a_point() {
        assert!(parse_admin_key("abc")
            .unwrap_err()
            .contains("64 lowercase hex"));
        assert!(parse_admin_key(&"A".repeat(64)).is_err());
        let pk = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
        assert!(parse_admin_key(&hex::encode(pk.as_bytes())).is_ok());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
