//! Random search: uniform samples of the space, `batch` at a time, until `candidates` have been
//! proposed. It ignores every result; it is the baseline every other engine is judged against.

use rand_chacha::ChaCha8Rng;

use super::aging::best_feasible;
use super::{Engine, EngineContext, EngineError, History, Member, Proposal, random_proposal};

/// Uniform sampling of the space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RandomSearch {
    /// Candidates in all.
    pub candidates: u32,
    /// Candidates per generation (at least 1).
    pub batch: u32,
}

impl Engine for RandomSearch {
    fn propose(
        &self,
        ctx: &EngineContext,
        history: &History,
        rng: &mut ChaCha8Rng,
    ) -> Result<Vec<Proposal>, EngineError> {
        let left = (self.candidates as usize).saturating_sub(history.len());
        let n = left.min(self.batch.max(1) as usize);
        (0..n).map(|_| random_proposal(ctx, rng, "random")).collect()
    }

    fn best<'h>(&self, history: &'h History) -> Vec<&'h Member> {
        best_feasible(history).into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::test_support::{roomy_space, run_search};

    #[test]
    fn random_search_proposes_exactly_the_planned_candidates_in_batches() {
        let ctx = EngineContext { space: roomy_space(), seeds: Vec::new(), evolve_width: true };
        let e = RandomSearch { candidates: 23, batch: 5 };
        let run = run_search(&e, &ctx, 3, |_| true);
        let sizes: Vec<usize> = run.history.generations.iter().map(Vec::len).collect();
        assert_eq!(sizes, [5, 5, 5, 5, 3]);
        assert!(run.proposals.iter().all(|p| ctx.space.contains(&p.genome).is_ok()
            && p.parents.is_empty()
            && p.hidden_size.is_some_and(|h| ctx.space.hidden_sizes.contains(&h))));
        let distinct: std::collections::HashSet<_> = run.proposals.iter().map(|p| &p.genome).collect();
        assert!(distinct.len() > 15, "samples should rarely repeat, got {} distinct of 23", distinct.len());
    }

    #[test]
    fn random_search_picks_the_lowest_perplexity_feasible_member() {
        let ctx = EngineContext { space: roomy_space(), seeds: Vec::new(), evolve_width: false };
        let e = RandomSearch { candidates: 30, batch: 8 };
        let run = run_search(&e, &ctx, 4, |id| id % 3 != 0);
        let best = e.best(&run.history);
        let expected = run
            .history
            .members()
            .filter(|m| m.candidate_id % 3 != 0)
            .min_by(|a, b| a.objectives.unwrap().ppl.total_cmp(&b.objectives.unwrap().ppl))
            .unwrap();
        assert_eq!(best, [expected]);
    }
}
