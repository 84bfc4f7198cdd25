//! Prometheus text exposition (format 0.0.4) of the sequencer's counters plus what
//! only the node sees: refusals by code and HTTP requests by route and status.

use ledger::sequencer::{latency_bucket, Stats, GROUP_BOUNDS, LATENCY_BOUNDS_MS};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the HTTP latency histogram.
const HTTP_BOUNDS_S: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// Counters owned by the node.
#[derive(Debug, Default)]
pub struct Metrics {
    next_request: AtomicU64,
    refused: Mutex<BTreeMap<&'static str, u64>>,
    /// (method, route pattern, status) → count.
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// Non-cumulative counts per bound of [`HTTP_BOUNDS_S`], plus one overflow slot.
    latency: Mutex<([u64; HTTP_BOUNDS_S.len() + 1], f64)>,
    /// Batch appends answered, and their time in each of [`BATCH_STAGES`].
    batch_stages: StageTimes<{ BATCH_STAGES.len() }>,
    /// Single appends answered with a receipt, and their time in [`SINGLE_STAGES`].
    single_stages: StageTimes<{ SINGLE_STAGES.len() }>,
}

/// The stages of `POST /v1/events:batch` answered (refused requests are not timed),
/// in order: reading the body, parsing it, opening the envelopes (a blocking thread,
/// signature checks on all cores), looking the events up in the store, waiting for
/// the sequencer (queue, judging, commit, receipts), and writing the answer's bytes.
pub const BATCH_STAGES: [&str; 6] = ["body", "parse", "open", "lookup", "sequencer", "respond"];

/// The stages of `POST /v1/events` answered with a receipt (refused appends are not
/// timed), in order: reading and parsing the body; the verifier threads (the queue
/// to them, the signature check batched with other requests', the de-duplication
/// lookup) until the event is handed to the sequencer; the sequencer (its queue,
/// judging, the group's synced commit, the receipt) until the answer is sent;
/// resuming the request's task on a runtime thread; building the answer. What a
/// request waits outside them (the kernel, hyper before the handler runs and while
/// it writes the answer, the client) is its latency seen by the client less their
/// sum.
pub const SINGLE_STAGES: [&str; 5] = ["body", "verify", "sequencer", "resume", "respond"];

/// The time requests answered spent in each of `N` stages: summed, and counted in
/// the buckets of [`LATENCY_BOUNDS_MS`]; exposed as one histogram with a series per
/// stage, whose `_count` is the requests answered.
#[derive(Debug)]
struct StageTimes<const N: usize> {
    /// Per stage, nanoseconds summed (the short stages take a few microseconds).
    nanos: [AtomicU64; N],
    /// Per stage, requests per bucket (not cumulative); the last slot counts those
    /// above every bound.
    buckets: [[AtomicU64; LATENCY_BOUNDS_MS.len() + 1]; N],
}

impl<const N: usize> Default for StageTimes<N> {
    fn default() -> Self {
        StageTimes {
            nanos: std::array::from_fn(|_| AtomicU64::new(0)),
            buckets: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }
}

impl<const N: usize> StageTimes<N> {
    fn add(&self, took: [Duration; N]) {
        for ((sum, buckets), t) in self.nanos.iter().zip(&self.buckets).zip(took) {
            sum.fetch_add(u64::try_from(t.as_nanos()).unwrap_or(u64::MAX), Relaxed);
            buckets[latency_bucket(t)].fetch_add(1, Relaxed);
        }
    }

