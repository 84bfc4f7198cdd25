//! `custody audit`: replays the whole log from its C2SP entry bundles and hash
//! tiles, recomputes the root, checks the signed checkpoint, every envelope, every
//! authorisation, every ref and every due-process rule, and checks that the log
//! still extends the checkpoint remembered from the previous run (state file): a
//! rewritten or forked log is reported as such.

use crate::client::Client;
use anyhow::{bail, Context, Result};
use ledger::cases::Rules;
use ledger::entry::leaf_hash;
use ledger::replay::Replayer;
use ledger::tree::{self, Frontier, TileRef, TILE_WIDTH};
use ledger::types::RootHash;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// What the auditor remembers between runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub origin: String,
    pub vkey: String,
    pub tree_size: u64,
    pub root_hash: RootHash,
}

#[derive(Debug, Serialize)]
pub struct Violation {
    pub index: u64,
    pub code: String,
    pub rule: Option<String>,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub origin: String,
    pub tree_size: u64,
    pub root_hash: RootHash,
    pub entries: u64,
    pub actors: usize,
    pub cases: usize,
    pub violations: Vec<Violation>,
    /// A problem with the log as a whole (fork, rollback, wrong root).
    pub history: Option<String>,
    pub seconds: f64,
}

/// Tiles checked together on a verifying thread: their signatures go into one batch
/// equation of up to 16 × 256 = 4,096, which costs less per signature than fewer
/// (the multiscalar multiplication takes wider windows: 2.9 µs per signature at
/// 4,096 against 3.5 at 1,024, `cargo bench -- one_key`). A bad signature costs its
/// group a check of each of its signatures alone (an estimated ~0.2 s at ~50 µs
/// each), which an audit of an honest log never pays.
const TILES_PER_CHECK: u64 = 16;

/// Tiles fetched ahead of the ones being verified, shared out among the verifying
/// threads a group of [`TILES_PER_CHECK`] at a time. With at most [`MAX_VERIFIERS`]
/// threads, each holding a group queued, a group it checks and a group checked, the
/// audit holds at most 3 × 16 × 4 = 192 tiles (bundle and opened envelopes) at
/// once, however many cores the machine has (on 2 cores the audit of a 1M-entry log
/// peaked at 72-86 MB in all, 29-36 MB with groups of 4 tiles).
const QUEUED_TILES: usize = TILES_PER_CHECK as usize;

/// Verifying threads at most (one per core up to this).
const MAX_VERIFIERS: usize = 4;

/// One tile fetched and checked on a verifying thread: everything in it that does not
/// depend on the entries before it (parsing, signatures, leaf hashes).
struct CheckedTile {
    width: u32,
    bundle: Vec<u8>,
    hashes: Vec<u8>,
    prepared: Vec<ledger::error::Result<(chrono::DateTime<chrono::Utc>, ledger::envelope::Opened)>>,
    leaves: Vec<ledger::types::LeafHash>,
}

/// A tile as fetched: (width, entry bundle bytes, level-0 hash tile bytes).
type Fetched = (u32, Vec<u8>, Vec<u8>);

