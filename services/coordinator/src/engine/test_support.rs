//! A stand-in for the driver in engine tests: it scores proposals with a cheap deterministic
//! formula and runs an engine generation by generation, as the coordinator does.

use search_space::space::rng;
use search_space::{MixerKind, OpKind, SearchSpace};

use super::{Engine, EngineContext, History, Member, Objectives, Proposal};

/// The width the driver would pick when the width does not evolve; any fixed value will do.
pub const DRIVER_WIDTH: u32 = 1024;

/// The paper's space with a cap high enough that no genome is ever trimmed, so a mutation
/// changes exactly one factor and nothing else (trimming may shorten later stages).
pub fn roomy_space() -> SearchSpace {
    let space = SearchSpace { max_operators: 8 * 12 * 3, ..SearchSpace::default() };
    space.validate().expect("a valid space");
    space
}

/// Made-up but deterministic scores: attention lowers perplexity and raises latency and memory,
/// more operators lower perplexity and raise latency, a wider model is better and slower.
pub fn objectives(p: &Proposal) -> Objectives {
    let ops = p.genome.operators();
    let count = |k: OpKind| ops.iter().filter(|o| **o == k).count() as f64;
    let attention = count(OpKind::Mixer(MixerKind::Attention));
    let mamba = count(OpKind::Mixer(MixerKind::Mamba2));
    let ffn = count(OpKind::Ffn);
    let n = ops.len() as f64;
    let width = f64::from(p.hidden_size.unwrap_or(DRIVER_WIDTH)) / 1024.0;
    Objectives {
        ppl: 40.0 / (1.0 + n + 0.5 * attention + 0.2 * mamba + 0.3 * ffn).sqrt() / width.sqrt(),
        latency_ms: (n + 1.5 * attention) * width,
        memory_bytes: (attention * 4096.0 + n * 64.0) * width,
    }
}

/// Members for `proposals`, with ids from `first_id` on; `feasible(id)` says who meets the budget.
pub fn evaluate(proposals: &[Proposal], first_id: i64, feasible: impl Fn(i64) -> bool) -> Vec<Member> {
    proposals
        .iter()
        .zip(first_id..)
        .map(|(p, id)| Member {
            candidate_id: id,
            genome: p.genome.clone(),
            hidden_size: p.hidden_size.unwrap_or(DRIVER_WIDTH),
            objectives: Some(objectives(p)),
            rung: 0,
            feasible: feasible(id),
            shortfall: 0.0,
            task_errors: Vec::new(),
        })
        .collect()
}

/// A finished search: the history, and every proposal indexed by candidate id.
#[derive(Debug)]
pub struct Run {
    pub history: History,
    pub proposals: Vec<Proposal>,
}

impl Run {
    /// The single parent of a mutated child.
    pub fn parent(&self, child: &Member) -> &Member {
        let parents = &self.proposals[child.candidate_id as usize].parents;
        assert_eq!(parents.len(), 1, "candidate {} should have one parent: {parents:?}", child.candidate_id);
        self.history.members().find(|m| m.candidate_id == parents[0]).expect("the parent is in the history")
    }
}

/// Runs `engine` to completion, seeding each generation's RNG from the search seed and the
/// generation number as the driver does.
pub fn run_search(
    engine: &dyn Engine,
    ctx: &EngineContext,
    seed: u64,
    feasible: impl Fn(i64) -> bool,
) -> Run {
    let mut run = Run { history: History::default(), proposals: Vec::new() };
    for generation in 0u64.. {
        assert!(generation < 10_000, "the engine never stops proposing");
        let mut r = rng(seed.wrapping_mul(1_000_003).wrapping_add(generation));
        let proposals = engine.propose(ctx, &run.history, &mut r).expect("the engine proposes");
        if proposals.is_empty() {
            break;
        }
        let members = evaluate(&proposals, run.proposals.len() as i64, &feasible);
        run.history.generations.push(members);
        run.proposals.extend(proposals);
    }
    run
}

/// The factors in which `child` differs from `parent`: per stage its mixers (only when the ratio
/// is unchanged, since a ratio change may add or drop a kind), ratio, FFNs and block count, then
/// the width. A one-factor mutation gives exactly one entry.
pub fn factor_changes(parent: &Member, child: &Member) -> Vec<String> {
    let mut out = Vec::new();
    assert_eq!(parent.genome.stages.len(), child.genome.stages.len());
    for (i, (p, c)) in parent.genome.stages.iter().zip(&child.genome.stages).enumerate() {
        if p.block.ratio != c.block.ratio {
            out.push(format!("stages[{i}].ratio"));
        } else {
            for (j, (a, b)) in p.block.mixers.iter().zip(&c.block.mixers).enumerate() {
                if a != b {
                    out.push(format!("stages[{i}].mixers[{j}]"));
                }
            }
        }
        if p.block.ffns_per_mixer != c.block.ffns_per_mixer {
            out.push(format!("stages[{i}].ffns_per_mixer"));
        }
        if p.blocks != c.blocks {
            out.push(format!("stages[{i}].blocks"));
        }
    }
    if parent.hidden_size != child.hidden_size {
        out.push("hidden_size".to_owned());
    }
    out
}
