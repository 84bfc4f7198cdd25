//! The event payload (`application/vnd.custody.event+json`, spec/events.md) and its
//! strict validation. Every kind has a typed body; unknown fields are refused so that
//! a signer can never smuggle in data the log does not understand.

use crate::error::{Code, LedgerError, Result};
use crate::roles::Role;
use crate::types::{BlobId, CaseId, Index, KeyId, LeafHash};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// DSSE payloadType of every Custody event.
pub const PAYLOAD_TYPE: &str = "application/vnd.custody.event+json";
/// Largest payload accepted (bytes); bulky material belongs in attachments. Chosen
/// so the whole entry (base64 payload + signature + framing) fits the 65,535-byte
/// limit of a C2SP entry bundle.
pub const MAX_PAYLOAD_BYTES: usize = 32 * 1024;
/// Longest free-text field (characters).
pub const MAX_TEXT: usize = 4096;
/// Most refs or attachments one event may carry.
pub const MAX_LIST: usize = 64;

/// Every event kind the log knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum Kind {
    #[serde(rename = "log.genesis")]
    Genesis,
    #[serde(rename = "actor.register")]
    ActorRegister,
    #[serde(rename = "actor.revoke")]
    ActorRevoke,
    #[serde(rename = "right")]
    Right,
    #[serde(rename = "scan")]
    Scan,
    #[serde(rename = "detection")]
    Detection,
    #[serde(rename = "notice")]
    Notice,
    #[serde(rename = "takedown")]
    Takedown,
    #[serde(rename = "counter_notice")]
    CounterNotice,
    #[serde(rename = "reinstatement")]
    Reinstatement,
    #[serde(rename = "legal_action")]
    LegalAction,
    #[serde(rename = "withdrawal")]
    Withdrawal,
}

impl Kind {
    pub const ALL: [Kind; 12] = [
        Kind::Genesis,
        Kind::ActorRegister,
        Kind::ActorRevoke,
        Kind::Right,
        Kind::Scan,
        Kind::Detection,
        Kind::Notice,
        Kind::Takedown,
        Kind::CounterNotice,
        Kind::Reinstatement,
        Kind::LegalAction,
        Kind::Withdrawal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Genesis => "log.genesis",
            Kind::ActorRegister => "actor.register",
            Kind::ActorRevoke => "actor.revoke",
            Kind::Right => "right",
            Kind::Scan => "scan",
            Kind::Detection => "detection",
            Kind::Notice => "notice",
            Kind::Takedown => "takedown",
            Kind::CounterNotice => "counter_notice",
            Kind::Reinstatement => "reinstatement",
            Kind::LegalAction => "legal_action",
            Kind::Withdrawal => "withdrawal",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Kinds that belong to a case and so must name one.
    pub fn needs_case(self) -> bool {
        matches!(
            self,
            Kind::Detection
                | Kind::Notice
                | Kind::Takedown
                | Kind::CounterNotice
                | Kind::Reinstatement
                | Kind::LegalAction
                | Kind::Withdrawal
        )
    }
}

/// A reference to an earlier entry: the chain of custody.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ref {
    pub index: Index,
    pub leaf_hash: LeafHash,
}

/// A content-addressed attachment (screenshot, scan photo, archive, PDF).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    pub blake3: BlobId,
    pub media_type: String,
    pub size: u64,
    pub name: String,
}

/// The wire shape of a payload before the body is typed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPayload {
    kind: String,
    #[serde(default)]
    case: Option<String>,
    claimed_at: String,
    #[serde(default)]
    refs: Vec<Ref>,
    #[serde(default)]
    attachments: Vec<Attachment>,
    /// Kept raw so the typed body parser sees duplicate keys and refuses them
    /// (a generic JSON value would silently keep the last one).
    body: Box<serde_json::value::RawValue>,
}

/// A parsed, validated event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub case: Option<CaseId>,
    pub claimed_at: DateTime<Utc>,
    pub refs: Vec<Ref>,
    pub attachments: Vec<Attachment>,
    pub body: Body,
}

