//! Answers written straight to JSON bytes, for the routes that answer most often
//! (receipts, inclusion proofs): building a `serde_json::Value` tree of hex strings
//! for them cost more than the work they report. Each writer has a test that its
//! bytes equal what serde makes of the same answer.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// A 32-byte hash as a quoted lowercase hex string.
pub fn hex32(out: &mut Vec<u8>, bytes: &[u8; 32]) {
    let mut buf = [0u8; 64];
    // Infallible: 64 = 2 × 32.
    hex::encode_to_slice(bytes, &mut buf).expect("hex buffer fits");
    out.push(b'"');
    out.extend_from_slice(&buf);
    out.push(b'"');
}

/// A list of 32-byte hashes as a JSON array of hex strings.
pub fn hex32_list<'a>(out: &mut Vec<u8>, hashes: impl IntoIterator<Item = &'a [u8; 32]>) {
    out.push(b'[');
    for (i, h) in hashes.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        hex32(out, h);
    }
    out.push(b']');
}

/// `body` (JSON) with `status`.
pub fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
