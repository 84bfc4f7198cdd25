//! Attachments, content-addressed by BLAKE3: `POST /v1/blobs` stores raw bytes of any
//! type, `GET /v1/blobs/{blake3}` returns them. The log only ever records their
//! hashes; the bytes live beside it.

use crate::body::{body_bytes, path_param};
use crate::problem::Problem;
use crate::read::IMMUTABLE;
use crate::state::{blocking, Shared};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ledger::types::BlobId;
use ledger::{Code, LedgerError};
use serde_json::json;

/// `POST /v1/blobs`: 201 `{blake3, size}`.
pub async fn put(State(s): State<Shared>, req: Request) -> Result<Response, Problem> {
    let (bytes, _held) = body_bytes(
        req,
        s.limits.max_blob_bytes,
        "--max-blob-bytes",
        &s.budget,
        1,
    )
    .await?;
    let size = bytes.len();
    let id = blocking(move || Ok(s.store.put_blob(&bytes)?)).await?;
    let mut resp = (
        StatusCode::CREATED,
        Json(json!({"blake3": id, "size": size})),
    )
        .into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/blobs/{id}")) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

/// `GET /v1/blobs/{blake3}`: the bytes, which hash to their name.
pub async fn get(
    State(s): State<Shared>,
    p: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    let raw = path_param(p, "blake3")?;
    let id = BlobId::parse(&raw).map_err(|e| {
        LedgerError::new(Code::BadEncoding, format!("blob name {raw:?}: {e}"))
            .field("blake3")
            .expected("the blob's BLAKE3 hash as 64 lowercase hex characters")
    })?;
    let bytes = blocking(move || {
        s.store
            .blob(&id)?
            .ok_or_else(|| Problem::not_found(format!("no blob {id} on this node")).field("blake3"))
    })
    .await?;
    let mut resp = bytes.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    Ok(resp)
}
