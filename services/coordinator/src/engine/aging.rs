//! Aging evolution, the paper's Alg. 1 (Nemotron-Flash, after Real et al.'s regularized
//! evolution).
//!
//! Generation 0 is the seeds, then uniform samples, until the population holds `population`
//! members. Each later generation is one cycle of `per_cycle` children, all bred from the same
//! population (they are evaluated in parallel): for each child, a tournament samples
//! `sample_size` members without replacement and takes the best **feasible** one, which is
//! mutated in exactly one factor. The population after a generation is the last `population`
//! members of the history in join order, so each cycle's children replace the oldest members,
//! whatever their quality. The result is the lowest-perplexity feasible member ever seen.
//!
//! # When the tournament sample has no feasible scored member
//! The tournament falls back to a uniformly random feasible scored member of the whole
//! population (random rather than the population's best, so that one lucky member does not
//! parent every child). When the population has no feasible scored member at all, the sample's
//! scored member with the lowest latency is taken, the one nearest to meeting the budget; when
//! nothing in the sample is scored, a random member of the sample.

use rand::Rng;
use rand::seq::{IndexedRandom, index};
use rand_chacha::ChaCha8Rng;

use super::{
    Engine, EngineContext, EngineError, History, Member, Proposal, initial_population, mutated_child,
};

/// The paper's Alg. 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgingEvolution {
    /// Population size P.
    pub population: u32,
    /// Tournament sample size S (clamped to the population's size).
    pub sample_size: u32,
    /// Children per cycle, K.
    pub per_cycle: u32,
    /// Cycles after generation 0.
    pub cycles: u32,
}

impl AgingEvolution {
    /// The population after the history's last generation: its last `population` members in
    /// join order (the oldest ones have aged out).
    pub fn population<'h>(&self, history: &'h History) -> Vec<&'h Member> {
        let members: Vec<&Member> = history.members().collect();
        let keep = (self.population as usize).min(members.len());
        members[members.len() - keep..].to_vec()
    }

    /// Picks one parent from `population` (see the module doc for the fallbacks).
    pub fn tournament<'p>(&self, population: &[&'p Member], rng: &mut ChaCha8Rng) -> Option<&'p Member> {
        if population.is_empty() {
            return None;
        }
        let size = (self.sample_size as usize).clamp(1, population.len());
        let sample: Vec<&Member> =
            index::sample(rng, population.len(), size).into_iter().map(|i| population[i]).collect();
        let usable = |m: &&&Member| m.feasible && m.objectives.is_some();
        if let Some(best) = sample.iter().filter(usable).min_by(|a, b| a.quality_cmp(b)) {
            return Some(*best);
        }
        let feasible: Vec<&Member> = population.iter().filter(usable).copied().collect();
        if let Some(m) = feasible.choose(rng) {
            return Some(*m);
        }
        let nearest = sample
            .iter()
            .filter_map(|m| m.objectives.map(|o| (m, o.latency_ms)))
            .min_by(|(_, a), (_, b)| a.total_cmp(b))
            .map(|(m, _)| *m);
        nearest.or_else(|| Some(sample[rng.random_range(0..sample.len())]))
    }
}

impl Engine for AgingEvolution {
    fn propose(
        &self,
        ctx: &EngineContext,
        history: &History,
        rng: &mut ChaCha8Rng,
    ) -> Result<Vec<Proposal>, EngineError> {
        if history.generations.is_empty() {
            return initial_population(ctx, self.population as usize, rng);
        }
        let cycles_done = history.generations.len() - 1;
        if cycles_done >= self.cycles as usize {
            return Ok(Vec::new());
        }
        let population = self.population(history);
        let mut children = Vec::with_capacity(self.per_cycle as usize);
        for _ in 0..self.per_cycle {
            let Some(parent) = self.tournament(&population, rng) else {
                // An empty population (generation 0 proposed nothing): nothing to breed from.
                return Ok(Vec::new());
            };
            children.push(mutated_child(ctx, parent, rng)?);
        }
        Ok(children)
    }

    fn best<'h>(&self, history: &'h History) -> Vec<&'h Member> {
        best_feasible(history).into_iter().collect()
    }
}

