//! Key indicators computed from case states (DOMAIN.md §What users measure): per
//! brand and per marketplace, cases by state, time from detection to notice and
//! from notice to takedown (median, p90), counter-notice and reinstatement rates,
//! late reinstatements. Every figure lists the entry indices it was computed from,
//! so it can itself be proved with inclusion proofs. Times use `logged_at`, the
//! log's own trusted clock.

use crate::cases::{CaseState, State};
use crate::event::Kind;
use crate::types::Index;
use serde::Serialize;
use std::collections::BTreeMap;

/// A set of durations, in seconds, with the entries each one spans.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Durations {
    pub count: usize,
    pub median_secs: Option<f64>,
    pub p90_secs: Option<f64>,
    /// `[from_index, to_index]` for each duration.
    pub from: Vec<[Index; 2]>,
    #[serde(skip)]
    values: Vec<f64>,
}

impl Durations {
    fn push(&mut self, secs: f64, a: Index, b: Index) {
        self.values.push(secs);
        self.from.push([a, b]);
    }
    fn finish(&mut self) {
        self.count = self.values.len();
        let mut v = self.values.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        self.median_secs = percentile(&v, 50);
        self.p90_secs = percentile(&v, 90);
    }
}

/// Nearest-rank percentile (the smallest value with at least p% of values ≤ it).
pub fn percentile(sorted: &[f64], p: usize) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    Some(sorted[rank - 1])
}

/// A ratio with the indices of its numerator events.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Rate {
    pub numerator: usize,
    pub denominator: usize,
    pub rate: Option<f64>,
    pub from: Vec<Index>,
}

impl Rate {
    fn finish(&mut self) {
        self.numerator = self.from.len();
        self.rate = (self.denominator > 0).then(|| self.numerator as f64 / self.denominator as f64);
    }
}

/// The indicators of one brand or marketplace.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    pub cases: usize,
    pub by_state: BTreeMap<&'static str, usize>,
    pub detection_to_notice: Durations,
    pub notice_to_takedown: Durations,
    /// Counter-notices ÷ listings removed.
    pub counter_notice_rate: Rate,
    /// Reinstatements ÷ counter-notices.
    pub reinstatement_rate: Rate,
    /// Reinstatements flagged `late_reinstatement`.
    pub late_reinstatements: Vec<Index>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    pub brands: BTreeMap<String, Figures>,
    pub marketplaces: BTreeMap<String, Figures>,
}

fn add_case(f: &mut Figures, c: &CaseState) {
    f.cases += 1;
    *f.by_state.entry(c.state.as_str()).or_default() += 1;
    let first = |k: Kind| c.steps.iter().find(|s| s.kind == k);
    if let (Some(d), Some(n)) = (first(Kind::Detection), first(Kind::Notice)) {
        let secs = (n.logged_at - d.logged_at).num_milliseconds() as f64 / 1000.0;
        f.detection_to_notice.push(secs, d.index, n.index);
    }
    if let (Some(n), Some(t)) = (first(Kind::Notice), first(Kind::Takedown)) {
        if t.state_after == State::Removed {
            let secs = (t.logged_at - n.logged_at).num_milliseconds() as f64 / 1000.0;
            f.notice_to_takedown.push(secs, n.index, t.index);
        }
    }
    let removed = c
        .steps
        .iter()
        .any(|s| s.kind == Kind::Takedown && s.state_after == State::Removed);
    if removed {
        f.counter_notice_rate.denominator += 1;
    }
    if let Some(cn) = first(Kind::CounterNotice) {
        f.counter_notice_rate.from.push(cn.index);
        f.reinstatement_rate.denominator += 1;
    }
    if let Some(r) = first(Kind::Reinstatement) {
        if first(Kind::CounterNotice).is_some() {
            f.reinstatement_rate.from.push(r.index);
        }
        if r.flag.as_deref() == Some("late_reinstatement") {
            f.late_reinstatements.push(r.index);
        }
    }
}

/// Computes the indicators over every case.
pub fn compute<'a>(cases: impl IntoIterator<Item = &'a CaseState>) -> Stats {
    let mut s = Stats::default();
    for c in cases {
        if let Some(b) = &c.brand_org {
            add_case(s.brands.entry(b.clone()).or_default(), c);
        }
        if let Some(m) = &c.marketplace {
            add_case(s.marketplaces.entry(m.clone()).or_default(), c);
        }
    }
    for f in s.brands.values_mut().chain(s.marketplaces.values_mut()) {
        f.detection_to_notice.finish();
        f.notice_to_takedown.finish();
        f.counter_notice_rate.finish();
        f.reinstatement_rate.finish();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 50), Some(5.0));
        assert_eq!(percentile(&v, 90), Some(9.0));
        assert_eq!(percentile(&[3.0], 90), Some(3.0));
        assert_eq!(percentile(&[], 50), None);
    }
}
