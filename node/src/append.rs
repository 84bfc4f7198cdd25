//! The write routes: `POST /v1/events` (one DSSE envelope) and
//! `POST /v1/events:batch` (`{"envelopes":[…]}`). Signatures are checked here, off
//! the runtime threads and before ordering; the sequencer then judges, orders and
//! commits. A receipt is only sent once its group is durable.

use crate::body::{body_bytes, require_json, APPEND_CHARGE};
use crate::metrics::{BATCH_STAGES, SINGLE_STAGES};
use crate::problem::Problem;
use crate::reply::{hex32, hex32_list, json_response};
use crate::state::{blocking, Shared};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use ledger::envelope::{self, Envelope, Opened};
use ledger::receipt::Receipt;
use ledger::{Code, LedgerError};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use std::io::Write;

/// Writes receipts as answered: the ledger's receipt plus `duplicate`, keys in
/// alphabetical order. Written straight to bytes: replies to a batch of a thousand
/// carry some twenty thousand proof hashes, and building a `serde_json::Value` tree
/// for them cost more than verifying their signatures. The receipts of one batch
/// share their checkpoint note and time, which are escaped once, not a thousand
/// times (that escaping was ~2% of a batch's CPU).
#[derive(Default)]
struct ReceiptWriter {
    checkpoint: String,
    checkpoint_json: Vec<u8>,
    logged_at: String,
    logged_at_json: Vec<u8>,
}

/// `s` as a JSON string, kept with the text it was made from.
fn remember_escaped(text: &mut String, json: &mut Vec<u8>, s: &str) {
    if *text != s || json.is_empty() {
        text.clear();
        text.push_str(s);
        json.clear();
        envelope::write_json_string(json, s);
    }
}

impl ReceiptWriter {
    fn write(&mut self, out: &mut Vec<u8>, r: &Receipt, duplicate: bool) {
        remember_escaped(
            &mut self.checkpoint,
            &mut self.checkpoint_json,
            &r.checkpoint,
        );
        remember_escaped(&mut self.logged_at, &mut self.logged_at_json, &r.logged_at);
        out.extend_from_slice(b"{\"checkpoint\":");
        out.extend_from_slice(&self.checkpoint_json);
        out.extend_from_slice(if duplicate {
            b",\"duplicate\":true,\"event_id\":"
        } else {
            b",\"duplicate\":false,\"event_id\":"
        });
        hex32(out, &r.event_id.0);
        out.extend_from_slice(b",\"inclusion_proof\":");
        hex32_list(out, r.inclusion_proof.iter().map(|h| &h.0));
        // Infallible: writing into a Vec.
        write!(out, ",\"index\":{},\"leaf_hash\":", r.index).expect("vec write");
        hex32(out, &r.leaf_hash.0);
        out.extend_from_slice(b",\"logged_at\":");
        out.extend_from_slice(&self.logged_at_json);
        write!(out, ",\"tree_size\":{}}}", r.tree_size).expect("vec write");
    }
}

/// The bytes a receipt with `proof_len` hashes and this checkpoint takes, about.
fn receipt_len(checkpoint: &str, proof_len: usize) -> usize {
    checkpoint.len() + 16 + proof_len * 67 + 300
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
    let mut clock = Stages::<{ SINGLE_STAGES.len() }>::start();
    require_json(req.headers()).map_err(|p| refuse(&state, p))?;
    let (bytes, _held) = body_bytes(
        req,
        state.limits.max_body_bytes,
        "--max-body-bytes",
        &state.budget,
        APPEND_CHARGE,
    )
    .await
    .map_err(|p| refuse(&state, p))?;
    let env = Envelope::from_json(&bytes).map_err(|e| refuse(&state, e.into()))?;
    clock.lap();
    let (outcome, handoffs) = state
        .open_and_submit(env)
        .await
        .map_err(|p| refuse(&state, p))?;
    let (receipt, duplicate) = outcome.map_err(|e| refuse(&state, e.into()))?;
    clock.lap_until(handoffs.verified);
    clock.lap_until(handoffs.answered);
    clock.lap();
    let mut body = Vec::with_capacity(receipt_len(
        &receipt.checkpoint,
        receipt.inclusion_proof.len(),
    ));
    ReceiptWriter::default().write(&mut body, &receipt, duplicate);
    let mut resp = json_response(status_of(duplicate), body);
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/entries/{}", receipt.index)) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    clock.lap();
    state.metrics.single_stages(clock.laps);
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
    let mut clock = Stages::<{ BATCH_STAGES.len() }>::start();
    require_json(req.headers()).map_err(|p| refuse(&state, p))?;
    let (bytes, _held) = body_bytes(
        req,
        state.limits.max_batch_bytes,
        "--max-batch-bytes",
        &state.budget,
        APPEND_CHARGE,
    )
    .await
    .map_err(|p| refuse(&state, p))?;
    clock.lap();
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
    clock.lap();
    let n = body.envelopes.len();
    // Signatures checked and the events looked up in the store here, in parallel
    // with other requests, not on the sequencer's thread.
    let store = state.store.clone();
    let (items, prior, looking) = blocking(move || {
        let items = open_batch(body.envelopes);
        let t = std::time::Instant::now();
        let prior = ledger::sequencer::look_up(&store, &items);
        Ok((items, prior, t.elapsed()))
    })
    .await?;
    clock.lap_split(looking);
    let outcomes = state
        .submit(items, prior)
        .await
        .map_err(|p| refuse_n(&state, p, n))?;
    clock.lap();
    let mut any_new = false;
    // Sized from the first receipt: grown by doubling, the ~2 MB answer to a batch of
    // a thousand was copied several times over.
    let each = outcomes
        .iter()
        .find_map(|o| o.as_ref().ok())
        .map_or(600, |(r, _)| {
            receipt_len(&r.checkpoint, r.inclusion_proof.len()) + 16
        });
    let mut body = Vec::with_capacity(outcomes.len() * each + 16);
    let mut receipts = ReceiptWriter::default();
    body.extend_from_slice(b"{\"results\":[");
    for (i, o) in outcomes.into_iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        match o {
            Ok((r, duplicate)) => {
                any_new |= !duplicate;
                body.extend_from_slice(b"{\"receipt\":");
                receipts.write(&mut body, &r, duplicate);
                // Infallible: writing into a Vec.
                write!(body, ",\"status\":{}}}", status_of(duplicate).as_u16()).expect("vec write");
            }
            Err(e) => {
                let p = refuse(&state, Problem::from(e));
                // Infallible: a Value serialises.
                serde_json::to_writer(
                    &mut body,
                    &json!({"status": p.status, "problem": p.to_json()}),
                )
                .expect("problem serialises");
            }
        }
    }
    body.extend_from_slice(b"]}");
    let status = if any_new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let resp = json_response(status, body);
    clock.lap();
    state.metrics.batch_stages(clock.laps);
    Ok(resp)
}

