//! `custody-node`: the HTTP adapter of a Custody log. A thin shell over `ledger`:
//! it parses requests into ledger types, calls the store and the sequencer, and
//! turns the answers into HTTP. No business rule lives only here.
//!
//! Rooms: `config` (flags and limits), `problem` (RFC 9457 errors), `body` (bodies
//! and parameters from outside), `state` (what handlers share, async↔blocking
//! bridges), `append` (write routes), `read` (JSON read routes), `tiles` (C2SP
//! tiles), `blobs` (attachments), `metrics` (Prometheus), `observe` (request id,
//! deadline, logs), `routes` (the table).
//!
//! No unsafe code, except naming jemalloc's settings (`malloc_conf`).
#![deny(unsafe_code)]

mod append;
mod blobs;
mod body;
mod config;
mod metrics;
mod observe;
mod problem;
mod read;
mod reply;
mod routes;
mod state;
mod tiles;

use anyhow::{Context, Result};
use clap::Parser;
use config::{CheckArgs, Cli, Cmd, InitArgs, ServeArgs};
use ledger::sequencer::Sequencer;
use ledger::store::Store;
use state::AppState;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How long in-flight requests get to finish after SIGTERM before the node stops
/// waiting for them (queued appends are still committed).
const GRACE: Duration = Duration::from_secs(30);

