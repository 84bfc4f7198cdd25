//! The route table (DESIGN.md §HTTP, spec/openapi.json) and the fallbacks that keep
//! every answer, even to an unknown path, a problem+json.

use crate::problem::{codes, Problem};
use crate::state::Shared;
use crate::{append, blobs, read, tiles};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

/// The OpenAPI document, served as is.
pub const OPENAPI: &str = include_str!("../../spec/openapi.json");

pub fn router(state: Shared) -> Router {
    let body = DefaultBodyLimit::max(state.limits.max_body_bytes);
    let batch = DefaultBodyLimit::max(state.limits.max_batch_bytes);
    let blob = DefaultBodyLimit::max(state.limits.max_blob_bytes);
    Router::new()
        .route("/checkpoint", get(read::checkpoint))
        .route("/tile/{*path}", get(tiles::tile))
        .route("/v1/log", get(read::log_info))
        .route("/v1/events", post(append::append_one).layer(body))
        // axum 0.8 parameters are `{name}`, so the colon is a literal character.
        .route("/v1/events:batch", post(append::append_batch).layer(batch))
        .route("/v1/entries/{index}", get(read::entry))
        .route("/v1/proofs/inclusion", get(read::inclusion))
        .route("/v1/proofs/consistency", get(read::consistency))
        .route("/v1/bundles/{index}", get(read::bundle))
        .route("/v1/cases/{id}", get(read::case))
        .route("/v1/stats", get(read::stats))
        .route("/v1/blobs", post(blobs::put).layer(blob))
        .route("/v1/blobs/{blake3}", get(blobs::get))
        .route("/healthz", get(read::healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::observe::observe,
        ))
        .with_state(state)
}

async fn metrics(State(s): State<Shared>) -> Response {
    let text = s.metrics.render(
        &s.stats,
        s.store.size(),
        s.queue_capacity,
        (s.budget.in_use(), s.budget.capacity()),
        (
            s.store.memory(),
            s.store.background_jobs(),
            s.store.page_cache_writes().is_none(),
        ),
        s.store.tile_file_tiles(),
    );
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

async fn openapi() -> Response {
    let mut resp = OPENAPI.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

async fn no_route(method: Method, uri: Uri) -> Problem {
    Problem::not_found(format!("no route for {method} {}", uri.path()))
        .field("path")
        .expected("one of the paths in /openapi.json")
}

async fn wrong_method(method: Method, uri: Uri) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        codes::METHOD_NOT_ALLOWED,
        format!("{} does not accept {method}", uri.path()),
    )
    .field("method")
    .expected("the methods listed for this path in /openapi.json")
}
