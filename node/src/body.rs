//! Request bodies and parameters from outside, turned into typed values or problems:
//! content type, size limit (axum's `DefaultBodyLimit`, set per route), path
//! segments and decimal numbers.

use crate::problem::{codes, Problem};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{FromRequest, Path, Request};
use axum::http::{header, HeaderMap, StatusCode};
use ledger::{Code, LedgerError};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What request bodies may hold in memory at once (`--max-inflight-bytes`). A request
/// is charged before its body is read, for the size it declares (its Content-Length,
/// or the route's limit if it declares none) times what that body becomes while it is
/// handled (an append's envelopes, payloads and events live until its receipt is
/// sent: [`APPEND_CHARGE`]). When the budget is spent the request is answered 503
/// `overloaded` with Retry-After at once, its body unread, so memory stays bounded
/// whatever many clients send together.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    /// Permits of one KiB.
    kib: Arc<Semaphore>,
    capacity_kib: u32,
}

/// An append body is charged this many times its size.
pub const APPEND_CHARGE: usize = 4;

impl BodyBudget {
    pub fn new(bytes: usize) -> BodyBudget {
        let capacity_kib = u32::try_from(bytes / 1024).unwrap_or(u32::MAX).max(1);
        BodyBudget {
            kib: Arc::new(Semaphore::new(capacity_kib as usize)),
            capacity_kib,
        }
    }

    /// Bytes currently charged to requests in flight.
    pub fn in_use(&self) -> u64 {
        u64::from(self.capacity_kib).saturating_sub(self.kib.available_permits() as u64) * 1024
    }

    pub fn capacity(&self) -> u64 {
        u64::from(self.capacity_kib) * 1024
    }

    fn charge(&self, bytes: usize) -> Result<OwnedSemaphorePermit, Problem> {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.capacity_kib);
        self.kib.clone().try_acquire_many_owned(kib).map_err(|_| {
            Problem::from(
                LedgerError::new(
                    Code::Overloaded,
                    format!(
                        "this node already holds {} of its {} bytes of request bodies in flight",
                        self.in_use(),
                        self.capacity()
                    ),
                )
                .expected(
                    "retry after a short wait (Retry-After); the limit is --max-inflight-bytes",
                ),
            )
            // The body is left unread: this connection cannot carry another request.
            .closing()
        })
    }
}

/// Refuses a body not declared as `application/json` (parameters such as
/// `charset=utf-8` are allowed).
pub fn require_json(headers: &HeaderMap) -> Result<(), Problem> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        return Ok(());
    }
    let got = if ct.is_empty() {
        "no Content-Type".to_owned()
    } else {
        format!("Content-Type {ct:?}")
    };
    Err(Problem::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        codes::UNSUPPORTED_MEDIA_TYPE,
        format!("the request has {got}"),
    )
    .field("Content-Type")
    .expected("application/json"))
}

/// Buffers the body within the route's limit (`DefaultBodyLimit`, set per route to
/// `limit`, which is named in the problem), after charging `factor` times its
/// declared size to `budget`. The permit must be kept as long as the body, or what
/// it became, is alive.
pub async fn body_bytes(
    req: Request,
    limit: usize,
    flag: &str,
    budget: &BodyBudget,
    factor: usize,
) -> Result<(Bytes, OwnedSemaphorePermit), Problem> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(limit, |n| n.min(limit));
    let permit = budget.charge(declared.saturating_mul(factor))?;
    let bytes = Bytes::from_request(req, &())
        .await
        .map_err(|r| body_problem(r, limit, flag))?;
    Ok((bytes, permit))
}

fn body_problem(r: BytesRejection, limit: usize, flag: &str) -> Problem {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Problem::from(
            LedgerError::new(Code::TooLarge, format!("the request body is over this node's limit of {limit} bytes"))
                .field("body")
                .expected(format!("at most {limit} bytes ({flag}); split a large batch, put bulky material in attachments")),
        )
    } else {
        Problem::from(
            LedgerError::new(
                Code::MalformedEnvelope,
                format!("the request body could not be read: {}", r.body_text()),
            )
            .field("body")
            .expected("a complete request body"),
        )
    }
}

/// The single path parameter of a route, percent-decoded.
pub fn path_param(p: Result<Path<String>, PathRejection>, name: &str) -> Result<String, Problem> {
    p.map(|Path(s)| s).map_err(|e| {
        Problem::bad_request(
            name,
            format!("path parameter {name}: {}", e.body_text()),
            "a valid UTF-8 path segment",
        )
    })
}

/// A decimal number from outside: digits only, at most u64::MAX.
pub fn number(field: &str, s: &str) -> Result<u64, Problem> {
    let expected = "a decimal integer from 0 to 18446744073709551615";
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Problem::bad_request(
            field,
            format!("{field} {s:?} is not a decimal integer"),
            expected,
        ));
    }
    s.parse()
        .map_err(|_| Problem::bad_request(field, format!("{field} {s:?} is too large"), expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_plain_decimal_u64() {
        assert_eq!(number("index", "0").unwrap(), 0);
        assert_eq!(number("index", "18446744073709551615").unwrap(), u64::MAX);
        for bad in ["", "-1", "+1", "1e3", "0x10", "18446744073709551616", " 1"] {
            let p = number("index", bad).unwrap_err();
            assert_eq!((p.status, p.code), (400, codes::BAD_REQUEST), "{bad:?}");
        }
    }

    #[test]
    fn json_content_type_may_carry_a_charset() {
        let mut h = HeaderMap::new();
        assert!(require_json(&h).is_err());
        h.insert(
            header::CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        assert!(require_json(&h).is_ok());
        h.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert_eq!(require_json(&h).unwrap_err().status, 415);
    }
}
