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
//! a hidden size from the space's list and mutate it like any other gene.

pub mod aging;
pub mod halving;
pub mod nsga2;
pub mod random;

use std::cmp::Ordering;

use rand_chacha::ChaCha8Rng;
use search_space::{Genome, SearchSpace};

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
    /// Meets the latency budget (always true without a budget).
    pub feasible: bool,
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
    fn propose(&self, ctx: &EngineContext, history: &History, rng: &mut ChaCha8Rng) -> Vec<Proposal>;

    /// The best members so far (the result of the search): for single-objective engines, the
    /// lowest-perplexity feasible member; for NSGA-II, the first non-dominated front.
    fn best<'h>(&self, history: &'h History) -> Vec<&'h Member>;
}
