//! Helpers for the end-to-end tests: find (or build) the real binaries, run a
//! `custody-node` on a free loopback port with a temporary data directory, and sign
//! and send events the way an outside client would. The tests trust nothing the node
//! says without checking it with `ledger`'s verifier side.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::SigningKey;
use ledger::checkpoint::{CheckpointVerifier, SignedCheckpoint};
use ledger::envelope::Envelope;
use ledger::receipt::Receipt;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use serde_json;

/// The origin every test log gets.
pub const ORIGIN: &str = "custody.test/e2e";

/// `…/target/debug/` (where cargo puts binaries), derived from the running test
/// executable `…/target/debug/deps/<test>-<hash>`.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    let deps = exe.parent().expect("test executable is in deps/");
    let dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("deps/ has a parent")
    } else {
        deps
    };
    dir.to_path_buf()
}

/// Path of a workspace binary. The binaries are (re)built once per test process,
/// so `cargo test -p custody-e2e` alone never tests a stale `custody-node` (under
/// `cargo test --workspace` they are already fresh and this is a no-op).
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let path = bin_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    BUILT.get_or_init(build_binaries);
    assert!(
        path.exists(),
        "{} is missing and could not be built",
        path.display()
    );
    path
}

fn build_binaries() {
    let dir = bin_dir();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "custody-node", "-p", "custody-cli", "--bins"]);
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    if std::env::var_os("CARGO_TARGET_DIR").is_none() {
        if let Some(root) = dir.parent() {
            cmd.env("CARGO_TARGET_DIR", root);
        }
    }
    let status = cmd.status().expect("running cargo build");
    if !status.success() {
        eprintln!("warning: `cargo build -p custody-node -p custody-cli` failed ({status}); using what was built");
    }
}

/// A deterministic Ed25519 key from a one-byte seed.
pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// Lowercase hex of a key's public half: its keyid everywhere.
pub fn key_hex(k: &SigningKey) -> String {
    hex::encode(k.verifying_key().as_bytes())
}

/// The admin key every test node is initialised with.
pub fn admin() -> SigningKey {
    key(1)
}

/// Now, as an RFC 3339 claimed_at.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Signs a payload given as JSON and returns the envelope as JSON.
pub fn sign(k: &SigningKey, payload: &Value) -> Value {
    let bytes = serde_json::to_vec(payload).expect("payload serialises");
    envelope_json(&Envelope::sign(&bytes, k))
}

pub fn envelope_json(env: &Envelope) -> Value {
    serde_json::from_slice(&env.to_json()).expect("envelope is JSON")
}

/// The payload bytes inside an envelope JSON.
pub fn payload_of(env: &Value) -> Vec<u8> {
    B64.decode(env["payload"].as_str().expect("payload"))
        .expect("payload is base64")
}

pub fn register(k: &SigningKey, name: &str, org: &str, roles: &[&str]) -> Value {
    json!({"kind": "actor.register", "claimed_at": now(),
           "body": {"key": key_hex(k), "name": name, "org": org, "roles": roles}})
}

pub fn revoke(k: &SigningKey, reason: &str) -> Value {
    json!({"kind": "actor.revoke", "claimed_at": now(), "body": {"key": key_hex(k), "reason": reason}})
}

/// A scan needing no case; `serial` makes it unique.
pub fn scan(serial: &str) -> Value {
    json!({"kind": "scan", "claimed_at": now(), "body": {
        "product_id": "05012345678900", "serial": serial, "marking": "qr", "result": "suspect",
        "location": {"country": "FR"}, "device": "scanner-7"}})
}

/// A ref to entry `index` with its leaf hash.
pub fn reference(index: u64, leaf_hash: &str) -> Value {
    json!({"index": index, "leaf_hash": leaf_hash})
}

pub fn right() -> Value {
    json!({"kind": "right", "claimed_at": now(), "body": {
        "right_type": "trademark", "registration_number": "EU-018000001", "office": "EUIPO",
        "jurisdictions": ["EU"], "owner": "Acme SA", "valid_until": "2035-01-01"}})
}

pub fn detection(case: &str) -> Value {
    json!({"kind": "detection", "case": case, "claimed_at": now(), "body": {
        "marketplace": "shop.example", "listing_url": "https://shop.example/item/1",
        "listing_id": "1", "seller_id": "seller-9", "method": "manual_review", "confidence": 95}})
}

