//! Resource bounds under sustained overload: many clients post large batches as fast
//! as they can at a node with a tiny append queue. The node must shed load with
//! 503 + Retry-After (not queue without bound), keep its memory bounded, log every
//! batch it accepted and nothing of those it refused, and take a normal append as
//! soon as the load stops.

use custody_e2e::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const CLIENTS: usize = 24;
const BATCH: usize = 500;
const BATCHES_PER_CLIENT: usize = 4;
const LOAD_FOR: Duration = Duration::from_secs(8);
/// Generous: a debug node holding a few batches in flight needs far less.
const RSS_LIMIT_KB: u64 = 500 * 1024;

/// A `kB` field of /proc/<pid>/status (VmRSS: resident now; VmHWM: peak resident).
fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Client `t`'s batches, signed and serialised before the load starts so that the
/// clients spend their time sending, not signing.
fn batches(t: usize) -> Vec<Vec<u8>> {
    (0..BATCHES_PER_CLIENT)
        .map(|b| {
            let envs: Vec<Value> = (0..BATCH)
                .map(|i| sign(&key(2), &scan(&format!("O{t}-{b}-{i}"))))
                .collect();
            serde_json::to_vec(&json!({"envelopes": envs})).unwrap()
        })
        .collect()
}

#[derive(Default)]
struct Tally {
    accepted_batches: u64,
    accepted_events: u64,
    overloaded: u64,
    /// A few accepted receipts, verified after the load.
    receipts: Vec<Value>,
}

