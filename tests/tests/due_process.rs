//! The notice-and-takedown rules through the real node, for every regime: a table of
//! scripted cases, each step legal or refused with a named rule. Run once against a
//! node that enforces (every refusal is a 422 problem with its rule code, nothing is
//! logged) and once against a node with enforcement off, whose log the audit must
//! then flag at exactly the refused steps.

use chrono::{Datelike, Duration, NaiveDate, Utc, Weekday};
use custody_e2e::*;
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};
use std::collections::HashMap;

/// Business days added the plain way (Monday–Friday), independently of the ledger.
fn plus_business_days(d: NaiveDate, n: u32) -> NaiveDate {
    let mut d = d;
    let mut left = n;
    while left > 0 {
        d += Duration::days(1);
        if !matches!(d.weekday(), Weekday::Sat | Weekday::Sun) {
            left -= 1;
        }
    }
    d
}

fn at(day: NaiveDate) -> String {
    format!("{}T12:00:00Z", day.format("%Y-%m-%d"))
}

struct Actors {
    brand: SigningKey,
    rival: SigningKey,
    market: SigningKey,
    other_market: SigningKey,
}

/// One step of a script: who signs, the event, and the rule that must refuse it.
struct Step {
    name: &'static str,
    signer: fn(&Actors) -> &SigningKey,
    payload: Value,
    refused_by: Option<&'static str>,
}

fn brand(a: &Actors) -> &SigningKey {
    &a.brand
}
fn rival(a: &Actors) -> &SigningKey {
    &a.rival
}
fn market(a: &Actors) -> &SigningKey {
    &a.market
}
fn other_market(a: &Actors) -> &SigningKey {
    &a.other_market
}

/// Builds the scripts; `r(name)` is the ref to an earlier accepted step.
struct Script<'a> {
    receipts: &'a HashMap<String, Value>,
    base: NaiveDate,
}

impl Script<'_> {
    fn r(&self, name: &str) -> Value {
        reference_to(
            self.receipts
                .get(name)
                .unwrap_or_else(|| panic!("step {name} was not accepted")),
        )
    }
    fn idx(&self, name: &str) -> Value {
        self.receipts[name]["index"].clone()
    }
    fn day(&self, n: i64) -> String {
        at(self.base + Duration::days(n))
    }
}

fn detection(case: &str, when: String) -> Value {
    json!({"kind": "detection", "case": case, "claimed_at": when, "body": {
        "marketplace": "shop.example", "listing_url": "https://shop.example/item/1",
        "listing_id": "1", "seller_id": "seller-9", "method": "manual_review", "confidence": 95}})
}

fn notice(case: &str, regime: &str, when: String, refs: Vec<Value>, right: Value) -> Value {
    json!({"kind": "notice", "case": case, "claimed_at": when, "refs": refs,
        "body": {"regime": regime, "right": right, "listing_url": "https://shop.example/item/1",
            "contact": {"name": "Acme Legal", "email": "legal@acme.example"},
            "good_faith": true, "accurate": true, "authorised": true,
            "explanation": "counterfeits of our registered mark"}})
}

fn takedown(case: &str, when: String, refs: Vec<Value>, decision: &str) -> Value {
    json!({"kind": "takedown", "case": case, "claimed_at": when, "refs": refs,
        "body": {"decision": decision, "ground": "trademark infringement", "statement_of_reasons": "matches the notice",
            "automated": false, "redress": "appeal within 6 months"}})
}

fn counter(case: &str, when: String, refs: Vec<Value>) -> Value {
    json!({"kind": "counter_notice", "case": case, "claimed_at": when, "refs": refs,
        "body": {"listing_url": "https://shop.example/item/1", "good_faith_mistake": true,
            "consent_to_jurisdiction": true,
            "seller": {"name": "Seller Nine", "address": "1 Rue X, Paris", "phone": "+33 1 23 45 67 89"},
            "statement": "the goods are genuine"}})
}

fn reinstate(case: &str, when: String, refs: Vec<Value>) -> Value {
    json!({"kind": "reinstatement", "case": case, "claimed_at": when, "refs": refs,
        "body": {"listing_url": "https://shop.example/item/1", "reason": "counter-notice period ended"}})
}

fn legal(case: &str, when: String, refs: Vec<Value>) -> Value {
    json!({"kind": "legal_action", "case": case, "claimed_at": when, "refs": refs,
        "body": {"court": "N.D. Cal.", "court_case_number": "5:26-cv-01234", "filed_on": "2026-01-05"}})
}