pub fn notice(case: &str, detection: &Value, right: &Value) -> Value {
    json!({"kind": "notice", "case": case, "claimed_at": now(),
        "refs": [reference_to(detection), reference_to(right)],
        "body": {"regime": "dmca-512", "right": right["index"], "listing_url": "https://shop.example/item/1",
            "contact": {"name": "Acme Legal", "email": "legal@acme.example"},
            "good_faith": true, "accurate": true, "authorised": true,
            "explanation": "the listing sells counterfeits of our registered mark"}})
}

pub fn takedown(case: &str, notice: &Value) -> Value {
    json!({"kind": "takedown", "case": case, "claimed_at": now(), "refs": [reference_to(notice)],
        "body": {"decision": "removed", "ground": "trademark infringement", "statement_of_reasons": "matches the notice",
            "automated": false, "redress": "appeal at https://shop.example/appeal"}})
}

pub fn counter_notice(case: &str, takedown: &Value) -> Value {
    json!({"kind": "counter_notice", "case": case, "claimed_at": now(), "refs": [reference_to(takedown)],
        "body": {"listing_url": "https://shop.example/item/1", "good_faith_mistake": true,
            "consent_to_jurisdiction": true,
            "seller": {"name": "Seller Nine", "address": "1 Rue X, Paris", "phone": "+33 1 23 45 67 89"},
            "statement": "the goods are genuine"}})
}

/// A ref built from a receipt (`{index, leaf_hash, …}`).
pub fn reference_to(receipt: &Value) -> Value {
    reference(
        receipt["index"].as_u64().expect("receipt index"),
        receipt["leaf_hash"].as_str().expect("receipt leaf_hash"),
    )
}

/// The value of the `/metrics` sample named exactly `name` (labels included, e.g.
/// `custody_batch_stage_seconds_sum{stage="open"}`) in the exposition `text`.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
}

/// The problem code of an answer.
pub fn code(v: &Value) -> &str {
    v["code"].as_str().unwrap_or("<no code>")
}

/// An HTTP answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "answer is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// Asserts a problem+json answer with this status and code; returns the body.
    pub fn problem(&self, status: u16, want: &str) -> Value {
        let v = self.json();
        assert_eq!(
            (self.status, code(&v)),
            (status, want),
            "expected a {status} {want} problem, got {}",
            self.text()
        );
        assert_eq!(
            self.content_type,
            "application/problem+json",
            "{}",
            self.text()
        );
        assert_eq!(v["status"], status);
        assert_eq!(v["type"], format!("https://custody.dev/problems/{want}"));
        v
    }
}

/// A running `custody-node serve` on loopback; killed when dropped.
pub struct Node {
    child: Option<Child>,
    /// Holds the data dir (`data/`) and the node's stderr (`node-N.log`).
    dir: tempfile::TempDir,
    args: Vec<String>,
    /// Set in the node's environment at every launch.
    env: Vec<(String, String)>,
    starts: u32,
    pub url: String,
    pub http: reqwest::blocking::Client,
}

