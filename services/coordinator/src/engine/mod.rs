//! Search engines: given everything a search has evaluated so far, propose the next generation.
//!
//! # Runtime model
//! Pure and deterministic: an engine is a function of the search's [`History`] and an RNG seeded
//! from the search seed and the generation number. The driver (in `search.rs`) calls
//! [`Engine::propose`] only at a generation boundary — when every candidate of the previous
//! generation has a result — and stores each generation's members in order. After a coordinator
//! restart the driver rebuilds the same `History` from the store, so the search continues exactly
//! where it stopped; no engine state lives only in memory.
//!
//! Widths: with `WidthMode::MaxUnderBudget` engines propose genomes only (`hidden_size: None`) and
//! the driver picks the width from the latency table, as the paper does; with `Evolved` they carry
//! a hidden size from the space's list and mutate it like any other gene: the width is then a fifth
//! factor next to the paper's four (operator, mixer ratio, FFN ratio, blocks per stage).
//!
//! Errors: the spec is validated before a search starts, so an engine fails only when the space
//! admits no genome at all ([`EngineError`]). A parent that cannot be mutated (a space with a
//! single genome) is not an error: the child is a fresh sample and its origin says why.

pub mod aging;
pub mod halving;
pub mod nsga2;
pub mod random;

use std::cmp::Ordering;

use rand::Rng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;
use search_space::{Genome, MutationError, MutationKind, SearchSpace, ValidationErrors};

pub use aging::AgingEvolution;
pub use nsga2::Nsga2;
pub use random::RandomSearch;

/// A candidate as the engines see it.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    pub candidate_id: i64,
    pub genome: Genome,
    pub hidden_size: u32,
    /// `None` while unscored or when training failed or diverged (such members never win a
    /// tournament and rank last in NSGA-II).
    pub objectives: Option<Objectives>,
    /// Highest successive-halving rung with a result (0 without halving).
    pub rung: u32,
    /// Meets every constraint of the search: the latency budget and the accuracy floors (always
    /// true without either).
    pub feasible: bool,
    /// How far the member's accuracy falls below the search's floors, summed over the tasks
    /// (0 without floors, when they are met, or while unscored); see [`api::AccuracyGoals`].
    pub shortfall: f64,
    /// The error rate (1 − accuracy) of each task the search maximises, in the spec's order:
    /// extra objectives for NSGA-II (empty without them, or while unscored).
    pub task_errors: Vec<f64>,
}

/// What a member scored.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Objectives {
    /// Validation perplexity at the member's highest rung.
    pub ppl: f64,
    /// Estimated (calibrated) decode latency at the target setting.
    pub latency_ms: f64,
    /// Decode memory (KV cache + recurrent state + weights) in bytes at the target setting.
    pub memory_bytes: f64,
}

impl Member {
    /// Ordering by quality for single-objective selection: a higher rung first (it survived more
    /// halving), then lower perplexity; unscored members last. `Less` means `self` is better.
    pub fn quality_cmp(&self, other: &Member) -> Ordering {
        match (&self.objectives, &other.objectives) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(a), Some(b)) => other.rung.cmp(&self.rung).then(a.ppl.total_cmp(&b.ppl)),
        }
    }
}

/// Everything evaluated so far, one entry per generation in the order the engine proposed it
/// (generation 0 is the initial population, seeds first). A member may appear in several
/// generations when an engine proposes an architecture the search has already scored: its result
/// is reused, not retrained.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    pub generations: Vec<Vec<Member>>,
}

impl History {
    /// All members in the order they joined.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.generations.iter().flatten()
    }

    pub fn len(&self) -> usize {
        self.generations.iter().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One candidate to evaluate.
#[derive(Clone, Debug, PartialEq)]
pub struct Proposal {
    pub genome: Genome,
    /// `None`: the driver chooses the width (the largest under the latency budget).
    pub hidden_size: Option<u32>,
    /// Where it came from: nothing (seed, random), one parent (mutation) or two (crossover).
    pub parents: Vec<i64>,
    /// What changed, for people: `seed`, `random`, a mutation's description, `crossover(...)`.
    pub origin: String,
}

/// What the engines read from the spec.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineContext {
    pub space: SearchSpace,
    /// Seed designs for generation 0, in order.
    pub seeds: Vec<Genome>,
    /// Evolve the width (`WidthMode::Evolved`).
    pub evolve_width: bool,
}

/// A search algorithm.
pub trait Engine: Send + Sync + std::fmt::Debug {
    /// The next generation, proposed from `history` (whose generations are all complete). Empty
    /// when the search has proposed everything it planned.
    fn propose(
        &self,
        ctx: &EngineContext,
        history: &History,
        rng: &mut ChaCha8Rng,
    ) -> Result<Vec<Proposal>, EngineError>;

    /// The best members so far (the result of the search): for single-objective engines, the
    /// lowest-perplexity feasible member; for NSGA-II, the first non-dominated front.
    fn best<'h>(&self, history: &'h History) -> Vec<&'h Member>;
}

/// Why an engine could not propose.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The space admits no genome (or no width); the spec's validation should have caught it.
    #[error("cannot sample the search space: {0}")]
    Space(ValidationErrors),
}