fn withdraw(case: &str, when: String, refs: Vec<Value>) -> Value {
    json!({"kind": "withdrawal", "case": case, "claimed_at": when, "refs": refs, "body": {"reason": "settled"}})
}

fn right(when: String, valid_until: &str, number: String) -> Value {
    json!({"kind": "right", "claimed_at": when, "body": {
        "right_type": "trademark", "registration_number": number, "office": "EUIPO",
        "jurisdictions": ["EU"], "owner": "Acme SA", "valid_until": valid_until}})
}

type Builder = Box<dyn Fn(&Script) -> Step>;

fn step(
    name: &'static str,
    signer: fn(&Actors) -> &SigningKey,
    refused_by: Option<&'static str>,
    f: impl Fn(&Script) -> Value + 'static,
) -> Builder {
    Box::new(move |s| Step {
        name,
        signer,
        payload: f(s),
        refused_by,
    })
}

/// A case detected, noticed under `regime` and decided (`decision`) by the
/// marketplace on days 1–3: the steps named `det`, `noticed` and `decided`.
fn decided_case(
    case: String,
    regime: &'static str,
    [det, noticed, decided]: [&'static str; 3],
    decision: &'static str,
) -> [Builder; 3] {
    let (c1, c2, c3) = (case.clone(), case.clone(), case);
    [
        step(det, brand, None, move |s| detection(&c1, s.day(1))),
        step(noticed, brand, None, move |s| {
            notice(
                &c2,
                regime,
                s.day(2),
                vec![s.r(det), s.r("right")],
                s.idx("right"),
            )
        }),
        step(decided, market, None, move |s| {
            takedown(&c3, s.day(3), vec![s.r(noticed)], decision)
        }),
    ]
}

/// Every transition, legal and illegal, for one regime. Step names are unique per
/// regime; the case ids carry the regime so the scripts of the three regimes share
/// one log. (min, max) is the regime's reinstatement window in business days.
fn script(regime: &'static str, min: u32, max: Option<u32>) -> Vec<Builder> {
    let c = move |n: &str| format!("{regime}-{n}");
    let mut v: Vec<Builder> = vec![
        step("right", brand, None, move |s| {
            right(s.day(0), "2035-01-01", c("acme"))
        }),
        step("expired-right", brand, None, move |s| {
            let until = (s.base - Duration::days(1)).format("%Y-%m-%d").to_string();
            right(s.day(0), &until, c("acme-old"))
        }),
        step("rival-right", rival, None, move |s| {
            right(s.day(0), "2035-01-01", c("rival"))
        }),
        // The full path: detection → notice → takedown → counter-notice → reinstatement.
        step("det", brand, None, move |s| detection(&c("main"), s.day(1))),
        step(
            "notice-before-detection",
            brand,
            Some("case_not_open"),
            move |s| {
                notice(
                    &c("nocase"),
                    regime,
                    s.day(1),
                    vec![s.r("right")],
                    s.idx("right"),
                )
            },
        ),
        step(
            "takedown-before-notice",
            market,
            Some("illegal_transition"),
            move |s| takedown(&c("main"), s.day(1), vec![s.r("det")], "removed"),
        ),
        step(
            "notice-other-org",
            rival,
            Some("not_case_owner"),
            move |s| {
                notice(
                    &c("main"),
                    regime,
                    s.day(2),
                    vec![s.r("det"), s.r("rival-right")],
                    s.idx("rival-right"),
                )
            },
        ),
        step(
            "notice-rival-right",
            brand,
            Some("right_not_owned"),
            move |s| {
                notice(
                    &c("main"),
                    regime,
                    s.day(2),
                    vec![s.r("det"), s.r("rival-right")],
                    s.idx("rival-right"),
                )
            },
        ),
        step(
            "notice-expired-right",
            brand,
            Some("right_not_valid"),
            move |s| {
                notice(
                    &c("main"),
                    regime,
                    s.day(2),
                    vec![s.r("det"), s.r("expired-right")],
                    s.idx("expired-right"),
                )
            },
        ),
        step(
            "notice-without-detection-ref",
            brand,
            Some("missing_ref"),
            move |s| {
                notice(
                    &c("main"),
                    regime,
                    s.day(2),
                    vec![s.r("right")],
                    s.idx("right"),
                )
            },
        ),
        step(
            "notice-claimed-before-ref",
            brand,
            Some("claimed_before_ref"),
            move |s| {
                notice(
                    &c("main"),
                    regime,
                    s.day(0),
                    vec![s.r("det"), s.r("right")],
                    s.idx("right"),
                )
            },
        ),
        step(
            "notice-from-the-future",
            brand,
            Some("claimed_in_future"),
            move |s| {
                notice(
                    &c("main"),
                    regime,
                    at(Utc::now().date_naive() + Duration::days(3)),
                    vec![s.r("det"), s.r("right")],
                    s.idx("right"),
                )
            },
        ),
        step("notice", brand, None, move |s| {
            notice(
                &c("main"),
                regime,
                s.day(2),
                vec![s.r("det"), s.r("right")],
                s.idx("right"),
            )
        }),
        step(
            "notice-marketplace-role",
            market,
            Some("role_not_permitted"),
            move |s| {
                notice(
                    &c("main"),
                    regime,
                    s.day(2),
                    vec![s.r("det"), s.r("right")],
                    s.idx("right"),
                )
            },
        ),
        step(
            "counter-before-takedown",
            market,
            Some("illegal_transition"),
            move |s| counter(&c("main"), s.day(3), vec![s.r("notice")]),
        ),
        step(
            "takedown-without-ref",
            market,
            Some("missing_ref"),
            move |s| takedown(&c("main"), s.day(3), vec![s.r("det")], "removed"),
        ),
        step("takedown", market, None, move |s| {
            takedown(&c("main"), s.day(3), vec![s.r("notice")], "removed")
        }),
        step(
            "reinstate-before-counter",
            market,
            Some("illegal_transition"),
            move |s| reinstate(&c("main"), s.day(4), vec![s.r("takedown")]),
        ),
        // Shop decided the notice: another marketplace cannot act in the case.
        step(
            "counter-other-marketplace",
            other_market,
            Some("not_case_marketplace"),
            move |s| counter(&c("main"), s.day(4), vec![s.r("takedown")]),
        ),
        step("counter", market, None, move |s| {
            counter(&c("main"), s.day(4), vec![s.r("takedown")])
        }),
        step(
            "reinstate-other-marketplace",
            other_market,
            Some("not_case_marketplace"),
            move |s| {
                let open = plus_business_days(s.base + Duration::days(4), min);
                reinstate(&c("main"), at(open), vec![s.r("counter")])
            },
        ),
    ];
    if min > 0 {
        v.push(step(
            "reinstate-too-early",
            market,
            Some("reinstatement_too_early"),
            move |s| {
                let early = plus_business_days(s.base + Duration::days(4), min - 1);
                reinstate(&c("main"), at(early), vec![s.r("counter")])
            },
        ));
    }
    match max {
        Some(max) => v.push(step("reinstate-late", market, None, move |s| {
            reinstate(
                &c("main"),
                at(plus_business_days(s.base + Duration::days(4), max + 1)),
                vec![s.r("counter")],
            )
        })),
        None => v.push(step("reinstate", market, None, move |s| {
            reinstate(
                &c("main"),
                at(plus_business_days(s.base + Duration::days(4), min)),
                vec![s.r("counter")],
            )
        })),
    }
    v.extend([
        // Rejected is final for a counter-notice.
        step("det2", brand, None, move |s| {
            detection(&c("rejected"), s.day(1))
        }),
        step("notice2", brand, None, move |s| {
            notice(
                &c("rejected"),
                regime,
                s.day(2),
                vec![s.r("det2"), s.r("right")],
                s.idx("right"),
            )
        }),
        step("rejected", market, None, move |s| {
            takedown(&c("rejected"), s.day(3), vec![s.r("notice2")], "rejected")
        }),
        step(
            "counter-after-rejection",
            market,
            Some("illegal_transition"),
            move |s| counter(&c("rejected"), s.day(4), vec![s.r("rejected")]),
        ),
        step(
            "ref-to-other-case",
            market,
            Some("ref_other_case"),
            move |s| counter(&c("main"), s.day(5), vec![s.r("rejected")]),
        ),
        // A court action blocks reinstatement; a withdrawal then allows it.
        step("det3", brand, None, move |s| {
            detection(&c("court"), s.day(1))
        }),
        step("notice3", brand, None, move |s| {
            notice(
                &c("court"),
                regime,
                s.day(2),
                vec![s.r("det3"), s.r("right")],
                s.idx("right"),
            )
        }),
        step("takedown3", market, None, move |s| {
            takedown(&c("court"), s.day(3), vec![s.r("notice3")], "removed")
        }),
        step("counter3", market, None, move |s| {
            counter(&c("court"), s.day(4), vec![s.r("takedown3")])
        }),
        step("legal3", brand, None, move |s| {
            legal(&c("court"), s.day(5), vec![s.r("counter3")])
        }),
        step(
            "reinstate-in-court",
            market,
            Some("reinstatement_blocked_by_legal_action"),
            move |s| {
                reinstate(
                    &c("court"),
                    at(plus_business_days(s.base + Duration::days(4), 30)),
                    vec![s.r("counter3")],
                )
            },
        ),
        step("withdraw3", brand, None, move |s| {
            withdraw(&c("court"), s.day(6), vec![s.r("notice3")])
        }),
        // Logged after the withdrawal but claiming a time the case was in court:
        // the withdrawal does not make it lawful.
        step(
            "reinstate-backdated-into-court",
            market,
            Some("reinstatement_blocked_by_legal_action"),
            move |s| reinstate(&c("court"), s.day(5), vec![s.r("counter3")]),
        ),
        step("reinstate-after-withdrawal", market, None, move |s| {
            reinstate(&c("court"), s.day(6), vec![s.r("withdraw3")])
        }),
    ]);
    // A withdrawal long after the counter-notice; a reinstatement logged after it
    // but claiming a day after the counter-notice is judged by the window at that
    // day (too early where the window does not open at once).
    v.extend(decided_case(
        c("late-withdrawal"),
        regime,
        ["det4", "notice4", "takedown4"],
        "removed",
    ));
    v.extend([
        step("counter4", market, None, move |s| {
            counter(&c("late-withdrawal"), s.day(4), vec![s.r("takedown4")])
        }),
        step("withdraw4", brand, None, move |s| {
            withdraw(&c("late-withdrawal"), s.day(30), vec![s.r("notice4")])
        }),
        step(
            "reinstate-backdated-before-withdrawal",
            market,
            (min > 0).then_some("reinstatement_too_early"),
            move |s| reinstate(&c("late-withdrawal"), s.day(5), vec![s.r("counter4")]),
        ),
    ]);
    if let (true, Some(max)) = (min > 0, max) {
        // Restored (honestly) after the window closed but before the withdrawal,
        // and logged after it: accepted, and flagged late as it would have been.
        v.push(step(
            "reinstate-late-before-withdrawal",
            market,
            None,
            move |s| {
                let late = plus_business_days(s.base + Duration::days(4), max + 1);
                reinstate(&c("late-withdrawal"), at(late), vec![s.r("counter4")])
            },
        ));
    }
    v
}

const REGIMES: [(&str, u32, Option<u32>); 3] = [
    ("dmca-512", 10, Some(14)),
    ("eu-dsa", 0, None),
    ("platform", 2, Some(5)),
];

fn actors(node: &Node) -> Actors {
    let a = Actors {
        brand: key(21),
        rival: key(22),
        market: key(23),
        other_market: key(24),
    };
    node.register(&a.brand, "Acme legal", "Acme", &["brand"]);
    node.register(&a.rival, "Rival legal", "Rival", &["brand"]);
    node.register(&a.market, "Shop T&S", "Shop", &["marketplace"]);
    node.register(&a.other_market, "Other T&S", "OtherMart", &["marketplace"]);
    a
}

/// Runs every regime's script; returns (step, index) of the refused steps as logged
/// (lax node) and checks each answer.
fn run(node: &Node, enforce: bool) -> Vec<(String, u64)> {
    let a = actors(node);
    let base = Utc::now().date_naive() - Duration::days(60);
    let mut flagged = Vec::new();
    let mut step_no = 0u32;
    for (regime, min, max) in REGIMES {
        let mut receipts = HashMap::new();
        for build in script(regime, min, max) {
            let s = build(&Script {
                receipts: &receipts,
                base,
            });
            // Each step at its own minute of its day, so no two steps are the same
            // event (a repeat would be answered as a duplicate).
            let mut s = s;
            step_no += 1;
            let claimed = s.payload["claimed_at"].as_str().unwrap().replace(
                "T12:00:00Z",
                &format!("T12:{:02}:{:02}Z", step_no / 60, step_no % 60),
            );
            s.payload["claimed_at"] = Value::String(claimed);
            let size = node.size();
            let answer = node.send((s.signer)(&a), &s.payload);
            let label = format!("{regime}/{}", s.name);
            match (s.refused_by, enforce) {
                (Some(rule), true) => {
                    let p = answer.json();
                    assert!(
                        answer.status == 422 || answer.status == 403,
                        "{label}: expected a refusal by {rule}, got {}: {p}",
                        answer.status
                    );
                    let got = p["rule"].as_str().or(p["code"].as_str()).unwrap_or("");
                    assert_eq!(got, rule, "{label}: refused by the wrong rule: {p}");
                    assert_eq!(
                        node.size(),
                        size,
                        "{label}: a refused event changed the log"
                    );
                }
                (refused, _) => {
                    let is_role = refused == Some("role_not_permitted");
                    if is_role {
                        // Authorisation is never waived, even with due process off.
                        assert_eq!(answer.status, 403, "{label}: {}", answer.text());
                        continue;
                    }
                    assert_eq!(answer.status, 201, "{label}: {}", answer.text());
                    let r = answer.json();
                    if refused.is_some() {
                        flagged.push((label.clone(), r["index"].as_u64().unwrap()));
                    }
                    receipts.insert(s.name.to_owned(), r);
                }
            }
        }
    }
    flagged
}

fn case(node: &Node, id: &str) -> Value {
    node.get_json(&format!("/v1/cases/{id}"))
}

#[test]
fn every_transition_is_enforced_with_its_rule_code_in_every_regime() {
    let node = Node::start();
    run(&node, true);
    for (regime, _, max) in REGIMES {
        let main = case(&node, &format!("{regime}-main"));
        assert_eq!(main["state"], "reinstated", "{regime}: {main}");
        let last = main["steps"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(
            last["flag"].as_str(),
            max.map(|_| "late_reinstatement"),
            "{regime}: {last}"
        );
        // An adjudicator verifying the reinstatement's bundle offline sees the flag.
        let work = tempfile::tempdir().unwrap();
        let bundle = node.get(&format!("/v1/bundles/{}", last["index"]));
        std::fs::write(work.path().join("b.json"), bundle.text()).unwrap();
        let vkey = node.vkey();
        let verified = custody(
            work.path(),
            None,
            &["--json", "verify", "b.json", "--log-key", &vkey],
        );
        assert!(verified.ok, "{regime}: {}", verified.stderr);
        let lines = verified.json()["entries"].clone();
        let line = lines.as_array().unwrap().last().unwrap();
        assert_eq!(line["index"], last["index"], "{regime}: {line}");
        assert_eq!(
            line["flag"].as_str(),
            max.map(|_| "late_reinstatement"),
            "{regime}: {line}"
        );
        assert_eq!(
            case(&node, &format!("{regime}-rejected"))["state"],
            "rejected"
        );
        let court = case(&node, &format!("{regime}-court"));
        let states: Vec<&str> = court["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["state_after"].as_str().unwrap())
            .collect();
        assert_eq!(
            states,
            [
                "detected",
                "noticed",
                "removed",
                "countered",
                "in_court",
                "withdrawn",
                "reinstated"
            ],
            "{regime}"
        );
        let late = case(&node, &format!("{regime}-late-withdrawal"));
        assert_eq!(late["state"], "reinstated", "{regime}: {late}");
        let last = late["steps"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(
            last["flag"].as_str(),
            max.map(|_| "late_reinstatement"),
            "{regime}: {last}"
        );
    }
}

#[test]
fn the_audit_flags_exactly_the_steps_a_lax_node_let_through() {
    let node = Node::start_with(&["--no-enforce-due-process"]);
    let flagged = run(&node, false);
    assert!(
        flagged.len() >= 30,
        "the scripts must exercise the refusals: {flagged:?}"
    );
    let work = tempfile::tempdir().unwrap();
    let audit = custody(
        work.path(),
        None,
        &[
            "--json",
            "--log-key",
            &node.vkey(),
            "audit",
            &node.url,
            "--state",
            "s.json",
        ],
    );
    assert!(!audit.ok, "the audit must fail on a log with violations");
    let got: Vec<u64> = audit.json()["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["index"].as_u64().unwrap())
        .collect();
    let want: Vec<u64> = flagged.iter().map(|(_, i)| *i).collect();
    assert_eq!(
        got, want,
        "flagged steps: {flagged:?}\naudit: {}",
        audit.stdout
    );
}