/// The whole process allocates with jemalloc, RocksDB's C++ included (the
/// unprefixed build replaces `malloc` and `operator new`). With glibc's allocator
/// a node that had served a few million batch appends answered proofs with 50-80 µs
/// of CPU each where a fresh one took 43 (its arenas' free lists had grown long:
/// `_int_malloc` and the arena locks' futex calls were ~20% of its profile), and
/// peaked at 299 MB growing a log 0 → 10M even with its arenas capped at two per
/// core. With jemalloc, on the same machine and log: proofs 35-39 µs, a log grown 0
/// → 10M peaked at 256 MB, batch appends 32-44 µs per event (PERFORMANCE.md, stop 25).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read when it starts; an operator's `MALLOC_CONF` is
/// applied after them. Two arenas (one per core of the 2-core machine the targets
/// are set for; on more cores, `MALLOC_CONF=narenas:N` trades memory for less
/// contention): each thread's cache serves most blocks without a lock. Freed pages
/// go back to the system after a second (`dirty_decay_ms`) from a background
/// thread, at once rather than lazily (`muzzy_decay_ms:0`: pages given back with
/// MADV_FREE would still count in the resident size until the kernel wants them).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code, non_upper_case_globals)]
#[export_name = "malloc_conf"]
pub static malloc_conf: &[u8; 70] =
    b"background_thread:true,narenas:2,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.cmd {
        Cmd::Init(a) => init(&a),
        Cmd::Serve(a) => serve(*a),
        Cmd::Check(a) => check(&a),
    };
    if let Err(e) = result {
        ledger::to_stderr!("custody-node: error: {e:#}");
        std::process::exit(1);
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A line that cannot be written is dropped. By default the subscriber then
        // says so with `eprintln!`, which panics when stderr fails too: on a full
        // disk holding the node's log, each request whose line could not be written
        // panicked its task (so its client got no answer), and the first line at
        // start stopped the node.
        .log_internal_errors(false)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn init(a: &InitArgs) -> Result<()> {
    let store = Store::init(&a.data, &a.origin, a.admin_key)
        .with_context(|| format!("creating a log in {}", a.data.display()))?;
    let text = format!(
        "created log {} in {}\norigin: {}\nvkey: {}\n",
        store.origin(),
        a.data.display(),
        store.origin(),
        store.vkey()
    );
    let done = format!(
        "the log in {} was created (`GET /v1/log` on the served log gives its origin and vkey too)",
        a.data.display()
    );
    Ok(ledger::to_stdout(&text, &done)?)
}

fn check(a: &CheckArgs) -> Result<()> {
    let store =
        Store::open(&a.data).with_context(|| format!("opening the log in {}", a.data.display()))?;
    let started = std::time::Instant::now();
    // One line rewritten in place on a terminal; into a file, a line every 5 s.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut reported = started;
    store
        .verify_all(&mut |done, total| {
            if terminal {
                let _ = write!(std::io::stderr(), "\rchecked {done}/{total} entries");
            } else if done == total || reported.elapsed().as_secs() >= 5 {
                ledger::to_stderr!("checked {done}/{total} entries");
                reported = std::time::Instant::now();
            }
        })
        .with_context(|| format!("checking the log in {}", a.data.display()))?;
    let cp = store.checkpoint();
    if terminal {
        ledger::to_stderr!();
    }
    let text = format!(
        "ok: {} entries of {} check against the signed checkpoint (root {}) in {:.1}s\n",
        cp.size,
        store.origin(),
        cp.root,
        started.elapsed().as_secs_f64()
    );
    Ok(ledger::to_stdout(&text, "the log checked sound")?)
}

/// True when `dir` is missing or empty: the only state in which `serve` creates a
/// log (anything else is an existing, maybe damaged, log
/// that must be opened or reported, never overwritten).
fn holds_nothing(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

fn open_store(a: &ServeArgs) -> Result<Store> {
    if holds_nothing(&a.data) {
        std::fs::create_dir_all(&a.data).with_context(|| {
            format!("creating the data directory {} (--data)", a.data.display())
        })?;
        let admin = match a.init_admin_key {
            Some(k) => k,
            None => {
                let path = a.data.join("admin.key");
                let key = ledger::keyfile::generate(&path)
                    .with_context(|| format!("creating the first admin key {}", path.display()))?;
                let id = ledger::types::KeyId(key.verifying_key().to_bytes());
                tracing::info!(key_file = %path.display(), public_key = %id,
                    "generated the first admin key (mode 0600): keep it safe, it registers every actor");
                id
            }
        };
        let store = Store::init(&a.data, &a.origin, admin)
            .with_context(|| format!("creating a log in {}", a.data.display()))?;
        tracing::info!(origin = %store.origin(), vkey = %store.vkey(), dir = %a.data.display(), "created a new log");
        return Ok(store);
    }
    Store::open(&a.data).with_context(|| format!("opening the log in {}", a.data.display()))
}

fn serve(a: ServeArgs) -> Result<()> {
    a.check_limits().map_err(anyhow::Error::msg)?;
    let store = Arc::new(open_store(&a)?);
    let cp = store.checkpoint();
    tracing::info!(origin = %store.origin(), vkey = %store.vkey(), tree_size = cp.size, root = %cp.root, "log opened and checked");
    if let Some(why) = store.page_cache_writes() {
        tracing::warn!(
            reason = why,
            "RocksDB's flushes and compactions go through the page cache, not O_DIRECT: under \
             a sustained load appends may wait 50-500 ms behind their writeback (latency only, \
             no data is at risk). For steady latency keep the data directory on a local \
             filesystem that takes O_DIRECT (ext4, XFS) and restart the node"
        );
    }
    let config = a.sequencer_config();
    let sequencer = Sequencer::start(store, config);
    let state = Arc::new(AppState::new(sequencer, a.limits(), config));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("custody-http")
        .build()
        .context("starting the async runtime")?;
    let served = rt.block_on(run(state.clone(), a.listen, a.limits().request_timeout));
    // Every connection is closed: stop the sequencer, which commits what it queued.
    if let Some(mut seq) = state.take_sequencer() {
        seq.shutdown();
    }
    // So that the next start has no write-ahead log to replay (it is synced
    // already: a failure here loses nothing, the next start just replays it).
    let flushing = std::time::Instant::now();
    match state.store.flush_memtables() {
        Ok(()) => tracing::info!(
            secs = flushing.elapsed().as_secs_f64(),
            "memtables and the newest event ids written to table files; the next start replays no log"
        ),
        Err(e) => tracing::warn!(
            error = %e,
            "could not write the memtables (or the newest event ids) to table files; nothing is lost, the next start replays the write-ahead log and reads those ids again from the entries instead"
        ),
    }
    tracing::info!(tree_size = state.store.size(), "stopped");
    rt.shutdown_timeout(Duration::from_secs(5));
    served
}

/// Accepts connections until SIGTERM, then lets in-flight requests finish (at most
/// [`GRACE`]). Our own loop rather than `axum::serve`: that one gives hyper no timer,
/// so a client that sends its headers slowly, or never, held a connection (and a
/// file descriptor) forever. Here headers must arrive within `header_timeout`, on a
/// new connection and between requests on a kept-alive one (slow-loris).
async fn run(
    state: state::Shared,
    listen: std::net::SocketAddr,
    header_timeout: Duration,
) -> Result<()> {
    let listener = bind(listen).with_context(|| {
        format!("listening on {listen} (--listen): is another process using it?")
    })?;
    tracing::info!(addr = %listener.local_addr().unwrap_or(listen), "listening");
    tokio::spawn(observe::summarise(state.clone()));
    let app = routes::router(state);
    let mut http = hyper::server::conn::http1::Builder::new();
    // A client that pipelines (several requests written before reading the answers,
    // HTTP/1.1 §9.3.2) gets the answers to what arrived together in one write
    // rather than one write each: fewer syscalls on both sides.
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .pipeline_flush(true);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut stop = std::pin::pin!(shutdown_signal());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn =
            graceful.watch(http.serve_connection(hyper_util::rt::TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection closed with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: finishing in-flight requests");
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(GRACE) => {
            tracing::warn!(grace_secs = GRACE.as_secs(), "requests still open after the grace period; stopping anyway");
        }
    }
    Ok(())
}

/// Connections the kernel queues for the accept loop. tokio (through mio) listens
/// with the standard library's 128: 256 clients connecting at once overflowed it,
/// and every connection whose SYN was dropped waited the kernel's 1 s before trying
/// again (seen as a 1 s maximum latency in `custody bench`, 103 of 256 connections).
/// The kernel caps it at `net.core.somaxconn` (4096 on current kernels).
const LISTEN_BACKLOG: u32 = 4096;

/// The listening socket: as tokio's own `bind` (address reuse, so a restarted node
/// can listen at once), with a backlog of [`LISTEN_BACKLOG`].
fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// More clients than the old backlog (128) connect while nothing accepts: each
    /// connect completes at once from the kernel's queue, none waits for a SYN to be
    /// sent again (with a backlog of 128 the 130th would, and time out here).
    #[tokio::test]
    async fn a_burst_of_connections_is_queued_not_dropped() {
        // A kernel that caps backlogs lower than 300 (somaxconn) is tested up to its cap.
        let cap = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(300);
        let n = cap.min(300);
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let clients = tokio::task::spawn_blocking(move || {
            (0..n)
                .map(|i| {
                    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(800))
                        .unwrap_or_else(|e| panic!("connection {i} of {n} was not queued: {e}"))
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap();
        assert_eq!(clients.len(), n);
        // They are all there to be accepted.
        for _ in 0..n {
            listener.accept().await.unwrap();
        }
    }
}