/// The command that serves `data` (created with the test admin if it holds no log)
/// on loopback `port`, logging at info (`RUST_LOG`), stdin and stdout closed; the
/// caller chooses its stderr.
pub fn serve_command(data: &Path, port: u16, extra: &[String]) -> Command {
    let mut c = Command::new(binary("custody-node"));
    c.arg("serve")
        .arg("--data")
        .arg(data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--init-admin-key", &key_hex(&admin()), "--origin", ORIGIN])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    c
}

/// `/dev/full`, open for writing: every write fails with ENOSPC, as on a full disk.
/// For a child's stderr, to see that it copes with a log it cannot write.
pub fn dev_full() -> std::fs::File {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full (Linux)")
}

/// Sends `child` SIGTERM (graceful shutdown) and waits up to `within` for it to
/// exit: its status, or None if it still runs (it is then killed).
pub fn stop_child(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for the node") {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    l.local_addr().expect("local addr").port()
}

impl Node {
    /// A node over a fresh log whose admin is [`admin`].
    pub fn start() -> Node {
        Node::start_with(&[])
    }

    /// A fresh node with extra `serve` flags.
    pub fn start_with(extra: &[&str]) -> Node {
        Node::start_in(tempfile::tempdir().expect("temp dir"), extra)
    }

    /// A fresh node with `env` set in its environment at every launch.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Node {
        Node::launched(tempfile::tempdir().expect("temp dir"), extra, env)
    }

    /// A node serving `dir/data` (created with the test admin if it holds no log).
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Node {
        Node::launched(dir, extra, &[])
    }

    fn launched(dir: tempfile::TempDir, extra: &[&str], env: &[(&str, &str)]) -> Node {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            // Shorter than any idle timeout a test gives the node (hostile.rs: 2 s),
            // so a pooled connection is never reused just as the node closes it.
            .pool_idle_timeout(Duration::from_secs(1))
            .no_proxy()
            .build()
            .expect("http client");
        let mut node = Node {
            child: None,
            dir,
            args: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            starts: 0,
            url: String::new(),
            http,
        };
        node.launch();
        node
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("node-{}.log", self.starts))
    }

    /// The node's stderr so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn launch(&mut self) {
        for _attempt in 0..5 {
            self.starts += 1;
            let port = free_port();
            let log = std::fs::File::create(self.log_path()).expect("log file");
            let child = serve_command(&self.data_dir(), port, &self.args)
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .stderr(log)
                .spawn()
                .expect("starting custody-node");
            self.child = Some(child);
            self.url = format!("http://127.0.0.1:{port}");
            if self.wait_healthy() {
                return;
            }
            // The port may have been taken between probing and binding: try another.
            if !self.log().contains("listening on") {
                panic!("custody-node did not start:\n{}", self.log());
            }
        }
        panic!("custody-node found no free port:\n{}", self.log());
    }

    fn wait_healthy(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    return false;
                }
            }
            // Only once this node says it listens on the port: until then a /healthz
            // answer could come from another test's node that took the port first.
            let listening = format!("listening addr={}", self.url.trim_start_matches("http://"));
            if self.log().contains(&listening) {
                if let Ok(r) = self.http.get(format!("{}/healthz", self.url)).send() {
                    if r.status().is_success() {
                        return true;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("custody-node was not healthy within 60 s:\n{}", self.log());
    }

    /// Sends SIGTERM (graceful shutdown) without waiting; false if the node is gone.
    pub fn terminate(&self) -> bool {
        let Some(child) = self.child.as_ref() else {
            return false;
        };
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Stops the node with SIGTERM and waits for it to exit; returns its status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("node is running");
        stop_child(&mut child, Duration::from_secs(60)).unwrap_or_else(|| {
            panic!(
                "custody-node did not stop within 60 s of SIGTERM:\n{}",
                self.log()
            )
        })
    }

    /// Stops the node (it must exit 0) and hands back its directory (`data/` inside),
    /// to copy, tamper with, or serve again with [`Node::start_in`].
    pub fn stop_and_keep(mut self) -> tempfile::TempDir {
        let status = self.stop();
        assert!(
            status.success(),
            "custody-node exited with {status} on SIGTERM:\n{}",
            self.log()
        );
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"))
    }

    /// Stops the node (it must exit 0) and serves the same data directory again.
    pub fn restart(&mut self) {
        let status = self.stop();
        assert!(
            status.success(),
            "custody-node exited with {status} on SIGTERM:\n{}",
            self.log()
        );
        self.launch();
    }

    /// Kills the node with SIGKILL (no shutdown hook runs: what a crash or the OOM
    /// killer does) and reaps it. Serve the same data again with [`Node::relaunch`].
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("node is running");
        // `Child::kill` is SIGKILL on Unix.
        child.kill().expect("sending SIGKILL to the node");
        let status = child.wait().expect("reaping the killed node");
        assert!(!status.success(), "a SIGKILLed node cannot exit 0");
    }

    /// Serves the same data directory again after [`Node::kill9`] (on a new port;
    /// `url` changes). Panics if the node does not become healthy.
    pub fn relaunch(&mut self) {
        assert!(self.child.is_none(), "the node is still running");
        self.launch();
    }

    /// The node's process id (for /proc readings), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn get(&self, path: &str) -> Answer {
        self.answer(self.http.get(format!("{}{path}", self.url)))
    }

    pub fn post(&self, path: &str, content_type: &str, body: Vec<u8>) -> Answer {
        self.answer(
            self.http
                .post(format!("{}{path}", self.url))
                .header("content-type", content_type)
                .body(body),
        )
    }

    pub fn post_json(&self, path: &str, v: &Value) -> Answer {
        self.post(
            path,
            "application/json",
            serde_json::to_vec(v).expect("JSON"),
        )
    }

    fn answer(&self, req: reqwest::blocking::RequestBuilder) -> Answer {
        let r = req
            .send()
            .unwrap_or_else(|e| panic!("request failed: {e}\nnode log:\n{}", self.log()));
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = r.bytes().expect("reading the answer").to_vec();
        Answer {
            status,
            content_type,
            headers,
            body,
        }
    }

    /// `GET` a JSON route that must succeed.
    pub fn get_json(&self, path: &str) -> Value {
        let a = self.get(path);
        assert_eq!(a.status, 200, "GET {path}: {}", a.text());
        a.json()
    }

    pub fn vkey(&self) -> String {
        self.get_json("/v1/log")["vkey"]
            .as_str()
            .expect("vkey")
            .to_owned()
    }

    /// The latest checkpoint, its signature verified.
    pub fn checkpoint(&self) -> SignedCheckpoint {
        let note = self.get("/checkpoint").text();
        CheckpointVerifier::new(&self.vkey())
            .expect("vkey parses")
            .verify(&note)
            .expect("checkpoint verifies")
    }

    pub fn size(&self) -> u64 {
        self.get_json("/v1/log")["tree_size"]
            .as_u64()
            .expect("tree_size")
    }

    /// Signs `payload` with `k` and posts it as one event.
    pub fn send(&self, k: &SigningKey, payload: &Value) -> Answer {
        self.post_json("/v1/events", &sign(k, payload))
    }

    /// Sends an event that must be newly logged; returns its verified receipt.
    pub fn append(&self, k: &SigningKey, payload: &Value) -> Value {
        let a = self.send(k, payload);
        assert_eq!(a.status, 201, "append refused: {}", a.text());
        let r = a.json();
        verify_receipt(&r, &self.vkey());
        r
    }

    /// Registers `k` as an actor, signed by the admin.
    pub fn register(&self, k: &SigningKey, name: &str, org: &str, roles: &[&str]) -> Value {
        self.append(&admin(), &register(k, name, org, roles))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends `GET path` byte for byte over a plain TCP connection (HTTP clients normalise
/// `..` and percent-escapes away; an attacker does not) and returns the status and
/// the whole answer, headers included.
pub fn raw_get(node: &Node, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = node.url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connecting to the node");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("read timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("sending the request");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("reading the answer");
    let out = String::from_utf8_lossy(&out).into_owned();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

/// Checks a receipt as a client must: its checkpoint is signed by the log key, and
/// its inclusion proof leads from its leaf hash to that checkpoint's root.
pub fn verify_receipt(receipt: &Value, vkey: &str) -> Receipt {
    let mut v = receipt.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("duplicate");
    }
    let r: Receipt = serde_json::from_value(v).expect("receipt has the documented fields");
    let log = CheckpointVerifier::new(vkey).expect("vkey");
    if let Err(e) = r.verify(&log) {
        panic!(
            "receipt does not verify: {e}
{receipt}"
        );
    }
    r
}

/// Where spec/ lives (for the OpenAPI test).
pub fn spec_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../spec"))
}

/// Copies a directory tree (a stopped node's data dir, say) into `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create copy dir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("dir entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("file type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy file");
        }
    }
}

/// Output of one `custody` run.
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "custody printed no JSON ({e}):\n{}\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// Runs the real `custody` binary with `args`, in `cwd`, against `node` (if any),
/// with no config file of the user's.
pub fn custody(cwd: &Path, node: Option<&str>, args: &[&str]) -> Run {
    let out = custody_command(cwd, node, args)
        .output()
        .expect("running custody");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The command line [`custody`] runs, for a test that sets more (its stderr, say).
pub fn custody_command(cwd: &Path, node: Option<&str>, args: &[&str]) -> Command {
    let mut cmd = Command::new(binary("custody"));
    cmd.current_dir(cwd)
        .args(args)
        .env_remove("CUSTODY_NODE")
        .env_remove("CUSTODY_KEY")
        .env_remove("CUSTODY_LOG_KEY")
        .env("CUSTODY_CONFIG", cwd.join("no-such-config.json"))
        .stdin(Stdio::null());
    if let Some(url) = node {
        cmd.env("CUSTODY_NODE", url);
    }
    cmd
}
