//! `custody append <kind>`: typed flags for every kind's body, refs pinned to the
//! leaf hash the node serves, attachments hashed and uploaded, the envelope signed
//! locally, and the receipt's proof verified before saying "ok".

use crate::client::Client;
use anyhow::{bail, Context, Result};
use base64::Engine;
use clap::{Args, Subcommand};
use ed25519_dalek::SigningKey;
use ledger::checkpoint::CheckpointVerifier;
use ledger::envelope::Envelope;
use ledger::receipt::Receipt;
use serde_json::{json, Map, Value};
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct Common {
    /// The case this event belongs to (required for detection, notice, takedown,
    /// counter_notice, reinstatement, legal_action, withdrawal).
    #[arg(long)]
    pub case: Option<String>,
    /// Index of an earlier entry this event rests on (repeatable); its leaf hash is
    /// fetched from the node and pinned in the event.
    #[arg(long = "ref", value_name = "INDEX")]
    pub refs: Vec<u64>,
    /// A file to attach (repeatable): hashed with BLAKE3, uploaded as a blob, referenced.
    #[arg(long = "attach", value_name = "FILE")]
    pub attach: Vec<PathBuf>,
    /// When it happened, RFC 3339 (default: now).
    #[arg(long)]
    pub claimed_at: Option<String>,
    /// The whole body as a JSON file ("-" for stdin), instead of the typed flags.
    #[arg(long, value_name = "FILE")]
    pub body: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Kind {
    /// A registered trademark, copyright or design.
    Right {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_name = "trademark|copyright|design")]
        right_type: Option<String>,
        #[arg(long)]
        registration_number: Option<String>,
        /// Registering office (USPTO, EUIPO, WIPO, …).
        #[arg(long)]
        office: Option<String>,
        /// ISO 3166-1 alpha-2 code or EU (repeatable).
        #[arg(long = "jurisdiction")]
        jurisdictions: Vec<String>,
        #[arg(long)]
        owner: Option<String>,
        /// Nice class or goods (repeatable).
        #[arg(long = "class")]
        classes: Vec<String>,
        #[arg(long, value_name = "YYYY-MM-DD")]
        valid_from: Option<String>,
        #[arg(long, value_name = "YYYY-MM-DD")]
        valid_until: Option<String>,
    },
    /// A physical authentication scan.
    Scan {
        #[command(flatten)]
        common: Common,
        /// GTIN or SKU.
        #[arg(long)]
        product_id: Option<String>,
        #[arg(long)]
        serial: Option<String>,
        #[arg(long)]
        batch: Option<String>,
        /// qr, hologram, nfc, tag, rfid, other.
        #[arg(long)]
        marking: Option<String>,
        #[arg(long, value_name = "genuine|suspect|counterfeit")]
        result: Option<String>,
        /// ISO 3166-1 alpha-2.
        #[arg(long)]
        country: Option<String>,
        #[arg(long)]
        region: Option<String>,
        #[arg(long)]
        lat: Option<f64>,
        #[arg(long)]
        lon: Option<f64>,
        #[arg(long)]
        device: Option<String>,
        #[arg(long)]
        test_purchase_order: Option<String>,
    },
    /// An infringing listing found online (opens a case).
    Detection {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        marketplace: Option<String>,
        #[arg(long)]
        listing_url: Option<String>,
        #[arg(long)]
        listing_id: Option<String>,
        #[arg(long)]
        seller_id: Option<String>,
        #[arg(long)]
        seller_name: Option<String>,
        /// Decimal price, e.g. 19.99 (with --currency).
        #[arg(long)]
        price: Option<String>,
        #[arg(long)]
        currency: Option<String>,
        #[arg(long, value_name = "image_match|ocr|text|manual_review|model")]
        method: Option<String>,
        /// 0 to 100.
        #[arg(long)]
        confidence: Option<u8>,
    },
    /// A takedown notice (DMCA §512(c)(3), DSA Art. 16, platform policy).
    Notice {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_name = "dmca-512|eu-dsa|platform")]
        regime: Option<String>,
        /// Index of the `right` entry infringed (added to the refs).
        #[arg(long)]
        right: Option<u64>,
        #[arg(long)]
        listing_url: Option<String>,
        #[arg(long)]
        contact_name: Option<String>,
        #[arg(long)]
        contact_email: Option<String>,
        #[arg(long)]
        contact_address: Option<String>,
        #[arg(long)]
        contact_phone: Option<String>,
        /// Why the listing infringes.
        #[arg(long)]
        explanation: Option<String>,
        /// Affirm the good-faith, accuracy and authority statements the law requires.
        #[arg(long)]
        affirm: bool,
    },
    /// The marketplace's decision on a notice.
    Takedown {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_name = "removed|disabled|rejected")]
        decision: Option<String>,
        /// Legal or policy ground relied on.
        #[arg(long)]
        ground: Option<String>,
        #[arg(long)]
        statement_of_reasons: Option<String>,
        /// Automated means were used.
        #[arg(long)]
        automated: bool,
        /// How the seller can seek redress.
        #[arg(long)]
        redress: Option<String>,
    },
    /// A seller's counter-notice, relayed by the marketplace (DMCA §512(g)(3)).
    CounterNotice {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        listing_url: Option<String>,
        #[arg(long)]
        seller_name: Option<String>,
        #[arg(long)]
        seller_address: Option<String>,
        #[arg(long)]
        seller_phone: Option<String>,
        #[arg(long)]
        statement: Option<String>,
        /// Affirm the seller's good-faith-mistake and jurisdiction statements.
        #[arg(long)]
        affirm: bool,
    },
    /// The listing is restored.
    Reinstatement {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        listing_url: Option<String>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// The rights holder filed a court action (blocks reinstatement).
    LegalAction {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        court: Option<String>,
        #[arg(long)]
        court_case_number: Option<String>,
        #[arg(long, value_name = "YYYY-MM-DD")]
        filed_on: Option<String>,
    },
    /// The notifier retracts its notice.
    Withdrawal {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        reason: Option<String>,
    },
}

