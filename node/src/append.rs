//! The write routes: `POST /v1/events` (one DSSE envelope) and
//! `POST /v1/events:batch` (`{"envelopes":[…]}`). Signatures are checked here, off
//! the runtime threads and before ordering; the sequencer then judges, orders and
//! commits. A receipt is only sent once its group is durable.

use crate::body::{body_bytes, require_json};
use crate::problem::Problem;
use crate::state::{blocking, Outcome, Shared};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ledger::envelope::{self, Envelope, Opened};
use ledger::receipt::Receipt;
use ledger::{Code, LedgerError};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

/// The receipt as answered: the ledger's receipt plus `duplicate`.
fn receipt_json(r: &Receipt, duplicate: bool) -> Value {
    // Infallible: hex strings, integers and strings only.
    let mut v = serde_json::to_value(r).expect("receipt serialises");
    if let Some(m) = v.as_object_mut() {
        m.insert("duplicate".into(), Value::Bool(duplicate));
    }
    v
}

fn status_of(duplicate: bool) -> StatusCode {
    if duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    }
}

/// Counts a refusal and turns it into a problem.
fn refuse(state: &Shared, p: Problem) -> Problem {
    refuse_n(state, p, 1)
}

/// Counts `n` refused events (a whole batch turned away) under one problem.
fn refuse_n(state: &Shared, p: Problem, n: usize) -> Problem {
    state.metrics.refused(p.code, n as u64);
    p
}

/// `POST /v1/events`: 201 + receipt, or 200 + the original receipt for a duplicate.
pub async fn append_one(State(state): State<Shared>, req: Request) -> Result<Response, Problem> {
    require_json(req.headers()).map_err(|p| refuse(&state, p))?;
    let bytes = body_bytes(req, state.limits.max_body_bytes, "--max-body-bytes")
        .await
        .map_err(|p| refuse(&state, p))?;
    let env = Envelope::from_json(&bytes).map_err(|e| refuse(&state, e.into()))?;
    let opened = blocking(move || env.open().map_err(Problem::from))
        .await
        .map_err(|p| refuse(&state, p))?;
    let outcome = state
        .submit(vec![Ok(opened)])
        .await
        .map_err(|p| refuse(&state, p))?
        .pop()
        .ok_or_else(|| Problem::internal("the sequencer answered no result"))?;
    let (receipt, duplicate) = outcome.map_err(|e| refuse(&state, e.into()))?;
    let mut resp = (
        status_of(duplicate),
        axum::Json(receipt_json(&receipt, duplicate)),
    )
        .into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/entries/{}", receipt.index)) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    /// Kept raw so each envelope is parsed from its own bytes by the ledger, and a
    /// bad one is refused alone with the same problem as on `POST /v1/events`.
    envelopes: Vec<Box<RawValue>>,
}

/// `POST /v1/events:batch`: one verdict per envelope, in order. The request as a
/// whole succeeds (200, or 201 if anything new was logged) even when some envelopes
/// are refused; only a malformed or oversize request, or an overloaded node, fails
/// it entirely.
pub async fn append_batch(State(state): State<Shared>, req: Request) -> Result<Response, Problem> {
    require_json(req.headers()).map_err(|p| refuse(&state, p))?;
    let bytes = body_bytes(req, state.limits.max_batch_bytes, "--max-batch-bytes")
        .await
        .map_err(|p| refuse(&state, p))?;
    let body: BatchBody = serde_json::from_slice(&bytes).map_err(|e| {
        refuse(
            &state,
            Problem::from(
                LedgerError::new(Code::MalformedEnvelope, format!("not a batch: {e}"))
                    .field("envelopes")
                    .expected("{\"envelopes\": [DSSE envelope, …]}"),
            ),
        )
    })?;
    let max = state.limits.max_batch;
    if body.envelopes.len() > max {
        return Err(refuse_n(
            &state,
            Problem::from(
                LedgerError::new(
                    Code::TooLarge,
                    format!("the batch holds {} envelopes", body.envelopes.len()),
                )
                .field("envelopes")
                .expected(format!("at most {max} envelopes per batch (--max-batch)")),
            ),
            body.envelopes.len(),
        ));
    }
    if body.envelopes.is_empty() {
        return Err(refuse(
            &state,
            Problem::from(
                LedgerError::new(Code::MalformedEnvelope, "the batch is empty")
                    .field("envelopes")
                    .expected(format!("1 to {max} envelopes")),
            ),
        ));
    }
    let n = body.envelopes.len();
    let items = blocking(move || Ok(open_batch(body.envelopes))).await?;
    let outcomes = state
        .submit(items)
        .await
        .map_err(|p| refuse_n(&state, p, n))?;
    let mut any_new = false;
    let results: Vec<Value> = outcomes
        .into_iter()
        .map(|o: Outcome| match o {
            Ok((r, duplicate)) => {
                any_new |= !duplicate;
                json!({"status": status_of(duplicate).as_u16(), "receipt": receipt_json(&r, duplicate)})
            }
            Err(e) => {
                let p = refuse(&state, Problem::from(e));
                json!({"status": p.status, "problem": p.to_json()})
            }
        })
        .collect();
    let status = if any_new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(json!({"results": results}))).into_response())
}

/// Parses and opens every envelope, keeping each one's place so the reply lines up.
fn open_batch(raw: Vec<Box<RawValue>>) -> Vec<Result<Opened, LedgerError>> {
    let parsed: Vec<Result<Envelope, LedgerError>> = raw
        .iter()
        .map(|r| Envelope::from_json(r.get().as_bytes()))
        .collect();
    let mut good = Vec::with_capacity(parsed.len());
    let mut slots: Vec<Option<LedgerError>> = Vec::with_capacity(parsed.len());
    for p in parsed {
        match p {
            Ok(env) => {
                good.push(env);
                slots.push(None);
            }
            Err(e) => slots.push(Some(e)),
        }
    }
    let mut opened = envelope::open_all(good).into_iter();
    slots
        .into_iter()
        .map(|s| match s {
            // Infallible: open_all answers once per envelope given, in order.
            None => opened.next().expect("one verdict per envelope"),
            Some(e) => Err(e),
        })
        .collect()
}
