//! C2SP tlog-tiles read paths: `GET /tile/<L>/<N>[.p/<W>]` (hash tiles) and
//! `GET /tile/entries/<N>[.p/<W>]` (entry bundles). Paths are parsed by the ledger,
//! which refuses non-canonical forms (and so any traversal) and tiles beyond the
//! tree. Full tiles never change and are served as immutable; partial ones get a
//! short cache so clients move on to the full tile once it exists.

use crate::body::path_param;
use crate::problem::Problem;
use crate::read::IMMUTABLE;
use crate::state::{blocking, Shared};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use ledger::tree::{TileRef, TILE_WIDTH};

/// Partial tiles are superseded by wider ones as the log grows.
const PARTIAL: &str = "public, max-age=5";

pub async fn tile(
    State(s): State<Shared>,
    p: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    let path = path_param(p, "path")?;
    let t = TileRef::parse(&path)?;
    let bytes = blocking(move || Ok(s.store.tile(&t)?)).await?;
    let cache = if u64::from(t.width) == TILE_WIDTH {
        IMMUTABLE
    } else {
        PARTIAL
    };
    let mut resp = bytes.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    Ok(resp)
}
