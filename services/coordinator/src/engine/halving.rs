//! Successive halving over token budgets, as pure functions the driver applies per generation.
//!
//! Every candidate of a generation is trained first at the smallest budget (rung 0). When all of
//! a rung's trials have a result, the best `⌈n / eta⌉` by perplexity go on to the next rung with
//! `eta` times the tokens, where `n` is the number of candidates that **entered** the rung,
//! failed and diverged ones included: a failure takes its slot's share of the budget, it does not
//! shrink the rung, so the number promoted depends only on how many entered. Failed candidates
//! are never promoted, so fewer than `⌈n / eta⌉` go on when fewer than that succeeded.

use api::Halving;

/// One candidate's result at a rung: its perplexity, or `None` when training failed or diverged.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RungResult {
    pub candidate_id: i64,
    pub ppl: Option<f64>,
}

/// How many of the `entered` candidates of a rung go on to the next: `⌈entered / eta⌉`.
pub fn promoted_count(entered: usize, eta: u32) -> usize {
    entered.div_ceil(eta.max(1) as usize)
}

/// The candidates promoted from one rung of one generation, best first: the `⌈n / eta⌉` lowest
/// perplexities among the scored ones (`n = results.len()`, see the module doc). Ties go to the
/// lower candidate id; a perplexity that is not a finite number counts as a failure.
pub fn promote(results: &[RungResult], eta: u32) -> Vec<i64> {
    let mut scored: Vec<(f64, i64)> =
        results.iter().filter_map(|r| r.ppl.filter(|p| p.is_finite()).map(|p| (p, r.candidate_id))).collect();
    scored.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    scored.truncate(promoted_count(results.len(), eta));
    scored.into_iter().map(|(_, id)| id).collect()
}

/// The token budget of each rung, the first (smallest) first; the last is `top_tokens`.
pub fn rung_budgets(halving: &Halving, top_tokens: u64) -> Vec<u64> {
    (0..halving.rungs.max(1)).map(|rung| halving.budget(top_tokens, rung)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results(ppls: &[Option<f64>]) -> Vec<RungResult> {
        ppls.iter().zip(100..).map(|(ppl, id)| RungResult { candidate_id: id, ppl: *ppl }).collect()
    }

    #[test]
    fn halving_promotes_exactly_the_top_fraction_by_perplexity() {
        // Ten candidates, eta 3: ⌈10 / 3⌉ = 4 go on, the four lowest perplexities, best first.
        let ppl = [9.0, 3.0, 7.0, 1.0, 8.0, 2.0, 6.0, 5.0, 4.0, 10.0];
        let rung = results(&ppl.map(Some));
        assert_eq!(promote(&rung, 3), [103, 105, 101, 108]);
        // eta 2: five; eta 10: one; eta 1 keeps everyone.
        assert_eq!(promote(&rung, 2), [103, 105, 101, 108, 107]);
        assert_eq!(promote(&rung, 10), [103]);
        assert_eq!(promote(&rung, 1).len(), 10);
    }

    #[test]
    fn failed_candidates_count_towards_the_rung_but_are_never_promoted() {
        // Six entered, eta 2: three slots; only two succeeded, so only two go on.
        let rung = results(&[None, Some(4.0), None, Some(f64::NAN), Some(2.0), None]);
        assert_eq!(promote(&rung, 2), [104, 101]);
        // Six entered, eta 3: two slots, taken by the two best of the four that succeeded.
        let rung = results(&[Some(5.0), None, Some(3.0), Some(9.0), None, Some(4.0)]);
        assert_eq!(promote(&rung, 3), [102, 105]);
        assert!(promote(&results(&[None, None]), 2).is_empty());
        assert!(promote(&[], 3).is_empty());
    }

    #[test]
    fn ties_in_perplexity_go_to_the_lower_candidate_id() {
        let rung = vec![
            RungResult { candidate_id: 9, ppl: Some(2.0) },
            RungResult { candidate_id: 4, ppl: Some(2.0) },
            RungResult { candidate_id: 7, ppl: Some(2.0) },
        ];
        assert_eq!(promote(&rung, 2), [4, 7]);
    }

    #[test]
    fn rung_budgets_grow_by_eta_up_to_the_full_budget() {
        let h = Halving { rungs: 3, eta: 3 };
        assert_eq!(rung_budgets(&h, 90_000), [10_000, 30_000, 90_000]);
        assert_eq!(rung_budgets(&Halving { rungs: 1, eta: 4 }, 5_000), [5_000]);
    }
}
