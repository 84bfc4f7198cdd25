//! RFC 9457 problem details: every error the node answers is one of these, as
//! `application/problem+json`. Most come from a [`LedgerError`] (its stable code,
//! field, expectation and due-process rule); the few that only HTTP can produce
//! (wrong content type, unknown route, slow request) have node-level codes listed in
//! spec/openapi.json.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ledger::{Code, LedgerError};
use serde::Serialize;

/// Base of every problem `type` URI; the code is appended.
pub const TYPE_BASE: &str = "https://custody.dev/problems/";

/// Codes only the HTTP adapter produces (the ledger's codes cover everything else).
pub mod codes {
    /// The request body is not declared as JSON.
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";
    /// A query or path parameter is missing, conflicting or malformed.
    pub const BAD_REQUEST: &str = "bad_request";
    /// The route exists, the method does not.
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    /// The request (body upload plus processing) took longer than the node allows.
    pub const REQUEST_TIMEOUT: &str = "request_timeout";
}

/// A problem, boxed: it travels in every `Result` of the node, and the happy path
/// should not pay for its size.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct Problem(Box<Body>);

impl std::ops::Deref for Problem {
    type Target = Body;
    fn deref(&self) -> &Body {
        &self.0
    }
}

/// One problem body, plus the headers it travels with.
#[derive(Debug, Clone, Serialize)]
pub struct Body {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    pub code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<&'static str>,
    /// Seconds for a `Retry-After` header (overload).
    #[serde(skip)]
    pub retry_after: Option<u32>,
    /// Answered before the request body was read: the connection cannot carry
    /// another request, so the answer says `Connection: close`.
    #[serde(skip)]
    pub close: bool,
}

fn title(code: &str) -> &'static str {
    match code {
        "malformed_envelope" => "Malformed request or envelope",
        "invalid_event" => "Invalid event",
        "unknown_kind" => "Unknown event kind",
        "bad_encoding" => "Bad encoding",
        "bad_signature" => "Bad signature",
        "unknown_key" => "Unknown signing key",
        "revoked_key" => "Revoked signing key",
        "role_not_permitted" => "Role not permitted",
        "ref_not_found" => "Referenced entry not found",
        "ref_mismatch" => "Referenced entry differs",
        "conflict" => "Event already logged by another signer",
        "due_process" => "Due process refused the event",
        "too_large" => "Too large",
        "not_found" => "Not found",
        "out_of_range" => "Out of range",
        "overloaded" => "Overloaded",
        "verification_failed" => "Verification failed",
        "corrupt_store" => "Corrupt store",
        "storage" => "Storage failure",
        codes::UNSUPPORTED_MEDIA_TYPE => "Unsupported media type",
        codes::BAD_REQUEST => "Bad request",
        codes::METHOD_NOT_ALLOWED => "Method not allowed",
        codes::REQUEST_TIMEOUT => "Request timeout",
        _ => "Error",
    }
}

impl Problem {
    /// A node-level problem (a code the ledger does not have).
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Problem {
        Problem(Box::new(Body {
            type_uri: format!("{TYPE_BASE}{code}"),
            title: title(code),
            status: status.as_u16(),
            detail: detail.into(),
            code,
            field: None,
            expected: None,
            rule: None,
            retry_after: None,
            close: false,
        }))
    }

    /// Marks a problem answered before the request body was read.
    pub fn closing(mut self) -> Self {
        self.0.close = true;
        self
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.0.field = Some(field.into());
        self
    }

    pub fn expected(mut self, expected: impl Into<String>) -> Self {
        self.0.expected = Some(expected.into());
        self
    }

    /// A ledger code with a node-written detail.
    pub fn code(code: Code, detail: impl Into<String>) -> Problem {
        Problem::from(LedgerError::new(code, detail))
    }

    pub fn bad_request(
        field: &str,
        detail: impl Into<String>,
        expected: impl Into<String>,
    ) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, codes::BAD_REQUEST, detail)
            .field(field)
            .expected(expected)
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::code(Code::NotFound, detail)
    }

    /// For an `internal` failure of the node itself (a task that died).
    pub fn internal(detail: impl Into<String>) -> Problem {
        Problem::from(LedgerError::storage(detail.into()))
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The body as JSON (batch results embed problems).
    pub fn to_json(&self) -> serde_json::Value {
        // Infallible: strings and integers only.
        serde_json::to_value(self).expect("problem serialises")
    }
}

impl From<LedgerError> for Problem {
    fn from(e: LedgerError) -> Problem {
        let code = e.code.as_str();
        Problem(Box::new(Body {
            type_uri: format!("{TYPE_BASE}{code}"),
            title: title(code),
            status: e.code.http_status(),
            detail: e.detail,
            code,
            field: e.field,
            expected: e.expected,
            rule: e.rule,
            retry_after: (e.code == Code::Overloaded).then_some(1),
            close: false,
        }))
    }
}

/// Left on a problem response so the request log can name the code.
#[derive(Debug, Clone, Copy)]
pub struct ProblemCode(pub &'static str);

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let retry = self.retry_after;
        let close = self.close;
        let code = self.code;
        let body = serde_json::to_vec(&self).expect("problem serialises");
        let mut resp = (status, body).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(s) = retry {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if close {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp.extensions_mut().insert(ProblemCode(code));
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_errors_keep_code_field_and_rule() {
        let e = LedgerError::new(Code::DueProcess, "too early")
            .field("payload.kind")
            .expected("later")
            .rule("reinstatement_too_early");
        let p = Problem::from(e).to_json();
        assert_eq!(p["type"], "https://custody.dev/problems/due_process");
        assert_eq!(p["status"], 422);
        assert_eq!(p["code"], "due_process");
        assert_eq!(p["field"], "payload.kind");
        assert_eq!(p["rule"], "reinstatement_too_early");
    }

    #[test]
    fn overload_says_when_to_retry() {
        let resp = Problem::code(Code::Overloaded, "full").into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }
}