/// Drops absent optional fields so the node sees only what was given.
fn obj(pairs: Vec<(&str, Value)>) -> Value {
    let mut m = Map::new();
    for (k, v) in pairs {
        let empty = v.is_null() || v.as_array().is_some_and(|a| a.is_empty());
        if !empty {
            m.insert(k.to_owned(), v);
        }
    }
    Value::Object(m)
}

impl Kind {
    fn parts(&self) -> (&'static str, &Common, Value) {
        match self {
            Kind::Right {
                common,
                right_type,
                registration_number,
                office,
                jurisdictions,
                owner,
                classes,
                valid_from,
                valid_until,
            } => (
                "right",
                common,
                obj(vec![
                    ("right_type", json!(right_type)),
                    ("registration_number", json!(registration_number)),
                    ("office", json!(office)),
                    ("jurisdictions", json!(jurisdictions)),
                    ("owner", json!(owner)),
                    ("classes", json!(classes)),
                    ("valid_from", json!(valid_from)),
                    ("valid_until", json!(valid_until)),
                ]),
            ),
            Kind::Scan {
                common,
                product_id,
                serial,
                batch,
                marking,
                result,
                country,
                region,
                lat,
                lon,
                device,
                test_purchase_order,
            } => (
                "scan",
                common,
                obj(vec![
                    ("product_id", json!(product_id)),
                    ("serial", json!(serial)),
                    ("batch", json!(batch)),
                    ("marking", json!(marking)),
                    ("result", json!(result)),
                    (
                        "location",
                        obj(vec![
                            ("country", json!(country)),
                            ("region", json!(region)),
                            ("lat", json!(lat)),
                            ("lon", json!(lon)),
                        ]),
                    ),
                    ("device", json!(device)),
                    ("test_purchase_order", json!(test_purchase_order)),
                ]),
            ),
            Kind::Detection {
                common,
                marketplace,
                listing_url,
                listing_id,
                seller_id,
                seller_name,
                price,
                currency,
                method,
                confidence,
            } => (
                "detection",
                common,
                obj(vec![
                    ("marketplace", json!(marketplace)),
                    ("listing_url", json!(listing_url)),
                    ("listing_id", json!(listing_id)),
                    ("seller_id", json!(seller_id)),
                    ("seller_name", json!(seller_name)),
                    (
                        "price",
                        if price.is_some() || currency.is_some() {
                            obj(vec![
                                ("amount", json!(price)),
                                ("currency", json!(currency)),
                            ])
                        } else {
                            Value::Null
                        },
                    ),
                    ("method", json!(method)),
                    ("confidence", json!(confidence)),
                ]),
            ),
            Kind::Notice {
                common,
                regime,
                right,
                listing_url,
                contact_name,
                contact_email,
                contact_address,
                contact_phone,
                explanation,
                affirm,
            } => (
                "notice",
                common,
                obj(vec![
                    ("regime", json!(regime)),
                    ("right", json!(right)),
                    ("listing_url", json!(listing_url)),
                    (
                        "contact",
                        obj(vec![
                            ("name", json!(contact_name)),
                            ("email", json!(contact_email)),
                            ("address", json!(contact_address)),
                            ("phone", json!(contact_phone)),
                        ]),
                    ),
                    ("good_faith", json!(affirm)),
                    ("accurate", json!(affirm)),
                    ("authorised", json!(affirm)),
                    ("explanation", json!(explanation)),
                ]),
            ),
            Kind::Takedown {
                common,
                decision,
                ground,
                statement_of_reasons,
                automated,
                redress,
            } => (
                "takedown",
                common,
                obj(vec![
                    ("decision", json!(decision)),
                    ("ground", json!(ground)),
                    ("statement_of_reasons", json!(statement_of_reasons)),
                    ("automated", json!(automated)),
                    ("redress", json!(redress)),
                ]),
            ),
            Kind::CounterNotice {
                common,
                listing_url,
                seller_name,
                seller_address,
                seller_phone,
                statement,
                affirm,
            } => (
                "counter_notice",
                common,
                obj(vec![
                    ("listing_url", json!(listing_url)),
                    ("good_faith_mistake", json!(affirm)),
                    ("consent_to_jurisdiction", json!(affirm)),
                    (
                        "seller",
                        obj(vec![
                            ("name", json!(seller_name)),
                            ("address", json!(seller_address)),
                            ("phone", json!(seller_phone)),
                        ]),
                    ),
                    ("statement", json!(statement)),
                ]),
            ),
            Kind::Reinstatement {
                common,
                listing_url,
                reason,
            } => (
                "reinstatement",
                common,
                obj(vec![
                    ("listing_url", json!(listing_url)),
                    ("reason", json!(reason)),
                ]),
            ),
            Kind::LegalAction {
                common,
                court,
                court_case_number,
                filed_on,
            } => (
                "legal_action",
                common,
                obj(vec![
                    ("court", json!(court)),
                    ("court_case_number", json!(court_case_number)),
                    ("filed_on", json!(filed_on)),
                ]),
            ),
            Kind::Withdrawal { common, reason } => {
                ("withdrawal", common, obj(vec![("reason", json!(reason))]))
            }
        }
    }
}

