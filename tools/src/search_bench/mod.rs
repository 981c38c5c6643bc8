//! The search-efficiency harness: Frontier's engines (and outside samplers, through their traces)
//! run against a tabular benchmark ([`coordinator::tabular::Table`]) instead of training, many
//! seeds each, and the figures that compare them.
//!
//! A simulated search is the coordinator's driver without a store: each generation the engine
//! proposes from the [`History`], each proposal gets the widest hidden size under the budget by
//! the table's latency, a model the search has not seen costs one evaluation and is answered with
//! the run of the table's seed that the search's training seed picks (so a search sees one seed's
//! noise, as when it trains), and a model seen before joins the generation with its old result.
//!
//! A search is judged by the model it would report: the lowest *observed* perplexity among its
//! feasible evaluations, scored at the table's *mean* perplexity over seeds (its true quality).

pub mod plot;
pub mod stats;

use std::collections::HashMap;

use coordinator::engine::{self, EngineContext, History, Member, Objectives};
use coordinator::search::{generation_rng, training_seed};
use coordinator::tabular::{Table, TableError};

/// One evaluation of a search, in the order it was made.
#[derive(Clone, Debug, PartialEq)]
pub struct Eval {
    pub arch_hash: String,
    /// The perplexity the search saw (one seed's run).
    pub observed_ppl: f64,
    /// The table's mean perplexity over its seeds.
    pub true_ppl: f64,
    pub latency_ms: f64,
    pub feasible: bool,
}

/// The evaluations of one search with one seed.
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    pub algorithm: String,
    pub seed: u64,
    pub evals: Vec<Eval>,
}

/// Why a search could not be simulated.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("{0}")]
    Engine(String),
}

/// The evaluation of `arch_hash` by a search seeded `seed`.
pub fn evaluate(
    table: &Table,
    arch_hash: &str,
    seed: u64,
    budget_ms: Option<f64>,
) -> Result<Eval, TableError> {
    let model = table.by_hash(arch_hash).ok_or_else(|| TableError::Missing(arch_hash.to_owned()))?;
    let run = table.answer(arch_hash, training_seed(seed, arch_hash))?;
    Ok(Eval {
        arch_hash: arch_hash.to_owned(),
        observed_ppl: run.ppl,
        true_ppl: model.mean_ppl(),
        latency_ms: model.latency_ms,
        feasible: budget_ms.is_none_or(|b| model.latency_ms <= b),
    })
}

/// Runs `algorithm` over `table` with `seed` until `max_evals` distinct models have been
/// evaluated or the engine stops proposing.
pub fn simulate(
    table: &Table,
    name: &str,
    algorithm: &api::Algorithm,
    budget_ms: Option<f64>,
    seed: u64,
    max_evals: usize,
) -> Result<Trace, HarnessError> {
    let engine = engine::engine_for(algorithm)
        .ok_or_else(|| HarnessError::Engine(format!("`{}` has no engine", algorithm.name())))?;
    let ctx =
        EngineContext { space: table.manifest.spec.space.clone(), seeds: Vec::new(), evolve_width: false };
    let mut history = History::default();
    let mut seen: HashMap<String, (i64, Eval)> = HashMap::new();
    let mut evals = Vec::new();
    // An engine that keeps proposing only models it has seen is stopped after this many
    // generations without a new evaluation.
    let mut idle = 0;
    for generation in 0.. {
        if evals.len() >= max_evals || idle > 200 {
            break;
        }
        let mut rng = generation_rng(seed, generation);
        let proposals =
            engine.propose(&ctx, &history, &mut rng).map_err(|e| HarnessError::Engine(e.to_string()))?;
        if proposals.is_empty() {
            break;
        }
        let before = evals.len();
        let mut members = Vec::with_capacity(proposals.len());
        for p in proposals {
            let (model, fits) = table.widest_under(&p.genome, budget_ms)?;
            let next_id = seen.len() as i64;
            let (id, eval) = match seen.get(&model.arch_hash) {
                Some((id, eval)) => (*id, eval.clone()),
                None => {
                    let eval = evaluate(table, &model.arch_hash, seed, budget_ms)?;
                    seen.insert(model.arch_hash.clone(), (next_id, eval.clone()));
                    if evals.len() < max_evals {
                        evals.push(eval.clone());
                    }
                    (next_id, eval)
                }
            };
            members.push(Member {
                candidate_id: id,
                genome: p.genome,
                hidden_size: model.hidden_size,
                objectives: Some(Objectives {
                    ppl: eval.observed_ppl,
                    latency_ms: eval.latency_ms,
                    memory_bytes: model.params as f64 * 4.0,
                }),
                rung: 0,
                feasible: fits,
                shortfall: 0.0,
                task_errors: Vec::new(),
            });
        }
        idle = if evals.len() == before { idle + 1 } else { 0 };
        history.generations.push(members);
    }
    Ok(Trace { algorithm: name.to_owned(), seed, evals })
}

/// A trace from a sequence of evaluated models (an outside sampler's, read from its output).
pub fn trace_of(
    table: &Table,
    name: &str,
    seed: u64,
    hashes: &[String],
    budget_ms: Option<f64>,
) -> Result<Trace, TableError> {
    let evals = hashes.iter().map(|h| evaluate(table, h, seed, budget_ms)).collect::<Result<_, _>>()?;
    Ok(Trace { algorithm: name.to_owned(), seed, evals })
}

