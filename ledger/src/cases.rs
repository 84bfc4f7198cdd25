//! The notice-and-takedown state machine (spec/due-process.md): one pure function,
//! [`transition`], from (case state, event) to a new state or a refusal. The node
//! calls it at append time and the audit at replay, so the two cannot disagree.

use crate::error::{Code, LedgerError, Result};
use crate::event::{Body, Decision, Kind, Regime};
use crate::types::{CaseId, Index, KeyId};
use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc, Weekday};
use serde::{Deserialize, Serialize};

/// Where a case stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// A listing was detected; no notice yet.
    Detected,
    /// A notice was sent; the marketplace has not decided.
    Noticed,
    /// The listing was removed or disabled.
    Removed,
    /// The marketplace rejected the notice.
    Rejected,
    /// The seller filed a counter-notice.
    Countered,
    /// The rights holder filed a court action: reinstatement is blocked.
    InCourt,
    /// The notice was withdrawn.
    Withdrawn,
    /// The listing was restored.
    Reinstated,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Detected => "detected",
            State::Noticed => "noticed",
            State::Removed => "removed",
            State::Rejected => "rejected",
            State::Countered => "countered",
            State::InCourt => "in_court",
            State::Withdrawn => "withdrawn",
            State::Reinstated => "reinstated",
        }
    }
}

/// Reinstatement window after a counter-notice, in business days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Reinstatement earlier than this is refused.
    pub min_business_days: u32,
    /// Reinstatement later than this is accepted but flagged late.
    pub max_business_days: Option<u32>,
}

/// The configurable parts of the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    /// How far a `claimed_at` may lie ahead of the log's `logged_at`.
    pub max_clock_skew_secs: i64,
    /// The `platform` regime's window (marketplace policy).
    pub platform_window: Window,
    /// When false, due-process refusals are not enforced at append (used to build
    /// logs that the audit must flag); the audit always enforces.
    pub enforce: bool,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            max_clock_skew_secs: 300,
            platform_window: Window {
                min_business_days: 2,
                max_business_days: Some(5),
            },
            enforce: true,
        }
    }
}

impl Rules {
    /// The reinstatement window of a regime (spec/due-process.md §Windows).
    pub fn window(&self, regime: Regime) -> Window {
        match regime {
            // 17 U.S.C. §512(g)(2)(C): not less than 10, not more than 14 business days.
            Regime::Dmca512 => Window {
                min_business_days: 10,
                max_business_days: Some(14),
            },
            // DSA Art. 20: the internal complaint decides; no statutory waiting period.
            Regime::EuDsa => Window {
                min_business_days: 0,
                max_business_days: None,
            },
            Regime::Platform => self.platform_window,
        }
    }
}

/// Adds business days (Monday–Friday) to a date.
pub fn add_business_days(mut d: NaiveDate, n: u32) -> NaiveDate {
    let mut left = n;
    while left > 0 {
        d = d.succ_opt().unwrap_or(d);
        if !matches!(d.weekday(), Weekday::Sat | Weekday::Sun) {
            left -= 1;
        }
    }
    d
}

/// One step of a case's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub index: Index,
    pub kind: Kind,
    pub signer: KeyId,
    pub org: String,
    pub claimed_at: DateTime<Utc>,
    pub logged_at: DateTime<Utc>,
    pub state_after: State,
    /// Accepted but worth flagging (e.g. `late_reinstatement`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag: Option<String>,
}

/// A case as the log knows it after some entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseState {
    pub id: CaseId,
    pub state: State,
    pub brand_org: Option<String>,
    pub marketplace: Option<String>,
    pub seller_id: Option<String>,
    pub regime: Option<Regime>,
    /// When the counter-notice was received (its `claimed_at`).
    pub counter_notice_at: Option<DateTime<Utc>>,
    pub steps: Vec<Step>,
}

