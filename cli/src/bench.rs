//! `custody bench`: a load generator for a node, in the spirit of pgbench and
//! redis-benchmark, that also measures the machine's limit in the same run.
//!
//! Everything that is not the node's work happens outside the timed part: events are
//! signed and request bodies serialised before the clock starts. Then C HTTP/1.1
//! keep-alive connections send them as fast as the node answers (or, with `--rate`,
//! on a fixed schedule, each latency counted from when its request was due), one
//! event per `POST /v1/events` (all connections on one thread's event loop,
//! `crate::mux`) or B per `POST /v1/events:batch` (a thread per connection). A
//! fast wrong answer cannot pass: every receipt must name the event that was sent
//! under a distinct index, a sample of receipts is verified cryptographically
//! (checkpoint signature with the log's vkey, inclusion proof) and their entry bytes
//! are fetched back and compared with what was signed, and a consistency proof links
//! the checkpoints from before and after the run. `--proofs Q` measures inclusion
//! proof requests instead.
//!
//! The limit is raw Ed25519 verification on every core of this machine, one
//! signature at a time (`verify_strict`) and in batches (`verify_batch`, the limit
//! the node's own batched checks under `ledger::sig` approach); every throughput is
//! also printed as a ratio to both. The batch rate is read again after the load (once
//! the node is idle), and the report says when the two readings differ by more than
//! 15%: the machine then changed speed during the run, and so did its limit.
//! It is measured here, on the client's machine: when the node runs on
//! the same machine (the usual benchmark set-up) it is the node's limit too, and the
//! bench competes with the node for those cores, which it reports (its own CPU time).

use crate::client::Client;
use crate::mux::Answer;
use crate::wire::{Conn, Target, WireError};
use anyhow::{bail, Context, Result};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use ledger::checkpoint::{CheckpointVerifier, SignedCheckpoint};
use ledger::envelope::{pae, Envelope};
use ledger::event::PAYLOAD_TYPE;
use ledger::receipt::Receipt;
use ledger::types::{EventId, LeafHash, RootHash};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `custody bench --help`: what the bench does to the log it is pointed at.
pub const LONG_ABOUT: &str =
    "Drive a node with concurrent appends (or inclusion proof requests) and report \
throughput, latency percentiles, errors by problem code, and the time from submit to a receipt \
whose proof verifies; each figure also as a ratio to this machine's raw Ed25519 verification \
rate, measured in the same run.\n\nAppends are real and permanent: the bench registers a fresh \
actor (role investigator) with the admin key and logs N scan events. Run it against a \
throwaway log, e.g. `custody-node serve --data /tmp/bench-data`, whose admin key the node \
writes to /tmp/bench-data/admin.key on first start.\n\nExits non-zero if a sampled receipt \
or proof fails to verify, or if any request or event failed (unless --allow-errors).";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Admin key file, to register the bench's actor (a new log's first start writes
    /// DATA/admin.key). Not needed with --proofs.
    #[arg(long, value_name = "FILE")]
    admin_key: Option<std::path::PathBuf>,
    /// Events to sign in advance and append.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 10_000)]
    events: u64,
    /// Concurrent connections. With one event (or proof) per request they are all
    /// driven from one thread's event loop; batches get a thread per connection.
    #[arg(short = 'c', long, value_name = "C", default_value_t = 16)]
    connections: usize,
    /// A thread per connection for every run, as before the event loop (to compare
    /// what the bench's own driving costs the machine).
    #[arg(long)]
    thread_per_connection: bool,
    /// Requests in flight on each connection (HTTP/1.1 pipelining, like
    /// redis-benchmark's -P): each connection writes up to P requests before reading
    /// their answers, which come back in order. 1 sends one and waits for its
    /// answer. A request's latency then includes its wait behind the others on its
    /// connection. Only with one event or proof per request (the event loop).
    #[arg(short = 'P', long, value_name = "P", default_value_t = 1)]
    pipeline: usize,
    /// Send R requests a second on a fixed schedule (open loop, like pgbench's
    /// --rate and wrk2) instead of each connection sending its next request as soon
    /// as its last is answered. A request due goes on a connection free at that
    /// moment; its latency counts from when it was due, so a wait for a free
    /// connection counts too. Without it, the C connections keep the node busy and
    /// latency is C over the rate (Little's law). Only with one event or proof per
    /// request (the event loop).
    #[arg(long, value_name = "R")]
    rate: Option<f64>,
    /// Envelopes per request: 1 sends each event alone to POST /v1/events, more sends
    /// POST /v1/events:batch (the node's --max-batch caps it, 1000 by default).
    #[arg(short = 'b', long, value_name = "B", default_value_t = 1)]
    batch: usize,
    /// Stop sending after this many seconds even if events (or proof requests)
    /// remain; with --rate, send the requests due within it.
    #[arg(short = 'T', long, value_name = "SECS")]
    duration: Option<f64>,
    /// Receipts (or proofs) to verify cryptographically, spread over the run.
    #[arg(long, value_name = "K", default_value_t = 100)]
    sample: u64,
    /// Instead of appending, send Q inclusion proof requests for random entries
    /// (GET /v1/proofs/inclusion?index=I&tree_size=S, S the checkpoint at the start;
    /// by leaf hash with --by-leaf-hash).
    #[arg(long, value_name = "Q")]
    proofs: Option<u64>,
    /// With --proofs: ask for each proof by the entry's leaf hash
    /// (?leaf_hash=H&tree_size=S), as an adjudicator holding a bundle does, instead
    /// of by index. The leaf hashes are read from the log's tiles before the timed
    /// part: Q/16 random tiles (all of them if fewer, at most 16,384), and random
    /// entries of each.
    #[arg(long, requires = "proofs")]
    by_leaf_hash: bool,
    /// Seconds for each Ed25519 limit measurement: strict and batch before the load,
    /// batch again after it (0 skips them).
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    limit_secs: f64,
    /// Before measuring the limit, wait up to this many seconds for the node's storage
    /// to finish flushes and compactions left from earlier work, so they do not share
    /// the cores with the measurement (0: do not wait). Only matters when the node
    /// runs on this machine: use 0 against a node elsewhere.
    #[arg(long, value_name = "SECS", default_value_t = 120.0)]
    settle: f64,
    /// Exit 0 even if requests or events failed (sampled receipts must still verify).
    #[arg(long)]
    allow_errors: bool,
}

/// Runs the bench against `client`'s node; prints the report (JSON with `json`).
pub fn run(client: &Client, log_key: Option<&str>, json: bool, args: Args) -> Result<()> {
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if args.batch == 0 {
        bail!("--batch must be at least 1 (1 sends single events)");
    }
    if args.pipeline == 0 {
        bail!("--pipeline must be at least 1 (1 waits for each answer before the next request)");
    }
    if let Some(r) = args.rate {
        if !(r >= 1.0 && r.is_finite()) {
            bail!("--rate must be at least 1 request a second, not {r}");
        }
    }
    // What only the event loop (one event or proof per request) can do.
    let loop_only = [
        (args.pipeline > 1).then(|| format!("--pipeline {}", args.pipeline)),
        args.rate.map(|r| format!("--rate {r}")),
    ];
    if args.batch > 1 || args.thread_per_connection {
        if let Some(flag) = loop_only.into_iter().flatten().next() {
            bail!(
                "{flag} needs one event or proof per request on the event loop: drop --batch \
                 and --thread-per-connection, or drop {flag}"
            );
        }
    }
    if let Some(d) = args.duration {
        if !(d > 0.0 && d.is_finite()) {
            bail!("--duration must be a positive number of seconds, not {d}");
        }
    }
    let vkey = match log_key {
        Some(k) => k.to_owned(),
        None => client.log_info()?["vkey"]
            .as_str()
            .context("the node's /v1/log has no vkey")?
            .to_owned(),
    };
    let log = CheckpointVerifier::new(&vkey)?;
    let target = Target::new(&client.url(""), Duration::from_secs(120))?;
    let settled = if args.limit_secs > 0.0 {
        wait_for_idle_node(client, args.settle)
    } else {
        Settled::default()
    };
    let mut limit = measure_limit(args.limit_secs);
    limit.batch.settled = settled;
    let mut report = match args.proofs {
        Some(q) => bench_proofs(client, &target, &log, &args, q)?,
        None => bench_appends(client, &target, &log, &args, &limit)?,
    };
    // Read the limit again once the node has gone idle: a VM's cores can change
    // speed mid-run, and a reading from before the load alone would not show it.
    if args.limit_secs > 0.0 {
        let settled = wait_for_idle_node(client, args.settle);
        limit.after = Some(measure_batch_again(limit.cores, args.limit_secs, settled));
    }
    report.limit = limit;
    report.same_machine = target.is_loopback();
    // A failed verdict is said even if the report could not be written.
    let printed = report.print(json);
    report.verdict(args.allow_errors)?;
    printed
}

// ---------------------------------------------------------------------------
// The limit: raw Ed25519 verification on every core.

/// Raw Ed25519 verification rates on all cores (0 when not measured).
#[derive(Debug, Default, Clone)]
struct Limit {
    cores: usize,
    cpu: Option<String>,
    seconds: f64,
    /// `verify_strict`, one signature at a time, all cores together.
    strict_per_sec: f64,
    /// `ed25519_dalek::verify_batch` in batches of 64, all cores together, read
    /// before the load (its window also covers the strict reading).
    batch: BatchReading,
    /// The batch limit read again after the load.
    after: Option<BatchReading>,
}

/// One reading of the batch limit, and what the machine was doing meanwhile.
#[derive(Debug, Default, Clone)]
struct BatchReading {
    per_sec: f64,
    /// How long the bench waited for the node to go idle first.
    settled: Settled,
    /// The share of the machine's CPU time the hypervisor gave other guests while
    /// the limit was measured (Linux guests; None elsewhere).
    steal: Option<f64>,
    /// The share of the machine's CPU time other processes used meanwhile (the node
    /// included; Linux).
    others: Option<f64>,
}

impl Limit {
    /// How far the reading after the load is from the one before, as a fraction of
    /// the one before (+0.2: the machine verified 20% faster afterwards).
    fn drift(&self) -> Option<f64> {
        let (before, after) = (self.batch.per_sec, self.after.as_ref()?.per_sec);
        (before > 0.0 && after > 0.0).then(|| after / before - 1.0)
    }
}

/// What the report says of other processes' CPU use while a limit was read: nothing
/// below 5% of the machine.
fn others_note(others: Option<f64>) -> String {
    match others {
        Some(x) if x >= 0.05 => format!(
            " (other processes used {:.0}% of the machine meanwhile, so it reads low)",
            x * 100.0
        ),
        _ => String::new(),
    }
}

/// Past this drift between the two readings the report says the machine changed
/// speed during the run (this project's VMs moved ±15% between quiet runs).
const DRIFT_WARNING: f64 = 0.15;

/// On a schedule, a request sent more than this late waited for a free connection:
/// the node had fallen behind.
const BEHIND_MS: u64 = 10;

/// The wait for an idle node before the limit is measured.
#[derive(Debug, Default, Clone)]
struct Settled {
    seconds: f64,
    /// The node's background jobs at the last reading (None: it reports none, or
    /// the gauge could not be read).
    jobs_left: Option<u64>,
    /// Whether the wait ended with the node seen idle twice in a row.
    idle: bool,
}

impl Settled {
    /// What the report's limit line says of the wait (nothing when there was none).
    fn note(&self) -> String {
        if self.idle && self.seconds >= 0.5 {
            format!(
                " (after {:.0} s waiting for the node's storage to go idle)",
                self.seconds
            )
        } else if !self.idle && self.jobs_left.is_some() && self.seconds > 0.0 {
            format!(
                " (the node was not seen idle within {:.0} s: may read low)",
                self.seconds
            )
        } else {
            String::new()
        }
    }
}

/// The node's `custody_store_background_jobs` gauge, if it reports one.
fn background_jobs(client: &Client) -> Option<u64> {
    let text = client.get_bytes("/metrics").ok()?;
    let text = String::from_utf8(text).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("custody_store_background_jobs "))
        .and_then(|v| v.trim().parse().ok())
}