/// How the audit fetches tiles. From an `http://` node, one keep-alive connection
/// read on the fetching thread itself ([`crate::wire`], as `custody bench` does):
/// reqwest's blocking client hands every request to its own I/O thread and copies
/// each body twice on the way back, which took ~7% of the auditor's CPU (stop 40:
/// two requests per tile, 100 KB each). A redirect (tiles handed off to other
/// storage), any other URL, or a proxy set in the environment (which reqwest
/// honours) goes through the CLI's client as before. Either way a request must be
/// answered within 120 s in all.
enum Fetcher<'a> {
    Wire(crate::wire::Target, &'a Client),
    Client(&'a Client),
}

/// Whether a proxy is set for `http://` URLs (the variables reqwest reads for them).
fn proxy_set() -> bool {
    ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
}

impl<'a> Fetcher<'a> {
    fn new(client: &'a Client, proxied: bool) -> Fetcher<'a> {
        let base = client.url("");
        if base.starts_with("http://") && !proxied {
            if let Ok(t) = crate::wire::Target::new(&base, std::time::Duration::from_secs(120)) {
                return Fetcher::Wire(t, client);
            }
        }
        Fetcher::Client(client)
    }

    /// Fetches tiles `0..tiles` in order, handing each to `each`, which says whether
    /// to go on; stops after the first failure (handed over too).
    fn run(&self, size: u64, tiles: u64, each: impl FnMut(u64, Result<Fetched>) -> bool) {
        match self {
            Fetcher::Wire(t, client) => {
                let mut conn = crate::wire::Conn::new(t);
                fetch_all(size, tiles, each, |path| {
                    get_wire(t, &mut conn, client, path)
                })
            }
            Fetcher::Client(client) => fetch_all(size, tiles, each, |path| client.get_bytes(path)),
        }
    }
}

fn fetch_all(
    size: u64,
    tiles: u64,
    mut each: impl FnMut(u64, Result<Fetched>) -> bool,
    mut get: impl FnMut(&str) -> Result<Vec<u8>>,
) {
    for n in 0..tiles {
        let fetched = fetch_tile(size, n, &mut get);
        let failed = fetched.is_err();
        if !each(n, fetched) || failed {
            return;
        }
    }
}

/// `GET path` on the wire: the body of a 2xx answer; a redirect is asked again
/// through `client`, which follows it; any other answer is refused with its
/// problem, as the CLI's client reports it.
fn get_wire(
    t: &crate::wire::Target,
    conn: &mut crate::wire::Conn,
    client: &Client,
    path: &str,
) -> Result<Vec<u8>> {
    let what = format!("GET {path}");
    let (status, body) = conn
        .send(&t.request("GET", path, None))
        .map_err(|e| match e {
            crate::wire::WireError::Connect(_) => {
                anyhow::anyhow!("{what}: {e} at {} (is custody-node running?)", t.base())
            }
            _ => anyhow::anyhow!("{what} from {}: {e}", t.base()),
        })?;
    match status {
        200..=299 => Ok(body),
        300..=399 => client.get_bytes(path),
        _ => Err(crate::client::refused(&what, status, &body)),
    }
}

/// Entry bundle `n` and its level-0 hash tile, each fetched by `get`.
fn fetch_tile(size: u64, n: u64, get: &mut impl FnMut(&str) -> Result<Vec<u8>>) -> Result<Fetched> {
    let width = (size - n * TILE_WIDTH).min(TILE_WIDTH) as u32;
    let bundle = TileRef {
        level: None,
        n,
        width,
    };
    let hashes = TileRef {
        level: Some(0),
        n,
        width,
    };
    Ok((
        width,
        get(&format!("/tile/{}", bundle.path()))?,
        get(&format!("/tile/{}", hashes.path()))?,
    ))
}

/// A fetched bundle split into its entries, or why it cannot be.
fn split_tile(n: u64, width: u32, bundle: &[u8]) -> Result<Vec<&[u8]>> {
    let entries = tree::split_bundle(bundle)?;
    if entries.len() != width as usize {
        let t = TileRef {
            level: None,
            n,
            width,
        };
        bail!(
            "entry bundle {} holds {} entries, expected {width}",
            t.path(),
            entries.len()
        );
    }
    Ok(entries)
}

/// Splits fetched bundles, opens their envelopes (the signatures of the whole group
/// batch-checked together, on this thread) and hashes their leaves: one answer per
/// tile, in order.
fn check_tiles(group: Vec<(u64, Fetched)>) -> Vec<Result<CheckedTile>> {
    let split: Vec<Result<Vec<&[u8]>>> = group
        .iter()
        .map(|(n, (width, bundle, _))| split_tile(*n, *width, bundle))
        .collect();
    let all: Vec<&[u8]> = split.iter().flatten().flatten().copied().collect();
    let leaves: Vec<Vec<ledger::types::LeafHash>> = split
        .iter()
        .map(|t| t.iter().flatten().map(|e| leaf_hash(e)).collect())
        .collect();
    let batch = TILES_PER_CHECK as usize * TILE_WIDTH as usize;
    let mut prepared = ledger::replay::prepare_here_in(all, batch).into_iter();
    let counts: Vec<Result<usize>> = split
        .into_iter()
        .map(|t| t.map(|entries| entries.len()))
        .collect();
    group
        .into_iter()
        .zip(counts)
        .zip(leaves)
        .map(|(((_, (width, bundle, hashes)), count), leaves)| {
            let count = count?;
            Ok(CheckedTile {
                width,
                bundle,
                hashes,
                prepared: prepared.by_ref().take(count).collect(),
                leaves,
            })
        })
        .collect()
}

/// Redraws the progress line on a terminal, at most every 200 ms; into a file or a
/// pipe (a CI log, a cron job's mail), writes a line every 5 s instead. Both also
/// at the end.
/// The progress shown so far: when the line was last written, and whether stderr is
/// a terminal (asked once per audit).
struct Shown {
    last: Option<Instant>,
    terminal: bool,
}

fn progress(done: u64, total: u64, started: Instant, shown: &mut Shown, quiet: bool) {
    let terminal = shown.terminal;
    let every_ms = if terminal { 200 } else { 5_000 };
    let recent = shown
        .last
        .is_some_and(|l| l.elapsed().as_millis() < every_ms);
    if quiet || (done < total && recent) {
        return;
    }
    shown.last = Some(Instant::now());
    let secs = started.elapsed().as_secs_f64().max(1e-6);
    let rate = done as f64 / secs;
    let eta = if rate > 0.0 {
        (total - done) as f64 / rate
    } else {
        0.0
    };
    let width = 30usize;
    let filled = if total == 0 {
        width
    } else {
        (done as usize * width) / total as usize
    };
    let line = format!(
        "[{}{}] {done}/{total} entries  {rate:.0}/s  ETA {eta:.0}s",
        "#".repeat(filled),
        " ".repeat(width - filled)
    );
    if terminal {
        let _ = write!(std::io::stderr(), "\r{line}   ");
    } else {
        ledger::to_stderr!("{line}");
    }
    let _ = std::io::stderr().flush();
}

pub fn run(client: &Client, vkey: Option<&str>, state_path: &Path, quiet: bool) -> Result<Summary> {
    let started = Instant::now();
    let previous: Option<State> = match std::fs::read_to_string(state_path) {
        Ok(t) => Some(
            serde_json::from_str(&t)
                .with_context(|| format!("state file {} is damaged", state_path.display()))?,
        ),
        Err(_) => None,
    };
    let info = client.log_info()?;
    // The log's declared parameters (clock skew, platform window); replay always
    // enforces every rule whatever the node says.
    let rules: Rules = serde_json::from_value(info["rules"].clone()).unwrap_or_default();
    // Out-of-range parameters from a hostile node must not crash or stall the audit.
    ledger::bundle::check_rules(&rules).context("the node's declared rules (GET /v1/log)")?;
    let vkey = match (vkey, &previous) {
        (Some(k), _) => k.to_owned(),
        (None, Some(p)) => p.vkey.clone(),
        (None, None) => {
            let k = info["vkey"]
                .as_str()
                .context("/v1/log has no vkey")?
                .to_owned();
            if !quiet {
                ledger::to_stderr!(
                    "note: no --log-key and no state file: trusting the node's key {k} from now on"
                );
            }
            k
        }
    };
    if let Some(p) = &previous {
        if p.vkey != vkey {
            bail!("the state file {} remembers log key {}, not {vkey}; use another --state for another log", state_path.display(), p.vkey);
        }
    }
    let cp = client.checkpoint(&vkey)?;
    let size = cp.size;
    // Entries seen so far go to a scratch file beside the state file, so a log of
    // millions of entries does not need its size in memory for later refs to resolve.
    let spool_path = state_path.with_extension("replay-spool");
    let spool = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&spool_path)
        .with_context(|| {
            format!(
                "creating the audit's scratch file {} (beside --state; choose a writable place)",
                spool_path.display()
            )
        })?;
    // Unlinked at once where the system allows it: it lives while it is open.
    let spool_unlinked = std::fs::remove_file(&spool_path).is_ok();
    let mut replay = Replayer::with_spool(rules, spool);
    let mut frontier = Frontier::new();
    let mut violations = Vec::new();
    let mut history = None;
    let tiles = size.div_ceil(TILE_WIDTH);
    let mut shown = Shown {
        last: None,
        terminal: std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    // One verifying thread per core (at most MAX_VERIFIERS), each taking every k-th
    // group of tiles as the fetcher hands them out; this thread takes their results
    // back in tile order and replays them.
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, MAX_VERIFIERS);
    std::thread::scope(|scope| -> Result<()> {
        let mut to_workers = Vec::with_capacity(workers);
        let mut from_workers = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (tx, rx) = std::sync::mpsc::sync_channel::<(u64, Result<_>)>(QUEUED_TILES);
            let (done_tx, done_rx) =
                std::sync::mpsc::sync_channel::<Result<CheckedTile>>(QUEUED_TILES);
            scope.spawn(move || {
                let mut group = Vec::with_capacity(QUEUED_TILES);
                for (n, fetched) in rx {
                    let failed = match fetched {
                        Ok(f) => {
                            group.push((n, f));
                            None
                        }
                        Err(e) => Some(e),
                    };
                    // A group ends at its last tile, the log's last, or a failed fetch
                    // (after which the fetcher stops).
                    let group_end = ((n / TILES_PER_CHECK + 1) * TILES_PER_CHECK).min(tiles);
                    if n + 1 == group_end || failed.is_some() {
                        let answers = check_tiles(std::mem::take(&mut group));
                        for answer in answers.into_iter().chain(failed.map(Err)) {
                            if done_tx.send(answer).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
            to_workers.push(tx);
            from_workers.push(done_rx);
        }
        let fetcher = Fetcher::new(client, proxy_set());
        scope.spawn(move || {
            fetcher.run(size, tiles, |n, fetched| {
                let worker = (n / TILES_PER_CHECK) as usize % workers;
                to_workers[worker].send((n, fetched)).is_ok()
            })
        });
        for n in 0..tiles {
            // Infallible: each worker answers once per tile it was given, in order,
            // and the fetcher stops only after handing over a failure.
            let tile = from_workers[(n / TILES_PER_CHECK) as usize % workers]
                .recv()
                .expect("tile verifier answers")?;
            let CheckedTile {
                width,
                bundle,
                hashes,
                prepared,
                leaves,
            } = tile;
            let entries = tree::split_bundle(&bundle)?;
            for (k, ((bytes, prepared), leaf)) in
                entries.iter().zip(prepared).zip(&leaves).enumerate()
            {
                let index = n * TILE_WIDTH + k as u64;
                frontier.push(*leaf);
                if let Some(p) = &previous {
                    if frontier.size() == p.tree_size && frontier.root() != p.root_hash {
                        history = Some(format!(
                        "FORK: the first {} entries now hash to {}, but this auditor saw root {} at that size before: the log rewrote its history",
                        p.tree_size, frontier.root(), p.root_hash
                    ));
                    }
                }
                if let Err(e) = replay.apply_prepared(index, bytes, prepared) {
                    violations.push(Violation {
                        index,
                        code: e.code.as_str().to_owned(),
                        rule: e.rule.map(str::to_owned),
                        detail: e.to_string(),
                    });
                }
            }
            // The level-0 hash tile must list exactly these leaf hashes.
            let ht = TileRef {
                level: Some(0),
                n,
                width,
            };
            if hashes.len() != leaves.len() * 32 {
                violations.push(Violation {
                    index: n * TILE_WIDTH,
                    code: "tile_mismatch".into(),
                    rule: None,
                    detail: format!(
                        "hash tile {} has {} bytes, expected {}",
                        ht.path(),
                        hashes.len(),
                        leaves.len() * 32
                    ),
                });
            } else {
                // Name each entry whose bytes do not hash to the tree's leaf: an entry
                // altered in the store or on a mirror.
                for (k, (leaf, served)) in leaves.iter().zip(hashes.chunks(32)).enumerate() {
                    if leaf.0 != served {
                        violations.push(Violation {
                        index: n * TILE_WIDTH + k as u64,
                        code: "entry_altered".into(),
                        rule: None,
                        detail: format!(
                            "entry {}: its bytes hash to {leaf}, but the tree (hash tile {}) holds {}",
                            n * TILE_WIDTH + k as u64,
                            ht.path(),
                            hex::encode(served)
                        ),
                    });
                    }
                }
            }
            progress(frontier.size(), size, started, &mut shown, quiet);
        }
        Ok(())
    })?;
    // End the redrawn line (a file already has whole lines).
    if !quiet && shown.terminal {
        ledger::to_stderr!();
    }
    if frontier.root() != cp.root {
        history = Some(format!(
            "ROOT MISMATCH: the {size} entries served hash to {}, but the signed checkpoint says {}",
            frontier.root(),
            cp.root
        ));
    }
    if let Some(p) = &previous {
        if size < p.tree_size {
            history = Some(format!(
                "ROLLBACK: the log now has {size} entries, fewer than the {} this auditor saw before",
                p.tree_size
            ));
        } else if history.is_none() {
            // The node's own consistency proof must also hold.
            let proof: serde_json::Value = client.get_json(&format!(
                "/v1/proofs/consistency?first={}&second={size}",
                p.tree_size
            ))?;
            let hashes: Vec<RootHash> =
                serde_json::from_value(proof["proof"].clone()).context("consistency proof")?;
            if let Err(e) =
                tree::verify_consistency(&hashes, p.tree_size, p.root_hash, size, cp.root)
            {
                history = Some(format!("FORK: {e}"));
            }
        }
    }
    if history.is_none() {
        let state = State {
            origin: cp.origin.clone(),
            vkey: vkey.clone(),
            tree_size: size,
            root_hash: cp.root,
        };
        std::fs::write(state_path, serde_json::to_string_pretty(&state)? + "\n")
            .with_context(|| format!("writing state file {}", state_path.display()))?;
    }
    let (actors, cases) = (replay.actors().count(), replay.cases().count());
    drop(replay);
    if !spool_unlinked {
        let _ = std::fs::remove_file(&spool_path);
    }
    Ok(Summary {
        origin: cp.origin,
        tree_size: size,
        root_hash: cp.root,
        entries: frontier.size(),
        actors,
        cases,
        violations,
        history,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::io::{BufRead, BufReader, Write};
    use std::sync::{Arc, Mutex};

    type Answers = VecDeque<(u16, &'static str, &'static str)>;

    /// A node stand-in on loopback: answers every request, on any connection, with
    /// the next of `answers` (status, `Location` or "", body); the paths it was
    /// asked for are logged in order.
    fn canned(
        answers: Vec<(u16, &'static str, &'static str)>,
    ) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let answers: Arc<Mutex<Answers>> = Arc::new(Mutex::new(answers.into()));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let log = paths.clone();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(s) = s else { return };
                let (answers, log) = (answers.clone(), log.clone());
                std::thread::spawn(move || {
                    let mut r = BufReader::new(s.try_clone().unwrap());
                    let mut w = s;
                    loop {
                        let mut head = String::new();
                        if r.read_line(&mut head).unwrap_or(0) == 0 {
                            return;
                        }
                        let mut line = String::new();
                        while r.read_line(&mut line).unwrap_or(0) > 2 {
                            line.clear();
                        }
                        log.lock()
                            .unwrap()
                            .push(head.split(' ').nth(1).unwrap_or_default().to_owned());
                        let Some((status, location, body)) = answers.lock().unwrap().pop_front()
                        else {
                            return;
                        };
                        let location = if location.is_empty() {
                            String::new()
                        } else {
                            format!("Location: {location}\r\n")
                        };
                        let _ = write!(
                            w,
                            "HTTP/1.1 {status} X\r\n{location}Content-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                    }
                });
            }
        });
        (base, paths)
    }

    #[test]
    fn tiles_come_over_one_connection_redirects_are_followed_and_a_refusal_names_its_problem() {
        let (base, paths) = canned(vec![
            (200, "", "bundle-0"),
            // The hash tile was moved: the wire hands the redirect to the client,
            // which asks again and follows it.
            (302, "/moved/0", ""),
            (302, "/moved/0", ""),
            (200, "", "hashes-0"),
            (200, "", "bundle-1"),
            (
                404,
                "",
                r#"{"code":"not_found","detail":"tile 0/001 is not part of the tree"}"#,
            ),
        ]);
        let client = Client::new(&base).unwrap();
        let fetcher = Fetcher::new(&client, false);
        assert!(
            matches!(fetcher, Fetcher::Wire(..)),
            "an http:// node is read on the wire"
        );
        assert!(
            matches!(Fetcher::new(&client, true), Fetcher::Client(_)),
            "a proxy keeps the client"
        );
        let mut got = Vec::new();
        // 600 entries: tiles 0 and 1 are full, tile 2 holds 88 (never asked for).
        fetcher.run(600, 3, |n, fetched| {
            got.push((n, fetched.map_err(|e| format!("{e:#}"))));
            true
        });
        assert_eq!(
            *paths.lock().unwrap(),
            [
                "/tile/entries/000",
                "/tile/0/000",
                "/tile/0/000",
                "/moved/0",
                "/tile/entries/001",
                "/tile/0/001"
            ]
        );
        assert_eq!(
            got.len(),
            2,
            "the fetch stops after the failure it hands over"
        );
        assert_eq!(
            got[0],
            (0, Ok((256, b"bundle-0".to_vec(), b"hashes-0".to_vec())))
        );
        let (n, Err(e)) = &got[1] else {
            panic!("tile 1 was refused: {:?}", got[1])
        };
        assert_eq!(*n, 1);
        assert!(e.contains("GET /tile/0/001 was refused"), "{e}");
        assert!(
            e.contains("not_found (404)") && e.contains("not part of the tree"),
            "{e}"
        );
    }

    #[test]
    fn a_node_that_is_not_there_is_named_and_the_fetch_stops() {
        // A port nobody listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = Client::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let fetcher = Fetcher::new(&client, false);
        assert!(matches!(fetcher, Fetcher::Wire(..)));
        let mut got = Vec::new();
        fetcher.run(600, 3, |_, fetched| {
            got.push(fetched.map(|_| ()).map_err(|e| format!("{e:#}")));
            true
        });
        let [Err(e)] = got.as_slice() else {
            panic!("one failure, then no more fetches: {got:?}")
        };
        assert!(
            e.contains("GET /tile/entries/000") && e.contains("is custody-node running?"),
            "{e}"
        );
    }
}