/// Times a request's `N` stages one lap each ([`crate::metrics::BATCH_STAGES`],
/// [`crate::metrics::SINGLE_STAGES`]).
struct Stages<const N: usize> {
    last: std::time::Instant,
    laps: [std::time::Duration; N],
    done: usize,
}

impl<const N: usize> Stages<N> {
    fn start() -> Stages<N> {
        Stages {
            last: std::time::Instant::now(),
            laps: [std::time::Duration::ZERO; N],
            done: 0,
        }
    }

    /// Ends two laps at once, the second of which took `second` of the time.
    fn lap_split(&mut self, second: std::time::Duration) {
        let now = std::time::Instant::now();
        let both = now - self.last;
        let second = second.min(both);
        self.record(both - second);
        self.record(second);
        self.last = now;
    }

    fn lap(&mut self) {
        self.lap_until(std::time::Instant::now());
    }

    /// Ends a lap at `end`, an instant taken on another thread (never before the
    /// last lap's end).
    fn lap_until(&mut self, end: std::time::Instant) {
        let end = end.max(self.last);
        self.record(end - self.last);
        self.last = end;
    }

    fn record(&mut self, took: std::time::Duration) {
        if let Some(l) = self.laps.get_mut(self.done) {
            *l = took;
        }
        self.done += 1;
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use ledger::types::{EventId, LeafHash, RootHash};
    use serde_json::Value;

    /// The hand-written receipt JSON is exactly what serde makes of the receipt
    /// plus `duplicate`.
    #[test]
    fn written_receipt_equals_serde_json() {
        let r = Receipt {
            index: 41,
            leaf_hash: LeafHash([1; 32]),
            event_id: EventId([2; 32]),
            logged_at: "2026-11-23T07:00:00.123Z".into(),
            tree_size: 1000,
            checkpoint: "custody.test/e2e\n1000\nq83v\n\n— custody.test/e2e \"sig\"\n".into(),
            inclusion_proof: vec![RootHash([3; 32]), RootHash([4; 32])],
        };
        // One writer for all, as for a batch: what it remembers of one receipt's
        // checkpoint and time must not leak into the next receipt's.
        let mut writer = ReceiptWriter::default();
        let mut other = r.clone();
        other.checkpoint = "custody.test/e2e\n1001\nzz9x\n\n— custody.test/e2e \"sig2\"\n".into();
        other.logged_at = "2026-11-23T07:00:01.000Z".into();
        let mut later = r.clone();
        later.logged_at = "2026-11-23T07:00:02.000Z".into();
        for (r, duplicate) in [
            (&r, false),
            (&r, true),
            (&other, false),
            (&r, false),
            (&later, false),
        ] {
            let mut want = serde_json::to_value(r).unwrap();
            want.as_object_mut()
                .unwrap()
                .insert("duplicate".into(), Value::Bool(duplicate));
            let mut got = Vec::new();
            writer.write(&mut got, r, duplicate);
            assert_eq!(String::from_utf8(got).unwrap(), want.to_string());
        }
        let mut empty = r.clone();
        empty.inclusion_proof.clear();
        let mut got = Vec::new();
        writer.write(&mut got, &empty, false);
        let v: Value = serde_json::from_slice(&got).unwrap();
        assert_eq!(v["inclusion_proof"], json!([]));
        // Empty strings, first thing a new writer sees: still written as strings.
        let blank = Receipt {
            checkpoint: String::new(),
            logged_at: String::new(),
            ..r.clone()
        };
        let mut got = Vec::new();
        ReceiptWriter::default().write(&mut got, &blank, false);
        let v: Value = serde_json::from_slice(&got).unwrap();
        assert_eq!(
            (v["checkpoint"].as_str(), v["logged_at"].as_str()),
            (Some(""), Some(""))
        );
    }
}
