//! `custody`: the command line for the three kinds of user of a Custody log.
//! Brands append signed events; adjudicators verify evidence bundles offline;
//! auditors replay the whole log. Signing happens here: private keys never leave
//! the machine. Verification uses `ledger` without RocksDB.

mod append;
mod audit;
mod bench;
mod client;
mod keys;
mod mux;
mod wire;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use client::Client;
use ledger::bundle::Bundle;
use ledger::types::KeyId;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// jemalloc, as in the node: an audit allocates some twenty-five small blocks per
/// entry (parsed strings, decoded payload and signature), and with glibc's malloc
/// and free it took 2.1% more instructions (callgrind, an audit of 100,002
/// entries: 16.60G against 16.25G).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser, Debug)]
#[command(
    name = "custody",
    version,
    about = "Append to, prove, verify and audit a Custody evidence log"
)]
struct Cli {
    /// Node URL. Also CUSTODY_NODE, or "node" in the config file.
    #[arg(long, global = true, env = "CUSTODY_NODE")]
    node: Option<String>,
    /// Your key file (from `custody keygen`). Also CUSTODY_KEY, or "key" in the config file.
    #[arg(long, global = true, env = "CUSTODY_KEY")]
    key: Option<PathBuf>,
    /// The log's verifier key (signed-note vkey) to trust. Also CUSTODY_LOG_KEY, or
    /// "log_key" in the config file; without it the node's announced key is used.
    #[arg(long, global = true, env = "CUSTODY_LOG_KEY")]
    log_key: Option<String>,
    /// Config file (JSON: {"node", "key", "log_key"}). Default ~/.config/custody/config.json.
    #[arg(long, global = true, env = "CUSTODY_CONFIG")]
    config: Option<PathBuf>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create an Ed25519 key file (mode 0600) and print its public key.
    Keygen {
        /// Where to write the key.
        #[arg(short, long)]
        out: PathBuf,
    },
    /// Register or revoke an actor (signed with an admin key).
    Actor {
        #[command(subcommand)]
        cmd: ActorCmd,
    },
    /// Append a signed event (or --batch FILE.jsonl).
    Append {
        /// One event per line: {"kind","case"?,"claimed_at"?,"refs"?:[index…],"body"}.
        #[arg(long, value_name = "FILE.jsonl")]
        batch: Option<PathBuf>,
        #[command(subcommand)]
        kind: Option<Box<append::Kind>>,
    },
    /// Print an entry's inclusion proof, verified against the signed checkpoint.
    Prove { index: u64 },
    /// Write the evidence bundle of an entry (the event and its whole chain).
    Bundle {
        index: u64,
        #[arg(short, long)]
        out: PathBuf,
        /// Also download every attachment into this directory (named by BLAKE3).
        #[arg(long)]
        attachments: Option<PathBuf>,
    },
    /// Verify an evidence bundle offline (no network).
    Verify {
        file: PathBuf,
        /// Directory of attachments named by their BLAKE3 hex (from `custody bundle --attachments`).
        #[arg(long)]
        attachments: Option<PathBuf>,
    },
    /// Replay and verify the entire log of a node.
    Audit {
        /// Node URL (defaults to --node).
        node_url: Option<String>,
        /// Where the checkpoint of the previous run is remembered.
        #[arg(long, default_value = "custody-audit.json")]
        state: PathBuf,
    },
    /// Print an entry and its decoded event.
    Get { index: u64 },
    /// Print the latest checkpoint, verified.
    Checkpoint,
    /// Show a case's due-process timeline.
    Case { id: String },
    /// Key indicators per brand and marketplace (each linked to its entries).
    Stats,
    /// Load-test a node: throughput, latency and verified receipts, against this
    /// machine's Ed25519 limit.
    #[command(long_about = bench::LONG_ABOUT)]
    Bench(Box<bench::Args>),
}

#[derive(Subcommand, Debug)]
enum ActorCmd {
    /// Register an actor's public key with roles.
    Register {
        /// The actor's public key (64 hex characters).
        #[arg(long)]
        public_key: String,
        #[arg(long)]
        name: String,
        /// The organisation it acts for.
        #[arg(long)]
        org: String,
        /// admin, brand, investigator, marketplace (repeatable or comma-separated).
        #[arg(long = "role", value_delimiter = ',', required = true)]
        roles: Vec<String>,
    },
    /// Revoke an actor's key.
    Revoke {
        #[arg(long)]
        public_key: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Default, serde::Deserialize)]