/// The per-kind body (spec/events.md §Bodies).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Body {
    Genesis(Genesis),
    ActorRegister(ActorRegister),
    ActorRevoke(ActorRevoke),
    Right(Right),
    Scan(Scan),
    Detection(Detection),
    Notice(Notice),
    Takedown(Takedown),
    CounterNotice(CounterNotice),
    Reinstatement(Reinstatement),
    LegalAction(LegalAction),
    Withdrawal(Withdrawal),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    pub origin: String,
    pub admin_key: KeyId,
    /// The log's checkpoint key in signed-note vkey form.
    pub log_vkey: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActorRegister {
    pub key: KeyId,
    pub name: String,
    /// The organisation the actor acts for (rights are owned by organisations).
    pub org: String,
    pub roles: Vec<Role>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActorRevoke {
    pub key: KeyId,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RightType {
    Trademark,
    Copyright,
    Design,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Right {
    pub right_type: RightType,
    pub registration_number: String,
    /// The office that registered it (USPTO, EUIPO, WIPO, …).
    pub office: String,
    /// ISO 3166-1 alpha-2 codes, or `EU`, where the right applies.
    pub jurisdictions: Vec<String>,
    pub owner: String,
    #[serde(default)]
    pub classes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<NaiveDate>,
    pub valid_until: NaiveDate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanResult {
    Genuine,
    Suspect,
    Counterfeit,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    /// ISO 3166-1 alpha-2.
    pub country: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lon: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scan {
    /// GTIN or SKU.
    pub product_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<String>,
    /// The marking read: `qr`, `hologram`, `nfc`, `tag`, `rfid`, `other`.
    pub marking: String,
    pub result: ScanResult,
    pub location: Location,
    pub device: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_purchase_order: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectionMethod {
    ImageMatch,
    Ocr,
    Text,
    ManualReview,
    Model,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Decimal string, e.g. "19.99" (no binary floats for money).
    pub amount: String,
    /// ISO 4217, e.g. "EUR".
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Detection {
    pub marketplace: String,
    pub listing_url: String,
    pub listing_id: String,
    pub seller_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seller_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Price>,
    pub method: DetectionMethod,
    pub confidence: u8,
}

/// The legal regime a notice is filed under; it sets the due-process windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Regime {
    #[serde(rename = "dmca-512")]
    Dmca512,
    #[serde(rename = "eu-dsa")]
    EuDsa,
    #[serde(rename = "platform")]
    Platform,
}

impl Regime {
    /// The name the wire and spec/events.md give it.
    pub fn as_str(self) -> &'static str {
        match self {
            Regime::Dmca512 => "dmca-512",
            Regime::EuDsa => "eu-dsa",
            Regime::Platform => "platform",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    pub name: String,
    pub email: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notice {
    pub regime: Regime,
    /// Index of the `right` entry infringed; it must also be among `refs`.
    pub right: Index,
    pub listing_url: String,
    pub contact: Contact,
    /// DMCA §512(c)(3)(A)(v): good-faith belief the use is not authorised.
    pub good_faith: bool,
    /// §512(c)(3)(A)(vi): the notice is accurate (under penalty of perjury).
    pub accurate: bool,
    /// §512(c)(3)(A)(vi): the notifier is authorised to act for the owner.
    pub authorised: bool,
    /// DSA Art. 16(2)(a): why the content is illegal.
    pub explanation: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Removed,
    Disabled,
    Rejected,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Takedown {
    /// Removal, disabling or rejection (DSA Art. 17(3)(a)).
    pub decision: Decision,
    /// The legal or policy ground relied on (DSA Art. 17(3)(d)/(e)).
    pub ground: String,
    /// Facts and circumstances relied on (Art. 17(3)(b)).
    pub statement_of_reasons: String,
    /// Whether automated means were used (Art. 17(3)(c)).
    pub automated: bool,
    /// How the seller can seek redress (Art. 17(3)(f)).
    pub redress: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seller {
    pub name: String,
    pub address: String,
    pub phone: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CounterNotice {
    /// §512(g)(3)(B): the material removed and where it appeared.
    pub listing_url: String,
    /// §512(g)(3)(C): good-faith belief of mistake or misidentification.
    pub good_faith_mistake: bool,
    /// §512(g)(3)(D): consent to jurisdiction.
    pub consent_to_jurisdiction: bool,
    pub seller: Seller,
    pub statement: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reinstatement {
    pub listing_url: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegalAction {
    pub court: String,
    pub court_case_number: String,
    pub filed_on: NaiveDate,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Withdrawal {
    pub reason: String,
}

fn invalid(field: &str, detail: impl Into<String>, expected: &str) -> LedgerError {
    LedgerError::new(Code::InvalidEvent, detail)
        .field(field)
        .expected(expected)
}

/// A key that can sign under the log's rule ([`crate::sig`]): registering any other
/// would name an actor that can never act.
fn usable_key(field: &str, key: &KeyId) -> Result<()> {
    match crate::sig::PublicKey::from_bytes(&key.0) {
        Some(_) => Ok(()),
        None => Err(invalid(
            field,
            format!("{key} is not a usable Ed25519 public key (not a canonical point encoding, or a point of small order)"),
            "the 32-byte Ed25519 public key of a key pair made by `custody keygen`",
        )),
    }
}

fn text(field: &str, s: &str) -> Result<()> {
    if s.trim().is_empty() {
        return Err(invalid(field, "is empty", "a non-empty string"));
    }
    if s.chars().count() > MAX_TEXT {
        return Err(invalid(
            field,
            format!("has {} characters", s.chars().count()),
            &format!("at most {MAX_TEXT} characters"),
        ));
    }
    Ok(())
}

fn url(field: &str, s: &str) -> Result<()> {
    text(field, s)?;
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') && !s.contains(char::is_whitespace) => {
            Ok(())
        }
        _ => Err(invalid(
            field,
            format!("{s:?} is not an absolute http(s) URL"),
            "an absolute URL such as https://marketplace.example/item/123",
        )),
    }
}

fn country(field: &str, s: &str) -> Result<()> {
    if s.len() == 2 && s.chars().all(|c| c.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{s:?} is not a country code"),
            "an ISO 3166-1 alpha-2 code such as \"FR\"",
        ))
    }
}

fn affirmed(field: &str, v: bool) -> Result<()> {
    if v {
        Ok(())
    } else {
        Err(invalid(
            field,
            "the statement is not affirmed",
            "true: the law requires this statement",
        ))
    }
}

fn typed<T: for<'de> Deserialize<'de>>(v: &serde_json::value::RawValue) -> Result<T> {
    serde_json::from_str(v.get()).map_err(|e| {
        LedgerError::new(Code::InvalidEvent, e.to_string())
            .field("body")
            .expected("the body fields of this kind as listed in spec/events.md")
    })
}

impl Body {
    fn parse(kind: Kind, v: &serde_json::value::RawValue) -> Result<Body> {
        let body = match kind {
            Kind::Genesis => Body::Genesis(typed(v)?),
            Kind::ActorRegister => Body::ActorRegister(typed(v)?),
            Kind::ActorRevoke => Body::ActorRevoke(typed(v)?),
            Kind::Right => Body::Right(typed(v)?),
            Kind::Scan => Body::Scan(typed(v)?),
            Kind::Detection => Body::Detection(typed(v)?),
            Kind::Notice => Body::Notice(typed(v)?),
            Kind::Takedown => Body::Takedown(typed(v)?),
            Kind::CounterNotice => Body::CounterNotice(typed(v)?),
            Kind::Reinstatement => Body::Reinstatement(typed(v)?),
            Kind::LegalAction => Body::LegalAction(typed(v)?),
            Kind::Withdrawal => Body::Withdrawal(typed(v)?),
        };
        body.check()?;
        Ok(body)
    }

    /// Range and content checks that serde's types cannot express.
    fn check(&self) -> Result<()> {
        match self {
            Body::Genesis(g) => {
                usable_key("body.admin_key", &g.admin_key)?;
                crate::checkpoint::check_origin(&g.origin).map_err(|e| e.within("body"))
            }
            Body::ActorRegister(a) => {
                usable_key("body.key", &a.key)?;
                text("body.name", &a.name)?;
                text("body.org", &a.org)?;
                if a.roles.is_empty() {
                    return Err(invalid(
                        "body.roles",
                        "no role given",
                        "at least one of admin, brand, investigator, marketplace",
                    ));
                }
                Ok(())
            }
            Body::ActorRevoke(r) => text("body.reason", &r.reason),
            Body::Right(r) => {
                text("body.registration_number", &r.registration_number)?;
                text("body.office", &r.office)?;
                text("body.owner", &r.owner)?;
                if r.jurisdictions.is_empty() {
                    return Err(invalid(
                        "body.jurisdictions",
                        "is empty",
                        "at least one ISO 3166-1 alpha-2 code or \"EU\"",
                    ));
                }
                for (i, j) in r.jurisdictions.iter().enumerate() {
                    country(&format!("body.jurisdictions[{i}]"), j)?;
                }
                if let Some(from) = r.valid_from {
                    if from > r.valid_until {
                        return Err(invalid(
                            "body.valid_until",
                            format!("{} is before valid_from {}", r.valid_until, from),
                            "a date on or after valid_from",
                        ));
                    }
                }
                Ok(())
            }
            Body::Scan(s) => {
                text("body.product_id", &s.product_id)?;
                text("body.marking", &s.marking)?;
                text("body.device", &s.device)?;
                country("body.location.country", &s.location.country)?;
                if let Some(lat) = s.location.lat {
                    if !(-90.0..=90.0).contains(&lat) {
                        return Err(invalid(
                            "body.location.lat",
                            format!("{lat} is out of range"),
                            "a latitude from -90 to 90",
                        ));
                    }
                }
                if let Some(lon) = s.location.lon {
                    if !(-180.0..=180.0).contains(&lon) {
                        return Err(invalid(
                            "body.location.lon",
                            format!("{lon} is out of range"),
                            "a longitude from -180 to 180",
                        ));
                    }
                }
                for (field, v) in [("body.serial", &s.serial), ("body.batch", &s.batch)] {
                    if let Some(v) = v {
                        text(field, v)?;
                    }
                }
                if s.serial.is_none() && s.batch.is_none() {
                    return Err(invalid(
                        "body.serial",
                        "neither serial nor batch is given",
                        "the product's serial number or batch (or both)",
                    ));
                }
                Ok(())
            }
            Body::Detection(d) => {
                text("body.marketplace", &d.marketplace)?;
                url("body.listing_url", &d.listing_url)?;
                text("body.listing_id", &d.listing_id)?;
                text("body.seller_id", &d.seller_id)?;
                if d.confidence > 100 {
                    return Err(invalid(
                        "body.confidence",
                        format!("{} is over 100", d.confidence),
                        "an integer from 0 to 100",
                    ));
                }
                if let Some(p) = &d.price {
                    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
                    let ok = match p.amount.split_once('.') {
                        Some((int, frac)) => digits(int) && digits(frac),
                        None => digits(&p.amount),
                    };
                    if !ok {
                        return Err(invalid(
                            "body.price.amount",
                            format!("{:?} is not a decimal amount", p.amount),
                            "a decimal string such as \"19.99\"",
                        ));
                    }
                    if !(p.currency.len() == 3
                        && p.currency.chars().all(|c| c.is_ascii_uppercase()))
                    {
                        return Err(invalid(
                            "body.price.currency",
                            format!("{:?} is not a currency code", p.currency),
                            "an ISO 4217 code such as \"EUR\"",
                        ));
                    }
                }
                Ok(())
            }
            Body::Notice(n) => {
                url("body.listing_url", &n.listing_url)?;
                text("body.contact.name", &n.contact.name)?;
                if !n.contact.email.contains('@') {
                    return Err(invalid(
                        "body.contact.email",
                        format!("{:?} is not an email address", n.contact.email),
                        "an address such as legal@brand.example",
                    ));
                }
                affirmed("body.good_faith", n.good_faith)?;
                affirmed("body.accurate", n.accurate)?;
                affirmed("body.authorised", n.authorised)?;
                text("body.explanation", &n.explanation)
            }
            Body::Takedown(t) => {
                text("body.ground", &t.ground)?;
                text("body.statement_of_reasons", &t.statement_of_reasons)?;
                text("body.redress", &t.redress)
            }
            Body::CounterNotice(c) => {
                url("body.listing_url", &c.listing_url)?;
                affirmed("body.good_faith_mistake", c.good_faith_mistake)?;
                affirmed("body.consent_to_jurisdiction", c.consent_to_jurisdiction)?;
                text("body.seller.name", &c.seller.name)?;
                text("body.seller.address", &c.seller.address)?;
                text("body.seller.phone", &c.seller.phone)?;
                text("body.statement", &c.statement)
            }
            Body::Reinstatement(r) => {
                url("body.listing_url", &r.listing_url)?;
                text("body.reason", &r.reason)
            }
            Body::LegalAction(l) => {
                text("body.court", &l.court)?;
                text("body.court_case_number", &l.court_case_number)
            }
            Body::Withdrawal(w) => text("body.reason", &w.reason),
        }
    }
}

impl Event {
    /// Parses and validates payload bytes. Every error names the field.
    pub fn parse(payload: &[u8]) -> Result<Event> {
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(LedgerError::new(
                Code::TooLarge,
                format!("payload is {} bytes", payload.len()),
            )
            .field("payload")
            .expected(format!(
                "at most {MAX_PAYLOAD_BYTES} bytes; put bulky material in attachments"
            )));
        }
        let raw: RawPayload = serde_json::from_slice(payload).map_err(|e| {
            LedgerError::new(
                Code::InvalidEvent,
                format!("payload is not a valid event: {e}"),
            )
            .field("payload")
            .expected(
                "a JSON object with kind, claimed_at, body and optional case, refs, attachments",
            )
        })?;
        let kind = Kind::parse(&raw.kind).ok_or_else(|| {
            LedgerError::new(Code::UnknownKind, format!("unknown kind {:?}", raw.kind))
                .field("kind")
                .expected(
                    Kind::ALL
                        .iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                )
        })?;
        let claimed_at = DateTime::parse_from_rfc3339(&raw.claimed_at)
            .map_err(|e| {
                invalid(
                    "claimed_at",
                    format!("{:?} is not an RFC 3339 timestamp ({e})", raw.claimed_at),
                    "a timestamp such as 2026-11-22T10:15:00Z",
                )
            })?
            .with_timezone(&Utc);
        let case = match raw.case {
            Some(c) => Some(CaseId::parse(&c).map_err(|e| invalid("case", e, "a case id"))?),
            None if kind.needs_case() => {
                return Err(invalid(
                    "case",
                    format!("a {} must name its case", kind.as_str()),
                    "a case id of 1-128 characters [A-Za-z0-9._:-]",
                ))
            }
            None => None,
        };
        for (field, n) in [
            ("refs", raw.refs.len()),
            ("attachments", raw.attachments.len()),
        ] {
            if n > MAX_LIST {
                return Err(LedgerError::new(Code::TooLarge, format!("{n} {field}"))
                    .field(field)
                    .expected(format!("at most {MAX_LIST} {field}")));
            }
        }
        for (i, a) in raw.attachments.iter().enumerate() {
            text(&format!("attachments[{i}].name"), &a.name)?;
            if !a.media_type.contains('/') {
                return Err(invalid(
                    &format!("attachments[{i}].media_type"),
                    format!("{:?} is not a media type", a.media_type),
                    "a media type such as image/png",
                ));
            }
        }
        let body = Body::parse(kind, &raw.body)?;
        if let Body::Notice(n) = &body {
            if !raw.refs.iter().any(|r| r.index == n.right) {
                return Err(invalid(
                    "body.right",
                    format!("right entry {} is not among refs", n.right),
                    "the right's entry also listed in refs with its leaf hash",
                ));
            }
        }
        Ok(Event {
            kind,
            case,
            claimed_at,
            refs: raw.refs,
            attachments: raw.attachments,
            body,
        })
    }

    /// Serialises a payload for signing. Clients build payloads with this; the log
    /// never re-serialises one it received.
    pub fn to_payload(&self) -> Vec<u8> {
        // Infallible: every field serialises (no maps with non-string keys).
        serde_json::to_vec(self).expect("event serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(kind: &str, body: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "kind": kind, "case": "c-1", "claimed_at": "2026-11-01T10:00:00Z", "body": body
        }))
        .unwrap()
    }

    #[test]
    fn unknown_kind_is_named() {
        let e = Event::parse(&payload("teleport", serde_json::json!({}))).unwrap_err();
        assert_eq!(e.code, Code::UnknownKind);
        assert!(e.detail.contains("teleport"));
    }

    #[test]
    fn missing_body_field_is_named() {
        let e = Event::parse(&payload("withdrawal", serde_json::json!({}))).unwrap_err();
        assert_eq!(e.code, Code::InvalidEvent);
        assert!(e.detail.contains("reason"), "{e}");
    }

    #[test]
    fn registering_a_key_that_cannot_sign_is_refused() {
        // y = 1 encodes the identity: small order, so no signature by it can verify.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let e = Event::parse(&payload(
            "actor.register",
            serde_json::json!({"key": hex::encode(identity), "name":"n","org":"o","roles":["brand"]}),
        ))
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("body.key"), "{e}");
        assert!(e.detail.contains("small order"), "{e}");
    }

    #[test]
    fn confidence_over_100_is_refused() {
        let e = Event::parse(&payload(
            "detection",
            serde_json::json!({"marketplace":"m","listing_url":"https://m.example/1","listing_id":"1",
                "seller_id":"s","method":"ocr","confidence":101}),
        ))
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("body.confidence"));
    }

    #[test]
    fn bad_timestamp_is_refused() {
        let p = serde_json::to_vec(&serde_json::json!({
            "kind": "withdrawal", "case": "c", "claimed_at": "yesterday", "body": {"reason": "x"}
        }))
        .unwrap();
        assert_eq!(
            Event::parse(&p).unwrap_err().field.as_deref(),
            Some("claimed_at")
        );
    }

    #[test]
    fn unknown_top_level_field_is_refused() {
        let p = serde_json::to_vec(&serde_json::json!({
            "kind": "withdrawal", "case": "c", "claimed_at": "2026-01-01T00:00:00Z",
            "body": {"reason": "x"}, "extra": 1
        }))
        .unwrap();
        assert!(Event::parse(&p).is_err());
    }

    #[test]
    fn case_kinds_need_a_case() {
        let p = serde_json::to_vec(&serde_json::json!({
            "kind": "withdrawal", "claimed_at": "2026-01-01T00:00:00Z", "body": {"reason": "x"}
        }))
        .unwrap();
        assert_eq!(Event::parse(&p).unwrap_err().field.as_deref(), Some("case"));
    }

    #[test]
    fn round_trips_through_to_payload() {
        let p = payload("withdrawal", serde_json::json!({"reason": "settled"}));
        let e = Event::parse(&p).unwrap();
        assert_eq!(Event::parse(&e.to_payload()).unwrap(), e);
    }
}
