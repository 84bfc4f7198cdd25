//! A deterministic scenario with several brands, marketplaces and sellers (300
//! cases), appended through the real node; `GET /v1/stats` must equal the figures
//! this test recomputes on its own from the raw entries it reads back from the log.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use custody_e2e::*;
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};

const CASES: usize = 300;
const BRANDS: [&str; 3] = ["Acme", "Bolt", "Corex"];
const MARKETS: [&str; 2] = ["ShopA", "ShopB"];

fn when(minutes_ago: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::minutes(minutes_ago))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Appends one batch; returns the receipts, all of which must be new.
fn batch(node: &Node, items: Vec<(&SigningKey, Value)>) -> Vec<Value> {
    let envs: Vec<Value> = items.iter().map(|(k, p)| sign(k, p)).collect();
    let a = node.post_json("/v1/events:batch", &json!({"envelopes": envs}));
    assert_eq!(a.status, 201, "{}", a.text());
    a.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["status"], 201, "{r}");
            r["receipt"].clone()
        })
        .collect()
}

fn build(node: &Node) {
    let brands: Vec<SigningKey> = (0..3).map(|i| key(40 + i)).collect();
    let markets: Vec<SigningKey> = (0..2).map(|i| key(50 + i)).collect();
    for (k, org) in brands.iter().zip(BRANDS) {
        node.register(k, &format!("{org} legal"), org, &["brand"]);
    }
    for (k, org) in markets.iter().zip(MARKETS) {
        node.register(k, &format!("{org} T&S"), org, &["marketplace"]);
    }
    let rights = batch(
        node,
        brands
            .iter()
            .zip(BRANDS)
            .map(|(k, org)| {
                (
                    k,
                    json!({"kind": "right", "claimed_at": when(600), "body": {
        "right_type": "trademark", "registration_number": format!("EU-{org}"), "office": "EUIPO",
        "jurisdictions": ["EU"], "owner": org, "valid_until": "2035-01-01"}}),
                )
            })
            .collect(),
    );
    let case = |i: usize| format!("case-{i:04}");
    let b = |i: usize| &brands[i % 3];
    let m = |i: usize| &markets[(i / 3) % 2];
    let url = |i: usize| {
        format!(
            "https://{}.example/item/{i}",
            MARKETS[(i / 3) % 2].to_lowercase()
        )
    };
    // Outcome by i % 6: detected, noticed, removed, rejected, countered, reinstated.
    let dets = batch(
        node,
        (0..CASES)
            .map(|i| {
                (
                    b(i),
                    json!({"kind": "detection", "case": case(i), "claimed_at": when(500), "body": {
        "marketplace": MARKETS[(i / 3) % 2], "listing_url": url(i), "listing_id": i.to_string(),
        "seller_id": format!("seller-{}", i % 20), "method": "image_match", "confidence": 90}}),
                )
            })
            .collect(),
    );
    let live: Vec<usize> = (0..CASES).filter(|i| i % 6 >= 1).collect();
    let notices = batch(node, live.iter().map(|&i| (b(i), json!({"kind": "notice", "case": case(i), "claimed_at": when(400),
        "refs": [reference_to(&dets[i]), reference_to(&rights[i % 3])],
        "body": {"regime": "eu-dsa", "right": rights[i % 3]["index"], "listing_url": url(i),
            "contact": {"name": "legal", "email": "legal@brand.example"}, "good_faith": true, "accurate": true,
            "authorised": true, "explanation": "counterfeit"}}))).collect());
    let notice_of: HashMap<usize, Value> = live.iter().copied().zip(notices).collect();
    let decided: Vec<usize> = live.iter().copied().filter(|i| i % 6 >= 2).collect();
    let takedowns = batch(node, decided.iter().map(|&i| (m(i), json!({"kind": "takedown", "case": case(i), "claimed_at": when(300),
        "refs": [reference_to(&notice_of[&i])],
        "body": {"decision": if i % 6 == 3 { "rejected" } else { "removed" }, "ground": "TM", "statement_of_reasons": "notice",
            "automated": i % 2 == 0, "redress": "appeal"}}))).collect());
    let takedown_of: HashMap<usize, Value> = decided.iter().copied().zip(takedowns).collect();
    let countered: Vec<usize> = decided.iter().copied().filter(|i| i % 6 >= 4).collect();
    let counters = batch(
        node,
        countered
            .iter()
            .map(|&i| {
                (
                    m(i),
                    json!({"kind": "counter_notice", "case": case(i), "claimed_at": when(200),
        "refs": [reference_to(&takedown_of[&i])],
        "body": {"listing_url": url(i), "good_faith_mistake": true, "consent_to_jurisdiction": true,
            "seller": {"name": "S", "address": "A", "phone": "P"}, "statement": "genuine"}}),
                )
            })
            .collect(),
    );
    let counter_of: HashMap<usize, Value> = countered.iter().copied().zip(counters).collect();
    batch(
        node,
        countered
            .iter()
            .filter(|&&i| i % 6 == 5)
            .map(|&i| {
                (
                    m(i),
                    json!({"kind": "reinstatement", "case": case(i),
        "claimed_at": when(100), "refs": [reference_to(&counter_of[&i])],
        "body": {"listing_url": url(i), "reason": "complaint upheld"}}),
                )
            })
            .collect(),
    );
}