/// The engine a spec's algorithm names; `None` for a sweep, whose grid the driver records itself.
pub fn engine_for(algorithm: &api::Algorithm) -> Option<Box<dyn Engine>> {
    let engine: Box<dyn Engine> = match *algorithm {
        api::Algorithm::AgingEvolution { population, sample_size, per_cycle, cycles } => {
            Box::new(AgingEvolution { population, sample_size, per_cycle, cycles })
        }
        api::Algorithm::Nsga2 { population, generations, crossover_probability, memory_objective } => {
            Box::new(Nsga2 { population, generations, crossover_probability, memory_objective })
        }
        api::Algorithm::Random { candidates, batch } => Box::new(RandomSearch { candidates, batch }),
        // A sweep evolves nothing: the driver records its grid itself.
        api::Algorithm::Sweep { .. } => return None,
    };
    Some(engine)
}

/// A uniform sample of the space (and, when the width evolves, of its hidden sizes).
fn random_proposal(ctx: &EngineContext, rng: &mut ChaCha8Rng, origin: &str) -> Result<Proposal, EngineError> {
    let genome = ctx.space.sample(rng).map_err(EngineError::Space)?;
    let hidden_size = random_width(ctx, rng)?;
    Ok(Proposal { genome, hidden_size, parents: Vec::new(), origin: origin.to_owned() })
}

/// `None` unless the width evolves; then one of the space's hidden sizes, uniformly.
fn random_width(ctx: &EngineContext, rng: &mut ChaCha8Rng) -> Result<Option<u32>, EngineError> {
    if !ctx.evolve_width {
        return Ok(None);
    }
    ctx.space
        .hidden_sizes
        .choose(rng)
        .copied()
        .map(Some)
        .ok_or_else(|| EngineError::Space(ValidationErrors::single("hidden_sizes", "must not be empty")))
}

/// Generation 0 of the evolutionary engines: the seeds in order, then uniform samples until the
/// population is full. Seeds beyond the population size are all kept (the spec's validation
/// refuses them for aging evolution; NSGA-II's first selection trims the surplus).
fn initial_population(
    ctx: &EngineContext,
    population: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Proposal>, EngineError> {
    let mut out = Vec::with_capacity(population.max(ctx.seeds.len()));
    for seed in &ctx.seeds {
        let hidden_size = random_width(ctx, rng)?;
        out.push(Proposal {
            genome: seed.clone(),
            hidden_size,
            parents: Vec::new(),
            origin: "seed".to_owned(),
        });
    }
    while out.len() < population {
        out.push(random_proposal(ctx, rng, "random")?);
    }
    Ok(out)
}

/// One of the five factors a child may differ from its parent in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Factor {
    Genome(MutationKind),
    Width,
}

/// The paper's mutation of one factor, with the width as a fifth factor when it evolves: a factor
/// is picked uniformly among those that can change, then one change of it uniformly.
///
/// Returns the child genome, its width (`Some` only when the width evolves) and what changed.
fn mutate_one(
    ctx: &EngineContext,
    genome: &Genome,
    hidden_size: u32,
    rng: &mut ChaCha8Rng,
) -> Result<(Genome, Option<u32>, String), MutationError> {
    if !ctx.evolve_width {
        let (child, m) = ctx.space.mutate(genome, rng)?;
        return Ok((child, None, format!("stages[{}] {}", m.stage, m.change)));
    }
    ctx.space.contains(genome).map_err(MutationError::ParentOutsideSpace)?;
    let mut factors: Vec<Factor> = MutationKind::ALL.iter().map(|k| Factor::Genome(*k)).collect();
    factors.push(Factor::Width);
    while !factors.is_empty() {
        let factor = factors.swap_remove(rng.random_range(0..factors.len()));
        match factor {
            Factor::Genome(kind) => {
                if let Some((child, m)) = ctx.space.neighbours(genome, kind).choose(rng) {
                    let change = format!("stages[{}] {}", m.stage, m.change);
                    return Ok((child.clone(), Some(hidden_size), change));
                }
            }
            Factor::Width => {
                let others: Vec<u32> =
                    ctx.space.hidden_sizes.iter().copied().filter(|h| *h != hidden_size).collect();
                if let Some(h) = others.choose(rng) {
                    return Ok((genome.clone(), Some(*h), format!("hidden_size: {hidden_size} -> {h}")));
                }
            }
        }
    }
    Err(MutationError::Exhausted)
}

/// A child of `parent` by one mutation; a fresh sample when no mutation is possible.
fn mutated_child(
    ctx: &EngineContext,
    parent: &Member,
    rng: &mut ChaCha8Rng,
) -> Result<Proposal, EngineError> {
    match mutate_one(ctx, &parent.genome, parent.hidden_size, rng) {
        Ok((genome, hidden_size, change)) => {
            Ok(Proposal { genome, hidden_size, parents: vec![parent.candidate_id], origin: change })
        }
        Err(e) => random_proposal(
            ctx,
            rng,
            &format!("random (candidate {} cannot mutate: {e})", parent.candidate_id),
        ),
    }
}

#[cfg(test)]
mod test_support;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::test_support::{roomy_space, run_search};

    #[test]
    fn engine_for_runs_the_algorithm_the_spec_names_for_its_planned_candidates() {
        let ctx = EngineContext { space: roomy_space(), seeds: Vec::new(), evolve_width: false };
        let algorithms = [
            api::Algorithm::AgingEvolution { population: 6, sample_size: 3, per_cycle: 2, cycles: 3 },
            api::Algorithm::Nsga2 {
                population: 4,
                generations: 2,
                crossover_probability: 0.5,
                memory_objective: false,
            },
            api::Algorithm::Random { candidates: 7, batch: 3 },
        ];
        for algorithm in &algorithms {
            let run =
                run_search(engine_for(algorithm).expect("an evolving algorithm").as_ref(), &ctx, 1, |_| true);
            assert_eq!(run.history.len() as u64, algorithm.planned_candidates(), "{}", algorithm.name());
        }
    }
}
