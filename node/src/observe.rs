//! Per-request middleware: a request id (`x-request-id` header and log field), a
//! deadline covering body upload and processing, the HTTP metrics, and a log line
//! for every refusal and failure; plus a summary of the appends every minute
//! ([`summarise`]).

use crate::problem::{codes, Problem, ProblemCode};
use crate::state::Shared;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub async fn observe(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let id = s.metrics.next_request_id();
    let method = req.method().clone();
    // Shares the request's bytes (no copy): only a log line reads it.
    let uri = req.uri().clone();
    // Label metrics by route pattern (bounded), never by raw path (unbounded).
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let timeout = s.limits.request_timeout;
    let mut resp = match tokio::time::timeout(timeout, next.run(req)).await {
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
    let ms = took.as_micros() as f64 / 1000.0;
    let path = uri.path();
    match resp.extensions().get::<ProblemCode>().map(|c| c.0) {
        Some(code) if status >= 500 => {
            tracing::warn!(request_id = id, %method, path, status, ms, code, "answered")
        }
        Some(code) => tracing::info!(request_id = id, %method, path, status, ms, code, "answered"),
        // Answers that succeed are counted in /metrics, summed up in a line a minute
        // (appends), and logged one by one only at debug level (RUST_LOG=debug): a
        // line for each of 20,000 appends a second took ~6% of the node's CPU (the
        // log's own entries are the record of what was appended) and ~130 GB of log
        // a day at 10,000 a second.
        None => tracing::debug!(request_id = id, %method, path, status, ms, "answered"),
    }
    resp.headers_mut()
        .insert(REQUEST_ID.clone(), HeaderValue::from(id));
    resp
}

/// How often [`summarise`] writes its line.
const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// Every [`SUMMARY_EVERY`] in which anything was submitted, one INFO line: events
/// appended, answered as duplicates and refused since the last line, and the tree
/// size. Runs until the runtime stops.
pub async fn summarise(s: Shared) {
    let counts = |s: &Shared| Counts {
        appended: s.stats.appended.load(Relaxed),
        duplicates: s.stats.duplicates.load(Relaxed),
        refused: s.metrics.refused_total(),
    };
    let mut last = counts(&s);
    let mut tick = tokio::time::interval(SUMMARY_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = counts(&s);
        if let Some(d) = now.since(last) {
            tracing::info!(
                appended = d.appended,
                duplicates = d.duplicates,
                refused = d.refused,
                tree_size = s.store.size(),
                "appends in the last {} s",
                SUMMARY_EVERY.as_secs()
            );
        }
        last = now;
    }
}

/// Submitted events so far, by outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    appended: u64,
    duplicates: u64,
    refused: u64,
}

impl Counts {
    /// What happened since `earlier`, or None if nothing did (no line is written).
    fn since(self, earlier: Counts) -> Option<Counts> {
        (self != earlier).then(|| Counts {
            appended: self.appended.saturating_sub(earlier.appended),
            duplicates: self.duplicates.saturating_sub(earlier.duplicates),
            refused: self.refused.saturating_sub(earlier.refused),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Counts;

    fn c(appended: u64, duplicates: u64, refused: u64) -> Counts {
        Counts {
            appended,
            duplicates,
            refused,
        }
    }

    /// A quiet minute writes no line; a busy one reports each outcome's increase.
    #[test]
    fn a_summary_reports_what_changed_and_only_then() {
        assert_eq!(c(10, 2, 1).since(c(10, 2, 1)), None);
        assert_eq!(c(1_010, 5, 1).since(c(10, 2, 1)), Some(c(1_000, 3, 0)));
        assert_eq!(c(10, 2, 4).since(c(10, 2, 1)), Some(c(0, 0, 3)));
    }
}
