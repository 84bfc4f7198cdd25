//! The JSON read routes: log info, the checkpoint, entries, inclusion and
//! consistency proofs, evidence bundles and case timelines. Each is a thin call into
//! the ledger; RocksDB reads run on the blocking pool.

use crate::body::{number, path_param};
use crate::problem::Problem;
use crate::reply::{hex32, hex32_list, json_response};
use crate::state::{blocking, AppState, Shared};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ledger::cases::{self, CaseState, Rules};
use ledger::entry::format_time;
use ledger::types::{CaseId, LeafHash, RootHash, TreeSize};
use ledger::{tree, Code, LedgerError};
use serde::Deserialize;
use serde_json::{json, Value};

/// Entries, proofs for a fixed tree size, and bundles of a fixed checkpoint never
/// change once served.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

fn with_type(
    mut resp: Response,
    content_type: &'static str,
    cache: Option<&'static str>,
) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(c) = cache {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(c));
    }
    resp
}

/// `GET /checkpoint`: the latest signed note (C2SP tlog-checkpoint).
pub async fn checkpoint(State(s): State<Shared>) -> Response {
    with_type(
        s.store.checkpoint().note.into_response(),
        "text/plain; charset=utf-8",
        Some("no-cache"),
    )
}

/// `GET /v1/log`: who the log is and how big it is.
pub async fn log_info(State(s): State<Shared>) -> Json<Value> {
    let cp = s.store.checkpoint();
    Json(json!({
        "origin": s.store.origin(),
        "vkey": s.store.vkey(),
        "hash_algorithm": "SHA-256",
        "tree_size": cp.size,
        "checkpoint": cp.note,
        "rules": s.rules,
    }))
}

/// `GET /healthz`.
pub async fn healthz(State(s): State<Shared>) -> Json<Value> {
    Json(json!({"status": "ok", "tree_size": s.store.size()}))
}

/// `GET /v1/entries/{index}`: the exact leaf bytes.
pub async fn entry(
    State(s): State<Shared>,
    p: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    let index = number("index", &path_param(p, "index")?)?;
    let bytes = blocking(move || {
        let size = s.store.size();
        if index >= size {
            return Err(Problem::from(
                LedgerError::new(
                    Code::NotFound,
                    format!("entry {index} is not in the log (size {size})"),
                )
                .field("index")
                .expected(format!("an index below {size}")),
            ));
        }
        s.store
            .entry(index)?
            .ok_or_else(|| LedgerError::corrupt(format!("entry {index} is missing")).into())
    })
    .await?;
    Ok(with_type(
        bytes.into_response(),
        "application/json",
        Some(IMMUTABLE),
    ))
}

