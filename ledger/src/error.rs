//! The ledger's one error type: a stable machine code, the offending field, what
//! happened and what was expected. The node maps it onto RFC 9457 problem bodies;
//! the CLI prints it for a person.

use std::fmt;

/// Stable error codes. Their strings are part of the wire contract (spec/errors.md):
/// never rename one, only add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// The request or envelope is not well-formed JSON of the expected shape.
    MalformedEnvelope,
    /// The DSSE payload is not a valid event (a field is missing, mistyped or out of range).
    InvalidEvent,
    /// The payload names a kind this log does not know.
    UnknownKind,
    /// Base64 or hex that does not decode.
    BadEncoding,
    /// The Ed25519 signature does not verify.
    BadSignature,
    /// The signing key is not registered in this log.
    UnknownKey,
    /// The signing key was revoked before this entry.
    RevokedKey,
    /// The signer's roles do not permit this kind of event.
    RoleNotPermitted,
    /// A ref names an index that is not in the log.
    RefNotFound,
    /// A ref's leaf hash differs from the entry at that index.
    RefMismatch,
    /// A due-process rule refused the event (see `rule`).
    DueProcess,
    /// The same event (payload) is already logged, signed by another key.
    Conflict,
    /// A body, batch or blob over the configured limit.
    TooLarge,
    /// The thing asked for does not exist.
    NotFound,
    /// A number out of the range the log can answer (index ≥ size, …).
    OutOfRange,
    /// The append queue is full: retry later.
    Overloaded,
    /// A cryptographic proof or checkpoint failed to verify.
    VerificationFailed,
    /// The store on disk is not consistent with its own checkpoint.
    Corrupt,
    /// The disk or database failed.
    Storage,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::MalformedEnvelope => "malformed_envelope",
            Code::InvalidEvent => "invalid_event",
            Code::UnknownKind => "unknown_kind",
            Code::BadEncoding => "bad_encoding",
            Code::BadSignature => "bad_signature",
            Code::UnknownKey => "unknown_key",
            Code::RevokedKey => "revoked_key",
            Code::RoleNotPermitted => "role_not_permitted",
            Code::RefNotFound => "ref_not_found",
            Code::RefMismatch => "ref_mismatch",
            Code::DueProcess => "due_process",
            Code::Conflict => "conflict",
            Code::TooLarge => "too_large",
            Code::NotFound => "not_found",
            Code::OutOfRange => "out_of_range",
            Code::Overloaded => "overloaded",
            Code::VerificationFailed => "verification_failed",
            Code::Corrupt => "corrupt_store",
            Code::Storage => "storage",
        }
    }

    /// The HTTP status this code is answered with.
    pub fn http_status(self) -> u16 {
        match self {
            Code::MalformedEnvelope | Code::BadEncoding => 400,
            Code::BadSignature => 401,
            Code::UnknownKey | Code::RevokedKey | Code::RoleNotPermitted => 403,
            Code::NotFound => 404,
            Code::RefMismatch | Code::Conflict => 409,
            Code::TooLarge => 413,
            Code::InvalidEvent
            | Code::UnknownKind
            | Code::RefNotFound
            | Code::DueProcess
            | Code::OutOfRange
            | Code::VerificationFailed => 422,
            Code::Overloaded => 503,
            Code::Corrupt | Code::Storage => 500,
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong, where, and what would have been right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerError {
    pub code: Code,
    /// JSON-pointer-like path of the offending field (`payload.refs[1].leaf_hash`).
    pub field: Option<String>,
    /// What happened, naming the input.
    pub detail: String,
    /// What would have been accepted.
    pub expected: Option<String>,
    /// For `DueProcess`: the rule that refused (spec/due-process.md).
    pub rule: Option<&'static str>,
}

impl LedgerError {
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        Self {
            code,
            field: None,
            detail: detail.into(),
            expected: None,
            rule: None,
        }
    }
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
    pub fn expected(mut self, expected: impl Into<String>) -> Self {
        self.expected = Some(expected.into());
        self
    }
    pub fn rule(mut self, rule: &'static str) -> Self {
        self.rule = Some(rule);
        self
    }
    /// Prefixes the field path (used when an error found inside a part is reported
    /// for the whole: `body` → `payload.body`).
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = Some(match self.field.take() {
            Some(f) if f == prefix || f.starts_with(&format!("{prefix}.")) => f,
            Some(f) if f.starts_with('[') => format!("{prefix}{f}"),
            Some(f) => format!("{prefix}.{f}"),
            None => prefix.to_owned(),
        });
        self
    }
    pub fn storage(err: impl fmt::Display) -> Self {
        Self::new(Code::Storage, format!("storage failure: {err}"))
            .expected("a writable, healthy data directory; check disk space and permissions")
    }
    pub fn corrupt(detail: impl Into<String>) -> Self {
        Self::new(Code::Corrupt, detail)
            .expected("a store whose tree matches its last signed checkpoint; restore it from a backup or a mirror and run `custody audit`")
    }
}

impl fmt::Display for LedgerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(rule) = self.rule {
            write!(f, " ({rule})")?;
        }
        if let Some(field) = &self.field {
            write!(f, " at {field}")?;
        }
        write!(f, ": {}", self.detail)?;
        if let Some(exp) = &self.expected {
            write!(f, "; expected {exp}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LedgerError {}

pub type Result<T, E = LedgerError> = std::result::Result<T, E>;