struct Config {
    node: Option<String>,
    key: Option<PathBuf>,
    log_key: Option<String>,
}

struct Ctx {
    node: Option<String>,
    key: Option<PathBuf>,
    log_key: Option<String>,
    json: bool,
}

impl Ctx {
    fn client(&self) -> Result<Client> {
        let node = self
            .node
            .as_deref()
            .context("no node given: pass --node http://HOST:PORT, set CUSTODY_NODE, or put \"node\" in the config file")?;
        Client::new(node)
    }
    fn signing_key(&self) -> Result<ed25519_dalek::SigningKey> {
        let path = self
            .key
            .as_deref()
            .context("no key given: pass --key FILE, set CUSTODY_KEY, or put \"key\" in the config file (make one with `custody keygen`)")?;
        keys::load(path)
    }
    fn vkey(&self, client: &Client) -> Result<String> {
        match &self.log_key {
            Some(k) => Ok(k.clone()),
            None => Ok(client.log_info()?["vkey"]
                .as_str()
                .context("the node's /v1/log has no vkey")?
                .to_owned()),
        }
    }
    fn print(&self, v: &Value, human: impl FnOnce() -> String) -> Result<()> {
        let text = match self.json {
            true => serde_json::to_string_pretty(v).unwrap_or_default(),
            false => human(),
        };
        print_out(text + "\n")
    }
}

/// Writes the command's output, the last thing it does.
fn print_out(text: String) -> Result<()> {
    Ok(ledger::to_stdout(&text, "the command finished")?)
}

fn load_config(path: Option<&Path>) -> Result<Config> {
    let path = match path {
        Some(p) => p.to_owned(),
        None => match std::env::var_os("HOME") {
            Some(h) => PathBuf::from(h).join(".config/custody/config.json"),
            None => return Ok(Config::default()),
        },
    };
    match std::fs::read_to_string(&path) {
        Ok(t) => serde_json::from_str(&t)
            .with_context(|| format!("config file {} is not valid JSON", path.display())),
        Err(_) => Ok(Config::default()),
    }
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        ledger::to_stderr!("error: {e}");
        for cause in e.chain().skip(1) {
            ledger::to_stderr!("  caused by: {cause}");
        }
        std::process::exit(1);
    }
}

fn receipt_line(r: &ledger::receipt::Receipt, dup: bool) -> String {
    format!(
        "ok: entry {} {} (leaf {}, event {}), logged at {}, proved in tree of size {}",
        r.index,
        if dup {
            "already in the log"
        } else {
            "appended"
        },
        r.leaf_hash,
        r.event_id,
        r.logged_at,
        r.tree_size
    )
}