#[derive(Debug, Deserialize)]
pub struct InclusionQuery {
    index: Option<String>,
    tree_size: Option<String>,
    leaf_hash: Option<String>,
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, Problem> {
    q.map(|Query(t)| t).map_err(|e| {
        Problem::bad_request(
            "query",
            format!("the query string does not parse: {}", e.body_text()),
            "the parameters listed in spec/openapi.json",
        )
    })
}

/// A requested tree size, at most the log's current size.
fn tree_size(field: &str, v: Option<&str>, size: TreeSize) -> Result<TreeSize, Problem> {
    let Some(v) = v else { return Ok(size) };
    let t = number(field, v)?;
    if t > size {
        return Err(LedgerError::new(
            Code::OutOfRange,
            format!("{field} {t} is beyond the log's size {size}"),
        )
        .field(field)
        .expected(format!("a tree size of at most {size}"))
        .into());
    }
    Ok(t)
}

/// `GET /v1/proofs/inclusion?index=N[&tree_size=S]` or `?leaf_hash=H[&tree_size=S]`.
pub async fn inclusion(
    State(s): State<Shared>,
    q: Result<Query<InclusionQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    inclusion_proof(&s, query(q)?)
}

/// Proofs run on the runtime thread: a proof is a few dozen microseconds of reads
/// (the tree's upper levels are in memory), and a hand-off to the blocking pool cost
/// more than the proof itself.
fn inclusion_proof(s: &AppState, q: InclusionQuery) -> Result<Response, Problem> {
    let store = &*s.store;
    let (size, latest_root) = store.head();
    let tree_size = tree_size("tree_size", q.tree_size.as_deref(), size)?;
    let index = match (&q.index, &q.leaf_hash) {
        (Some(i), None) => number("index", i)?,
        (None, Some(h)) => {
            let leaf = LeafHash::parse(h).map_err(|e| {
                LedgerError::new(Code::BadEncoding, format!("leaf_hash: {e}"))
                    .field("leaf_hash")
                    .expected("a leaf hash as 64 lowercase hex characters")
            })?;
            store.index_of_leaf(&leaf)?.ok_or_else(|| {
                Problem::not_found(format!("no entry has leaf hash {leaf}")).field("leaf_hash")
            })?
        }
        _ => {
            return Err(Problem::bad_request(
                "index",
                "give exactly one of index and leaf_hash",
                "?index=N or ?leaf_hash=HEX64, optionally with &tree_size=S",
            ))
        }
    };
    let (leaf, proof) = tree::prove_inclusion_with_leaf(index, tree_size, store)?;
    // The latest root is signed already; only older sizes are recomputed.
    let root = if tree_size == size {
        latest_root
    } else {
        tree::root(tree_size, store)?
    };
    Ok(json_response(
        StatusCode::OK,
        inclusion_json(index, tree_size, &leaf, &root, &proof),
    ))
}

/// The inclusion proof answer, keys in alphabetical order (as serde_json writes a
/// `json!` object).
fn inclusion_json(
    index: u64,
    tree_size: TreeSize,
    leaf: &LeafHash,
    root: &RootHash,
    proof: &[RootHash],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + 67 * proof.len());
    out.extend_from_slice(format!("{{\"index\":{index},\"leaf_hash\":").as_bytes());
    hex32(&mut out, &leaf.0);
    out.extend_from_slice(b",\"proof\":");
    hex32_list(&mut out, proof.iter().map(|h| &h.0));
    out.extend_from_slice(b",\"root_hash\":");
    hex32(&mut out, &root.0);
    out.extend_from_slice(format!(",\"tree_size\":{tree_size}}}").as_bytes());
    out
}

#[derive(Debug, Deserialize)]
pub struct ConsistencyQuery {
    first: Option<String>,
    second: Option<String>,
}

/// `GET /v1/proofs/consistency?first=A[&second=B]`.
pub async fn consistency(
    State(s): State<Shared>,
    q: Result<Query<ConsistencyQuery>, QueryRejection>,
) -> Result<Json<Value>, Problem> {
    consistency_proof(&s, query(q)?)
}

/// On the runtime thread, like [`inclusion_proof`].
fn consistency_proof(s: &AppState, q: ConsistencyQuery) -> Result<Json<Value>, Problem> {
    let store = &*s.store;
    let size = store.size();
    let first = match &q.first {
        Some(f) => number("first", f)?,
        None => {
            return Err(Problem::bad_request(
                "first",
                "first is missing",
                "?first=A[&second=B]",
            ))
        }
    };
    let second = tree_size("second", q.second.as_deref(), size)?;
    let proof = tree::prove_consistency(first, second, store)?;
    Ok(Json(
        json!({"first": first, "second": second, "proof": proof}),
    ))
}

/// `GET /v1/bundles/{index}`: the evidence bundle for one entry.
pub async fn bundle(
    State(s): State<Shared>,
    p: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    let index = number("index", &path_param(p, "index")?)?;
    let bytes = blocking(move || {
        let b = ledger::bundle::build_with_rules(&s.store, index, &s.rules)?;
        Ok(serde_json::to_vec_pretty(&b).expect("bundle serialises"))
    })
    .await?;
    Ok(with_type(bytes.into_response(), "application/json", None))
}