/// After each evaluation, the true perplexity of the model the search would report (the lowest
/// observed among its feasible evaluations so far); infinite until it has a feasible one.
pub fn best_so_far(trace: &Trace) -> Vec<f64> {
    let mut best: Option<&Eval> = None;
    trace
        .evals
        .iter()
        .map(|e| {
            if e.feasible && best.is_none_or(|b| e.observed_ppl < b.observed_ppl) {
                best = Some(e);
            }
            best.map_or(f64::INFINITY, |b| b.true_ppl)
        })
        .collect()
}

/// Evaluations until the reported model is within `tolerance` (e.g. 0.01) of `target`; `None`
/// when the trace never gets there.
pub fn evals_to_reach(trace: &Trace, target: f64, tolerance: f64) -> Option<usize> {
    best_so_far(trace).iter().position(|&p| p <= target * (1.0 + tolerance)).map(|i| i + 1)
}

/// Hypervolume of the (true perplexity, latency) front of the first `n` evaluations, as a share
/// of the whole table's, both against the reference point of the table's worst perplexity and
/// latency.
pub fn hypervolume_share(table: &Table, trace: &Trace, n: usize) -> f64 {
    let reference = (
        table.models.iter().map(|m| m.mean_ppl()).fold(0.0, f64::max),
        table.models.iter().map(|m| m.latency_ms).fold(0.0, f64::max),
    );
    let all: Vec<(f64, f64)> = table.models.iter().map(|m| (m.mean_ppl(), m.latency_ms)).collect();
    let found: Vec<(f64, f64)> = trace.evals.iter().take(n).map(|e| (e.true_ppl, e.latency_ms)).collect();
    let whole = stats::hypervolume_2d(&all, reference);
    if whole <= 0.0 { 0.0 } else { stats::hypervolume_2d(&found, reference) / whole }
}

/// The algorithms the harness compares, by name: the paper's aging evolution (population 16,
/// tournaments of 4, 4 children a cycle), the same with one child a cycle, NSGA-II (population
/// 16) and random search (batches of 8). Each runs until the evaluation budget is spent.
pub fn algorithms() -> Vec<(&'static str, api::Algorithm)> {
    vec![
        (
            "aging evolution",
            api::Algorithm::AgingEvolution { population: 16, sample_size: 4, per_cycle: 4, cycles: 100_000 },
        ),
        (
            "aging evolution, 1 child/cycle",
            api::Algorithm::AgingEvolution { population: 16, sample_size: 4, per_cycle: 1, cycles: 100_000 },
        ),
        (
            "NSGA-II",
            api::Algorithm::Nsga2 {
                population: 16,
                generations: 100_000,
                crossover_probability: 0.9,
                memory_objective: false,
            },
        ),
        ("random", api::Algorithm::Random { candidates: 1_000_000, batch: 8 }),
    ]
}

/// What the harness reports of one algorithm over its runs.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    pub algorithm: String,
    pub runs: usize,
    /// Runs whose reported model came within 1 % of the table's best feasible perplexity.
    pub reached: usize,
    /// Evaluations to get there, per run (`None`: never within the budget).
    pub evals_to_target: Vec<Option<usize>>,
    /// Best-so-far true perplexity after each of `checkpoints` evaluations, per run.
    pub best_at: Vec<Vec<f64>>,
    /// Hypervolume share after each of `checkpoints` evaluations, per run.
    pub hypervolume_at: Vec<Vec<f64>>,
}

/// Evaluations at which best-so-far and hypervolume are reported.
pub const CHECKPOINTS: [usize; 3] = [25, 50, 100];

/// The summary of `traces` (one algorithm's runs) against `table`.
pub fn summarise(table: &Table, name: &str, traces: &[Trace], budget_ms: Option<f64>) -> Summary {
    let target = table.best_feasible(budget_ms).map_or(f64::NAN, |m| m.mean_ppl());
    let mut summary = Summary {
        algorithm: name.to_owned(),
        runs: traces.len(),
        reached: 0,
        evals_to_target: Vec::new(),
        best_at: Vec::new(),
        hypervolume_at: Vec::new(),
    };
    for t in traces {
        let reach = evals_to_reach(t, target, 0.01);
        summary.reached += usize::from(reach.is_some());
        summary.evals_to_target.push(reach);
        let curve = best_so_far(t);
        summary.best_at.push(
            CHECKPOINTS
                .iter()
                .map(|&n| curve.get(n - 1).or(curve.last()).copied().unwrap_or(f64::INFINITY))
                .collect(),
        );
        summary.hypervolume_at.push(CHECKPOINTS.iter().map(|&n| hypervolume_share(table, t, n)).collect());
    }
    summary
}

/// Evaluations to the target as numbers for the statistics (a run that never got there counts
/// as infinitely many).
pub fn evals_as_f64(summary: &Summary) -> Vec<f64> {
    summary.evals_to_target.iter().map(|e| e.map_or(f64::INFINITY, |n| n as f64)).collect()
}
