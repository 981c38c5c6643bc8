//! How alike consecutive successive-halving rungs rank the candidates trained at both: the
//! proxy's fidelity as each search measures it.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Serialize;

use crate::store::{TrialRow, TrialState};

/// Bootstrap resamples behind each interval.
pub const RESAMPLES: usize = 1000;

/// Rank agreement between rung `from_rung` and rung `to_rung` over the `n` candidates with a
/// result at both; correlations are absent (null) with fewer than 3 such candidates.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct RungAgreement {
    pub from_rung: i64,
    pub to_rung: i64,
    /// Tokens each rung trained for.
    pub from_tokens: i64,
    pub to_tokens: i64,
    pub n: usize,
    pub spearman: Option<f64>,
    /// 95 % percentile bootstrap interval of Spearman's ρ.
    pub spearman_low: Option<f64>,
    pub spearman_high: Option<f64>,
    pub kendall_tau: Option<f64>,
    pub kendall_low: Option<f64>,
    pub kendall_high: Option<f64>,
}

/// The agreement of every pair of consecutive rungs present in `trials` (a search's), lowest
/// first; empty without halving. Seeded by the search id, so a page shows the same intervals on
/// every load.
pub fn rung_agreement(search_id: i64, trials: &[TrialRow]) -> Vec<RungAgreement> {
    // rung → candidate → (perplexity, tokens)
    let mut by_rung: BTreeMap<i64, BTreeMap<i64, (f64, i64)>> = BTreeMap::new();
    for t in trials.iter().filter(|t| t.state == TrialState::Done) {
        if let Some(ppl) = t.ppl {
            by_rung.entry(t.rung).or_default().insert(t.candidate_id, (ppl, t.budget_tokens));
        }
    }
    let rungs: Vec<i64> = by_rung.keys().copied().collect();
    let finite = |v: f64| v.is_finite().then_some(v);
    rungs
        .windows(2)
        .map(|w| {
            let (lower, upper) = (&by_rung[&w[0]], &by_rung[&w[1]]);
            let (x, y): (Vec<f64>, Vec<f64>) =
                upper.iter().filter_map(|(id, (hi, _))| lower.get(id).map(|(lo, _)| (*lo, *hi))).unzip();
            let a = lut::fidelity::rank_agreement(&x, &y, RESAMPLES, search_id as u64);
            RungAgreement {
                from_rung: w[0],
                to_rung: w[1],
                from_tokens: lower.values().next().map_or(0, |v| v.1),
                to_tokens: upper.values().next().map_or(0, |v| v.1),
                n: a.n,
                spearman: finite(a.spearman),
                spearman_low: finite(a.spearman_low),
                spearman_high: finite(a.spearman_high),
                kendall_tau: finite(a.kendall_tau),
                kendall_low: finite(a.kendall_low),
                kendall_high: finite(a.kendall_high),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(candidate_id: i64, rung: i64, state: TrialState, ppl: Option<f64>) -> TrialRow {
        TrialRow {
            id: candidate_id * 10 + rung,
            search_id: 1,
            candidate_id,
            state,
            budget_tokens: 1000 << rung,
            rung,
            attempt: 1,
            max_attempts: 3,
            lease_token: None,
            worker_id: None,
            lease_expires_at_ms: None,
            val_loss: ppl.map(f64::ln),
            ppl,
            result: None,
            created_at_ms: 0,
            updated_at_ms: 0,
        }
    }

    #[test]
    fn consecutive_rungs_are_compared_on_the_candidates_done_at_both() {
        let mut trials = Vec::new();
        // Rung 0: 9 candidates; rung 1: the best 5, ranked the same except one swap; rung 2: 2.
        for c in 0..9 {
            trials.push(trial(c, 0, TrialState::Done, Some(10.0 + c as f64)));
        }
        for (c, p) in [(0, 8.0), (1, 8.5), (2, 8.2), (3, 9.0), (4, 9.5)] {
            trials.push(trial(c, 1, TrialState::Done, Some(p)));
        }
        trials.push(trial(0, 2, TrialState::Done, Some(7.0)));
        trials.push(trial(1, 2, TrialState::Leased, None));
        // A failed trial at rung 1 is not a result.
        trials.push(trial(5, 1, TrialState::Failed, None));
        let a = rung_agreement(7, &trials);
        assert_eq!(a.len(), 2);
        assert_eq!((a[0].from_rung, a[0].to_rung, a[0].n), (0, 1, 5));
        assert_eq!((a[0].from_tokens, a[0].to_tokens), (1000, 2000));
        // Ranks 1..5 against 1,3,2,4,5: Σd² = 2, ρ = 1 − 6·2/(5·24) = 0.9; τ = (9 − 1)/10 = 0.8.
        assert!((a[0].spearman.unwrap() - 0.9).abs() < 1e-12, "{a:?}");
        assert!((a[0].kendall_tau.unwrap() - 0.8).abs() < 1e-12, "{a:?}");
        let (lo, hi) = (a[0].spearman_low.unwrap(), a[0].spearman_high.unwrap());
        assert!(lo <= 0.9 && 0.9 <= hi, "{a:?}");
        // Rung 2 has one result: too few to rank.
        assert_eq!((a[1].from_rung, a[1].to_rung, a[1].n), (1, 2, 1));
        assert_eq!(a[1].spearman, None);
        // The same search shows the same intervals every time.
        assert_eq!(a, rung_agreement(7, &trials));
        assert!(rung_agreement(7, &trials[..9]).is_empty(), "one rung has nothing to compare");
    }
}