fn run(cli: Cli) -> Result<()> {
    let cfg = load_config(cli.config.as_deref())?;
    let ctx = Ctx {
        node: cli.node.or(cfg.node),
        key: cli.key.or(cfg.key),
        log_key: cli.log_key.or(cfg.log_key),
        json: cli.json,
    };
    match cli.cmd {
        Cmd::Keygen { out } => {
            let k = keys::generate(&out)?;
            let public = hex::encode(k.verifying_key().as_bytes());
            ctx.print(
                &json!({"public_key": public, "keyid": public, "file": out}),
                || {
                    format!(
                        "wrote {} (mode 0600)\npublic key / keyid: {public}",
                        out.display()
                    )
                },
            )?;
        }
        Cmd::Actor { cmd } => {
            let client = ctx.client()?;
            let key = ctx.signing_key()?;
            let vkey = ctx.vkey(&client)?;
            let (kind, body) = match cmd {
                ActorCmd::Register {
                    public_key,
                    name,
                    org,
                    roles,
                } => {
                    KeyId::parse(&public_key).map_err(|e| anyhow::anyhow!("--public-key: {e}"))?;
                    (
                        "actor.register",
                        json!({"key": public_key, "name": name, "org": org, "roles": roles}),
                    )
                }
                ActorCmd::Revoke { public_key, reason } => {
                    KeyId::parse(&public_key).map_err(|e| anyhow::anyhow!("--public-key: {e}"))?;
                    ("actor.revoke", json!({"key": public_key, "reason": reason}))
                }
            };
            let payload = serde_json::to_vec(&json!({
                "kind": kind, "claimed_at": ledger::entry::format_time(chrono::Utc::now()), "body": body
            }))?;
            let (r, dup) = append::sign_and_send(&client, &key, &payload, &vkey)?;
            ctx.print(&serde_json::to_value(&r)?, || receipt_line(&r, dup))?;
        }
        Cmd::Append { batch, kind } => {
            let client = ctx.client()?;
            let key = ctx.signing_key()?;
            let vkey = ctx.vkey(&client)?;
            match (batch, kind) {
                (Some(_), Some(_)) => bail!("give either --batch FILE.jsonl or one event kind, not both"),
                (Some(path), None) => {
                    let results = append::batch(&client, &key, &path, &vkey)?;
                    let failed = results.iter().filter(|r| r.is_err()).count();
                    let v: Vec<Value> = results
                        .iter()
                        .map(|r| match r {
                            Ok((r, dup)) => json!({"receipt": r, "duplicate": dup}),
                            Err(e) => json!({"error": e}),
                        })
                        .collect();
                    // The refusals are said even if the report could not be written.
                    let printed = ctx.print(&json!(v), || {
                        results
                            .iter()
                            .enumerate()
                            .map(|(i, r)| match r {
                                Ok((r, dup)) => format!("line {}: {}", i + 1, receipt_line(r, *dup)),
                                Err(e) => format!("line {}: REFUSED {e}", i + 1),
                            })
                            .collect::<Vec<_>>()
                            .join("\n")
                    });
                    if failed > 0 {
                        bail!("{failed} of {} events were refused", results.len());
                    }
                    printed?;
                }
                (None, Some(kind)) => {
                    let (name, common, body) = append::kind_parts(kind.as_ref());
                    let payload = append::payload(&client, name, common, body)?;
                    let (r, dup) = append::sign_and_send(&client, &key, &payload, &vkey)?;
                    ctx.print(&serde_json::to_value(&r)?, || receipt_line(&r, dup))?;
                }
                (None, None) => bail!("say what to append: `custody append <kind> …` or `custody append --batch FILE.jsonl`"),
            }
        }
        Cmd::Prove { index } => {
            let client = ctx.client()?;
            let vkey = ctx.vkey(&client)?;
            let cp = client.checkpoint(&vkey)?;
            let p: Value = client.get_json(&format!(
                "/v1/proofs/inclusion?index={index}&tree_size={}",
                cp.size
            ))?;
            let proof: Vec<ledger::types::RootHash> = serde_json::from_value(p["proof"].clone())?;
            let entry = client.get_bytes(&format!("/v1/entries/{index}"))?;
            let leaf = ledger::entry::leaf_hash(&entry);
            ledger::tree::verify_inclusion(&proof, cp.size, cp.root, index, leaf)?;
            let out = json!({"index": index, "tree_size": cp.size, "leaf_hash": leaf, "root_hash": cp.root,
                             "proof": proof, "checkpoint": cp.note, "verified": true});
            ctx.print(&out, || {
                format!(
                    "entry {index} (leaf {leaf}) is in the log of {} entries, root {}\nproof ({} hashes) verified against the checkpoint signed by {}:\n{}",
                    cp.size, cp.root, proof.len(), cp.origin, cp.note
                )
            })?;
        }
        Cmd::Bundle {
            index,
            out,
            attachments,
        } => {
            let client = ctx.client()?;
            let vkey = ctx.vkey(&client)?;
            let bytes = client.get_bytes(&format!("/v1/bundles/{index}"))?;
            let bundle = Bundle::parse(&bytes)?;
            // Check before writing: never hand a court a bundle that does not verify.
            let report = bundle.verify(&vkey, &|_| None)?;
            std::fs::write(&out, &bytes).with_context(|| format!("writing {}", out.display()))?;
            let mut fetched = 0;
            if let Some(dir) = &attachments {
                std::fs::create_dir_all(dir)?;
                for line in &report.entries {
                    for a in &line.attachments {
                        let hexid = a.blake3.to_hex();
                        let data = client.get_bytes(&format!("/v1/blobs/{hexid}"))?;
                        if ledger::types::BlobId::of(&data) != a.blake3 {
                            bail!("blob {hexid} from the node does not hash to its name");
                        }
                        std::fs::write(dir.join(&hexid), data)?;
                        fetched += 1;
                    }
                }
            }
            ctx.print(
                &json!({"file": out, "entries": report.entries.len(), "attachments": fetched}),
                || {
                    format!(
                        "wrote {} ({} entries, {fetched} attachments downloaded)",
                        out.display(),
                        report.entries.len()
                    )
                },
            )?;
        }
        Cmd::Verify { file, attachments } => {
            let vkey = ctx
                .log_key
                .clone()
                .context("verify trusts only the log key you give it: pass --log-key VKEY (or CUSTODY_LOG_KEY)")?;
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let bundle = Bundle::parse(&bytes)?;
            let dir = attachments.clone();
            let lookup = move |h: &str| dir.as_ref().and_then(|d| std::fs::read(d.join(h)).ok());
            let report = bundle
                .verify(&vkey, &lookup)
                .map_err(|e| anyhow::anyhow!("VERIFICATION FAILED: {e}"))?;
            let wanted: usize = report.entries.iter().map(|l| l.attachments.len()).sum();
            if let Some(dir) = attachments
                .as_ref()
                .filter(|_| report.attachments_checked != wanted)
            {
                bail!(
                    "VERIFICATION FAILED: {} of {wanted} attachments are missing from {}",
                    wanted - report.attachments_checked,
                    dir.display()
                );
            }
            ctx.print(&serde_json::to_value(&report)?, || {
                let mut s = format!(
                    "VERIFIED: entry {} of log {}\nproved against the checkpoint of {} entries, root {}\n\n",
                    report.subject, report.origin, report.tree_size, report.root
                );
                s += &format!("{:>7}  {:<15} {:<24} {:<26} {:<26} {}\n", "index", "kind", "signed by", "claimed at", "logged at", "case");
                for l in &report.entries {
                    s += &format!(
                        "{:>7}  {:<15} {:<24} {:<26} {:<26} {}{}\n",
                        l.index,
                        l.kind,
                        format!("{} ({})", l.signer_name, l.signer_org),
                        l.claimed_at,
                        l.logged_at,
                        l.case.as_deref().unwrap_or("-"),
                        l.flag.as_deref().map(|f| format!("  FLAGGED: {f}")).unwrap_or_default()
                    );
                }
                s += &format!(
                    "\nevery signature, inclusion proof, ref and due-process rule holds; {} of {wanted} attachments checked by BLAKE3",
                    report.attachments_checked
                );
                s
            })?;
        }
        Cmd::Audit { node_url, state } => {
            let url = node_url
                .or(ctx.node.clone())
                .context("audit which node? pass its URL or --node")?;
            let client = Client::new(&url)?;
            let s = audit::run(&client, ctx.log_key.as_deref(), &state, ctx.json)?;
            // A failed audit is said even if its report could not be written.
            let printed = ctx.print(&serde_json::to_value(&s)?, || {
                let mut out = format!(
                    "audited {} entries of {} in {:.1}s: root {} matches the signed checkpoint of size {}\nactors: {}, cases: {}, violations: {}",
                    s.entries, s.origin, s.seconds, s.root_hash, s.tree_size, s.actors, s.cases, s.violations.len()
                );
                for v in &s.violations {
                    out += &format!("\n  entry {}: {}", v.index, v.detail);
                }
                if let Some(h) = &s.history {
                    out += &format!("\n{h}");
                }
                out
            });
            if let Some(h) = s.history {
                bail!("audit failed: {h}");
            }
            if !s.violations.is_empty() {
                bail!("audit found {} violations", s.violations.len());
            }
            printed?;
        }
        Cmd::Get { index } => {
            let client = ctx.client()?;
            let bytes = client.get_bytes(&format!("/v1/entries/{index}"))?;
            let entry: Value = serde_json::from_slice(&bytes)?;
            let event = append::decode_entry_payload(&bytes)?;
            let out = json!({"index": index, "leaf_hash": ledger::entry::leaf_hash(&bytes), "entry": entry, "event": event});
            ctx.print(&out, || {
                serde_json::to_string_pretty(&out).unwrap_or_default()
            })?;
        }
        Cmd::Checkpoint => {
            let client = ctx.client()?;
            let vkey = ctx.vkey(&client)?;
            let cp = client.checkpoint(&vkey)?;
            ctx.print(&json!({"origin": cp.origin, "tree_size": cp.size, "root_hash": cp.root, "note": cp.note}), || {
                format!("{}(signature verified with {vkey})", cp.note)
            })?;
        }
        Cmd::Case { id } => {
            let client = ctx.client()?;
            let v: Value = client.get_json(&format!("/v1/cases/{id}"))?;
            ctx.print(&v, || case_table(&v))?;
        }
        Cmd::Stats => {
            let client = ctx.client()?;
            let v: Value = client.get_json("/v1/stats")?;
            ctx.print(&v, || stats_table(&v))?;
        }
        Cmd::Bench(args) => bench::run(&ctx.client()?, ctx.log_key.as_deref(), ctx.json, *args)?,
    }
    Ok(())
}