/// What one figure set looks like when recomputed from raw entries.
#[derive(Default, Debug)]
struct Mine {
    cases: usize,
    by_state: BTreeMap<String, usize>,
    d2n: Vec<(f64, [u64; 2])>,
    n2t: Vec<(f64, [u64; 2])>,
    removed: usize,
    counters: Vec<u64>,
    reinstatements: Vec<u64>,
}

fn nearest_rank(v: &mut [f64], p: usize) -> Option<f64> {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return None;
    }
    let rank = ((p * v.len()) as f64 / 100.0).ceil() as usize;
    Some(v[rank.max(1) - 1])
}

struct Ev {
    index: u64,
    kind: String,
    signer: String,
    logged_ms: i64,
    payload: Value,
}

fn recompute(node: &Node) -> (BTreeMap<String, Mine>, BTreeMap<String, Mine>) {
    let size = node.size();
    let mut orgs: HashMap<String, String> = HashMap::new();
    let mut by_case: BTreeMap<String, Vec<Ev>> = BTreeMap::new();
    for i in 0..size {
        let bytes = node.get(&format!("/v1/entries/{i}")).body;
        let entry: Value = serde_json::from_slice(&bytes).unwrap();
        let payload: Value = serde_json::from_slice(
            &B64.decode(entry["envelope"]["payload"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap();
        let signer = entry["envelope"]["signatures"][0]["keyid"]
            .as_str()
            .unwrap()
            .to_owned();
        let logged =
            chrono::DateTime::parse_from_rfc3339(entry["logged_at"].as_str().unwrap()).unwrap();
        if payload["kind"] == "actor.register" {
            orgs.insert(
                payload["body"]["key"].as_str().unwrap().to_owned(),
                payload["body"]["org"].as_str().unwrap().to_owned(),
            );
        }
        if let Some(case) = payload["case"].as_str() {
            by_case.entry(case.to_owned()).or_default().push(Ev {
                index: i,
                kind: payload["kind"].as_str().unwrap().to_owned(),
                signer,
                logged_ms: logged.timestamp_millis(),
                payload,
            });
        }
    }
    let mut brands: BTreeMap<String, Mine> = BTreeMap::new();
    let mut markets: BTreeMap<String, Mine> = BTreeMap::new();
    for evs in by_case.values() {
        let find = |k: &str| evs.iter().find(|e| e.kind == k);
        let det = find("detection").unwrap();
        let state = match evs.last().unwrap() {
            e if e.kind == "takedown" && e.payload["body"]["decision"] == "rejected" => "rejected",
            e => match e.kind.as_str() {
                "detection" => "detected",
                "notice" => "noticed",
                "takedown" => "removed",
                "counter_notice" => "countered",
                "reinstatement" => "reinstated",
                other => panic!("unexpected {other}"),
            },
        };
        let brand = orgs[&det.signer].clone();
        let market = det.payload["body"]["marketplace"]
            .as_str()
            .unwrap()
            .to_owned();
        for f in [
            brands.entry(brand).or_default(),
            markets.entry(market).or_default(),
        ] {
            f.cases += 1;
            *f.by_state.entry(state.to_owned()).or_default() += 1;
            if let Some(n) = find("notice") {
                f.d2n.push((
                    (n.logged_ms - det.logged_ms) as f64 / 1000.0,
                    [det.index, n.index],
                ));
                if let Some(t) =
                    find("takedown").filter(|t| t.payload["body"]["decision"] != "rejected")
                {
                    f.n2t.push((
                        (t.logged_ms - n.logged_ms) as f64 / 1000.0,
                        [n.index, t.index],
                    ));
                    f.removed += 1;
                }
            }
            if let Some(c) = find("counter_notice") {
                f.counters.push(c.index);
                if let Some(r) = find("reinstatement") {
                    f.reinstatements.push(r.index);
                }
            }
        }
    }
    (brands, markets)
}

fn check(name: &str, theirs: &Value, mine: &Mine) {
    assert_eq!(
        theirs["cases"].as_u64(),
        Some(mine.cases as u64),
        "{name}: cases"
    );
    let states: BTreeMap<String, usize> =
        serde_json::from_value(theirs["by_state"].clone()).unwrap();
    assert_eq!(states, mine.by_state, "{name}: by_state");
    for (key, set) in [
        ("detection_to_notice", &mine.d2n),
        ("notice_to_takedown", &mine.n2t),
    ] {
        let mut v: Vec<f64> = set.iter().map(|(s, _)| *s).collect();
        let f = &theirs[key];
        assert_eq!(
            f["count"].as_u64(),
            Some(set.len() as u64),
            "{name}: {key} count"
        );
        assert_eq!(
            f["median_secs"].as_f64(),
            nearest_rank(&mut v, 50),
            "{name}: {key} median"
        );
        assert_eq!(
            f["p90_secs"].as_f64(),
            nearest_rank(&mut v, 90),
            "{name}: {key} p90"
        );
        let mut from: Vec<[u64; 2]> = serde_json::from_value(f["from"].clone()).unwrap();
        let mut want: Vec<[u64; 2]> = set.iter().map(|(_, i)| *i).collect();
        from.sort();
        want.sort();
        assert_eq!(
            from, want,
            "{name}: {key} must cite the entries it came from"
        );
    }
    let rate = |r: &Value, num: &Vec<u64>, den: usize| {
        assert_eq!(
            r["denominator"].as_u64(),
            Some(den as u64),
            "{name}: denominator"
        );
        let mut from: Vec<u64> = serde_json::from_value(r["from"].clone()).unwrap();
        from.sort();
        let mut want = num.clone();
        want.sort();
        assert_eq!(from, want, "{name}: rate sources");
        assert_eq!(
            r["rate"].as_f64(),
            (den > 0).then(|| num.len() as f64 / den as f64),
            "{name}: rate"
        );
    };
    rate(&theirs["counter_notice_rate"], &mine.counters, mine.removed);
    rate(
        &theirs["reinstatement_rate"],
        &mine.reinstatements,
        mine.counters.len(),
    );
}

#[test]
fn stats_equal_an_independent_recomputation_from_the_raw_entries() {
    let node = Node::start();
    build(&node);
    let stats = node.get_json("/v1/stats");
    let (brands, markets) = recompute(&node);
    assert_eq!(brands.len(), 3);
    assert_eq!(markets.len(), 2);
    assert_eq!(brands.values().map(|m| m.cases).sum::<usize>(), CASES);
    for (name, mine) in &brands {
        check(name, &stats["brands"][name], mine);
    }
    for (name, mine) in &markets {
        check(name, &stats["marketplaces"][name], mine);
    }
    let work = tempfile::tempdir().unwrap();
    let cli = custody(work.path(), Some(&node.url), &["stats"]);
    assert!(
        cli.ok && cli.stdout.contains("Corex") && cli.stdout.contains("ShopB"),
        "{}\n{}",
        cli.stdout,
        cli.stderr
    );
}