    /// As one histogram `name` with a series per stage (label `stage`).
    fn render(&self, out: &mut String, name: &str, stages: &[&str; N], help: &str) {
        header(out, name, help, "histogram");
        let bounds = latency_bounds();
        for ((stage, sum), buckets) in stages.iter().zip(&self.nanos).zip(&self.buckets) {
            let counts: Vec<u64> = buckets.iter().map(|b| b.load(Relaxed)).collect();
            series(
                out,
                name,
                &format!("stage=\"{stage}\""),
                &bounds,
                &counts[..bounds.len()],
                counts.iter().sum(),
                &fmt_f64(sum.load(Relaxed) as f64 / 1e9),
            );
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a counter lock cannot leave a counter half-written.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    /// A fresh request number (1, 2, …) for this process.
    pub fn next_request_id(&self) -> u64 {
        self.next_request.fetch_add(1, Relaxed) + 1
    }

    /// Counts `n` refused events under their problem code.
    pub fn refused(&self, code: &'static str, n: u64) {
        *lock(&self.refused).entry(code).or_default() += n;
    }

    /// Events refused so far, whatever their code.
    pub fn refused_total(&self) -> u64 {
        lock(&self.refused).values().sum()
    }

    pub fn request(&self, method: &str, route: &str, status: u16, took: Duration) {
        *lock(&self.requests)
            .entry((method.to_owned(), route.to_owned(), status))
            .or_default() += 1;
        let s = took.as_secs_f64();
        let mut l = lock(&self.latency);
        let slot = HTTP_BOUNDS_S
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(HTTP_BOUNDS_S.len());
        l.0[slot] += 1;
        l.1 += s;
    }

    /// Adds one answered batch request's time in each of [`BATCH_STAGES`].
    pub fn batch_stages(&self, took: [Duration; BATCH_STAGES.len()]) {
        self.batch_stages.add(took);
    }

    /// Adds one receipted single append's time in each of [`SINGLE_STAGES`].
    pub fn single_stages(&self, took: [Duration; SINGLE_STAGES.len()]) {
        self.single_stages.add(took);
    }

    /// The whole exposition.
    /// `inflight`: request-body bytes charged now, and the budget (`--max-inflight-bytes`).
    /// `tile_file`: full tiles the tile file holds, and full tiles in all.
    pub fn render(
        &self,
        stats: &Stats,
        tree_size: u64,
        queue_capacity: usize,
        inflight: (u64, u64),
        (memory, background_jobs, direct_io): (ledger::store::StoreMemory, u64, bool),
        tile_file: (u64, u64),
    ) -> String {
        let mut out = String::with_capacity(4096);
        let groups = stats.groups.load(Relaxed);
        let appended = stats.appended.load(Relaxed);
        gauge(
            &mut out,
            "custody_tree_size",
            "Entries in the log (size of the latest signed checkpoint).",
            tree_size,
        );
        gauge(
            &mut out,
            "custody_queue_capacity",
            "Append requests the sequencer queue holds before answering 503.",
            queue_capacity as u64,
        );
        gauge(
            &mut out,
            "custody_inflight_body_bytes",
            "Request-body bytes charged to requests in flight (appends 4x their body).",
            inflight.0,
        );
        gauge(
            &mut out,
            "custody_inflight_body_bytes_limit",
            "--max-inflight-bytes: beyond it requests are answered 503 before their body is read.",
            inflight.1,
        );
        for (name, help, v) in [
            (
                "custody_store_block_cache_bytes",
                "RocksDB block cache in use (data, index and filter blocks).",
                memory.block_cache,
            ),
            (
                "custody_store_table_readers_bytes",
                "RocksDB table readers outside the block cache.",
                memory.table_readers,
            ),
            (
                "custody_store_memtables_bytes",
                "RocksDB memtables.",
                memory.memtables,
            ),
            (
                "custody_store_upper_levels_bytes",
                "Tree hashes kept in memory: levels 8 and above, and the partial tile's.",
                memory.upper_levels,
            ),
            (
                "custody_store_recent_ids_bytes",
                "Event ids kept in memory: those committed since the last table of the de-duplication index.",
                memory.recent_ids,
            ),
        ] {
            gauge(&mut out, name, help, v);
        }
        gauge(
            &mut out,
            "custody_store_background_jobs",
            "RocksDB flushes and compactions running, plus those due but not yet started, per family (0: idle).",
            background_jobs,
        );
        gauge(
            &mut out,
            "custody_store_direct_io",
            "1: RocksDB's flushes and compactions write with O_DIRECT; 0: through the page cache (the filesystem refused O_DIRECT, or the platform does not use it; see the node's start-up warning).",
            u64::from(direct_io),
        );
        gauge(
            &mut out,
            "custody_tile_file_tiles",
            "Full tiles the tile file holds: proofs read those from it, the others from RocksDB (behind custody_tiles_full after a start or a crash, until the tile thread has copied them).",
            tile_file.0,
        );
        gauge(
            &mut out,
            "custody_tiles_full",
            "Full tiles (256 entries each) in the log.",
            tile_file.1,
        );
        self.batch_stages.render(
            &mut out,
            "custody_batch_stage_seconds",
            &BATCH_STAGES,
            "Time batch appends answered spent in each stage: body (read), parse, open (signature checks), lookup (de-duplication index), sequencer (queue, judging, synced commit, receipts), respond.",
        );
        self.single_stages.render(
            &mut out,
            "custody_single_stage_seconds",
            &SINGLE_STAGES,
            "Time single appends answered with a receipt spent in each stage: body (read and parse), verify (queue, batched signature check, de-duplication lookup), sequencer (queue, judging, synced group commit, receipt), resume (until a runtime thread runs the request again), respond.",
        );
        counter(
            &mut out,
            "custody_appended_total",
            "Events appended to the log by this process.",
            appended,
        );
        counter(
            &mut out,
            "custody_duplicates_total",
            "Events submitted again and answered with their original receipt.",
            stats.duplicates.load(Relaxed),
        );
        counter(
            &mut out,
            "custody_sequencer_lookups_total",
            "Events the sequencer looked up in the de-duplication index on its own thread (their submitter's lookup was missing or too old); near 0 under steady load.",
            stats.sequencer_lookups.load(Relaxed),
        );
        counter(
            &mut out,
            "custody_groups_total",
            "Groups committed (one fsync and one checkpoint signature each).",
            groups,
        );

        header(
            &mut out,
            "custody_refused_total",
            "Events refused, by problem code.",
            "counter",
        );
        for (code, n) in lock(&self.refused).iter() {
            let _ = writeln!(out, "custody_refused_total{{code=\"{code}\"}} {n}");
        }

        let counts: Vec<u64> = stats
            .group_buckets
            .iter()
            .map(|b| b.load(Relaxed))
            .collect();
        let bounds: Vec<String> = GROUP_BOUNDS.iter().map(|b| b.to_string()).collect();
        histogram(
            &mut out,
            "custody_group_size",
            "Events per committed group.",
            &bounds,
            &counts,
            groups,
            &appended.to_string(),
        );

        let counts: Vec<u64> = stats
            .commit_buckets
            .iter()
            .map(|b| b.load(Relaxed))
            .collect();
        let bounds = latency_bounds();
        let sum = stats.commit_micros.load(Relaxed) as f64 / 1e6;
        histogram(
            &mut out,
            "custody_commit_seconds",
            "Time to judge, write (synced) and sign one group.",
            &bounds,
            &counts,
            groups,
            &fmt_f64(sum),
        );

        header(
            &mut out,
            "custody_http_requests_total",
            "HTTP requests answered, by method, route and status.",
            "counter",
        );
        for ((method, route, status), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "custody_http_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {n}",
                escape(method),
                escape(route)
            );
        }

        let (slots, sum) = *lock(&self.latency);
        let total: u64 = slots.iter().sum();
        let bounds: Vec<String> = HTTP_BOUNDS_S.iter().map(|b| fmt_f64(*b)).collect();
        histogram(
            &mut out,
            "custody_http_request_seconds",
            "Time to answer an HTTP request.",
            &bounds,
            &slots[..HTTP_BOUNDS_S.len()],
            total,
            &fmt_f64(sum),
        );
        if let Some(u) = ProcessUsage::now() {
            u.write(&mut out);
        }
        out
    }
}

/// What Linux tells of this process (`/proc/self`): its CPU time, the share of it
/// RocksDB's background threads took, and its memory. `custody bench` reads it
/// before and after its load to report the node's CPU per event.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ProcessUsage {
    /// User + system CPU seconds of the whole process, exited threads included.
    pub cpu_seconds: f64,
    /// Of which RocksDB's flush and compaction threads (named `rocksdb:…`).
    pub rocksdb_background_cpu_seconds: f64,
    pub resident_bytes: u64,
    /// The most the process has been resident (VmHWM).
    pub peak_resident_bytes: u64,
}

/// `/proc` counts CPU time in USER_HZ ticks, 100 a second on every Linux ABI.
const TICKS_PER_SEC: f64 = 100.0;

impl ProcessUsage {
    /// `None` where there is no `/proc/self` (not Linux) or it reads unexpectedly.
    pub fn now() -> Option<ProcessUsage> {
        let (_, all) = stat_ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
        let mut background = 0;
        for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
            // A thread that ended since the listing has no stat left: skip it.
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            if let Some((name, ticks)) = stat_ticks(&stat) {
                if name.starts_with("rocksdb:") {
                    background += ticks;
                }
            }
        }
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let bytes = |key: &str| -> Option<u64> {
            let v = status.lines().find_map(|l| l.strip_prefix(key))?;
            let kib: u64 = v.trim().strip_suffix("kB")?.trim().parse().ok()?;
            Some(kib * 1024)
        };
        Some(ProcessUsage {
            cpu_seconds: all as f64 / TICKS_PER_SEC,
            rocksdb_background_cpu_seconds: background as f64 / TICKS_PER_SEC,
            resident_bytes: bytes("VmRSS:")?,
            peak_resident_bytes: bytes("VmHWM:")?,
        })
    }