/// The lowest-perplexity feasible scored member (a higher halving rung first), earliest on ties.
pub(crate) fn best_feasible(history: &History) -> Option<&Member> {
    history.members().filter(|m| m.feasible && m.objectives.is_some()).min_by(|a, b| a.quality_cmp(b))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use search_space::space::rng;

    use super::*;
    use crate::engine::test_support::{evaluate, factor_changes, roomy_space, run_search};

    fn engine() -> AgingEvolution {
        AgingEvolution { population: 12, sample_size: 4, per_cycle: 3, cycles: 8 }
    }

    #[test]
    fn generation_zero_is_the_seeds_in_order_then_samples_up_to_the_population() {
        let space = roomy_space();
        let mut r = rng(1);
        let seeds = vec![space.sample(&mut r).unwrap(), space.sample(&mut r).unwrap()];
        let ctx = EngineContext { space, seeds: seeds.clone(), evolve_width: false };
        let gen0 = engine().propose(&ctx, &History::default(), &mut rng(2)).unwrap();
        assert_eq!(gen0.len(), 12);
        assert_eq!(gen0[0].genome, seeds[0]);
        assert_eq!(gen0[1].genome, seeds[1]);
        assert_eq!(gen0[0].origin, "seed");
        assert!(gen0[2..].iter().all(|p| p.origin == "random" && p.parents.is_empty()));
        assert!(gen0.iter().all(|p| ctx.space.contains(&p.genome).is_ok() && p.hidden_size.is_none()));
    }

    #[test]
    fn population_stays_constant_and_each_cycle_replaces_the_oldest_members() {
        let ctx = EngineContext { space: roomy_space(), seeds: Vec::new(), evolve_width: false };
        let e = engine();
        let history = run_search(&e, &ctx, 7, |_| true).history;
        assert_eq!(history.generations.len(), 1 + 8, "generation 0 plus one generation per cycle");
        assert!(history.generations[1..].iter().all(|g| g.len() == 3));
        for g in 1..history.generations.len() {
            let before = History { generations: history.generations[..g].to_vec() };
            let after = History { generations: history.generations[..=g].to_vec() };
            let (p_before, p_after) = (e.population(&before), e.population(&after));
            assert_eq!(p_after.len(), 12, "|P| after generation {g}");
            let mut expected: Vec<&Member> = p_before[3..].to_vec();
            expected.extend(history.generations[g].iter());
            assert_eq!(p_after, expected, "generation {g}: the three oldest leave, the three children join");
        }
    }

    #[test]
    fn parents_are_drawn_from_the_current_population_only() {
        let ctx = EngineContext { space: roomy_space(), seeds: Vec::new(), evolve_width: false };
        let e = engine();
        let run = run_search(&e, &ctx, 11, |_| true);
        let history = &run.history;
        for g in 1..history.generations.len() {
            let before = History { generations: history.generations[..g].to_vec() };
            let ids: HashSet<i64> = e.population(&before).iter().map(|m| m.candidate_id).collect();
            for child in &history.generations[g] {
                let parent = run.parent(child).candidate_id;
                assert!(ids.contains(&parent), "generation {g}: parent {parent} had aged out");
            }
        }
    }

    #[test]
    fn infeasible_members_are_never_parents_even_with_the_lowest_perplexity() {
        let ctx = EngineContext { space: roomy_space(), seeds: Vec::new(), evolve_width: false };
        let e = AgingEvolution { population: 10, sample_size: 10, per_cycle: 20, cycles: 1 };
        let gen0 = e.propose(&ctx, &History::default(), &mut rng(3)).unwrap();
        // Member 0 has by far the lowest perplexity but misses the budget; with S = P every
        // tournament sees it, so a tournament that ignored feasibility would always pick it.
        let mut members = evaluate(&gen0, 0, |_| true);
        members[0].feasible = false;
        members[0].objectives.as_mut().unwrap().ppl = 1.0;
        members[5].feasible = false;
        let history = History { generations: vec![members] };
        let children = e.propose(&ctx, &history, &mut rng(4)).unwrap();
        assert_eq!(children.len(), 20);
        let best_feasible = best_feasible(&history).unwrap().candidate_id;
        for c in &children {
            assert_eq!(c.parents.len(), 1);
            assert_ne!(c.parents[0], 0, "the infeasible best was picked as a parent");
            assert_ne!(c.parents[0], 5, "an infeasible member was picked as a parent");
            assert_eq!(c.parents[0], best_feasible, "S = P: the tournament takes the best feasible member");
        }
    }

    #[test]
    fn a_sample_without_feasible_members_falls_back_to_a_feasible_member_of_the_population() {
        let ctx = EngineContext { space: roomy_space(), seeds: Vec::new(), evolve_width: false };
        let e = AgingEvolution { population: 10, sample_size: 1, per_cycle: 200, cycles: 1 };
        let gen0 = e.propose(&ctx, &History::default(), &mut rng(5)).unwrap();
        let mut members = evaluate(&gen0, 0, |_| false);
        members[7].feasible = true;
        members[2].objectives = None;
        let history = History { generations: vec![members] };
        let children = e.propose(&ctx, &history, &mut rng(6)).unwrap();
        assert!(children.iter().all(|c| c.parents == [7]), "only member 7 is feasible");
    }

    #[test]
    fn with_no_feasible_member_the_parent_is_the_fastest_of_the_sample() {
        let ctx = EngineContext { space: roomy_space(), seeds: Vec::new(), evolve_width: false };
        let e = AgingEvolution { population: 6, sample_size: 6, per_cycle: 10, cycles: 1 };
        let gen0 = e.propose(&ctx, &History::default(), &mut rng(7)).unwrap();
        let mut members = evaluate(&gen0, 0, |_| false);
        for (i, m) in members.iter_mut().enumerate() {
            m.objectives.as_mut().unwrap().latency_ms = 10.0 + (i as f64 - 3.0).abs();
        }
        let history = History { generations: vec![members] };
        let children = e.propose(&ctx, &history, &mut rng(8)).unwrap();
        assert!(children.iter().all(|c| c.parents == [3]), "member 3 is nearest to the budget");
    }

    #[test]
    fn each_child_differs_from_its_parent_in_exactly_one_factor() {
        for evolve_width in [false, true] {
            let ctx = EngineContext { space: roomy_space(), seeds: Vec::new(), evolve_width };
            let run = run_search(&engine(), &ctx, 13, |_| true);
            let mut width_changes = 0;
            for child in run.history.generations[1..].iter().flatten() {
                let parent = run.parent(child);
                let changes = factor_changes(parent, child);
                assert_eq!(changes.len(), 1, "child {} vs parent: {changes:?}", child.candidate_id);
                width_changes += usize::from(changes[0] == "hidden_size");
            }
            assert_eq!(width_changes > 0, evolve_width, "the width mutates only when it evolves");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_search() {
        let ctx = EngineContext { space: roomy_space(), seeds: Vec::new(), evolve_width: true };
        let a = run_search(&engine(), &ctx, 21, |_| true);
        let b = run_search(&engine(), &ctx, 21, |_| true);
        let c = run_search(&engine(), &ctx, 22, |_| true);
        assert_eq!(a.history, b.history);
        assert_eq!(a.proposals, b.proposals);
        assert_ne!(a.history, c.history);
    }

    #[test]
    fn nothing_is_proposed_after_the_last_cycle() {
        let ctx = EngineContext { space: roomy_space(), seeds: Vec::new(), evolve_width: false };
        let history = run_search(&engine(), &ctx, 1, |_| true).history;
        assert!(engine().propose(&ctx, &history, &mut rng(0)).unwrap().is_empty());
        let planned =
            api::Algorithm::AgingEvolution { population: 12, sample_size: 4, per_cycle: 3, cycles: 8 }
                .planned_candidates();
        assert_eq!(history.len() as u64, planned);
    }

    #[test]
    fn the_result_is_the_lowest_perplexity_feasible_member_ever_seen() {
        let ctx = EngineContext { space: roomy_space(), seeds: Vec::new(), evolve_width: false };
        let e = engine();
        // Odd ids miss the budget.
        let history = run_search(&e, &ctx, 5, |id| id % 2 == 0).history;
        let best = e.best(&history);
        assert_eq!(best.len(), 1);
        let lowest = history
            .members()
            .filter(|m| m.candidate_id % 2 == 0)
            .map(|m| m.objectives.unwrap().ppl)
            .fold(f64::INFINITY, f64::min);
        assert!(best[0].feasible);
        assert_eq!(best[0].objectives.unwrap().ppl, lowest);
    }
}