impl CaseState {
    /// Open deadlines a reader should know about (reinstatement window).
    pub fn deadlines(&self, rules: &Rules) -> Vec<(String, NaiveDate)> {
        let mut out = Vec::new();
        if let (State::Countered, Some(at), Some(regime)) =
            (self.state, self.counter_notice_at, self.regime)
        {
            let w = rules.window(regime);
            out.push((
                "reinstatement_not_before".into(),
                add_business_days(at.date_naive(), w.min_business_days),
            ));
            if let Some(max) = w.max_business_days {
                out.push((
                    "reinstatement_due_by".into(),
                    add_business_days(at.date_naive(), max),
                ));
            }
        }
        out
    }
}

/// A referenced entry as the rules see it.
#[derive(Debug, Clone)]
pub struct RefInfo {
    pub index: Index,
    pub kind: Kind,
    pub case: Option<CaseId>,
    pub org: String,
    pub claimed_at: DateTime<Utc>,
    pub body: Body,
}

/// The event being judged, with what the log knows about it.
pub struct CaseEvent<'a> {
    pub index: Index,
    pub case: &'a CaseId,
    pub kind: Kind,
    pub body: &'a Body,
    pub signer: KeyId,
    pub org: &'a str,
    pub claimed_at: DateTime<Utc>,
    pub logged_at: DateTime<Utc>,
    pub refs: &'a [RefInfo],
}

/// A due-process refusal naming its rule (spec/due-process.md §Rule codes).
pub(crate) fn refuse(rule: &'static str, detail: String, expected: &str) -> LedgerError {
    LedgerError::new(Code::DueProcess, detail)
        .rule(rule)
        .expected(expected)
}

/// The kind a case event must answer (ref), given the case's state.
fn answers(kind: Kind) -> &'static [Kind] {
    match kind {
        Kind::Notice => &[Kind::Detection],
        Kind::Takedown => &[Kind::Notice],
        Kind::CounterNotice => &[Kind::Takedown],
        Kind::LegalAction => &[Kind::CounterNotice, Kind::Takedown],
        Kind::Reinstatement => &[Kind::CounterNotice, Kind::Withdrawal],
        Kind::Withdrawal => &[Kind::Notice],
        _ => &[],
    }
}

/// From which states each kind may be applied.
fn allowed_from(kind: Kind) -> &'static [State] {
    match kind {
        Kind::Detection => &[State::Detected],
        Kind::Notice => &[State::Detected],
        Kind::Takedown => &[State::Noticed],
        Kind::CounterNotice => &[State::Removed],
        Kind::LegalAction => &[State::Removed, State::Countered],
        Kind::Reinstatement => &[State::Countered, State::Withdrawn],
        Kind::Withdrawal => &[
            State::Noticed,
            State::Removed,
            State::Countered,
            State::InCourt,
        ],
        _ => &[],
    }
}