fn read_json_file(path: &PathBuf) -> Result<Value> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// Builds a payload: pins refs to the node's leaf hashes, uploads attachments.
pub fn payload(client: &Client, kind: &str, common: &Common, mut body: Value) -> Result<Vec<u8>> {
    if let Some(path) = &common.body {
        body = read_json_file(path)?;
    }
    let mut ref_indices = common.refs.clone();
    if kind == "notice" {
        if let Some(r) = body.get("right").and_then(|v| v.as_u64()) {
            if !ref_indices.contains(&r) {
                ref_indices.push(r);
            }
        }
    }
    let mut refs = Vec::new();
    for i in ref_indices {
        let bytes = client
            .get_bytes(&format!("/v1/entries/{i}"))
            .with_context(|| format!("--ref {i}: fetching the entry to pin its leaf hash"))?;
        refs.push(json!({"index": i, "leaf_hash": ledger::entry::leaf_hash(&bytes).to_hex()}));
    }
    let mut attachments = Vec::new();
    for path in &common.attach {
        let data = std::fs::read(path).with_context(|| format!("--attach {}", path.display()))?;
        let hash = blake3::hash(&data).to_hex().to_string();
        let answer = client.post_bytes("/v1/blobs", data.clone())?;
        if answer.get("blake3").and_then(|v| v.as_str()) != Some(hash.as_str()) {
            bail!(
                "the node stored {} under another hash than its BLAKE3 {hash}",
                path.display()
            );
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "attachment".into());
        attachments.push(json!({
            "blake3": hash, "media_type": media_type(path), "size": data.len(), "name": name
        }));
    }
    let claimed_at = common
        .claimed_at
        .clone()
        .unwrap_or_else(|| ledger::entry::format_time(chrono::Utc::now()));
    let p = obj(vec![
        ("kind", json!(kind)),
        ("case", json!(common.case)),
        ("claimed_at", json!(claimed_at)),
        ("refs", json!(refs)),
        ("attachments", json!(attachments)),
        ("body", body),
    ]);
    let bytes = serde_json::to_vec(&p)?;
    // Check locally first: a person gets the same field-named error without a round trip.
    ledger::event::Event::parse(&bytes)
        .map_err(|e| anyhow::anyhow!("the event is not valid: {e}"))?;
    Ok(bytes)
}

fn media_type(path: &std::path::Path) -> &'static str {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .as_deref()
    {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("webp") => "image/webp",
        Some("pdf") => "application/pdf",
        Some("html" | "htm") => "text/html",
        Some("warc") => "application/warc",
        Some("json") => "application/json",
        Some("txt") => "text/plain",
        _ => "application/octet-stream",
    }
}

