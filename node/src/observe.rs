//! Per-request middleware: a request id (`x-request-id` header and log field), a
//! deadline covering body upload and processing, one structured log line, and the
//! HTTP metrics.

use crate::problem::{codes, Problem, ProblemCode};
use crate::state::Shared;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Instant;
use tracing::Instrument;

pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub async fn observe(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let id = s.metrics.next_request_id();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    // Label metrics by route pattern (bounded), never by raw path (unbounded).
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let span = tracing::info_span!("request", request_id = id, method = %method, path = %path);
    let started = Instant::now();
    let timeout = s.limits.request_timeout;
    let mut resp = match tokio::time::timeout(timeout, next.run(req)).instrument(span.clone()).await {
        Ok(r) => r,
        Err(_) => Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            codes::REQUEST_TIMEOUT,
            format!("the request took longer than {} s", timeout.as_secs()),
        )
        .expected("a request sent and answered within --request-timeout-secs; an append that timed out may still be logged: resend it to get its receipt")
        .into_response(),
    };
    let took = started.elapsed();
    let status = resp.status().as_u16();
    s.metrics.request(method.as_str(), &route, status, took);
    let code = resp.extensions().get::<ProblemCode>().map(|c| c.0);
    span.in_scope(|| {
        let ms = took.as_micros() as f64 / 1000.0;
        match code {
            Some(code) if status >= 500 => tracing::warn!(status, ms, code, "answered"),
            Some(code) => tracing::info!(status, ms, code, "answered"),
            // Appends are the log's history: one line each. Successful reads are
            // counted in /metrics and logged only at debug level (RUST_LOG=debug):
            // a line per proof request cost more than the proof.
            None if method == axum::http::Method::GET || method == axum::http::Method::HEAD => {
                tracing::debug!(status, ms, "answered")
            }
            None => tracing::info!(status, ms, "answered"),
        }
    });
    resp.headers_mut()
        .insert(REQUEST_ID.clone(), HeaderValue::from(id));
    resp
}