fn human_secs(s: f64) -> String {
    let s = s.max(0.0);
    if s < 120.0 {
        format!("{s:.0}s")
    } else if s < 7200.0 {
        format!("{:.0}m", s / 60.0)
    } else if s < 172_800.0 {
        format!("{:.1}h", s / 3600.0)
    } else {
        format!("{:.1}d", s / 86400.0)
    }
}

fn case_table(v: &Value) -> String {
    let str_of = |x: &Value| x.as_str().unwrap_or("-").to_owned();
    let mut s = format!("case {}: {}\n", str_of(&v["id"]), str_of(&v["state"]));
    s += &format!(
        "{:>7}  {:<15} {:<20} {:<26} {:<26} {:>8}  {}\n",
        "index", "step", "by", "claimed at", "logged at", "after", "state"
    );
    for step in v["steps"].as_array().cloned().unwrap_or_default() {
        let since = step["seconds_since_previous"]
            .as_f64()
            .map(human_secs)
            .unwrap_or_else(|| "-".into());
        let flag = step["flag"]
            .as_str()
            .map(|f| format!("  [{f}]"))
            .unwrap_or_default();
        s += &format!(
            "{:>7}  {:<15} {:<20} {:<26} {:<26} {:>8}  {}{flag}\n",
            step["index"],
            str_of(&step["kind"]),
            str_of(&step["org"]),
            str_of(&step["claimed_at"]),
            str_of(&step["logged_at"]),
            since,
            str_of(&step["state_after"]),
        );
    }
    if let Some(d) = v["deadlines"].as_array() {
        for d in d {
            s += &format!("deadline: {} {}\n", str_of(&d["name"]), str_of(&d["date"]));
        }
    }
    s
}