/// Checks a receipt: its checkpoint is signed by the log key and its inclusion
/// proof leads from the entry's leaf hash to that checkpoint's root.
pub fn verify_receipt(r: &Receipt, vkey: &str) -> Result<()> {
    r.verify(&CheckpointVerifier::new(vkey)?)?;
    Ok(())
}

pub fn sign_and_send(
    client: &Client,
    key: &SigningKey,
    payload: &[u8],
    vkey: &str,
) -> Result<(Receipt, bool)> {
    let env = Envelope::sign(payload, key);
    let body: Value = serde_json::from_slice(&env.to_json())?;
    let (status, answer) = client.post_json("/v1/events", &body)?;
    let receipt = checked_receipt(answer, payload, vkey)?;
    Ok((receipt, status == 200))
}

/// The node's receipt for `payload`, once it names that event and its proof
/// verifies against the log's key.
fn checked_receipt(answer: Value, payload: &[u8], vkey: &str) -> Result<Receipt> {
    let receipt: Receipt = serde_json::from_value(strip_duplicate(answer))
        .context("the node's receipt does not have the expected fields")?;
    if receipt.event_id != ledger::types::EventId::of_payload(payload) {
        bail!(
            "the node answered with a receipt for another event ({})",
            receipt.event_id
        );
    }
    verify_receipt(&receipt, vkey)?;
    Ok(receipt)
}

fn strip_duplicate(mut v: Value) -> Value {
    if let Some(m) = v.as_object_mut() {
        m.remove("duplicate");
    }
    v
}

/// `custody append --batch FILE.jsonl`: one event per line,
/// `{"kind", "case"?, "claimed_at"?, "refs"?: [index…], "body"}`. Per line, its
/// checked receipt and whether the log already held the event, or the problem
/// that refused it.
pub fn batch(
    client: &Client,
    key: &SigningKey,
    path: &PathBuf,
    vkey: &str,
) -> Result<Vec<Result<(Receipt, bool), String>>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut payloads = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), n + 1))?;
        let kind = v
            .get("kind")
            .and_then(|k| k.as_str())
            .with_context(|| format!("{}:{}: no kind", path.display(), n + 1))?;
        let common = Common {
            case: v.get("case").and_then(|c| c.as_str()).map(str::to_owned),
            refs: v
                .get("refs")
                .and_then(|r| r.as_array())
                .map(|a| a.iter().filter_map(|x| x.as_u64()).collect())
                .unwrap_or_default(),
            attach: vec![],
            claimed_at: v
                .get("claimed_at")
                .and_then(|c| c.as_str())
                .map(str::to_owned),
            body: None,
        };
        let p = payload(
            client,
            kind,
            &common,
            v.get("body").cloned().unwrap_or(Value::Null),
        )
        .with_context(|| format!("{}:{}", path.display(), n + 1))?;
        payloads.push(p);
    }
    let mut out = Vec::new();
    for chunk in payloads.chunks(1000) {
        let envs: Vec<Value> = chunk
            .iter()
            .map(|p| serde_json::from_slice(&Envelope::sign(p, key).to_json()))
            .collect::<Result<_, _>>()?;
        let (_, answer) = client.post_json("/v1/events:batch", &json!({"envelopes": envs}))?;
        let results = answer
            .get("results")
            .and_then(|r| r.as_array())
            .context("batch answer has no results")?;
        if results.len() != chunk.len() {
            bail!(
                "the node answered {} results for {} envelopes",
                results.len(),
                chunk.len()
            );
        }
        for (r, p) in results.iter().zip(chunk) {
            if let Some(rec) = r.get("receipt") {
                let duplicate = rec.get("duplicate").and_then(Value::as_bool) == Some(true);
                out.push(Ok((checked_receipt(rec.clone(), p, vkey)?, duplicate)));
            } else {
                let problem = r.get("problem").cloned().unwrap_or(Value::Null);
                out.push(Err(crate::client::Problem {
                    status: r.get("status").and_then(|s| s.as_u64()).unwrap_or(0) as u16,
                    body: problem,
                }
                .to_string()));
            }
        }
    }
    Ok(out)
}

pub fn kind_parts(kind: &Kind) -> (&'static str, &Common, Value) {
    kind.parts()
}

pub fn decode_entry_payload(entry: &[u8]) -> Result<Value> {
    let e = ledger::entry::Entry::parse(entry)?;
    let p = base64::engine::general_purpose::STANDARD.decode(&e.envelope.payload)?;
    Ok(serde_json::from_slice(&p)?)
}