/// Waits (at most `max_secs`) until the node reports no flush or compaction running
/// or due, twice in a row: work left from an earlier run would otherwise take cores
/// from the limit measurement and make every ratio look better than it is. A node
/// that does not report the gauge is not waited for; a reading that fails part-way
/// is retried until the deadline.
fn wait_for_idle_node(client: &Client, max_secs: f64) -> Settled {
    let started = Instant::now();
    let mut last = background_jobs(client);
    if !(max_secs > 0.0 && max_secs.is_finite()) || last.is_none() {
        return Settled {
            jobs_left: last,
            ..Settled::default()
        };
    }
    let mut idle_polls = usize::from(last == Some(0));
    let mut told = false;
    while idle_polls < 2 && started.elapsed().as_secs_f64() < max_secs {
        if let (Some(n @ 1..), false) = (last, told) {
            ledger::to_stderr!("waiting for the node's storage to finish {n} flush/compaction job(s) before measuring the limit (at most {max_secs} s, --settle)…");
            told = true;
        }
        std::thread::sleep(Duration::from_millis(250));
        let reading = background_jobs(client);
        idle_polls = if reading == Some(0) {
            idle_polls + 1
        } else {
            0
        };
        if reading.is_some() {
            last = reading;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let idle = idle_polls >= 2;
    if !idle {
        ledger::to_stderr!(
            "warning: the node was not seen idle within {seconds:.0} s (last reading: {}); the limit may read low",
            last.map_or("none".to_owned(), |n| format!("{n} storage job(s)"))
        );
    }
    Settled {
        seconds,
        jobs_left: last,
        idle,
    }
}

fn measure_limit(secs: f64) -> Limit {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut limit = Limit {
        cores,
        cpu: cpu_model(),
        seconds: secs,
        ..Limit::default()
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return limit;
    }
    ledger::to_stderr!(
        "measuring the Ed25519 limit on {cores} cores ({secs} s strict, {secs} s batch)…"
    );
    let (msgs, sigs, vks) = limit_inputs();
    let span = Duration::from_secs_f64(secs);
    let window = Window::open();
    limit.strict_per_sec = rate_on_all_cores(cores, span, 1, &|i| {
        vks[i].verify_strict(&msgs[i], &sigs[i]).is_ok()
    });
    limit.batch.per_sec = batch_rate(cores, span, &msgs, &sigs, &vks);
    (limit.batch.steal, limit.batch.others) = window.close();
    limit
}

/// The limit's messages: PAE of a scan event of the size the node verifies, signed
/// by 64 distinct keys.
fn limit_inputs() -> (Vec<Vec<u8>>, Vec<Signature>, Vec<VerifyingKey>) {
    let keys: Vec<SigningKey> = (0..64u8)
        .map(|i| SigningKey::from_bytes(&[i.wrapping_add(100); 32]))
        .collect();
    let msgs: Vec<Vec<u8>> = (0..64u64)
        .map(|i| {
            pae(
                PAYLOAD_TYPE,
                &scan_payload("limit", i, "2026-01-01T00:00:00.000Z"),
            )
        })
        .collect();
    let sigs = keys.iter().zip(&msgs).map(|(k, m)| k.sign(m)).collect();
    let vks = keys.iter().map(|k| k.verifying_key()).collect();
    (msgs, sigs, vks)
}

/// `ed25519_dalek::verify_batch` of 64 signatures, one thread per core, for `span`.
fn batch_rate(
    cores: usize,
    span: Duration,
    msgs: &[Vec<u8>],
    sigs: &[Signature],
    vks: &[VerifyingKey],
) -> f64 {
    let m: Vec<&[u8]> = msgs.iter().map(|m| m.as_slice()).collect();
    rate_on_all_cores(cores, span, 64, &|_| {
        ed25519_dalek::verify_batch(&m, sigs, vks).is_ok()
    })
}

/// The batch limit measured again, as before the load, after `settled`.
fn measure_batch_again(cores: usize, secs: f64, settled: Settled) -> BatchReading {
    ledger::to_stderr!("measuring the Ed25519 batch limit again after the load ({secs} s)…");
    let (msgs, sigs, vks) = limit_inputs();
    let window = Window::open();
    let per_sec = batch_rate(cores, Duration::from_secs_f64(secs), &msgs, &sigs, &vks);
    let (steal, others) = window.close();
    BatchReading {
        per_sec,
        settled,
        steal,
        others,
    }
}

/// The machine's CPU time so far (`/proc/stat`, in ticks): all of it, and what the
/// hypervisor gave to other guests (steal). A VM whose host is busy loses cores
/// without any process here using them, and every rate reads low.
#[derive(Debug, Clone, Copy)]
struct CpuTimes {
    total: u64,
    steal: u64,
    /// Idle time with a disk read or write outstanding.
    iowait: u64,
    /// user + nice + system + irq + softirq: time some process (or the kernel) ran.
    busy: u64,
}

impl CpuTimes {
    fn now() -> Option<CpuTimes> {
        CpuTimes::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// The first line: `cpu user nice system idle iowait irq softirq steal …`.
    fn parse(stat: &str) -> Option<CpuTimes> {
        let line = stat.lines().next()?.strip_prefix("cpu ")?;
        let f: Vec<u64> = line
            .split_whitespace()
            .map(|v| v.parse().ok())
            .collect::<Option<_>>()?;
        // guest and guest_nice (9th, 10th) are already counted in user and nice.
        Some(CpuTimes {
            total: f.iter().take(8).sum(),
            steal: *f.get(7)?,
            iowait: *f.get(4)?,
            busy: f[0] + f[1] + f[2] + f[5] + f[6],
        })
    }

    /// The share of CPU time that processes other than this one used between two
    /// readings, given this process's own ticks in between.
    fn others_between(a: Option<CpuTimes>, b: Option<CpuTimes>, own_ticks: f64) -> Option<f64> {
        let (a, b) = (a?, b?);
        let total = b.total.checked_sub(a.total).filter(|&t| t > 0)?;
        let others = b.busy.saturating_sub(a.busy) as f64 - own_ticks;
        Some((others / total as f64).clamp(0.0, 1.0))
    }

    /// The share of CPU time stolen between two readings.
    fn steal_between(a: Option<CpuTimes>, b: Option<CpuTimes>) -> Option<f64> {
        CpuTimes::share_between(a, b, |t| t.steal)
    }

    /// The share of CPU time spent idle waiting for the disk between two readings.
    fn iowait_between(a: Option<CpuTimes>, b: Option<CpuTimes>) -> Option<f64> {
        CpuTimes::share_between(a, b, |t| t.iowait)
    }

    fn share_between(
        a: Option<CpuTimes>,
        b: Option<CpuTimes>,
        field: fn(&CpuTimes) -> u64,
    ) -> Option<f64> {
        let (a, b) = (a?, b?);
        let total = b.total.checked_sub(a.total).filter(|&t| t > 0)?;
        Some(field(&b).saturating_sub(field(&a)) as f64 / total as f64)
    }
}

/// A stretch of time whose steal and CPU use by other processes are reported: a
/// limit read while something else ran (a node still writing back, another job)
/// reads low.
struct Window {
    times: Option<CpuTimes>,
    own: Option<f64>,
}

impl Window {
    fn open() -> Window {
        Window {
            times: CpuTimes::now(),
            own: own_cpu_secs(),
        }
    }

    /// (steal share, other processes' share) of the machine since `open`.
    fn close(self) -> (Option<f64>, Option<f64>) {
        let now = CpuTimes::now();
        let own_ticks = own_cpu_secs().zip(self.own).map(|(b, a)| (b - a) * 100.0);
        (
            CpuTimes::steal_between(self.times, now),
            own_ticks.and_then(|t| CpuTimes::others_between(self.times, now, t)),
        )
    }
}

/// Runs `round` (which verifies `per_round` signatures of pre-signed message `i`)
/// in one thread per core for `span`; verifications per second, all threads together.
fn rate_on_all_cores(
    cores: usize,
    span: Duration,
    per_round: u64,
    round: &(dyn Fn(usize) -> bool + Sync),
) -> f64 {
    let start = Instant::now();
    let total: u64 = std::thread::scope(|s| {
        let hs: Vec<_> = (0..cores)
            .map(|t| {
                s.spawn(move || {
                    let (mut n, mut i) = (0u64, t);
                    while start.elapsed() < span {
                        for _ in 0..16 {
                            // Only verifications that succeed count.
                            if round(i % 64) {
                                n += per_round;
                            }
                            i += 1;
                        }
                    }
                    n
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    total as f64 / start.elapsed().as_secs_f64()
}

fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

/// CPU seconds (user + system) this process has used so far, where Linux tells.
fn own_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at state (field 3);
    // utime and stime are fields 14 and 15, in clock ticks (USER_HZ, 100 on Linux).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// What the node reports of its own process on `/metrics` (Linux nodes).
#[derive(Debug, Clone, PartialEq)]
struct NodeUsage {
    cpu_secs: f64,
    rocksdb_background_cpu_secs: f64,
    resident_bytes: f64,
    peak_resident_bytes: f64,
    /// `custody_commit_seconds`: (upper bound in seconds, commits at most that
    /// long so far), in the node's order; empty if the node does not report it.
    commits: Vec<(f64, u64)>,
    /// Where single and batch appends spent their time, so far.
    single_stages: Option<Vec<Stage>>,
    batch_stages: Option<Vec<Stage>>,
    /// `custody_store_direct_io`: whether RocksDB's flushes and compactions
    /// write with O_DIRECT (`None`: the node does not say).
    direct_io: Option<bool>,
    /// `custody_tile_file_tiles` and `custody_tiles_full`: full tiles the node's
    /// tile file holds, and full tiles in all (`None`: the node does not say).
    tile_file: Option<(u64, u64)>,
}

/// One stage of the node's appends ([`NodeUsage`]), so far: the seconds requests
/// spent in it, summed, and the requests timed.
#[derive(Debug, Clone, PartialEq)]
struct Stage {
    name: String,
    secs: f64,
    requests: f64,
    /// (upper bound in seconds, requests at most that long so far), `+Inf` last.
    buckets: Vec<(f64, u64)>,
}

impl Stage {
    /// The stages of one kind of append: the histogram `name`
    /// (`custody_single_stage_seconds`, `custody_batch_stage_seconds`), a series per
    /// stage, in the node's order.
    fn read(text: &str, name: &str) -> Option<Vec<Stage>> {
        let count = format!("{name}_count{{stage=\"");
        let stages: Vec<Stage> = text
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(count.as_str())?;
                let (stage, n) = rest.split_once("\"} ")?;
                let label = format!("stage=\"{stage}\"");
                Some(Stage {
                    name: stage.to_owned(),
                    secs: sample(text, &format!("{name}_sum{{{label}}}"))?,
                    requests: n.trim().parse().ok()?,
                    buckets: buckets(text, &format!("{name}_bucket{{{label},le=\"")),
                })
            })
            .collect();
        (!stages.is_empty()).then_some(stages)
    }
}

/// A stage over a run, from two readings of the node's [`Stage`]s.
#[derive(Debug, Clone, PartialEq)]
struct StageFigures {
    name: String,
    mean_secs: f64,
    /// The bucket bound under which 99% of the run's requests spent their time in
    /// this stage (infinite: over the last bound).
    p99_at_most_secs: f64,
}

impl StageFigures {
    /// Figures for the `requests` requests the bench had answered between the
    /// readings; None unless the node timed exactly that many in every stage (not
    /// so if it restarted in between, or served other clients meanwhile), or if the
    /// stages differ.
    fn between(a: &[Stage], b: &[Stage], requests: u64) -> Option<Vec<StageFigures>> {
        if a.len() != b.len() || requests == 0 {
            return None;
        }
        a.iter()
            .zip(b)
            .map(|(x, y)| {
                let n = y.requests - x.requests;
                if x.name != y.name || n != requests as f64 || y.secs < x.secs {
                    return None;
                }
                let p99_at_most_secs = Spread::between(&x.buckets, &y.buckets)?.at(0.99);
                Some(StageFigures {
                    name: x.name.clone(),
                    mean_secs: (y.secs - x.secs) / n,
                    p99_at_most_secs,
                })
            })
            .collect()
    }
}

/// A run's [`StageFigures`], with the bench's mean latency and what of it lay
/// outside the node's stages (negative only by rounding: the stages do not overlap).
struct StageReport {
    stages: Vec<StageFigures>,
    mean: Duration,
    outside_secs: f64,
}

/// The value of the sample named exactly `name` (labels included).
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// A histogram series' cumulative buckets, `prefix` being everything up to the
/// bound (`…_bucket{le="`, or with the series' labels before `le`).
fn buckets(text: &str, prefix: &str) -> Vec<(f64, u64)> {
    text.lines()
        .filter_map(|l| {
            let (le, n) = l.strip_prefix(prefix)?.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, n.trim().parse().ok()?))
        })
        .collect()
}

impl NodeUsage {
    /// `None` when the node does not report them (an older node, or not Linux).
    fn read(client: &Client) -> Option<NodeUsage> {
        let text = String::from_utf8(client.get_bytes("/metrics").ok()?).ok()?;
        NodeUsage::parse(&text)
    }

    fn parse(text: &str) -> Option<NodeUsage> {
        Some(NodeUsage {
            cpu_secs: sample(text, "process_cpu_seconds_total")?,
            rocksdb_background_cpu_secs: sample(
                text,
                "custody_rocksdb_background_cpu_seconds_total",
            )?,
            resident_bytes: sample(text, "process_resident_memory_bytes")?,
            peak_resident_bytes: sample(text, "custody_process_peak_resident_bytes")?,
            commits: buckets(text, "custody_commit_seconds_bucket{le=\""),
            single_stages: Stage::read(text, "custody_single_stage_seconds"),
            batch_stages: Stage::read(text, "custody_batch_stage_seconds"),
            direct_io: sample(text, "custody_store_direct_io").map(|v| v == 1.0),
            tile_file: sample(text, "custody_tile_file_tiles")
                .zip(sample(text, "custody_tiles_full"))
                .map(|(have, full)| (have as u64, full as u64)),
        })
    }
}

/// The node's group commits during a run (judge, synced write, sign), from the
/// difference of its cumulative histogram: each figure is the upper bound of the
/// histogram bucket it falls in. A commit holds up every request of its group and
/// of those queued behind it, so slow ones (a disk slow to sync) show up in the
/// requests' tail latency.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Commits {
    groups: u64,
    p50_at_most_secs: f64,
    p99_at_most_secs: f64,
    max_at_most_secs: f64,
    /// The lower bound of the slowest commit's bucket: it took longer than this.
    max_over_secs: f64,
}

impl Commits {
    fn between(a: &NodeUsage, b: &NodeUsage) -> Option<Commits> {
        let spread = Spread::between(&a.commits, &b.commits)?;
        let max_at_most_secs = spread.at(1.0);
        Some(Commits {
            groups: spread.total(),
            p50_at_most_secs: spread.at(0.5),
            p99_at_most_secs: spread.at(0.99),
            max_at_most_secs,
            max_over_secs: spread
                .cumulative
                .iter()
                .map(|(le, _)| *le)
                .filter(|&le| le < max_at_most_secs)
                .fold(0.0, f64::max),
        })
    }

    /// A figure's bucket bound for people: "≤ 2 ms", or "> 1000 ms" for the
    /// unbounded bucket (whose lower bound is then the slowest commit's).
    fn bound_text(&self, secs: f64) -> String {
        if secs.is_finite() {
            format!("≤ {}", human(Duration::from_secs_f64(secs)))
        } else {
            format!("> {}", human(Duration::from_secs_f64(self.max_over_secs)))
        }
    }
}

/// What one cumulative histogram counted between two readings of it.
struct Spread {
    /// (upper bound in seconds, observations at most that long), `+Inf` last.
    cumulative: Vec<(f64, u64)>,
}

impl Spread {
    /// None if the bounds differ, nothing was counted, or a count fell: the node
    /// restarted between the readings, its histogram started again, and no
    /// difference means anything.
    fn between(a: &[(f64, u64)], b: &[(f64, u64)]) -> Option<Spread> {
        if a.len() != b.len() || a.iter().zip(b).any(|(x, y)| x.0 != y.0) {
            return None;
        }
        let counts = monotone(a)
            .iter()
            .zip(monotone(b))
            .map(|(x, y)| y.checked_sub(*x))
            .collect::<Option<Vec<u64>>>()?;
        let cumulative: Vec<(f64, u64)> = a
            .iter()
            .map(|(le, _)| *le)
            .zip(monotone_counts(counts))
            .collect();
        let spread = Spread { cumulative };
        (spread.total() > 0).then_some(spread)
    }

    fn total(&self) -> u64 {
        self.cumulative.last().map_or(0, |(_, n)| *n)
    }

    /// The bound of the bucket holding the `q` quantile (nearest rank).
    fn at(&self, q: f64) -> f64 {
        let rank = (q * self.total() as f64).ceil().max(1.0) as u64;
        self.cumulative
            .iter()
            .find(|(_, n)| *n >= rank)
            .map_or(f64::INFINITY, |(le, _)| *le)
    }
}

/// A reading's cumulative counts, made non-decreasing: the node reads its count of
/// commits (the `+Inf` bucket) before the other buckets, so a commit that lands in
/// between can leave `+Inf` below the last bucket in that reading.
fn monotone(buckets: &[(f64, u64)]) -> Vec<u64> {
    monotone_counts(buckets.iter().map(|(_, n)| *n).collect())
}

fn monotone_counts(mut counts: Vec<u64>) -> Vec<u64> {
    let mut top = 0;
    for n in &mut counts {
        top = top.max(*n);
        *n = top;
    }
    counts
}

/// A commit slower than this is called out in the report.
const SLOW_COMMIT_SECS: f64 = 0.05;

/// A share (or other fraction) for JSON, to three decimals.
fn thousandths(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

/// A bucket bound in milliseconds for JSON: None for the last, unbounded bucket.
fn bound_ms(secs: f64) -> Option<f64> {
    secs.is_finite().then(|| (secs * 1e6).round() / 1e3)
}

/// The node's CPU over a run, split as the node reports it.
#[derive(Debug, Clone, Copy)]
struct NodeCpu {
    /// Every thread but RocksDB's flushes and compactions: HTTP, signature checks,
    /// the sequencer, receipts.
    serving_secs: f64,
    /// RocksDB's flushes and compactions, which also run after the load that caused
    /// them, so they vary from run to run with what earlier runs left.
    background_secs: f64,
}

// ---------------------------------------------------------------------------
// Appends.

fn scan_payload(run: &str, i: u64, claimed_at: &str) -> Vec<u8> {
    // Infallible: a JSON object of strings.
    serde_json::to_vec(&json!({
        "kind": "scan", "claimed_at": claimed_at,
        "body": {"product_id": "04012345678901", "serial": format!("bench-{run}-{i}"),
                 "marking": "qr", "result": "genuine", "location": {"country": "DE"},
                 "device": "custody-bench"}
    }))
    .expect("scan payload serialises")
}

/// One request's worth of pre-serialised work, taken once by whichever thread gets it.
struct Job {
    /// The whole HTTP request, taken when sent.
    request: Mutex<Option<Vec<u8>>>,
    /// Position in the run.
    seq: u64,
    /// Event numbers `first..first + count` (appends) or the index asked (proofs).
    first: u64,
    count: u64,
}

fn bench_appends(
    client: &Client,
    target: &Target,
    log: &CheckpointVerifier,
    args: &Args,
    limit: &Limit,
) -> Result<Report> {
    let n = args.events;
    if n == 0 {
        bail!("--events must be at least 1");
    }
    let admin_path = args.admin_key.as_deref().context(
        "appending needs an admin key to register the bench's actor: pass --admin-key FILE \
         (a new log's first start writes DATA/admin.key), or use --proofs Q",
    )?;
    let admin = ledger::keyfile::load(admin_path)?;

    // The bench's actor: a fresh key derived from the admin's secret and this run, so
    // nobody without the admin key can guess it and sign as the bench.
    let nonce = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let mut material = admin.to_bytes().to_vec();
    material.extend_from_slice(nonce.as_bytes());
    let actor =
        SigningKey::from_bytes(&blake3::derive_key("custody bench actor key v1", &material));
    let run_id = hex::encode(&actor.verifying_key().as_bytes()[..6]);
    let claimed_at = ledger::entry::format_time(chrono::Utc::now());

    let register = serde_json::to_vec(&json!({
        "kind": "actor.register", "claimed_at": claimed_at,
        "body": {"key": hex::encode(actor.verifying_key().as_bytes()),
                 "name": format!("custody bench {run_id}"), "org": "custody bench",
                 "roles": ["investigator"]}
    }))?;
    let env = Envelope::sign(&register, &admin);
    let (_, v) = client
        .post_json("/v1/events", &serde_json::from_slice(&env.to_json())?)
        .context("registering the bench's actor (is --admin-key this log's admin?)")?;
    let r: Receipt = serde_json::from_value(v).context("the registration's receipt")?;
    r.verify(log)
        .context("the registration's receipt does not verify")?;

    // Sign everything before the clock starts, on every core.
    ledger::to_stderr!("signing {n} scan events (run {run_id})…");
    let t = Instant::now();
    let cores = limit.cores.max(1);
    let envelopes: Vec<(Envelope, String)> = std::thread::scope(|s| {
        let per = n.div_ceil(cores as u64);
        let hs: Vec<_> = (0..cores as u64)
            .map(|c| {
                let (actor, run_id, claimed_at) = (&actor, &run_id, &claimed_at);
                s.spawn(move || {
                    (c * per..((c + 1) * per).min(n))
                        .map(|i| {
                            let p = scan_payload(run_id, i, claimed_at);
                            let id = EventId::of_payload(&p).to_hex();
                            (Envelope::sign(&p, actor), id)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().expect("signing thread"))
            .collect()
    });
    let sample_at = sample_points(n, args.sample);
    let mut sampled: BTreeMap<u64, Envelope> = BTreeMap::new();
    let mut event_ids = Vec::with_capacity(n as usize);
    let mut jobs = Vec::new();
    let b = args.batch as u64;
    let path = if b == 1 {
        "/v1/events"
    } else {
        "/v1/events:batch"
    };
    let mut body: Vec<u8> = Vec::new();
    for (i, (env, event_id)) in envelopes.into_iter().enumerate() {
        let i = i as u64;
        if sample_at.binary_search(&i).is_ok() {
            sampled.insert(i, env.clone());
        }
        let bytes = env.to_json();
        event_ids.push(event_id);
        if b == 1 {
            jobs.push(Job {
                request: Mutex::new(Some(target.request("POST", path, Some(&bytes)))),
                seq: jobs.len() as u64,
                first: i,
                count: 1,
            });
            continue;
        }
        body.extend_from_slice(if i.is_multiple_of(b) {
            b"{\"envelopes\":["
        } else {
            b","
        });
        body.extend_from_slice(&bytes);
        if i % b == b - 1 || i == n - 1 {
            body.extend_from_slice(b"]}");
            let first = i - i % b;
            jobs.push(Job {
                request: Mutex::new(Some(target.request("POST", path, Some(&body)))),
                seq: jobs.len() as u64,
                first,
                count: i + 1 - first,
            });
            body.clear();
        }
    }
    let bytes: usize = jobs
        .iter()
        .map(|j| {
            j.request
                .lock()
                .map(|b| b.as_ref().map_or(0, Vec::len))
                .unwrap_or(0)
        })
        .sum();
    ledger::to_stderr!(
        "signed {n} events into {} requests ({:.1} MB) in {:.1} s",
        jobs.len(),
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );

    let before = checkpoint(client, log)?;
    let is_sample = |i: u64| sample_at.binary_search(&i).is_ok();
    let mut drive = drive(
        client,
        args,
        target,
        &jobs,
        n,
        |w, job, started, (status, bytes)| {
            let events = job.first..job.first + job.count;
            if b == 1 {
                if !(200..300).contains(&status) {
                    return w.fail(&problem_code(status, &bytes), 1);
                }
                let Ok(raw) = serde_json::from_slice::<&RawValue>(&bytes) else {
                    return w.fail("unreadable_answer", 1);
                };
                w.receipt(
                    job.first,
                    raw,
                    &event_ids,
                    is_sample(job.first),
                    started,
                    log,
                );
            } else {
                let reply = if (200..300).contains(&status) {
                    serde_json::from_slice::<BatchReply>(&bytes).ok()
                } else {
                    return w.fail(&problem_code(status, &bytes), job.count);
                };
                let Some(reply) = reply.filter(|r| r.results.len() as u64 == job.count) else {
                    return w.fail("unreadable_answer", job.count);
                };
                for (i, item) in events.zip(reply.results) {
                    match (item.receipt, item.problem) {
                        (Some(raw), None) => {
                            w.receipt(i, raw, &event_ids, is_sample(i), started, log)
                        }
                        (None, Some(p)) => w.fail(p.code.as_deref().unwrap_or("no_code"), 1),
                        _ => w.fail("unreadable_answer", 1),
                    }
                }
            }
        },
    );

    // Outside the timed part: check what the node said against what it serves.
    let after = checkpoint(client, log)?;
    let mut failures = Vec::new();
    let proof: Value = client.get_json(&format!(
        "/v1/proofs/consistency?first={}&second={}",
        before.size, after.size
    ))?;
    let consistency: Vec<RootHash> =
        serde_json::from_value(proof["proof"].clone()).context("the consistency proof's hashes")?;
    if let Err(e) = ledger::tree::verify_consistency(
        &consistency,
        before.size,
        before.root,
        after.size,
        after.root,
    ) {
        failures.push(format!(
            "the checkpoints before ({}) and after ({}) the run are not consistent: {e}",
            before.size, after.size
        ));
    }
    let mut indices = std::mem::take(&mut drive.indices);
    indices.sort_unstable();
    let distinct = {
        let mut d = indices.clone();
        d.dedup();
        d.len()
    };
    if distinct != indices.len() {
        failures.push(format!(
            "{} receipts share an index with another",
            indices.len() - distinct
        ));
    }
    if let (Some(lo), Some(hi)) = (indices.first(), indices.last()) {
        if *lo < before.size || *hi >= after.size {
            failures.push(format!(
                "receipt indices {lo}..={hi} lie outside the entries added during the run ({}..{})",
                before.size, after.size
            ));
        }
    }
    for s in &drive.samples {
        let Some(env) = sampled.get(&s.event) else {
            continue;
        };
        if let Err(e) = check_entry(client, s.index, s.leaf_hash, env) {
            failures.push(format!("event {} at entry {}: {e:#}", s.event, s.index));
        }
    }
    drive.sample_failures.extend(failures);
    Ok(Report::from_drive(
        if b == 1 { "single" } else { "batch" },
        client.url(""),
        args,
        n,
        &sample_at,
        drive,
        Some((before.size, after.size)),
    ))
}

/// The node's latest checkpoint, its signature verified with the log key.
fn checkpoint(client: &Client, log: &CheckpointVerifier) -> Result<SignedCheckpoint> {
    let note = String::from_utf8(client.get_bytes("/checkpoint")?)
        .context("the node's checkpoint is not UTF-8")?;
    Ok(log.verify(&note)?)
}

/// `k` event numbers spread evenly over `0..n`, always including 0.
fn sample_points(n: u64, k: u64) -> Vec<u64> {
    let k = k.min(n);
    let mut v: Vec<u64> = (0..k).map(|j| j * n / k.max(1)).collect();
    v.dedup();
    v
}

/// Fetches an entry and checks it hashes to the receipt's leaf and holds the
/// envelope the bench signed.
fn check_entry(client: &Client, index: u64, leaf: LeafHash, env: &Envelope) -> Result<()> {
    let bytes = client.get_bytes(&format!("/v1/entries/{index}"))?;
    let got = ledger::entry::leaf_hash(&bytes);
    if got != leaf {
        bail!("the entry's bytes hash to leaf {got}, the receipt says {leaf}");
    }
    let entry = ledger::entry::Entry::parse(&bytes)?;
    if &entry.envelope != env {
        bail!("the entry holds another envelope than the one the bench signed");
    }
    Ok(())
}

#[derive(Deserialize)]
struct BatchReply<'a> {
    #[serde(borrow)]
    results: Vec<BatchItem<'a>>,
}

#[derive(Deserialize)]
struct BatchItem<'a> {
    #[serde(borrow)]
    receipt: Option<&'a RawValue>,
    problem: Option<ProblemCode>,
}

#[derive(Deserialize)]
struct ProblemCode {
    code: Option<String>,
}

/// The fields of a receipt every answer is checked for (the sample gets the rest).
#[derive(Deserialize)]
struct ReceiptHead<'a> {
    index: u64,
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(default)]
    duplicate: bool,
}

fn problem_code(status: u16, body: &[u8]) -> String {
    serde_json::from_slice::<ProblemCode>(body)
        .ok()
        .and_then(|p| p.code)
        .unwrap_or_else(|| format!("http_{status}"))
}

// ---------------------------------------------------------------------------
// Proofs.

fn bench_proofs(
    client: &Client,
    target: &Target,
    log: &CheckpointVerifier,
    args: &Args,
    q: u64,
) -> Result<Report> {
    if q == 0 {
        bail!("--proofs must be at least 1");
    }
    let cp = checkpoint(client, log)?;
    // xorshift64*, seeded from the clock: uniform enough for picking indices.
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    let mut random = move |below: u64| {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d) % below
    };
    // What the proofs are asked for by, as the report names it.
    let by = if args.by_leaf_hash {
        "leaf_hash"
    } else {
        "index"
    };
    // (index, leaf hash asked for) per request; the leaf hash only --by-leaf-hash.
    let asked: Vec<(u64, Option<LeafHash>)> = if args.by_leaf_hash {
        leaf_hashes_of_random_entries(client, cp.size, q, &mut random)?
            .into_iter()
            .map(|(index, leaf)| (index, Some(leaf)))
            .collect()
    } else {
        (0..q).map(|_| (random(cp.size), None)).collect()
    };
    let jobs: Vec<Job> = (0..q)
        .zip(&asked)
        .map(|(seq, &(index, leaf))| {
            let by = match leaf {
                Some(leaf) => format!("leaf_hash={leaf}"),
                None => format!("index={index}"),
            };
            let path = format!("/v1/proofs/inclusion?{by}&tree_size={}", cp.size);
            Job {
                request: Mutex::new(Some(target.request("GET", &path, None))),
                seq,
                first: index,
                count: 1,
            }
        })
        .collect();
    let sample_at = sample_points(q, args.sample);
    ledger::to_stderr!(
        "{q} inclusion proof requests for random entries of the tree of size {}, by {}",
        cp.size,
        by.replace('_', " ")
    );
    let mut drive = drive(
        client,
        args,
        target,
        &jobs,
        q,
        |w, job, started, (status, bytes)| {
            if status != 200 {
                return w.fail(&problem_code(status, &bytes), 1);
            }
            // Every answer is checked for what was asked; the sampled ones are parsed
            // whole and verified against the signed root (parsing every hash of every
            // answer would cost the bench more CPU than the node spends answering).
            let Ok(head) = serde_json::from_slice::<ProofHead>(&bytes) else {
                return w.fail("unreadable_answer", 1);
            };
            // By leaf hash, the answer must also carry the hash asked for: the
            // hashes came from the node's own tiles, which the index check alone
            // would trust.
            let leaf_differs = asked[job.seq as usize]
                .1
                .is_some_and(|leaf| LeafHash::parse(head.leaf_hash).ok() != Some(leaf));
            if head.index != job.first || head.tree_size != cp.size || leaf_differs {
                return w.fail("wrong_proof", 1);
            }
            if sample_at.binary_search(&job.seq).is_ok() {
                let checked = serde_json::from_slice::<ProofAnswer>(&bytes)
                    .map_err(anyhow::Error::from)
                    .and_then(|p| {
                        ledger::tree::verify_inclusion(
                            &p.proof,
                            cp.size,
                            cp.root,
                            p.index,
                            p.leaf_hash,
                        )?;
                        if p.root_hash != cp.root {
                            bail!(
                                "root_hash {} is not the checkpoint's root {}",
                                p.root_hash,
                                cp.root
                            );
                        }
                        Ok(p.leaf_hash)
                    });
                match checked {
                    Ok(leaf_hash) => w.samples.push(Sampled {
                        event: job.seq,
                        index: head.index,
                        leaf_hash,
                        verified_after: started.elapsed(),
                    }),
                    Err(e) => w
                        .sample_failures
                        .push(format!("proof for entry {}: {e:#}", head.index)),
                }
            }
            w.ok(1);
        },
    );
    let mut failures = Vec::new();
    for s in &drive.samples {
        match client.get_bytes(&format!("/v1/entries/{}", s.index)) {
            Ok(bytes) if ledger::entry::leaf_hash(&bytes) == s.leaf_hash => {}
            Ok(_) => failures.push(format!(
                "entry {} does not hash to the leaf its proof names",
                s.index
            )),
            Err(e) => failures.push(format!("entry {}: {e:#}", s.index)),
        }
    }
    drive.sample_failures.extend(failures);
    let mut report = Report::from_drive("proofs", client.url(""), args, q, &sample_at, drive, None);
    report.proofs_by = Some(by);
    Ok(report)
}

/// Most tiles `--by-leaf-hash` reads before the timed part (8 KiB each: 128 MiB).
const MAX_LEAF_TILES: u64 = 16_384;

/// `q` random entries of the tree of `size` and their leaf hashes, in random order,
/// read from the log's level-0 tiles (each tile's leaf hashes in one request; each
/// answer must carry the hash asked for, and the sampled ones verify against the
/// signed root): q/16 random tiles (all of them if fewer, at most
/// [`MAX_LEAF_TILES`]) and random entries of each. Shows progress: at 10M entries
/// and 200,000 proofs this reads 12,500 tiles (100 MB).
fn leaf_hashes_of_random_entries(
    client: &Client,
    size: u64,
    q: u64,
    random: &mut impl FnMut(u64) -> u64,
) -> Result<Vec<(u64, LeafHash)>> {
    let width = ledger::tree::TILE_WIDTH;
    let tiles = size.div_ceil(width);
    let wanted = q.div_ceil(16).min(tiles).min(MAX_LEAF_TILES);
    let picked: Vec<u64> = if wanted == tiles {
        (0..tiles).collect()
    } else {
        let mut set = std::collections::BTreeSet::new();
        while (set.len() as u64) < wanted {
            set.insert(random(tiles));
        }
        set.into_iter().collect()
    };
    let per_tile = q.div_ceil(wanted);
    let mut asked = Vec::with_capacity((per_tile * wanted) as usize);
    let started = Instant::now();
    let mut shown = Instant::now();
    for (done, &n) in picked.iter().enumerate() {
        let tile = ledger::tree::TileRef {
            level: Some(0),
            n,
            width: (size - n * width).min(width) as u32,
        };
        let path = format!("/tile/{}", tile.path());
        let bytes = client.get_bytes(&path).with_context(|| {
            format!(
                "reading leaf hashes for --by-leaf-hash from {path}: the node must serve the \
                 log's C2SP tiles; without them, run the proofs by index (drop --by-leaf-hash)"
            )
        })?;
        if bytes.len() != tile.width as usize * 32 {
            bail!(
                "{path} is {} bytes, but a tile of {} leaf hashes has {}: the node does not \
                 serve C2SP hash tiles as this bench reads them; run the proofs by index \
                 (drop --by-leaf-hash)",
                bytes.len(),
                tile.width,
                tile.width * 32
            );
        }
        for _ in 0..per_tile {
            let k = random(u64::from(tile.width));
            let at = k as usize * 32;
            let leaf = LeafHash(bytes[at..at + 32].try_into().expect("32 bytes"));
            asked.push((n * width + k, leaf));
        }
        if shown.elapsed() >= Duration::from_secs(1) {
            ledger::to_stderr!(
                "reading leaf hashes: {} of {} tiles ({:.0} s)",
                done + 1,
                picked.len(),
                started.elapsed().as_secs_f64()
            );
            shown = Instant::now();
        }
    }
    // Shuffled, so that requests in a row do not read the same tile (Fisher-Yates).
    for i in (1..asked.len()).rev() {
        asked.swap(i, random(i as u64 + 1) as usize);
    }
    asked.truncate(q as usize);
    Ok(asked)
}

#[derive(Deserialize)]
struct ProofHead<'a> {
    index: u64,
    /// Hex: borrowed from the answer, parsed only when it is checked.
    leaf_hash: &'a str,
    tree_size: u64,
}

#[derive(Deserialize)]
struct ProofAnswer {
    index: u64,
    leaf_hash: LeafHash,
    root_hash: RootHash,
    proof: Vec<RootHash>,
}

// ---------------------------------------------------------------------------
// The driver: C threads, shared counters, progress on stderr.

/// A sampled receipt (or proof) that verified, and when.
#[derive(Clone)]
struct Sampled {
    event: u64,
    index: u64,
    leaf_hash: LeafHash,
    /// From the request's start (when it was due, on a schedule) to holding a
    /// verified receipt.
    verified_after: Duration,
}

/// What one driving thread has seen.
struct Worker<'a> {
    done: &'a AtomicU64,
    failed: &'a AtomicU64,
    latencies: Vec<Duration>,
    ok: u64,
    errors: BTreeMap<String, u64>,
    indices: Vec<u64>,
    samples: Vec<Sampled>,
    sample_failures: Vec<String>,
}

impl<'a> Worker<'a> {
    fn new(done: &'a AtomicU64, failed: &'a AtomicU64) -> Worker<'a> {
        Worker {
            done,
            failed,
            latencies: Vec::new(),
            ok: 0,
            errors: BTreeMap::new(),
            indices: Vec::new(),
            samples: Vec::new(),
            sample_failures: Vec::new(),
        }
    }

    /// Counts one request's answer (or failure) and hands a good one to `handle`.
    fn answered<F>(
        &mut self,
        job: &Job,
        started: Instant,
        sent: Result<Answer, WireError>,
        handle: &F,
    ) where
        F: Fn(&mut Worker, &Job, Instant, Answer),
    {
        self.latencies.push(started.elapsed());
        match sent {
            Ok(answer) => handle(self, job, started, answer),
            Err(e) => self.fail(e.code(), job.count),
        }
    }

    fn ok(&mut self, n: u64) {
        self.ok += n;
        self.done.fetch_add(n, Relaxed);
    }

    fn fail(&mut self, code: &str, n: u64) {
        *self.errors.entry(code.to_owned()).or_default() += n;
        self.failed.fetch_add(n, Relaxed);
        self.done.fetch_add(n, Relaxed);
    }

    /// Checks one receipt: it names event `i` under a fresh index; a sampled one is
    /// also verified against the log key.
    fn receipt(
        &mut self,
        i: u64,
        raw: &RawValue,
        event_ids: &[String],
        sample: bool,
        started: Instant,
        log: &CheckpointVerifier,
    ) {
        let Ok(head) = serde_json::from_str::<ReceiptHead>(raw.get()) else {
            return self.fail("unreadable_answer", 1);
        };
        if head.event_id != event_ids[i as usize] {
            return self.fail("wrong_event_id", 1);
        }
        if head.duplicate {
            // Every bench event is new: a duplicate means the node lost track of one.
            return self.fail("unexpected_duplicate", 1);
        }
        self.indices.push(head.index);
        if sample {
            let checked = serde_json::from_str::<Receipt>(raw.get())
                .map_err(anyhow::Error::from)
                .and_then(|r| r.verify(log).map(|_| r).map_err(anyhow::Error::from));
            match checked {
                Ok(r) => self.samples.push(Sampled {
                    event: i,
                    index: r.index,
                    leaf_hash: r.leaf_hash,
                    verified_after: started.elapsed(),
                }),
                Err(e) => self
                    .sample_failures
                    .push(format!("receipt of event {i}: {e:#}")),
            }
        }
        self.ok(1);
    }
}

/// Everything the threads saw, merged.
struct Drive {
    seconds: f64,
    sent: u64,
    ok: u64,
    requests: u64,
    latencies: Vec<Duration>,
    /// On a schedule (--rate): how late each request was sent, sorted.
    late: Vec<Duration>,
    errors: BTreeMap<String, u64>,
    indices: Vec<u64>,
    samples: Vec<Sampled>,
    sample_failures: Vec<String>,
    client_cpu_secs: Option<f64>,
    /// The node's usage just before and just after the load.
    node: Option<(NodeUsage, NodeUsage)>,
    /// The share of CPU time the hypervisor took during the load.
    steal: Option<f64>,
    /// The share of CPU time spent idle waiting for the disk during the load.
    iowait: Option<f64>,
}

/// Sends every job's request and hands each good answer to `handle`: from one
/// thread's event loop when each request carries one event or proof (many small
/// requests, where a thread per connection would cost the machine more than the
/// node spends), else from a thread per connection.
fn drive<F>(
    client: &Client,
    args: &Args,
    target: &Target,
    jobs: &[Job],
    units: u64,
    handle: F,
) -> Drive
where
    F: Fn(&mut Worker, &Job, Instant, Answer) + Sync,
{
    let c = args.connections.min(jobs.len()).max(1);
    let looped = args.batch <= 1 && !args.thread_per_connection;
    ledger::to_stderr!(
        "driving {} requests over {c} connections{}{}{}{}…",
        jobs.len(),
        if args.pipeline > 1 {
            format!(", {} in flight on each", args.pipeline)
        } else {
            String::new()
        },
        args.rate
            .map(|r| format!(", {}/s on a fixed schedule", thousands(r)))
            .unwrap_or_default(),
        if looped {
            " from one thread"
        } else {
            ", a thread each"
        },
        args.duration
            .map(|d| format!(" for at most {d} s"))
            .unwrap_or_default()
    );
    let next = AtomicUsize::new(0);
    let done = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let sent = AtomicU64::new(0);
    let finished = AtomicBool::new(false);
    let node0 = NodeUsage::read(client);
    let times0 = CpuTimes::now();
    let cpu0 = own_cpu_secs();
    let start = Instant::now();
    // A time limit: on a schedule, the requests due within it (each is sent, even
    // if late, so that a node behind the schedule cannot drop its backlog from the
    // figures); otherwise the requests started before it.
    let (deadline, due_within) = match (args.duration, args.rate) {
        (Some(d), Some(r)) => (None, (d * r).ceil() as usize),
        (d, _) => (d.map(|d| start + Duration::from_secs_f64(d)), usize::MAX),
    };
    // The next job's request, while there is time left.
    let take = || -> Option<(usize, Vec<u8>)> {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        loop {
            let j = next.fetch_add(1, Relaxed);
            if j >= due_within {
                return None;
            }
            let job = jobs.get(j)?;
            sent.fetch_add(job.count, Relaxed);
            // Each job's request is taken once (a poisoned lock: skip that job).
            if let Some(request) = job.request.lock().ok().and_then(|mut b| b.take()) {
                return Some((j, request));
            }
        }
    };
    let mut loop_failed = None;
    let mut late = Vec::new();
    let workers: Vec<Worker> = std::thread::scope(|s| {
        let progress = s.spawn(|| progress(&finished, &done, &failed, units, start));
        let ws = if looped {
            let mut w = Worker::new(&done, &failed);
            let ran = crate::mux::run(
                target,
                c,
                args.pipeline,
                args.rate,
                take,
                |j, started, answer| w.answered(&jobs[j], started, answer, &handle),
            );
            match ran {
                Ok(l) => late = l,
                Err(e) => loop_failed = Some(e.to_string()),
            }
            vec![w]
        } else {
            let hs: Vec<_> = (0..c)
                .map(|_| {
                    let (done, failed, take, handle) = (&done, &failed, &take, &handle);
                    s.spawn(move || {
                        // Each thread keeps its own keep-alive connection busy.
                        let mut w = Worker::new(done, failed);
                        let mut conn = Conn::new(target);
                        while let Some((j, request)) = take() {
                            let started = Instant::now();
                            let answer = conn.send(&request);
                            w.answered(&jobs[j], started, answer, handle);
                        }
                        w
                    })
                })
                .collect();
            hs.into_iter()
                .filter_map(|h| h.join().ok())
                .collect::<Vec<_>>()
        };
        finished.store(true, Relaxed);
        let _ = progress.join();
        ws
    });
    let seconds = start.elapsed().as_secs_f64();
    let client_cpu_secs = match (cpu0, own_cpu_secs()) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let times1 = CpuTimes::now();
    let steal = CpuTimes::steal_between(times0, times1);
    let iowait = CpuTimes::iowait_between(times0, times1);
    let node = node0.zip(NodeUsage::read(client));
    let mut d = Drive {
        seconds,
        sent: sent.load(Relaxed),
        ok: 0,
        requests: 0,
        latencies: Vec::new(),
        late,
        errors: BTreeMap::new(),
        indices: Vec::new(),
        samples: Vec::new(),
        sample_failures: Vec::new(),
        client_cpu_secs,
        node,
        steal,
        iowait,
    };
    if !looped && workers.len() < c {
        *d.errors.entry("bench_thread_panicked".into()).or_default() += (c - workers.len()) as u64;
    }
    if let Some(e) = loop_failed {
        ledger::to_stderr!("the bench's driver failed: {e}");
        *d.errors.entry("bench_driver_failed".into()).or_default() += 1;
    }
    for w in workers {
        d.ok += w.ok;
        d.requests += w.latencies.len() as u64;
        d.latencies.extend(w.latencies);
        for (k, v) in w.errors {
            *d.errors.entry(k).or_default() += v;
        }
        d.indices.extend(w.indices);
        d.samples.extend(w.samples);
        d.sample_failures.extend(w.sample_failures);
    }
    d.latencies.sort_unstable();
    d.late.sort_unstable();
    d.samples.sort_by_key(|s| s.event);
    d
}

fn progress(
    finished: &AtomicBool,
    done: &AtomicU64,
    failed: &AtomicU64,
    units: u64,
    start: Instant,
) {
    let mut last = (start, 0u64);
    let mut tick = start;
    while !finished.load(Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if tick.elapsed() < Duration::from_secs(1) {
            continue;
        }
        tick = Instant::now();
        let n = done.load(Relaxed);
        let rate = (n - last.1) as f64 / last.0.elapsed().as_secs_f64();
        last = (Instant::now(), n);
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "  {:>6.1} s  {n:>9} / {units}  {:>9.0}/s  errors {}",
            start.elapsed().as_secs_f64(),
            rate,
            failed.load(Relaxed)
        );
    }
}

// ---------------------------------------------------------------------------
// The report.

struct Report {
    mode: &'static str,
    /// What proofs were asked for by: "index" or "leaf_hash" (proof runs only).
    proofs_by: Option<&'static str>,
    node: String,
    connections: usize,
    pipeline: usize,
    /// Requests a second offered on a fixed schedule (--rate), if any.
    offered: Option<f64>,
    batch: usize,
    planned: u64,
    drive: Drive,
    failures: Vec<String>,
    /// Sample points planned, and those among the events (or proofs) sent.
    sample_planned: u64,
    sample_wanted: u64,
    tree: Option<(u64, u64)>,
    limit: Limit,
    /// Whether the node is on this machine (a loopback address), so that its CPU
    /// can be compared with the limit measured here.
    same_machine: bool,
}

fn pct(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Whether more than 1% of the requests of a run on a schedule went out over
/// [`BEHIND_MS`] late (`late`: how late each was sent, sorted).
fn fell_behind(late: &[Duration]) -> bool {
    pct(late, 0.99) > Duration::from_millis(BEHIND_MS)
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn human(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 100_000.0 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{:.0} ms", us / 1e3)
    }
}

/// What the I/O wait during a load says about the run. Proofs only read: idle
/// cores waiting for storage mean the log's tiles were not in the page cache (a
/// first run after a pause, or after the kernel reclaimed them), so the figure is
/// the cold path's.
/// For a proofs run begun while the node's tile file lacked some full tiles (a node
/// just upgraded, or restarted after a crash, copies them in the background): the
/// tiles it held and what that means for the figures.
fn tile_file_note(mode: &str, before: Option<(u64, u64)>) -> Option<((u64, u64), &'static str)> {
    match before {
        Some((have, full)) if mode == "proofs" && have < full => Some((
            (have, full),
            ": proofs of entries in the others read RocksDB, which costs the node about \
             twice the CPU, so this run measured a slower path; wait until \
             custody_tile_file_tiles reaches custody_tiles_full on the node's /metrics",
        )),
        _ => None,
    }
}

fn iowait_note(mode: &str, same_machine: bool, io: f64) -> &'static str {
    match (same_machine, io >= 0.05, mode == "proofs") {
        (false, _, _) => " (the bench's machine, not the node's)",
        (true, true, true) => {
            ": cores sat idle while the node read the log's tiles from storage, not \
             the page cache (a first run after a pause, or tiles the kernel had \
             reclaimed), so this is the cold path; a run right after this one \
             measures proofs from memory"
        }
        (true, true, false) => {
            ": cores sat idle waiting for storage (the node's syncs or reads), so \
             storage rather than the CPU may have held up part of the run"
        }
        (true, false, _) => "",
    }
}

fn ratio(x: f64, limit: f64) -> Option<f64> {
    (limit > 0.0).then(|| (x / limit * 1e4).round() / 1e4)
}

fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

impl Report {
    fn from_drive(
        mode: &'static str,
        node: String,
        args: &Args,
        planned: u64,
        sample_at: &[u64],
        mut drive: Drive,
        tree: Option<(u64, u64)>,
    ) -> Report {
        // Jobs are taken in order, so what was sent is a prefix of the plan.
        let sample_wanted = sample_at.iter().filter(|&&i| i < drive.sent).count() as u64;
        Report {
            mode,
            proofs_by: None,
            node,
            connections: args.connections,
            pipeline: args.pipeline,
            offered: args.rate,
            batch: args.batch,
            planned,
            failures: std::mem::take(&mut drive.sample_failures),
            drive,
            sample_planned: sample_at.len() as u64,
            sample_wanted,
            tree,
            limit: Limit::default(),
            same_machine: false,
        }
    }

    fn unit(&self) -> &'static str {
        if self.mode == "proofs" {
            "proof"
        } else {
            "event"
        }
    }

    /// [`tile_file_note`] for this run, from the node's usage before the load.
    fn tile_file_behind(&self) -> Option<((u64, u64), &'static str)> {
        let (before, _) = self.drive.node.as_ref()?;
        tile_file_note(self.mode, before.tile_file)
    }

    /// The node's CPU over the load, if it reported its usage before and after.
    fn node_cpu(&self) -> Option<NodeCpu> {
        let (a, b) = self.drive.node.as_ref()?;
        let all = (b.cpu_secs - a.cpu_secs).max(0.0);
        let background =
            (b.rocksdb_background_cpu_secs - a.rocksdb_background_cpu_secs).clamp(0.0, all);
        Some(NodeCpu {
            serving_secs: all - background,
            background_secs: background,
        })
    }

    /// The node's group commits during the load, if it reported them before and
    /// after (none for proofs, which commit nothing).
    fn commits(&self) -> Option<Commits> {
        let (a, b) = self.drive.node.as_ref()?;
        Commits::between(a, b)
    }

    /// Where the node says a request of this run spent its time, stage by stage,
    /// and how much of the bench's mean latency lay outside those stages (appends
    /// only; None from a node that does not time them). Only for a run without
    /// errors: the node times only the requests it answered with receipts, and the
    /// bench's mean latency would hold the others too.
    fn stages(&self) -> Option<StageReport> {
        if !self.drive.errors.is_empty() {
            return None;
        }
        let (a, b) = self.drive.node.as_ref()?;
        let (a, b) = match self.mode {
            "single" => (a.single_stages.as_ref()?, b.single_stages.as_ref()?),
            "batch" => (a.batch_stages.as_ref()?, b.batch_stages.as_ref()?),
            _ => return None,
        };
        let stages = StageFigures::between(a, b, self.drive.requests)?;
        let mean = self.mean_latency()?;
        let inside: f64 = stages.iter().map(|f| f.mean_secs).sum();
        Some(StageReport {
            outside_secs: mean.as_secs_f64() - inside,
            stages,
            mean,
        })
    }

    /// The mean latency of the requests, as this bench saw them.
    fn mean_latency(&self) -> Option<Duration> {
        let v = &self.drive.latencies;
        (!v.is_empty()).then(|| v.iter().sum::<Duration>() / v.len() as u32)
    }

    /// Microseconds of `secs` per event or proof answered.
    fn per_unit_us(&self, secs: f64) -> Option<f64> {
        (self.drive.ok > 0).then(|| secs / self.drive.ok as f64 * 1e6)
    }

    /// The node's serving CPU per event or proof in units of the core time one
    /// batch-verified signature takes on this machine (cores ÷ the batch limit):
    /// a cost that does not move with the machine's speed as rates do. Only for a
    /// node on this machine, whose cores the limit measured.
    fn cost_in_verifies(&self) -> Option<f64> {
        let l = &self.limit;
        if !self.same_machine || l.batch.per_sec <= 0.0 {
            return None;
        }
        let per_unit = self.per_unit_us(self.node_cpu()?.serving_secs)? / 1e6;
        Some(per_unit / (l.cores.max(1) as f64 / l.batch.per_sec))
    }

    /// On a fixed schedule, whether the node fell behind it: more than 1% of the
    /// requests went out over [`BEHIND_MS`] late, waiting for a free connection (or
    /// for this bench's thread to run; the loop's own lateness is under its 1 ms
    /// wake-ups).
    fn behind_schedule(&self) -> bool {
        self.offered.is_some() && fell_behind(&self.drive.late)
    }

    fn rate(&self) -> f64 {
        self.drive.ok as f64 / self.drive.seconds.max(1e-9)
    }

    fn sample_latencies(&self) -> Vec<Duration> {
        let mut v: Vec<Duration> = self
            .drive
            .samples
            .iter()
            .map(|s| s.verified_after)
            .collect();
        v.sort_unstable();
        v
    }

    fn to_json(&self) -> Value {
        let d = &self.drive;
        let lat = |v: &[Duration]| {
            json!({"p50": ms(pct(v, 0.50)), "p90": ms(pct(v, 0.90)), "p99": ms(pct(v, 0.99)),
                   "max": ms(v.last().copied().unwrap_or_default())})
        };
        let rate = self.rate();
        let unit = if self.mode == "proofs" {
            "proofs"
        } else {
            "events"
        };
        let mut out = json!({
            "mode": self.mode,
            "proofs_by": self.proofs_by,
            "node": self.node,
            "connections": self.connections,
            "pipeline": self.pipeline,
            "machine": {
                "cores": self.limit.cores,
                "cpu": self.limit.cpu,
                "steal_share_during_limit": self.limit.batch.steal.map(thousandths),
                "others_share_during_limit": self.limit.batch.others.map(thousandths),
                "steal_share_during_load": d.steal.map(thousandths),
                "iowait_share_during_load": d.iowait.map(thousandths),
            },
            "limit": {
                "seconds": self.limit.seconds,
                "ed25519_verify_strict_per_sec": self.limit.strict_per_sec.round(),
                "ed25519_verify_strict_per_sec_per_core": (self.limit.strict_per_sec / self.limit.cores.max(1) as f64).round(),
                "ed25519_verify_batch_per_sec": self.limit.batch.per_sec.round(),
                "waited_for_idle_node_secs": (self.limit.batch.settled.seconds * 10.0).round() / 10.0,
                "node_background_jobs_left": self.limit.batch.settled.jobs_left,
                "node_seen_idle": self.limit.batch.settled.idle,
                "after_load": self.limit.after.as_ref().map(|a| json!({
                    "ed25519_verify_batch_per_sec": a.per_sec.round(),
                    "waited_for_idle_node_secs": (a.settled.seconds * 10.0).round() / 10.0,
                    "node_seen_idle": a.settled.idle,
                    "steal_share": a.steal.map(thousandths),
                    "others_share": a.others.map(thousandths),
                })),
                "drift": self.limit.drift().map(thousandths),
            },
            unit: {
                "planned": self.planned,
                "sent": d.sent,
                "ok": d.ok,
                "failed": d.errors.values().sum::<u64>(),
                "seconds": (d.seconds * 1e3).round() / 1e3,
                "per_sec": rate.round(),
                "ratio_to_ed25519_verify_strict": ratio(rate, self.limit.strict_per_sec),
                "ratio_to_ed25519_verify_batch": ratio(rate, self.limit.batch.per_sec),
                "ratio_to_ed25519_verify_batch_after_load": self.limit.after.as_ref().and_then(|a| ratio(rate, a.per_sec)),
            },
            "requests": {
                "count": d.requests,
                "per_sec": (d.requests as f64 / d.seconds.max(1e-9)).round(),
                "offered_per_sec": self.offered,
                "behind_schedule": self.behind_schedule(),
                "sent_late_ms": self.offered.map(|_| lat(&d.late)),
                "latency_ms": lat(&d.latencies),
                "mean_latency_ms": self.mean_latency().map(ms),
            },
            "errors": d.errors,
            "sample": {
                "planned": self.sample_planned,
                "wanted": self.sample_wanted,
                "verified": d.samples.len(),
                "failures": self.failures,
                "submit_to_verified_ms": lat(&self.sample_latencies()),
            },
            "client_cpu_seconds": d.client_cpu_secs.map(|s| (s * 100.0).round() / 100.0),
        });
        if let Some(c) = self.commits() {
            out["node_commits"] = json!({
                "groups": c.groups,
                "p50_ms_at_most": bound_ms(c.p50_at_most_secs),
                "p99_ms_at_most": bound_ms(c.p99_at_most_secs),
                "max_ms_at_most": bound_ms(c.max_at_most_secs),
                "max_ms_over": bound_ms(c.max_over_secs),
            });
        }
        if let (Some(cpu), Some((_, after))) = (self.node_cpu(), &d.node) {
            let unit = self.unit();
            let round = |x: Option<f64>, k: f64| x.map(|v| (v * k).round() / k);
            out["node_usage"] = json!({
                "serving_cpu_seconds": round(Some(cpu.serving_secs), 100.0),
                "rocksdb_background_cpu_seconds": round(Some(cpu.background_secs), 100.0),
                format!("serving_cpu_us_per_{unit}"): round(self.per_unit_us(cpu.serving_secs), 10.0),
                format!("rocksdb_background_cpu_us_per_{unit}"): round(self.per_unit_us(cpu.background_secs), 10.0),
                "serving_cpu_in_batch_verifies": round(self.cost_in_verifies(), 100.0),
                "resident_bytes_after": after.resident_bytes as u64,
                "peak_resident_bytes": after.peak_resident_bytes as u64,
                "direct_io": after.direct_io,
            });
        }
        if let Some(((have, full), _)) = self.tile_file_behind() {
            out["node_usage"]["tile_file_behind_at_start"] =
                json!({"tiles": have, "full_tiles": full});
        }
        if let Some(r) = self.stages() {
            let mut m: serde_json::Map<String, Value> = r
                .stages
                .iter()
                .map(|f| {
                    let figures = json!({
                        "mean_ms": (f.mean_secs * 1e6).round() / 1e3,
                        "p99_ms_at_most": bound_ms(f.p99_at_most_secs),
                    });
                    (f.name.clone(), figures)
                })
                .collect();
            m.insert(
                "outside_mean_ms".into(),
                json!((r.outside_secs * 1e6).round() / 1e3),
            );
            out["node_stages"] = Value::Object(m);
        }
        if self.mode == "batch" {
            out["batch"] = json!(self.batch);
        }
        if let Some((a, b)) = self.tree {
            out["tree_size"] = json!({"before": a, "after": b});
        }
        out
    }

    fn print(&self, json: bool) -> Result<()> {
        if json {
            let text = serde_json::to_string_pretty(&self.to_json()).unwrap_or_default();
            return crate::print_out(text + "\n");
        }
        let d = &self.drive;
        let l = &self.limit;
        let rate = self.rate();
        let vs = |x: f64| match (ratio(x, l.strict_per_sec), ratio(x, l.batch.per_sec)) {
            (Some(a), Some(b)) => format!(" = {a:.2}× strict verify, {b:.2}× batch verify"),
            _ => String::new(),
        };
        let mut s = String::new();
        let what = match self.mode {
            "single" => format!("{} single events (POST /v1/events)", self.planned),
            "batch" => format!(
                "{} events in batches of {} (POST /v1/events:batch)",
                self.planned, self.batch
            ),
            _ => format!(
                "{} inclusion proofs by {} (GET /v1/proofs/inclusion)",
                self.planned,
                self.proofs_by.unwrap_or("index").replace('_', " ")
            ),
        };
        let mut how = if self.pipeline > 1 {
            format!(" (pipelined, {} in flight on each)", self.pipeline)
        } else {
            String::new()
        };
        if let Some(r) = self.offered {
            how += &format!(", {} requests/s offered on a fixed schedule", thousands(r));
        }
        s += &format!(
            "custody bench: {what}, {} connections{how}, node {}\n",
            self.connections, self.node
        );
        s += &format!(
            "machine: {} cores{}\n",
            l.cores,
            l.cpu
                .as_deref()
                .map(|c| format!(", {c}"))
                .unwrap_or_default()
        );
        if l.strict_per_sec > 0.0 {
            s += &format!(
                "limit: Ed25519 verify_strict {}/s on {} cores ({}/s per core); verify_batch {}/s{}{}\n",
                thousands(l.strict_per_sec),
                l.cores,
                thousands(l.strict_per_sec / l.cores.max(1) as f64),
                thousands(l.batch.per_sec),
                l.batch.settled.note(),
                others_note(l.batch.others)
            );
        } else {
            s += "limit: not measured (--limit-secs 0)\n";
        }
        let unit = if self.mode == "proofs" {
            "proofs"
        } else {
            "events"
        };
        s += &format!(
            "\n{unit}: {} ok of {} sent ({} planned) in {:.2} s\nthroughput: {} {unit}/s{}\n",
            d.ok,
            d.sent,
            self.planned,
            d.seconds,
            thousands(rate),
            vs(rate)
        );
        if let (Some(after), Some(drift)) = (&l.after, l.drift()) {
            s += &format!(
                "limit after the load: verify_batch {}/s ({:+.0}% from before{}){}{}\n",
                thousands(after.per_sec),
                drift * 100.0,
                ratio(rate, after.per_sec)
                    .map(|r| format!("; throughput {r:.2}× of it"))
                    .unwrap_or_default(),
                others_note(after.others),
                if drift.abs() > DRIFT_WARNING {
                    ": the machine changed speed during the run, so its ratios lie \
                     between the two readings"
                } else {
                    ""
                }
            );
        }
        if self.mode == "batch" {
            let rps = d.requests as f64 / d.seconds.max(1e-9);
            s += &format!("requests: {} ({} req/s)\n", d.requests, thousands(rps));
        }
        if let Some(r) = self.offered {
            // One event or proof per request on a schedule: `ok` counts the requests
            // answered 2xx with the receipt or proof asked for (failures are under
            // errors; a sampled one that then fails to verify is reported apart).
            let v = &d.late;
            s += &format!(
                "schedule: {} requests/s answered without error, of {} offered; sent after \
                 due: p50 {}  p99 {}  max {}{}\n",
                thousands(self.rate()),
                thousands(r),
                human(pct(v, 0.5)),
                human(pct(v, 0.99)),
                human(v.last().copied().unwrap_or_default()),
                if self.behind_schedule() {
                    format!(
                        "\n  the node fell behind: over 1% of the requests went out more than \
                         {BEHIND_MS} ms late, waiting for a free connection (or for this \
                         bench's thread to run), and that wait is in their latency (it \
                         counts from when each was due); lower --rate, add --connections, \
                         or drop --rate to find the most the node takes"
                    )
                } else {
                    String::new()
                }
            );
        }
        let v = &d.latencies;
        s += &format!(
            "latency per request{}: p50 {}  p90 {}  p99 {}  max {}\n",
            if self.offered.is_some() {
                " (from when it was due)"
            } else {
                ""
            },
            human(pct(v, 0.5)),
            human(pct(v, 0.9)),
            human(pct(v, 0.99)),
            human(v.last().copied().unwrap_or_default())
        );
        let sv = self.sample_latencies();
        let check = if self.mode == "proofs" {
            "proof verified against the signed checkpoint, entry leaf hash matched"
        } else {
            "checkpoint signature and inclusion proof verified, entry fetched and matched"
        };
        s += &format!(
            "sample: {} of {} verified ({check})\n",
            d.samples.len(),
            self.sample_wanted
        );
        if !sv.is_empty() {
            s += &format!(
                "submit → verified {}: p50 {}  p90 {}  p99 {}  max {}\n",
                if self.mode == "proofs" {
                    "proof"
                } else {
                    "receipt"
                },
                human(pct(&sv, 0.5)),
                human(pct(&sv, 0.9)),
                human(pct(&sv, 0.99)),
                human(sv.last().copied().unwrap_or_default())
            );
        }
        if let Some((a, b)) = self.tree {
            s += &format!("tree: {a} → {b} entries, consistency proof verified\n");
        }
        if let Some(cpu) = d.client_cpu_secs {
            s += &format!(
                "bench's own CPU: {cpu:.1} s over {:.1} s ({:.0}% of {} cores, taken from the node if it shares them)\n",
                d.seconds,
                cpu / d.seconds.max(1e-9) / l.cores.max(1) as f64 * 100.0,
                l.cores
            );
        }
        if let Some(load) = d.steal {
            let during_limit = l
                .batch
                .steal
                .map(|x| format!(", {:.0}% while the limit was measured", x * 100.0))
                .unwrap_or_default();
            s += &format!(
                "CPU taken by the hypervisor (steal): {:.0}% of the machine during the load{during_limit}{}\n",
                load * 100.0,
                if load.max(l.batch.steal.unwrap_or(0.0)) >= 0.05 {
                    ": other guests had these cores, so the rates read low"
                } else {
                    ""
                }
            );
        }
        if let Some(io) = d.iowait {
            s += &format!(
                "I/O wait: {:.1}% of this machine during the load{}\n",
                io * 100.0,
                iowait_note(self.mode, self.same_machine, io)
            );
        }
        if let Some(c) = self.commits() {
            s += &format!(
                "node commits (judge, synced write, sign): {} groups, p50 {}  p99 {}  max {}{}\n",
                thousands(c.groups as f64),
                c.bound_text(c.p50_at_most_secs),
                c.bound_text(c.p99_at_most_secs),
                c.bound_text(c.max_at_most_secs),
                if c.max_over_secs >= SLOW_COMMIT_SECS {
                    format!(
                        ": a commit took over {}, and the requests queued behind it waited up to \
                         as long (a commit includes the store's de-duplication reads, its write \
                         and the write-ahead log's sync: look for I/O wait above)",
                        human(Duration::from_secs_f64(c.max_over_secs))
                    )
                } else {
                    String::new()
                }
            );
        }
        if let Some(r) = self.stages() {
            let each: Vec<String> = r
                .stages
                .iter()
                .map(|f| {
                    let b = f.p99_at_most_secs;
                    let p99 = match b.is_finite() {
                        true => format!(" (p99 ≤ {})", human(Duration::from_secs_f64(b))),
                        false => " (p99 over a second)".into(),
                    };
                    format!(
                        "{} {}{p99}",
                        f.name,
                        human(Duration::from_secs_f64(f.mean_secs))
                    )
                })
                .collect();
            s += &format!(
                "node time per request, mean by stage (from its /metrics): {}; of the {} a \
                 request took on average, {} was outside them (HTTP and the kernel on both \
                 sides, this bench)\n",
                each.join(" · "),
                human(r.mean),
                human(Duration::from_secs_f64(r.outside_secs.max(0.0))),
            );
        }
        if let (Some(cpu), Some((_, after))) = (self.node_cpu(), &d.node) {
            let unit = self.unit();
            let us = |secs| {
                self.per_unit_us(secs)
                    .map(|v| format!(" = {v:.0} µs per {unit}"))
                    .unwrap_or_default()
            };
            let cost = self
                .cost_in_verifies()
                .map(|x| format!(" ({x:.1}× the core time of one batch-verified signature here)"))
                .unwrap_or_default();
            s += &format!(
                "node CPU: {:.1} s serving{}{cost}; {:.1} s in RocksDB flushes and compactions{}\n",
                cpu.serving_secs,
                us(cpu.serving_secs),
                cpu.background_secs,
                us(cpu.background_secs),
            );
            s += &format!(
                "node memory: {:.0} MB resident after the load, at most {:.0} MB since it started\n",
                after.resident_bytes / 1e6,
                after.peak_resident_bytes / 1e6
            );
            if let Some(((have, full), note)) = self.tile_file_behind() {
                s += &format!(
                    "node tile file: {} of {} full tiles when the load began{note}\n",
                    thousands(have as f64),
                    thousands(full as f64)
                );
            }
            if after.direct_io == Some(false) {
                s += "node storage: flushes and compactions go through the page cache (its \
                      filesystem refused O_DIRECT, or its platform does not use it), so commits \
                      may wait behind their writeback\n";
            }
        }
        if d.errors.is_empty() {
            s += "errors: none\n";
        } else {
            s += "errors:\n";
            for (code, n) in &d.errors {
                s += &format!("  {code}: {n}\n");
            }
        }
        for f in &self.failures {
            s += &format!("VERIFICATION FAILED: {f}\n");
        }
        crate::print_out(s)
    }

    fn verdict(&self, allow_errors: bool) -> Result<()> {
        if !self.failures.is_empty() {
            bail!(
                "{} sampled checks failed: the node's answers do not verify",
                self.failures.len()
            );
        }
        if (self.drive.samples.len() as u64) < self.sample_wanted && self.drive.errors.is_empty() {
            bail!(
                "only {} of the {} sampled receipts or proofs sent were verified",
                self.drive.samples.len(),
                self.sample_wanted
            );
        }
        let errors: u64 = self.drive.errors.values().sum();
        if errors > 0 && !allow_errors {
            bail!("{errors} requests or events failed (pass --allow-errors to accept that)");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_spread_over_the_run_and_start_at_zero() {
        assert_eq!(sample_points(10, 5), vec![0, 2, 4, 6, 8]);
        assert_eq!(sample_points(3, 100), vec![0, 1, 2]);
        assert!(sample_points(10, 0).is_empty());
    }

    /// A run on a schedule fell behind when more than 1% of its requests went out
    /// over 10 ms late: 1 in 100 does not make it, 2 do, and exactly 10 ms is not
    /// over.
    #[test]
    fn a_run_falls_behind_past_one_percent_sent_late() {
        let late = |over: u64, by: u64| -> Vec<Duration> {
            let mut v: Vec<Duration> = (0..100 - over).map(|_| Duration::from_millis(1)).collect();
            v.extend((0..over).map(|_| Duration::from_millis(by)));
            v.sort_unstable();
            v
        };
        assert!(!fell_behind(&late(1, 500)));
        assert!(fell_behind(&late(2, 11)));
        assert!(!fell_behind(&late(5, BEHIND_MS)));
        assert!(!fell_behind(&[]));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(pct(&v, 0.5), Duration::from_millis(50));
        assert_eq!(pct(&v, 0.99), Duration::from_millis(99));
        assert_eq!(pct(&v, 1.0), Duration::from_millis(100));
        assert_eq!(pct(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn node_usage_is_read_from_the_exposition() {
        let text = "# HELP process_cpu_seconds_total x\n# TYPE process_cpu_seconds_total counter\n\
                    process_cpu_seconds_total 12.5\n\
                    custody_rocksdb_background_cpu_seconds_total 2.25\n\
                    process_resident_memory_bytes 1000\n\
                    process_resident_memory_bytes_other 7\n\
                    custody_process_peak_resident_bytes 3000\n\
                    custody_store_direct_io 1\n";
        assert_eq!(
            NodeUsage::parse(text),
            Some(NodeUsage {
                cpu_secs: 12.5,
                rocksdb_background_cpu_secs: 2.25,
                resident_bytes: 1000.0,
                peak_resident_bytes: 3000.0,
                commits: vec![],
                single_stages: None,
                batch_stages: None,
                direct_io: Some(true),
                tile_file: None,
            })
        );
        // An older node without them: no usage, not zeros.
        assert_eq!(NodeUsage::parse("custody_tree_size 5\n"), None);
    }

    /// An exposition's stage lines: batch appends' open series (3 requests, 0.5 s),
    /// and single appends' verify and sequencer series with `requests` requests,
    /// `verify` seconds in verify (all of them within 1 ms but `slow`, within 25 ms)
    /// and 2.5 s in sequencer.
    fn stages(requests: u64, verify: f64, slow: u64) -> String {
        let fast = requests - slow;
        let name = "custody_single_stage_seconds";
        let batch = "custody_batch_stage_seconds";
        format!(
            "# TYPE {batch} histogram\n\
             {batch}_bucket{{stage=\"open\",le=\"0.001\"}} 0\n\
             {batch}_bucket{{stage=\"open\",le=\"0.025\"}} 1\n\
             {batch}_bucket{{stage=\"open\",le=\"+Inf\"}} 3\n\
             {batch}_sum{{stage=\"open\"}} 0.5\n\
             {batch}_count{{stage=\"open\"}} 3\n\
             # TYPE {name} histogram\n\
             {name}_bucket{{stage=\"verify\",le=\"0.001\"}} {fast}\n\
             {name}_bucket{{stage=\"verify\",le=\"0.025\"}} {requests}\n\
             {name}_bucket{{stage=\"verify\",le=\"+Inf\"}} {requests}\n\
             {name}_sum{{stage=\"verify\"}} {verify}\n\
             {name}_count{{stage=\"verify\"}} {requests}\n\
             {name}_bucket{{stage=\"sequencer\",le=\"0.001\"}} 0\n\
             {name}_bucket{{stage=\"sequencer\",le=\"0.025\"}} {requests}\n\
             {name}_bucket{{stage=\"sequencer\",le=\"+Inf\"}} {requests}\n\
             {name}_sum{{stage=\"sequencer\"}} 2.5\n\
             {name}_count{{stage=\"sequencer\"}} {requests}\n"
        )
    }

    #[test]
    fn stage_figures_are_the_difference_between_two_readings() {
        let single = |text: &str| Stage::read(text, "custody_single_stage_seconds");
        let batch = |text: &str| Stage::read(text, "custody_batch_stage_seconds");
        let a = single(&stages(10, 1.0, 0)).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(
            (a[0].name.as_str(), a[0].requests, a[0].secs),
            ("verify", 10.0, 1.0)
        );
        assert_eq!(
            a[0].buckets,
            vec![(0.001, 10), (0.025, 10), (f64::INFINITY, 10)]
        );
        assert_eq!(
            batch(&stages(10, 1.0, 0)),
            Some(vec![Stage {
                name: "open".into(),
                secs: 0.5,
                requests: 3.0,
                buckets: vec![(0.001, 0), (0.025, 1), (f64::INFINITY, 3)]
            }])
        );
        // 100 more requests, 3 s more in verify: 30 ms each on average, 1 of the
        // 100 over 1 ms, so the 99th percentile is within 1 ms; with 2 slow, not.
        let b = single(&stages(110, 4.0, 1)).unwrap();
        let f = StageFigures::between(&a, &b, 100).unwrap();
        assert_eq!(f[0].name, "verify");
        assert!((f[0].mean_secs - 0.03).abs() < 1e-12, "{f:?}");
        assert_eq!(f[0].p99_at_most_secs, 0.001);
        assert_eq!(f[1].mean_secs, 0.0);
        assert_eq!(f[1].p99_at_most_secs, 0.025);
        let c = single(&stages(110, 4.0, 2)).unwrap();
        assert_eq!(
            StageFigures::between(&a, &c, 100).unwrap()[0].p99_at_most_secs,
            0.025
        );
        // The node timed other requests too (another client, or a restart that
        // served more than before), or none: no figures rather than wrong ones.
        assert_eq!(StageFigures::between(&a, &b, 99), None);
        assert_eq!(StageFigures::between(&a, &b, 101), None);
        assert_eq!(StageFigures::between(&a, &a, 0), None);
        let restarted = single(&stages(5, 0.5, 0)).unwrap();
        assert_eq!(StageFigures::between(&a, &restarted, 100), None);
        // Stages that differ between the readings, or a sum that fell.
        let mut renamed = b.clone();
        renamed[0].name = "check".into();
        assert_eq!(StageFigures::between(&a, &renamed, 100), None);
        let mut reordered = b.clone();
        reordered.swap(0, 1);
        assert_eq!(StageFigures::between(&a, &reordered, 100), None);
        assert_eq!(StageFigures::between(&a, &b[..1], 100), None);
        let mut fell = b.clone();
        fell[0].secs = 0.5;
        assert_eq!(StageFigures::between(&a, &fell, 100), None);
        // A node that does not time stages.
        assert_eq!(single("custody_tree_size 5\n"), None);
        assert_eq!(batch("custody_tree_size 5\n"), None);
    }

    /// A node's exposition with the usage lines and a commit histogram of
    /// cumulative counts at 1 ms, 2 ms, 25 ms and +Inf.
    fn exposition(commits: [u64; 4]) -> NodeUsage {
        let [a, b, c, d] = commits;
        let text = format!(
            "process_cpu_seconds_total 1\n\
             custody_rocksdb_background_cpu_seconds_total 0\n\
             process_resident_memory_bytes 1\n\
             custody_process_peak_resident_bytes 1\n\
             # TYPE custody_commit_seconds histogram\n\
             custody_commit_seconds_bucket{{le=\"0.001\"}} {a}\n\
             custody_commit_seconds_bucket{{le=\"0.002\"}} {b}\n\
             custody_commit_seconds_bucket{{le=\"0.025\"}} {c}\n\
             custody_commit_seconds_bucket{{le=\"+Inf\"}} {d}\n\
             custody_commit_seconds_sum 0.5\n\
             custody_commit_seconds_count {d}\n\
             custody_group_size_bucket{{le=\"1\"}} 9\n"
        );
        NodeUsage::parse(&text).unwrap()
    }

    #[test]
    fn commit_times_are_read_from_the_histogram_difference() {
        let before = exposition([10, 20, 20, 20]);
        assert_eq!(
            before.commits,
            vec![(0.001, 10), (0.002, 20), (0.025, 20), (f64::INFINITY, 20)]
        );
        // During the run: 40 commits ≤ 1 ms, 58 in (1, 2] ms, 1 in (2, 25], 1 over.
        let after = exposition([50, 118, 119, 120]);
        let c = Commits::between(&before, &after).unwrap();
        assert_eq!(c.groups, 100);
        assert_eq!(c.p50_at_most_secs, 0.002);
        assert_eq!(c.p99_at_most_secs, 0.025);
        assert_eq!(c.max_at_most_secs, f64::INFINITY);
        assert_eq!(
            c.max_over_secs, 0.025,
            "the slowest was over the last bound"
        );
        assert_eq!(bound_ms(c.p99_at_most_secs), Some(25.0));
        assert_eq!(bound_ms(c.max_at_most_secs), None);
        assert_eq!(c.bound_text(c.p50_at_most_secs), "≤ 2.0 ms");
        assert_eq!(c.bound_text(c.max_at_most_secs), "> 25.0 ms");
        // 5 of 10 within 1 ms, all within 2 ms: the slowest is over 1 ms.
        let quick = Commits::between(&before, &exposition([15, 30, 30, 30])).unwrap();
        assert_eq!(quick.groups, 10);
        assert_eq!(
            (quick.p50_at_most_secs, quick.p99_at_most_secs),
            (0.001, 0.002)
        );
        assert_eq!(
            (quick.max_at_most_secs, quick.max_over_secs),
            (0.002, 0.001)
        );
        // 3 of 7 within 1 ms: the median (4th) is not, which a rank without
        // rounding up (3.5 → 3) would miss.
        let odd = Commits::between(&before, &exposition([13, 27, 27, 27])).unwrap();
        assert_eq!((odd.groups, odd.p50_at_most_secs), (7, 0.002));
        // All within 1 ms: nothing to call out.
        let first = Commits::between(&before, &exposition([12, 22, 22, 22])).unwrap();
        assert_eq!((first.max_at_most_secs, first.max_over_secs), (0.001, 0.0));
        // The node counts its commits (+Inf) before its buckets: one that lands in
        // between leaves +Inf behind, which must not read as a commit over 25 ms.
        let torn = exposition([50, 118, 119, 118]);
        let c = Commits::between(&before, &torn).unwrap();
        assert_eq!((c.groups, c.max_at_most_secs), (99, 0.025));
        // The same in the reading before the load.
        let torn_before = exposition([10, 20, 20, 19]);
        let c = Commits::between(&torn_before, &exposition([50, 118, 119, 119])).unwrap();
        assert_eq!((c.groups, c.max_at_most_secs), (99, 0.025));
        // A node restarted between the readings: its counts started again, and
        // some are already above the earlier reading's.
        assert_eq!(
            Commits::between(&after, &exposition([60, 60, 60, 60])),
            None
        );
        // Nothing committed (a proofs run), or no histogram: no figures.
        assert_eq!(Commits::between(&before, &before), None);
        let mut older = before.clone();
        older.commits.clear();
        assert_eq!(Commits::between(&older, &after), None);
    }

    #[test]
    fn drift_is_the_change_between_the_two_limit_readings() {
        let mut l = Limit {
            batch: BatchReading {
                per_sec: 100_000.0,
                ..BatchReading::default()
            },
            ..Limit::default()
        };
        assert_eq!(l.drift(), None, "no second reading, no drift");
        l.after = Some(BatchReading {
            per_sec: 80_000.0,
            ..BatchReading::default()
        });
        let d = l.drift().unwrap();
        assert!((d + 0.2).abs() < 1e-12, "{d}");
        assert!(d.abs() > DRIFT_WARNING);
        l.batch.per_sec = 0.0;
        assert_eq!(l.drift(), None, "a limit not measured has no drift");
    }

    #[test]
    fn steal_is_the_share_of_cpu_time_between_two_readings() {
        let a = CpuTimes::parse("cpu  100 0 50 800 10 0 0 40 0 0\ncpu0 1 2 3\n").unwrap();
        assert_eq!((a.total, a.steal, a.busy), (1000, 40, 150));
        let b = CpuTimes::parse("cpu  200 0 60 830 10 0 0 100 7 0\n").unwrap();
        assert_eq!(CpuTimes::steal_between(Some(a), Some(b)), Some(0.3));
        assert_eq!(CpuTimes::steal_between(Some(a), Some(a)), None);
        // iowait is the 5th field: 10 → 50, over 200 ticks.
        let c = CpuTimes::parse("cpu  200 0 60 790 50 0 0 100 7 0\n").unwrap();
        assert_eq!(CpuTimes::iowait_between(Some(a), Some(c)), Some(0.2));
        assert!(CpuTimes::parse("intr 1 2 3\n").is_none());
    }

    /// The I/O wait's note: nothing below 5%, the cold-tile reading for proofs,
    /// storage holding up appends, and no conclusion for a node elsewhere.
    #[test]
    fn a_tile_file_behind_is_named_for_proofs_only() {
        let text = "process_cpu_seconds_total 1\n\
                    custody_rocksdb_background_cpu_seconds_total 0\n\
                    process_resident_memory_bytes 1000\n\
                    custody_process_peak_resident_bytes 3000\n\
                    custody_tile_file_tiles 40\n\
                    custody_tiles_full 100\n";
        let behind = NodeUsage::parse(text).unwrap().tile_file;
        assert_eq!(behind, Some((40, 100)));
        let (tiles, note) = tile_file_note("proofs", behind).unwrap();
        assert_eq!(tiles, (40, 100));
        assert!(
            note.contains("read RocksDB") && note.contains("slower path"),
            "{note}"
        );
        assert_eq!(tile_file_note("single", behind), None);
        assert_eq!(tile_file_note("proofs", Some((100, 100))), None);
        assert_eq!(tile_file_note("proofs", None), None);
    }

    #[test]
    fn iowait_note_names_the_cold_path_for_proofs_only() {
        assert_eq!(iowait_note("proofs", true, 0.01), "");
        assert!(iowait_note("proofs", true, 0.23).contains("tiles from storage"));
        assert!(iowait_note("proofs", true, 0.23).contains("a run right after this one"));
        let append = iowait_note("single", true, 0.23);
        assert!(append.contains("syncs or reads") && !append.contains("tiles"));
        assert_eq!(iowait_note("batch", true, 0.049), "");
        assert!(iowait_note("proofs", false, 0.5).contains("not the node's"));
    }

    #[test]
    fn others_share_leaves_out_this_process() {
        let a = CpuTimes::parse("cpu  100 0 50 800 10 0 0 40 0 0\n").unwrap();
        // 200 more ticks, 150 of them busy (user 120, system 20, softirq 10).
        let b = CpuTimes::parse("cpu  220 0 70 850 10 0 10 40 0 0\n").unwrap();
        let share = |own| CpuTimes::others_between(Some(a), Some(b), own).unwrap();
        assert!((share(100.0) - 0.25).abs() < 1e-12);
        assert_eq!(share(150.0), 0.0);
        // Ticks are sampled separately from /proc/self/stat: never below zero.
        assert_eq!(share(170.0), 0.0);
        assert_eq!(CpuTimes::others_between(Some(a), Some(a), 0.0), None);
        assert_eq!(others_note(Some(0.04)), "");
        assert!(others_note(Some(0.3)).contains("30%"));
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
    }
}