fn stats_table(v: &Value) -> String {
    let secs = |d: &Value, k: &str| d[k].as_f64().map(human_secs).unwrap_or_else(|| "-".into());
    let rate = |r: &Value| match r["rate"].as_f64() {
        Some(x) => format!(
            "{:.0}% ({}/{})",
            x * 100.0,
            r["numerator"],
            r["denominator"]
        ),
        None => "-".into(),
    };
    let mut s = format!("indicators at tree size {}\n", v["tree_size"]);
    for (title, key) in [("brand", "brands"), ("marketplace", "marketplaces")] {
        s += &format!(
            "\n{:<20} {:>6}  {:>16}  {:>16}  {:>14}  {:>14}  {:>5}  by state\n",
            title,
            "cases",
            "detect→notice p50/p90",
            "notice→down p50/p90",
            "counter rate",
            "reinst. rate",
            "late"
        );
        if let Some(m) = v[key].as_object() {
            for (name, f) in m {
                s += &format!(
                    "{:<20} {:>6}  {:>16}  {:>16}  {:>14}  {:>14}  {:>5}  {}\n",
                    name,
                    f["cases"],
                    format!(
                        "{}/{}",
                        secs(&f["detection_to_notice"], "median_secs"),
                        secs(&f["detection_to_notice"], "p90_secs")
                    ),
                    format!(
                        "{}/{}",
                        secs(&f["notice_to_takedown"], "median_secs"),
                        secs(&f["notice_to_takedown"], "p90_secs")
                    ),
                    rate(&f["counter_notice_rate"]),
                    rate(&f["reinstatement_rate"]),
                    f["late_reinstatements"]
                        .as_array()
                        .map(|a| a.len())
                        .unwrap_or(0),
                    f["by_state"],
                );
            }
        }
    }
    s + "\n(--json lists the entry indices behind every figure)"
}

#[cfg(test)]
mod tests {
    #[test]
    fn clap_definition_is_valid() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
