//! Answers written straight to JSON bytes, for the routes that answer most often
//! (receipts, inclusion proofs): building a `serde_json::Value` tree of hex strings
//! for them cost more than the work they report. Each writer has a test that its
//! bytes equal what serde makes of the same answer.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The two lowercase hex digits of every byte.
const HEX_PAIRS: [[u8; 2]; 256] = {
    let digits = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = [digits[b >> 4], digits[b & 15]];
        b += 1;
    }
    t
};

/// A 32-byte hash as a quoted lowercase hex string. A byte at a time through a
/// table, into one buffer: a receipt carries some twenty of these, and the `hex`
/// crate's nibble-at-a-time encoding was ~1.6% of a batch's CPU.
pub fn hex32(out: &mut Vec<u8>, bytes: &[u8; 32]) {
    let mut buf = [b'"'; 66];
    for (pair, &b) in buf[1..65].chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(b)]);
    }
    out.extend_from_slice(&buf);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The table gives what the `hex` crate gives, for every byte value.
    #[test]
    fn hex32_is_quoted_lowercase_hex() {
        for start in [0u8, 32, 64, 96, 128, 160, 192, 224] {
            let bytes: [u8; 32] = std::array::from_fn(|i| start + i as u8);
            let mut out = b"x".to_vec();
            hex32(&mut out, &bytes);
            assert_eq!(out, format!("x\"{}\"", hex::encode(bytes)).into_bytes());
        }
    }
}