#[test]
fn sustained_overload_is_shed_with_503_and_memory_stays_bounded() {
    if !std::path::Path::new("/proc/self/status").exists() {
        eprintln!("skipped: no /proc to read the node's memory from");
        return;
    }
    let node = Node::start_with(&["--queue", "2", "--max-group", "256"]);
    node.register(&key(2), "Investigator", "Acme SA", &["investigator"]);
    let start = node.size();
    let pid = node.pid().expect("node runs");
    let rss_at_start = proc_status_kb(pid, "VmRSS").expect("VmRSS");
    let stop = AtomicBool::new(false);
    let peak_rss = AtomicU64::new(rss_at_start);
    let tally = Mutex::new(Tally::default());
    let signing = Instant::now();
    let mut prepared: Vec<Vec<Vec<u8>>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..CLIENTS).map(|t| s.spawn(move || batches(t))).collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    eprintln!(
        "signed {} events in {:.1} s",
        CLIENTS * BATCHES_PER_CLIENT * BATCH,
        signing.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                if let Some(kb) = proc_status_kb(pid, "VmRSS") {
                    peak_rss.fetch_max(kb, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let clients: Vec<_> = prepared
            .drain(..)
            .map(|mut fresh| {
                let (node, tally) = (&node, &tally);
                s.spawn(move || {
                    let http = reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(120))
                        .no_proxy()
                        .build()
                        .unwrap();
                    let mut next = 0;
                    while started.elapsed() < LOAD_FOR && !fresh.is_empty() {
                        // A refused batch left no trace: it is sent again later.
                        next %= fresh.len();
                        let r = http
                            .post(format!("{}/v1/events:batch", node.url))
                            .header("content-type", "application/json")
                            .body(fresh[next].clone())
                            .send()
                            .expect("the node answers under overload");
                        let status = r.status().as_u16();
                        let retry = r
                            .headers()
                            .get("retry-after")
                            .map(|v| v.to_str().unwrap().to_owned());
                        let body: Value = r.json().expect("a JSON answer");
                        let mut t = tally.lock().unwrap();
                        match status {
                            201 => {
                                let results = body["results"].as_array().unwrap();
                                assert!(results.iter().all(|r| r["status"] == 201), "{body}");
                                fresh.swap_remove(next);
                                t.accepted_batches += 1;
                                t.accepted_events += results.len() as u64;
                                if t.receipts.len() < 50 {
                                    let pick = t.receipts.len() % BATCH;
                                    t.receipts.push(results[pick]["receipt"].clone());
                                }
                            }
                            503 => {
                                assert_eq!(code(&body), "overloaded", "{body}");
                                assert_eq!(retry.as_deref(), Some("1"), "503 without Retry-After");
                                t.overloaded += 1;
                                next += 1;
                            }
                            other => panic!("batch answered {other}: {body}"),
                        }
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
    });
    let load = started.elapsed();
    let hwm = proc_status_kb(pid, "VmHWM").expect("VmHWM");
    let peak = peak_rss.load(Ordering::Relaxed).max(hwm);
    let t = tally.into_inner().unwrap();
    eprintln!(
        "overload: {CLIENTS} clients × batches of {BATCH} for {:.1} s against --queue 2: \
         {} batches ({} events) accepted, {} answered 503; node RSS {} MB at start, peak {} MB",
        load.as_secs_f64(),
        t.accepted_batches,
        t.accepted_events,
        t.overloaded,
        rss_at_start / 1024,
        peak / 1024,
    );
    assert!(
        t.overloaded > 0,
        "a queue of 2 under {CLIENTS} clients must overflow"
    );
    assert!(
        t.accepted_batches > 0,
        "the node still made progress under overload"
    );
    assert!(
        peak < RSS_LIMIT_KB,
        "the node's resident memory peaked at {} MB (limit {} MB)",
        peak / 1024,
        RSS_LIMIT_KB / 1024
    );
    assert_eq!(
        node.size(),
        start + t.accepted_events,
        "every accepted event is logged, nothing of a refused batch is"
    );
    let vkey = node.vkey();
    for r in &t.receipts {
        verify_receipt(r, &vkey);
    }
    // The load is over: an ordinary append goes straight through.
    let r = node.append(&key(2), &scan("after-the-storm"));
    assert_eq!(r["index"], start + t.accepted_events);
}

/// The gauge of request-body bytes charged to requests in flight (/metrics).
fn inflight(node: &Node) -> u64 {
    metric(&node.get("/metrics").text(), "custody_inflight_body_bytes") as u64
}

/// Bodies still on their way hold the budget of --max-inflight-bytes; a request that
/// would exceed it is answered 503 + Retry-After before its body is read (so memory
/// stays bounded whatever many clients send at once), nothing is logged for it, and
/// appends succeed again once the held bodies are gone.
#[test]
fn request_bodies_beyond_the_inflight_budget_are_refused_503_before_they_are_read() {
    use std::io::{Read, Write};
    // Each 1 MiB batch body is charged 4 MiB: two leave 1 KiB of the budget, which
    // no further append fits.
    let node = Node::start_with(&[
        "--max-batch-bytes",
        "1MiB",
        "--max-blob-bytes",
        "1MiB",
        "--max-inflight-bytes",
        "8193KiB",
    ]);
    node.register(&key(2), "Investigator", "Acme SA", &["investigator"]);
    let before = node.checkpoint();
    let addr = node.url.trim_start_matches("http://").to_owned();
    let declared = 1024 * 1024;
    // Two clients announce 1 MiB bodies and send only their first bytes.
    let held: Vec<std::net::TcpStream> = (0..2)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            write!(
                s,
                "POST /v1/events:batch HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n\r\n{{\"envelopes\":["
            )
            .unwrap();
            s
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while inflight(&node) < 8 * 1024 * 1024 {
        assert!(
            Instant::now() < deadline,
            "the held bodies were never charged:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A third, complete and valid, batch is refused at once.
    let envs: Vec<Value> = (0..50)
        .map(|i| sign(&key(2), &scan(&format!("B-{i}"))))
        .collect();
    let batch = json!({"envelopes": envs});
    let a = node.post_json("/v1/events:batch", &batch);
    let p = a.problem(503, "overloaded");
    assert!(a.header("retry-after").is_some(), "503 without Retry-After");
    // Its body was never read, so the connection is not reused for another request.
    assert_eq!(a.header("connection"), Some("close"));
    assert!(
        p["detail"].as_str().unwrap_or("").contains("in flight"),
        "the problem says why: {p}"
    );
    // A single event is charged too, and refused while the budget is spent.
    node.post_json("/v1/events", &sign(&key(2), &scan("S-1")))
        .problem(503, "overloaded");
    assert_eq!(
        node.checkpoint(),
        before,
        "a refused request changed the log"
    );
    // The held clients give up; their bodies are released and appends go through.
    for mut s in held {
        s.shutdown(std::net::Shutdown::Both).ok();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    while inflight(&node) > 0 {
        assert!(
            Instant::now() < deadline,
            "held bodies were never released:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let a = node.post_json("/v1/events:batch", &batch);
    assert_eq!(a.status, 201, "after the load: {}", a.text());
    assert_eq!(node.size(), before.size + 50);
}