/// `GET /v1/cases/{id}`: the case's timeline, state and open deadlines.
pub async fn case(
    State(s): State<Shared>,
    p: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, Problem> {
    let raw = path_param(p, "id")?;
    let id = CaseId::parse(&raw).map_err(|e| {
        Problem::bad_request(
            "id",
            format!("case id {raw:?}: {e}"),
            "1 to 128 characters of A-Z a-z 0-9 . _ : -",
        )
    })?;
    let rules = s.rules;
    blocking(move || {
        let state = s
            .store
            .case_state(&id)?
            .ok_or_else(|| Problem::not_found(format!("no case {id} in this log")).field("id"))?;
        // Read after the case, so that its tree covers every step shown.
        let size = covering(&s, state.steps.iter().map(|st| st.index)).size;
        Ok(Json(timeline(&state, &rules, size)))
    })
    .await
}

/// `GET /v1/stats`: key indicators per brand and per marketplace, each figure
/// listing the entry indices it was computed from.
pub async fn stats(State(s): State<Shared>) -> Result<Json<Value>, Problem> {
    blocking(move || {
        let cases = s.store.case_states()?;
        // Read after the cases, so that it covers every entry the figures list.
        let cp = covering(
            &s,
            cases.iter().flat_map(|c| c.steps.iter().map(|st| st.index)),
        );
        let stats = ledger::stats::compute(&cases);
        Ok(Json(json!({
            "tree_size": cp.size,
            "checkpoint": cp.note,
            "brands": stats.brands,
            "marketplaces": stats.marketplaces,
        })))
    })
    .await
}

/// The signed checkpoint to answer with, once it covers every entry in `indices`:
/// a commit writes its case records a moment before it publishes its checkpoint,
/// and an answer must not name an entry its own checkpoint cannot prove.
fn covering(
    s: &Shared,
    indices: impl Iterator<Item = u64>,
) -> ledger::checkpoint::SignedCheckpoint {
    match indices.max() {
        Some(last) => s
            .store
            .checkpoint_covering(last, std::time::Duration::from_secs(1)),
        None => s.store.checkpoint(),
    }
}

/// The timeline a person reads: every step with the time since the previous one.
fn timeline(c: &CaseState, rules: &Rules, tree_size: TreeSize) -> Value {
    let steps: Vec<Value> = c
        .steps
        .iter()
        .enumerate()
        .map(|(i, st)| {
            let prev = i.checked_sub(1).and_then(|p| c.steps.get(p));
            let since =
                cases::since(prev, st.logged_at).map(|d| d.num_milliseconds() as f64 / 1000.0);
            json!({
                "index": st.index,
                "kind": st.kind,
                "signer": st.signer,
                "org": st.org,
                "claimed_at": format_time(st.claimed_at),
                "logged_at": format_time(st.logged_at),
                "state_after": st.state_after,
                "flag": st.flag,
                "seconds_since_previous": since,
            })
        })
        .collect();
    let deadlines: Vec<Value> = c
        .deadlines(rules)
        .into_iter()
        .map(|(name, date)| json!({"name": name, "date": date.to_string()}))
        .collect();
    json!({
        "id": c.id,
        "state": c.state,
        "brand_org": c.brand_org,
        "marketplace": c.marketplace,
        "seller_id": c.seller_id,
        "regime": c.regime,
        "counter_notice_at": c.counter_notice_at.map(format_time),
        "steps": steps,
        "deadlines": deadlines,
        "tree_size": tree_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written proof answer is exactly what `json!` made of it.
    #[test]
    fn written_inclusion_answer_equals_serde_json() {
        let leaf = LeafHash([7; 32]);
        let root = RootHash([8; 32]);
        for proof in [vec![], vec![RootHash([1; 32]), RootHash([2; 32])]] {
            let want = json!({
                "index": 41u64,
                "tree_size": 1000u64,
                "leaf_hash": leaf,
                "root_hash": root,
                "proof": proof,
            });
            let got = inclusion_json(41, 1000, &leaf, &root, &proof);
            assert_eq!(String::from_utf8(got).unwrap(), want.to_string());
        }
    }
}