/// Applies one case event. Pure: no I/O, no clock.
pub fn transition(
    prev: Option<&CaseState>,
    ev: &CaseEvent<'_>,
    rules: &Rules,
) -> Result<CaseState> {
    let mut flag = None;
    // Every ref of a case event stays within its case (rights and scans excepted:
    // they are evidence shared between cases).
    for r in ev.refs {
        if r.kind.needs_case() && r.case.as_ref() != Some(ev.case) {
            return Err(refuse(
                "ref_other_case",
                format!(
                    "ref to entry {} belongs to case {}, not {}",
                    r.index,
                    r.case.as_ref().map(|c| c.as_str()).unwrap_or("-"),
                    ev.case
                ),
                "refs to events of the same case (rights and scans may be shared)",
            ));
        }
    }
    let mut next = match (prev, ev.kind) {
        (None, Kind::Detection) => CaseState {
            id: ev.case.clone(),
            state: State::Detected,
            brand_org: Some(ev.org.to_owned()),
            marketplace: None,
            seller_id: None,
            regime: None,
            counter_notice_at: None,
            steps: vec![],
        },
        (None, k) => {
            return Err(refuse(
                "case_not_open",
                format!("case {} has no detection, so a {} cannot be filed in it", ev.case, k.as_str()),
                "a detection first: it opens the case",
            ))
        }
        (Some(p), Kind::Reinstatement) if p.state == State::InCourt => {
            return Err(refuse(
                "reinstatement_blocked_by_legal_action",
                format!("case {} is in court: the rights holder filed a legal action, so the listing stays down", ev.case),
                "no reinstatement until the court action ends (a withdrawal, then a reinstatement)",
            ))
        }
        (Some(p), k) => {
            if !allowed_from(k).contains(&p.state) {
                return Err(refuse(
                    "illegal_transition",
                    format!("a {} is not allowed while case {} is {}", k.as_str(), ev.case, p.state.as_str()),
                    &format!(
                        "a {} only from state(s) {}",
                        k.as_str(),
                        allowed_from(k).iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            p.clone()
        }
    };
    let need = answers(ev.kind);
    if !need.is_empty() && !ev.refs.iter().any(|r| need.contains(&r.kind)) {
        return Err(refuse(
            "missing_ref",
            format!("a {} must ref the event it answers", ev.kind.as_str()),
            &format!(
                "a ref to the case's {}",
                need.iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        ));
    }
    if let Some(org) = &next.brand_org {
        let brand_side = matches!(ev.kind, Kind::Notice | Kind::LegalAction | Kind::Withdrawal);
        if brand_side && org != ev.org {
            return Err(refuse(
                "not_case_owner",
                format!("case {} belongs to {org}, not {}", ev.case, ev.org),
                "the organisation that opened the case",
            ));
        }
    }
    // The marketplace that decided the notice (signed its takedown) relays the
    // counter-notice and restores the listing. Read from the steps, which every
    // stored case record has, so records written before this rule judge alike.
    let decider = next.steps.iter().find(|s| s.kind == Kind::Takedown);
    if let Some(org) = decider.map(|s| &s.org) {
        // (A second takedown never gets here: it is an illegal transition.)
        let market_side = matches!(ev.kind, Kind::CounterNotice | Kind::Reinstatement);
        if market_side && org != ev.org {
            return Err(refuse(
                "not_case_marketplace",
                format!(
                    "case {} was decided by {org}, so its {} cannot come from {}",
                    ev.case,
                    ev.kind.as_str(),
                    ev.org
                ),
                "the organisation that signed the case's takedown",
            ));
        }
    }
    match ev.body {
        Body::Detection(d) => {
            next.marketplace
                .get_or_insert_with(|| d.marketplace.clone());
            next.seller_id.get_or_insert_with(|| d.seller_id.clone());
        }
        Body::Notice(n) => {
            let right = ev.refs.iter().find(|r| r.index == n.right);
            match right.map(|r| (&r.body, r)) {
                Some((Body::Right(rb), r)) => {
                    if r.org != ev.org {
                        return Err(refuse(
                            "right_not_owned",
                            format!(
                                "right entry {} was registered by {}, not by {}",
                                r.index, r.org, ev.org
                            ),
                            "a right registered by the notifier's organisation",
                        ));
                    }
                    if rb.valid_until < ev.claimed_at.date_naive()
                        || rb
                            .valid_from
                            .is_some_and(|f| f > ev.claimed_at.date_naive())
                    {
                        let valid = match rb.valid_from {
                            Some(f) => format!("from {f} until {}", rb.valid_until),
                            None => format!("until {}", rb.valid_until),
                        };
                        return Err(refuse(
                            "right_not_valid",
                            format!(
                                "right entry {} is valid {valid}, not at {}",
                                r.index, ev.claimed_at
                            ),
                            "a right valid when the notice is sent",
                        ));
                    }
                }
                _ => {
                    return Err(refuse(
                        "right_not_a_right",
                        format!("entry {} named in body.right is not a right", n.right),
                        "body.right naming a `right` entry",
                    ))
                }
            }
            next.regime = Some(n.regime);
            next.state = State::Noticed;
        }
        Body::Takedown(t) => {
            next.state = if t.decision == Decision::Rejected {
                State::Rejected
            } else {
                State::Removed
            };
        }
        Body::CounterNotice(_) => {
            next.state = State::Countered;
            // The window runs from when the marketplace received the counter-notice
            // (§512(g)(2)(C)): its claimed time, which the log bounds by its own
            // clock (claimed_in_future) and by the takedown it answers.
            next.counter_notice_at = Some(ev.claimed_at);
        }
        Body::LegalAction(_) => next.state = State::InCourt,
        Body::Withdrawal(_) => next.state = State::Withdrawn,
        Body::Reinstatement(_) => {
            flag = judge_reinstatement(&next, ev, rules)?;
            next.state = State::Reinstated;
        }
        _ => {}
    }
    next.steps.push(Step {
        index: ev.index,
        kind: ev.kind,
        signer: ev.signer,
        org: ev.org.to_owned(),
        claimed_at: ev.claimed_at,
        logged_at: ev.logged_at,
        state_after: next.state,
        flag,
    });
    Ok(next)
}

/// A reinstatement's window (spec/due-process.md §Windows): refused if it claims a
/// time before the window opens, flagged if after it closes. After a withdrawal the
/// listing may come back at once, but only from the withdrawal's claimed time on:
/// a reinstatement logged after it that claims an earlier time is judged at that
/// time, as if the withdrawal had not come (blocked if the case was in court then,
/// the counter-notice's window if there was one, refused otherwise), so that
/// back-dating it behind a later withdrawal cannot make an early restoration lawful.
fn judge_reinstatement(
    case: &CaseState,
    ev: &CaseEvent<'_>,
    rules: &Rules,
) -> Result<Option<String>> {
    let claimed = |kind: Kind| {
        case.steps
            .iter()
            .rev()
            .find(|s| s.kind == kind)
            .map(|s| s.claimed_at)
    };
    if case.state == State::Withdrawn {
        // Invariant: Withdrawn always has its withdrawal among the steps.
        let withdrawn = claimed(Kind::Withdrawal).unwrap_or(ev.claimed_at);
        if ev.claimed_at >= withdrawn {
            return Ok(None);
        }
        if let Some(court) = claimed(Kind::LegalAction).filter(|&c| c <= ev.claimed_at) {
            return Err(refuse(
                "reinstatement_blocked_by_legal_action",
                format!(
                    "case {} was in court from {court} until the withdrawal of {withdrawn}; the reinstatement claims {}",
                    ev.case, ev.claimed_at
                ),
                "a reinstatement claimed at or after the withdrawal",
            ));
        }
        // Unreachable in a log that enforced due process (without a counter-notice
        // the reinstatement refs the withdrawal, and `claimed_before_ref` bounds it
        // by it); kept for an audit of a log that did not.
        if case.counter_notice_at.is_none() {
            return Err(refuse(
                "reinstatement_too_early",
                format!(
                    "a reinstatement in case {} claims {}, before the withdrawal of {withdrawn} that allows it, and no counter-notice opened a window before it",
                    ev.case, ev.claimed_at
                ),
                "a reinstatement claimed at or after the withdrawal",
            ));
        }
    }
    // Countered, or withdrawn after a counter-notice with the reinstatement claimed
    // before the withdrawal. Invariant: both have a counter-notice time.
    let regime = case.regime.unwrap_or(Regime::Platform);
    let w = rules.window(regime);
    let from = case.counter_notice_at.unwrap_or(ev.claimed_at).date_naive();
    let earliest = add_business_days(from, w.min_business_days);
    let at = ev.claimed_at.date_naive();
    if at < earliest {
        let expected = match case.state {
            State::Withdrawn => {
                "a reinstatement claimed at or after the withdrawal (ref the withdrawal), or on or after the window opens"
            }
            _ => "a reinstatement on or after the window opens, or a withdrawal first",
        };
        return Err(refuse(
            "reinstatement_too_early",
            format!(
                "under {} a reinstatement may not come before {earliest} ({} business days after the counter-notice of {from}); it claims {at}",
                regime.as_str(),
                w.min_business_days
            ),
            expected,
        ));
    }
    Ok(w.max_business_days
        .filter(|&max| at > add_business_days(from, max))
        .map(|_| "late_reinstatement".to_owned()))
}

/// The time between two instants, for timelines (`None` for the first step).
pub fn since(prev: Option<&Step>, at: DateTime<Utc>) -> Option<Duration> {
    prev.map(|p| at - p.logged_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn business_days_skip_weekends() {
        // 2026-11-20 is a Friday.
        let fri = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
        assert_eq!(
            add_business_days(fri, 1),
            NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()
        );
        assert_eq!(
            add_business_days(fri, 10),
            NaiveDate::from_ymd_opt(2026, 12, 4).unwrap()
        );
    }
}