    fn write(&self, out: &mut String) {
        header(
            out,
            "process_cpu_seconds_total",
            "User and system CPU time of the node, all threads.",
            "counter",
        );
        let _ = writeln!(
            out,
            "process_cpu_seconds_total {}",
            fmt_f64(self.cpu_seconds)
        );
        header(
            out,
            "custody_rocksdb_background_cpu_seconds_total",
            "Of process_cpu_seconds_total, what RocksDB's flush and compaction threads used.",
            "counter",
        );
        let _ = writeln!(
            out,
            "custody_rocksdb_background_cpu_seconds_total {}",
            fmt_f64(self.rocksdb_background_cpu_seconds)
        );
        gauge(
            out,
            "process_resident_memory_bytes",
            "Resident memory of the node (VmRSS).",
            self.resident_bytes,
        );
        gauge(
            out,
            "custody_process_peak_resident_bytes",
            "The most the node has been resident since it started (VmHWM).",
            self.peak_resident_bytes,
        );
    }
}

/// A thread's or process's name and CPU ticks (utime + stime) from its `stat`
/// line: `pid (name) state …`, where the name may hold spaces and parentheses, so
/// the fields are counted from the last `)`; utime and stime are fields 14 and 15.
fn stat_ticks(stat: &str) -> Option<(&str, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?;
    let fields: Vec<&str> = stat.get(close + 2..)?.split(' ').collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, v: u64) {
    header(out, name, help, "gauge");
    let _ = writeln!(out, "{name} {v}");
}

fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    header(out, name, help, "counter");
    let _ = writeln!(out, "{name} {v}");
}

/// Writes a histogram from non-cumulative per-bucket counts (observations above the
/// last bound only appear in `+Inf`, which is `total`).
fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    bounds: &[String],
    counts: &[u64],
    total: u64,
    sum: &str,
) {
    header(out, name, help, "histogram");
    series(out, name, "", bounds, counts, total, sum);
}

/// One series of a histogram whose header is written: its buckets, sum and count,
/// each with `labels` (`stage="verify"`, or none).
fn series(
    out: &mut String,
    name: &str,
    labels: &str,
    bounds: &[String],
    counts: &[u64],
    total: u64,
    sum: &str,
) {
    let (lead, own) = if labels.is_empty() {
        (String::new(), String::new())
    } else {
        (format!("{labels},"), format!("{{{labels}}}"))
    };
    let mut cumulative = 0;
    for (le, n) in bounds.iter().zip(counts) {
        cumulative += n;
        let _ = writeln!(out, "{name}_bucket{{{lead}le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_bucket{{{lead}le=\"+Inf\"}} {total}");
    let _ = writeln!(out, "{name}_sum{own} {sum}");
    let _ = writeln!(out, "{name}_count{own} {total}");
}

/// [`LATENCY_BOUNDS_MS`] in seconds, as the exposition writes them.
fn latency_bounds() -> Vec<String> {
    LATENCY_BOUNDS_MS
        .iter()
        .map(|ms| fmt_f64(ms / 1000.0))
        .collect()
}

fn fmt_f64(v: f64) -> String {
    // Prometheus accepts Go float syntax; Rust's shortest round-trip form is valid.
    format!("{v}")
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exposition of a log of 11 entries, with `jobs` background jobs.
    fn exposition(m: &Metrics, stats: &Stats, jobs: u64, direct_io: bool) -> String {
        m.render(
            stats,
            11,
            1024,
            (4096, 1 << 20),
            (Default::default(), jobs, direct_io),
            (3, 5),
        )
    }

    #[test]
    fn histograms_are_cumulative_and_end_in_inf() {
        let stats = Stats::default();
        stats.groups.store(3, Relaxed);
        stats.appended.store(10, Relaxed);
        stats.group_buckets[0].store(1, Relaxed);
        stats.group_buckets[2].store(2, Relaxed);
        let m = Metrics::default();
        m.refused("bad_signature", 1);
        m.request("GET", "/v1/log", 200, Duration::from_millis(2));
        let text = exposition(&m, &stats, 2, true);
        assert!(text.contains("custody_group_size_bucket{le=\"1\"} 1\n"));
        assert!(text.contains("custody_group_size_bucket{le=\"4\"} 1\n"));
        assert!(text.contains("custody_group_size_bucket{le=\"16\"} 3\n"));
        assert!(text.contains("custody_group_size_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("custody_group_size_sum 10\n"));
        assert!(text.contains("custody_refused_total{code=\"bad_signature\"} 1\n"));
        assert!(text.contains(
            "custody_http_requests_total{method=\"GET\",route=\"/v1/log\",status=\"200\"} 1\n"
        ));
        assert!(text.contains("custody_tree_size 11\n"));
        assert!(text.contains("custody_store_background_jobs 2\n"));
        assert!(text.contains("custody_store_direct_io 1\n"));
        assert!(text.contains("custody_tile_file_tiles 3\n"));
        assert!(text.contains("custody_tiles_full 5\n"));
        m.batch_stages([
            Duration::from_millis(3),
            Duration::ZERO,
            Duration::from_micros(1500),
            Duration::from_micros(700),
            Duration::from_millis(20),
            Duration::ZERO,
        ]);
        let text = exposition(&m, &stats, 0, false);
        assert!(text.contains("custody_store_direct_io 0\n"));
        for line in [
            "# TYPE custody_batch_stage_seconds histogram\n",
            "custody_batch_stage_seconds_count{stage=\"open\"} 1\n",
            "custody_batch_stage_seconds_sum{stage=\"open\"} 0.0015\n",
            "custody_batch_stage_seconds_bucket{stage=\"open\",le=\"0.001\"} 0\n",
            "custody_batch_stage_seconds_bucket{stage=\"open\",le=\"0.002\"} 1\n",
            "custody_batch_stage_seconds_sum{stage=\"lookup\"} 0.0007\n",
            "custody_batch_stage_seconds_sum{stage=\"sequencer\"} 0.02\n",
            // 20 ms: above 15 ms, at most 25 ms.
            "custody_batch_stage_seconds_bucket{stage=\"sequencer\",le=\"0.015\"} 0\n",
            "custody_batch_stage_seconds_bucket{stage=\"sequencer\",le=\"0.025\"} 1\n",
            // A stage that took no time is at most the first bound.
            "custody_batch_stage_seconds_bucket{stage=\"parse\",le=\"0.0005\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        m.single_stages([
            Duration::from_micros(40),
            Duration::from_micros(5200),
            Duration::from_micros(5300),
            Duration::from_micros(1400),
            Duration::from_micros(10),
        ]);
        m.single_stages([
            Duration::ZERO,
            Duration::from_micros(800),
            Duration::ZERO,
            Duration::ZERO,
            Duration::ZERO,
        ]);
        let text = exposition(&m, &stats, 0, false);
        assert_eq!(
            text.matches("# TYPE custody_single_stage_seconds histogram\n")
                .count(),
            1,
            "one header for the family: {text}"
        );
        // 0.8 ms and 5.2 ms: one at most 1 ms, both at most 7.5 ms.
        for line in [
            "custody_single_stage_seconds_bucket{stage=\"verify\",le=\"0.0005\"} 0\n",
            "custody_single_stage_seconds_bucket{stage=\"verify\",le=\"0.001\"} 1\n",
            "custody_single_stage_seconds_bucket{stage=\"verify\",le=\"0.005\"} 1\n",
            "custody_single_stage_seconds_bucket{stage=\"verify\",le=\"0.0075\"} 2\n",
            "custody_single_stage_seconds_bucket{stage=\"verify\",le=\"+Inf\"} 2\n",
            "custody_single_stage_seconds_sum{stage=\"verify\"} 0.006\n",
            "custody_single_stage_seconds_count{stage=\"verify\"} 2\n",
            "custody_single_stage_seconds_sum{stage=\"resume\"} 0.0014\n",
            "custody_single_stage_seconds_bucket{stage=\"body\",le=\"0.0005\"} 2\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        // The batch series are their own.
        assert!(text.contains("custody_batch_stage_seconds_count{stage=\"open\"} 1\n"));
    }

    /// A time exactly on a bound counts under it (`le`: at most), a nanosecond more
    /// under the next; past the last bound only `+Inf` counts it.
    #[test]
    fn stage_times_fall_in_the_first_bucket_they_do_not_exceed() {
        let t = StageTimes::<1>::default();
        let slot_of = |took: Duration| {
            let before: Vec<u64> = t.buckets[0].iter().map(|b| b.load(Relaxed)).collect();
            t.add([took]);
            (0..before.len())
                .find(|&i| t.buckets[0][i].load(Relaxed) > before[i])
                .expect("one bucket grew")
        };
        assert_eq!(slot_of(Duration::ZERO), 0);
        assert_eq!(slot_of(Duration::from_micros(500)), 0);
        assert_eq!(slot_of(Duration::from_nanos(500_001)), 1);
        assert_eq!(slot_of(Duration::from_micros(7_500)), 5);
        assert_eq!(slot_of(Duration::from_secs(1)), LATENCY_BOUNDS_MS.len() - 1);
        assert_eq!(slot_of(Duration::from_secs(2)), LATENCY_BOUNDS_MS.len());
        assert_eq!(slot_of(Duration::MAX), LATENCY_BOUNDS_MS.len());
    }

    #[test]
    fn stat_lines_give_name_and_ticks_whatever_the_name_holds() {
        let line = "4242 (rocksdb:low) S 1 2 3 4 5 6 7 8 9 10 250 31 0 0 20 0 1 0 77 0 0";
        assert_eq!(stat_ticks(line), Some(("rocksdb:low", 281)));
        let odd = "7 (a b) (c) R 1 2 3 4 5 6 7 8 9 10 5 6 0 0";
        assert_eq!(stat_ticks(odd), Some(("a b) (c", 11)));
        assert_eq!(stat_ticks("7 (cut) R 1 2"), None);
        assert_eq!(stat_ticks("no parentheses"), None);
    }

    /// On Linux the exposition carries the process's CPU and memory, and they are
    /// plausible: CPU only grows, the peak is at least what is resident.
    #[cfg(target_os = "linux")]
    #[test]
    fn process_usage_is_read_from_proc() {
        let a = ProcessUsage::now().expect("/proc/self reads");
        let b = ProcessUsage::now().expect("/proc/self reads");
        assert!(b.cpu_seconds >= a.cpu_seconds, "{a:?} then {b:?}");
        assert!(b.rocksdb_background_cpu_seconds <= b.cpu_seconds);
        assert!(b.resident_bytes > 0 && b.peak_resident_bytes >= b.resident_bytes);
        let text = Metrics::default().render(
            &Stats::default(),
            0,
            1,
            (0, 1),
            (Default::default(), 0, false),
            (0, 0),
        );
        for name in [
            "process_cpu_seconds_total ",
            "custody_rocksdb_background_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "custody_process_peak_resident_bytes ",
        ] {
            assert!(
                text.contains(&format!("\n{name}")),
                "{name} missing:\n{text}"
            );
        }
    }
}
