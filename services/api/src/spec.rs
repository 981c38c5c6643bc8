//! The search spec: everything a user says about one search, as JSON over HTTP or a TOML/JSON
//! file for the command line.
//!
//! Parsing reports the path of a field with the wrong type or an unknown name; [`SearchSpec::validate`]
//! then reports every remaining problem with its path (`algorithm.sample_size`, `proxy.tokens`, ...),
//! so the coordinator can answer 422 with the whole list at once.

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use search_space::{Architecture, Genome, ModelSettings, OpKind, SearchSpace, Topology, ValidationErrors};
use serde::{Deserialize, Serialize};

use crate::accuracy::AccuracyGoals;
pub use crate::proxy::{CheckpointEvery, ProxyBudget, TokenizerChoice};
pub use crate::target::{RelativeBudget, Target};

/// Text: any characters but NUL (which a Postgres text column cannot hold).
pub const TEXT: &str = r"^[^\u0000]*$";
/// Text with at least one character that is not whitespace (as `str::trim` sees it).
pub const NOT_BLANK: &str =
    r"^[^\u0000]*[^\u0000\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000]*$";

/// What is wrong with a text field, if anything: longer than `max` characters, holding a NUL,
/// or (when `not_blank`) empty or all whitespace. The schema says the same with [`TEXT`] or
/// [`NOT_BLANK`] and a `maxLength`.
pub fn text_problem(s: &str, max: usize, not_blank: bool) -> Option<String> {
    if not_blank && s.trim().is_empty() {
        Some("must not be empty or blank".to_owned())
    } else if s.chars().nth(max).is_some() {
        Some(format!("must be at most {max} characters"))
    } else if s.contains('\0') {
        Some("must not contain NUL characters".to_owned())
    } else {
        None
    }
}

// Caps on a spec's sizes. They catch typos (a population of 10^9, a budget of 10^18 tokens) long
// before they cost money, and they bound what the coordinator does for one request: creating a
// search records its first generation (a genome expanded, costed and stored per candidate, about a
// millisecond each on Postgres) before it answers, so a generation holds at most `MAX_POPULATION`.
/// Longest search name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Largest population, tournament sample, children per cycle, or random batch.
pub const MAX_POPULATION: u32 = 1_000;
/// Most candidates one search may plan (and so most cycles, generations or random candidates).
pub const MAX_CANDIDATES: u64 = 1_000_000;
/// Largest proxy training budget per candidate, in tokens.
pub const MAX_PROXY_TOKENS: u64 = 1_000_000_000_000;
/// Longest training sequence.
pub const MAX_SEQ_LEN: u32 = 65_536;
/// Largest batch, in sequences.
pub const MAX_BATCH_SIZE: u32 = 4_096;
/// Largest batch, in tokens (`seq_len × batch_size`).
pub const MAX_BATCH_TOKENS: u64 = 1 << 24;
/// Most validation tokens scored per trial.
pub const MAX_EVAL_TOKENS: u64 = 100_000_000;
/// Largest BPE vocabulary (`bpe:N`).
pub const MAX_BPE_VOCAB: u32 = 262_144;
/// Longest corpus reference, in characters.
pub const MAX_CORPUS_CHARS: usize = 4_096;
/// Longest device fingerprint or deployment setting, in characters.
pub const MAX_KEY_CHARS: usize = 200;
/// Most attempts per trial.
pub const MAX_ATTEMPTS: u32 = 100;
/// Values on one axis of a sweep (depths, widths).
pub const MAX_SWEEP_AXIS: usize = 64;
/// Token budgets of a sweep.
pub const MAX_SWEEP_TOKENS: usize = 8;
/// Operators in a sweep's block pattern.
pub const MAX_SWEEP_PATTERN: usize = 16;
/// Blocks in a sweep's deepest model.
pub const MAX_SWEEP_DEPTH: u32 = 256;

/// One search.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = example_spec())]
pub struct SearchSpec {
    /// A name for people; not unique.
    #[schemars(length(min = 1, max = MAX_NAME_CHARS), pattern(NOT_BLANK))]
    pub name: String,
    /// Genome bounds and the hidden sizes widths are chosen from.
    #[serde(default)]
    pub space: SearchSpace,
    /// How each operator is dimensioned at a hidden size (heads, state sizes, FFN ratio, vocabulary,
    /// meta tokens). `hidden_size` here is a default only: the width mode decides each candidate's.
    /// Either a full table or a name: `tiny`, `nemotron-flash-1b`, `nemotron-flash-3b`.
    #[serde(default = "default_model", deserialize_with = "model_settings")]
    #[schemars(schema_with = "model_settings_schema")]
    pub model: ModelSettings,
    /// Where the model will run and how fast it must be.
    #[serde(default)]
    pub target: Target,
    /// How a candidate's hidden size is chosen.
    #[serde(default)]
    pub width: WidthMode,
    /// The short proxy training that scores a candidate.
    #[serde(default)]
    pub proxy: ProxyBudget,
    /// The search algorithm and its sizes.
    pub algorithm: Algorithm,
    /// Floors on, or objectives of, per-task accuracy; for synthetic proxy corpora only.
    #[serde(default, skip_serializing_if = "AccuracyGoals::is_empty")]
    pub accuracy: AccuracyGoals,
    /// Successive halving over token budgets; off when absent.
    #[serde(default)]
    pub halving: Option<Halving>,
    /// Designs put in the first population: preset names (genome presets only) or genomes.
    #[serde(default)]
    #[schemars(length(max = MAX_POPULATION))]
    pub seeds: Vec<SeedDesign>,
    /// Attempts a trial gets (expired leases, worker errors) before its candidate is failed.
    #[serde(default = "default_max_attempts")]
    #[schemars(range(min = 1, max = MAX_ATTEMPTS))]
    pub max_attempts: u32,
    /// Seeds every random choice of the search; the same spec and seed propose the same candidates.
    #[serde(default)]
    pub seed: u64,
}

impl SearchSpec {
    /// The tabular benchmark this search is answered from (`proxy.corpus = "table:NAME"`).
    pub fn table_name(&self) -> Option<&str> {
        let name = self.proxy.corpus.strip_prefix(crate::proxy::TABLE_PREFIX)?;
        matches!(self.proxy.corpus.parse(), Ok(crate::proxy::CorpusRef::Table(_))).then_some(name)
    }
}

/// A small spec that validates, shown in the API document (and the API tests' starting point).
pub fn example_spec() -> serde_json::Value {
    serde_json::json!({
        "name": "example",
        "model": "tiny",
        "space": {
            "mixers": ["attention", "mamba2", "deltanet"],
            "ratios": ["0:1", "1:1"],
            "ffns_per_mixer": [0, 1],
            "stages": 3,
            "min_blocks_per_stage": 1,
            "max_blocks_per_stage": 2,
            "max_operators": 6,
            "hidden_sizes": [64, 128]
        },
        "target": { "setting": "batch=1,prompt=16,gen=32" },
        "proxy": { "tokens": 4096, "seq_len": 32, "batch_size": 4, "corpus": "synthetic:selective_copying" },
        "algorithm": { "kind": "aging_evolution", "population": 4, "sample_size": 2, "per_cycle": 2, "cycles": 1 },
        "seed": 3
    })
}

/// Names accepted for `model`.
pub const NAMED_SETTINGS: [&str; 3] = ["tiny", "nemotron-flash-1b", "nemotron-flash-3b"];

fn model_settings_schema(generator: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Model settings: a name, or a full table.",
        "oneOf": [
            { "type": "string", "enum": NAMED_SETTINGS },
            generator.subschema_for::<ModelSettings>()
        ]
    })
}

fn default_model() -> ModelSettings {
    search_space::presets::flash_1b_settings()
}

/// Settings by name, as in `model = "tiny"`.
pub fn named_settings(name: &str) -> Option<ModelSettings> {
    match name {
        "tiny" => Some(search_space::presets::tiny_settings()),
        "nemotron-flash-1b" => Some(search_space::presets::flash_1b_settings()),
        "nemotron-flash-3b" => Some(search_space::presets::flash_3b_settings()),
        _ => None,
    }
}

fn model_settings<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ModelSettings, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    match value {
        serde_json::Value::String(name) => named_settings(&name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown model settings `{name}`; expected tiny, nemotron-flash-1b, nemotron-flash-3b or a table"
            ))
        }),
        other => serde_json::from_value::<ModelSettings>(other).map_err(serde::de::Error::custom),
    }
}

fn default_max_attempts() -> u32 {
    3
}

/// How widths are chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WidthMode {
    /// The paper's rule: the largest of `space.hidden_sizes` whose estimated latency meets the budget
    /// (the largest overall without a budget), so perplexity alone ranks candidates.
    #[default]
    MaxUnderBudget,
    /// The hidden size is a gene, mutated like the others (useful with NSGA-II, where latency is an
    /// objective rather than a constraint).
    Evolved,
}

/// The largest learning rate a spec may ask for: past it the f32 updates themselves overflow.
pub const MAX_LR: f64 = 1e6;

/// The search algorithm.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Algorithm {
    /// The paper's Alg. 1. Plans `population + per_cycle × cycles` candidates, at most 10^6.
    AgingEvolution {
        /// Population size P.
        #[schemars(range(min = 1, max = MAX_POPULATION))]
        population: u32,
        /// Tournament sample size S, at most the population.
        #[schemars(range(min = 1, max = MAX_POPULATION))]
        sample_size: u32,
        /// Children evaluated in parallel per cycle, K (the paper: 10).
        #[schemars(range(min = 1, max = MAX_POPULATION))]
        per_cycle: u32,
        /// Cycles after the initial population.
        #[schemars(range(max = MAX_CANDIDATES))]
        cycles: u32,
    },
    /// NSGA-II over perplexity × latency (× decode memory). Plans
    /// `population × (1 + generations)` candidates, at most 10^6.
    Nsga2 {
        #[schemars(range(min = 2, max = MAX_POPULATION))]
        population: u32,
        #[schemars(range(max = MAX_CANDIDATES))]
        generations: u32,
        /// Probability that a child is a crossover of two parents (then also mutated).
        #[serde(default = "default_crossover")]
        #[schemars(range(min = 0, max = 1))]
        crossover_probability: f64,
        /// Add decode memory (KV cache + recurrent state) as a third objective.
        #[serde(default)]
        memory_objective: bool,
    },
    /// Uniform samples of the space: the baseline every search is judged against.
    Random {
        #[schemars(range(min = 1, max = MAX_CANDIDATES))]
        candidates: u32,
        /// Candidates proposed (and in flight) at once.
        #[serde(default = "default_random_batch")]
        #[schemars(range(min = 1, max = MAX_POPULATION))]
        batch: u32,
    },
    /// A depth-width scaling sweep: the block `pattern` repeated `depth` times at hidden size
    /// `width`, for every depth × width of the grid (and every token budget of `tokens`), trained
    /// through the same trial queue. Its results are fitted to
    /// `L(D, W[, N]) = L0 + a·D^-α + b·W^-β [+ c·N^-γ]`. The space and width mode are not used.
    Sweep {
        /// The block, as operator codes (`A`, `M2`, `D`, `GD`, `F`); attention + FFN by default.
        #[serde(default = "default_sweep_pattern")]
        #[schemars(length(min = 1, max = MAX_SWEEP_PATTERN))]
        pattern: Vec<OpKind>,
        /// Blocks per model, each in 1..=256.
        #[schemars(length(min = 1, max = MAX_SWEEP_AXIS))]
        depths: Vec<u32>,
        /// Hidden sizes; each must dimension the model settings.
        #[schemars(length(min = 1, max = MAX_SWEEP_AXIS))]
        widths: Vec<u32>,
        /// Token budgets, each model trained once per budget (rung `i` trains `tokens[i]`, in
        /// increasing order); `proxy.tokens` alone when empty.
        #[serde(default)]
        #[schemars(length(max = MAX_SWEEP_TOKENS))]
        tokens: Vec<u64>,
    },
}

fn default_sweep_pattern() -> Vec<OpKind> {
    vec![OpKind::Mixer(search_space::MixerKind::Attention), OpKind::Ffn]
}

fn default_crossover() -> f64 {
    0.5
}

fn default_random_batch() -> u32 {
    8
}

impl Algorithm {
    pub fn name(&self) -> &'static str {
        match self {
            Algorithm::AgingEvolution { .. } => "aging_evolution",
            Algorithm::Nsga2 { .. } => "nsga2",
            Algorithm::Random { .. } => "random",
            Algorithm::Sweep { .. } => "sweep",
        }
    }

    /// Candidates the search will propose in all (duplicates included).
    pub fn planned_candidates(&self) -> u64 {
        match *self {
            Algorithm::AgingEvolution { population, per_cycle, cycles, .. } => {
                u64::from(population) + u64::from(per_cycle) * u64::from(cycles)
            }
            Algorithm::Nsga2 { population, generations, .. } => {
                u64::from(population) * (1 + u64::from(generations))
            }
            Algorithm::Random { candidates, .. } => u64::from(candidates),
            Algorithm::Sweep { ref depths, ref widths, .. } => (depths.len() as u64) * (widths.len() as u64),
        }
    }

    /// A sweep's token budgets, smallest first: `tokens` sorted, or the proxy budget alone.
    /// Empty for the other algorithms.
    pub fn sweep_budgets(&self, proxy_tokens: u64) -> Vec<u64> {
        match self {
            Algorithm::Sweep { tokens, .. } if tokens.is_empty() => vec![proxy_tokens],
            Algorithm::Sweep { tokens, .. } => {
                let mut t = tokens.clone();
                t.sort_unstable();
                t
            }
            _ => Vec::new(),
        }
    }
}

/// Successive halving: every candidate starts at `proxy.tokens / eta^(rungs-1)` tokens; after each
/// rung the best `1/eta` (by perplexity) of a generation go on with `eta` times the budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Halving {
    #[schemars(range(min = 1, max = 8))]
    pub rungs: u32,
    #[serde(default = "default_eta")]
    #[schemars(range(min = 2, max = 16))]
    pub eta: u32,
}

fn default_eta() -> u32 {
    3
}

impl Halving {
    /// Token budget of rung `rung` (0 = the first).
    pub fn budget(&self, top_tokens: u64, rung: u32) -> u64 {
        let down = self.rungs.saturating_sub(1).saturating_sub(rung);
        top_tokens / u64::from(self.eta).pow(down)
    }
}

/// A design to seed the first population with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum SeedDesign {
    /// A preset name whose topology is a genome (`transformer-1b`, `tiny-hybrid`, ...).
    Preset(#[schemars(length(max = MAX_KEY_CHARS))] String),
    Genome(Genome),
}

/// Characters in `s`, counted no further than `max + 1`.
fn chars_over(s: &str, max: usize) -> bool {
    s.chars().nth(max).is_some()
}

impl SearchSpec {
    /// Parses JSON, naming the offending field on a type error or unknown name.
    pub fn from_json(text: &str) -> Result<Self, search_space::ParseError> {
        search_space::error::from_json_str(text)
    }

    /// Every problem with the spec, each under its field path.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::new();
        if let Some(problem) = text_problem(&self.name, MAX_NAME_CHARS, true) {
            errs.push("name", problem);
        }
        let space_ok = match self.space.validate() {
            Ok(()) => true,
            Err(e) => {
                errs.extend_under("space", e);
                false
            }
        };
        if let Err(e) = self.model.validate() {
            errs.extend_under("model", e);
        } else if space_ok && let Err(e) = self.space.check_model(&self.model) {
            // Only within a valid space: its hidden sizes are then few (one problem each at most).
            errs.extend_under("model", e);
        }
        if chars_over(&self.target.setting, MAX_KEY_CHARS) {
            errs.push("target.setting", format!("must be at most {MAX_KEY_CHARS} characters"));
        } else if let Err(e) = self.target.deployment() {
            errs.push("target.setting", e.reason);
        }
        if let Some(problem) =
            self.target.device.as_deref().and_then(|d| text_problem(d, MAX_KEY_CHARS, false))
        {
            errs.push("target.device", problem);
        }
        if let Some(b) = self.target.latency_budget_ms
            && !(b.is_finite() && b > 0.0)
        {
            errs.push(
                "target.latency_budget_ms",
                format!("must be a positive number of milliseconds, got {b}"),
            );
        }
        if let Some(rel) = &self.target.latency_budget_of {
            if self.target.latency_budget_ms.is_some() {
                errs.push(
                    "target.latency_budget_of",
                    "give latency_budget_of or latency_budget_ms, not both",
                );
            }
            if search_space::presets::preset(&rel.preset).is_none() {
                errs.push(
                    "target.latency_budget_of.preset",
                    format!(
                        "`{}` is not a preset (see `frontier space presets`)",
                        crate::proxy::shown(&rel.preset)
                    ),
                );
            }
            if !(rel.factor.is_finite() && rel.factor > 0.0 && rel.factor <= 100.0) {
                errs.push(
                    "target.latency_budget_of.factor",
                    format!("must be in (0, 100], got {}", rel.factor),
                );
            }
        }
        self.proxy.validate(self.model.vocab_size, &mut errs);
        self.validate_algorithm(&mut errs);
        if matches!(self.algorithm, Algorithm::Sweep { .. }) && !self.accuracy.is_empty() {
            errs.push("accuracy", "a sweep fits a scaling law to the loss; it takes no accuracy goals");
        } else {
            let nsga2 = matches!(self.algorithm, Algorithm::Nsga2 { .. });
            self.accuracy.validate(&self.proxy.corpus, nsga2, self.algorithm.name(), &mut errs);
        }
        if let Some(h) = &self.halving {
            if !(1..=8).contains(&h.rungs) {
                errs.push("halving.rungs", format!("must be in 1..=8, got {}", h.rungs));
            }
            if !(2..=16).contains(&h.eta) {
                errs.push("halving.eta", format!("must be in 2..=16, got {}", h.eta));
            }
            if errs.is_empty() {
                let first = h.budget(self.proxy.tokens, 0);
                let batch = u64::from(self.proxy.seq_len) * u64::from(self.proxy.batch_size);
                if first < batch {
                    errs.push(
                        "halving",
                        format!(
                            "the first rung's budget ({first} tokens = proxy.tokens / eta^(rungs-1)) is smaller than one batch ({batch} tokens)"
                        ),
                    );
                }
            }
        }
        if self.seeds.len() > MAX_POPULATION as usize {
            errs.push("seeds", format!("at most {MAX_POPULATION} seeds, got {}", self.seeds.len()));
        } else {
            for (i, seed) in self.seeds.iter().enumerate() {
                if let Err(e) = self.seed_genome(seed) {
                    errs.push(format!("seeds[{i}]"), e);
                }
            }
        }
        if !(1..=MAX_ATTEMPTS).contains(&self.max_attempts) {
            errs.push("max_attempts", format!("must be in 1..={MAX_ATTEMPTS}, got {}", self.max_attempts));
        }
        errs.into_result(())
    }

    fn validate_algorithm(&self, errs: &mut ValidationErrors) {
        match self.algorithm {
            Algorithm::AgingEvolution { population, sample_size, per_cycle, cycles } => {
                if !(1..=MAX_POPULATION).contains(&population) {
                    errs.push(
                        "algorithm.population",
                        format!("must be in 1..={MAX_POPULATION}, got {population}"),
                    );
                }
                if sample_size == 0 || sample_size > population {
                    errs.push(
                        "algorithm.sample_size",
                        format!("must be in 1..=population ({population}), got {sample_size}"),
                    );
                }
                if !(1..=MAX_POPULATION).contains(&per_cycle) {
                    errs.push(
                        "algorithm.per_cycle",
                        format!("must be in 1..={MAX_POPULATION}, got {per_cycle}"),
                    );
                }
                if u64::from(cycles) > MAX_CANDIDATES {
                    errs.push("algorithm.cycles", format!("must be at most {MAX_CANDIDATES}, got {cycles}"));
                }
                if self.seeds.len() > population as usize {
                    errs.push(
                        "seeds",
                        format!("{} seeds do not fit a population of {population}", self.seeds.len()),
                    );
                }
            }
            Algorithm::Nsga2 { population, generations, crossover_probability, memory_objective: _ } => {
                if !(2..=MAX_POPULATION).contains(&population) {
                    errs.push(
                        "algorithm.population",
                        format!("must be in 2..={MAX_POPULATION}, got {population}"),
                    );
                }
                if u64::from(generations) > MAX_CANDIDATES {
                    errs.push(
                        "algorithm.generations",
                        format!("must be at most {MAX_CANDIDATES}, got {generations}"),
                    );
                }
                if !(0.0..=1.0).contains(&crossover_probability) {
                    errs.push(
                        "algorithm.crossover_probability",
                        format!("must be in [0, 1], got {crossover_probability}"),
                    );
                }
            }
            Algorithm::Random { candidates, batch } => {
                if candidates == 0 {
                    errs.push("algorithm.candidates", "must be at least 1");
                } else if u64::from(candidates) > MAX_CANDIDATES {
                    errs.push(
                        "algorithm.candidates",
                        format!("must be at most {MAX_CANDIDATES}, got {candidates}"),
                    );
                }
                if !(1..=MAX_POPULATION).contains(&batch) {
                    errs.push("algorithm.batch", format!("must be in 1..={MAX_POPULATION}, got {batch}"));
                }
            }
            Algorithm::Sweep { .. } => {}
        }
        if let Algorithm::Sweep { ref pattern, ref depths, ref widths, ref tokens } = self.algorithm {
            self.validate_sweep(pattern, depths, widths, tokens, errs);
        }
        let planned = self.algorithm.planned_candidates();
        if planned > MAX_CANDIDATES {
            errs.push(
                "algorithm",
                format!("plans {planned} candidates; at most {MAX_CANDIDATES} per search"),
            );
        }
    }

    fn validate_sweep(
        &self,
        pattern: &[OpKind],
        depths: &[u32],
        widths: &[u32],
        tokens: &[u64],
        errs: &mut ValidationErrors,
    ) {
        let before = errs.errors().len();
        if pattern.is_empty() || pattern.len() > MAX_SWEEP_PATTERN {
            errs.push(
                "algorithm.pattern",
                format!("must list 1..={MAX_SWEEP_PATTERN} operators, got {}", pattern.len()),
            );
        } else if !pattern.iter().any(|op| matches!(op, OpKind::Mixer(_))) {
            errs.push("algorithm.pattern", "needs at least one token mixer (A, M2, D or GD)");
        }
        let axis = |name: &str, values: &[u32], max: u32, errs: &mut ValidationErrors| {
            if values.is_empty() || values.len() > MAX_SWEEP_AXIS {
                errs.push(
                    format!("algorithm.{name}"),
                    format!("must list 1..={MAX_SWEEP_AXIS} values, got {}", values.len()),
                );
                return;
            }
            for (i, &v) in values.iter().enumerate() {
                if v == 0 || v > max {
                    errs.push(format!("algorithm.{name}[{i}]"), format!("must be in 1..={max}, got {v}"));
                } else if values[..i].contains(&v) {
                    errs.push(format!("algorithm.{name}[{i}]"), format!("repeats {v}"));
                }
            }
        };
        axis("depths", depths, MAX_SWEEP_DEPTH, errs);
        axis("widths", widths, search_space::model::MAX_HIDDEN, errs);
        if tokens.len() > MAX_SWEEP_TOKENS {
            errs.push(
                "algorithm.tokens",
                format!("must list at most {MAX_SWEEP_TOKENS} budgets, got {}", tokens.len()),
            );
        } else {
            let batch = u64::from(self.proxy.seq_len) * u64::from(self.proxy.batch_size);
            for (i, &t) in tokens.iter().enumerate() {
                if t < batch || t > MAX_PROXY_TOKENS {
                    errs.push(
                        format!("algorithm.tokens[{i}]"),
                        format!("must be in {batch}..={MAX_PROXY_TOKENS} (at least one batch), got {t}"),
                    );
                } else if tokens[..i].contains(&t) {
                    errs.push(format!("algorithm.tokens[{i}]"), format!("repeats {t}"));
                }
            }
        }
        if self.halving.is_some() {
            errs.push(
                "halving",
                "a sweep trains every model at each of its budgets; list them in algorithm.tokens instead",
            );
        }
        if !self.seeds.is_empty() {
            errs.push("seeds", "a sweep has no population to seed");
        }
        // Each width must dimension the model (heads dividing it, and so on): checked on the
        // shallowest model, once the lists themselves are sound and the settings valid.
        if errs.errors().len() == before && self.model.validate().is_ok() {
            let depth = depths.iter().copied().min().unwrap_or(1);
            for (i, &w) in widths.iter().enumerate() {
                if let Err(e) = sweep_architecture(&self.model, pattern, depth, w).expand() {
                    errs.push(
                        format!("algorithm.widths[{i}]"),
                        format!("width {w} does not fit the model settings: {e}"),
                    );
                }
            }
        }
    }

    /// The genome a seed design stands for, checked against the space.
    pub fn seed_genome(&self, seed: &SeedDesign) -> Result<Genome, String> {
        let genome = match seed {
            SeedDesign::Preset(name) => {
                let arch: Architecture = search_space::presets::preset(name).ok_or_else(|| {
                    let names: Vec<&str> = search_space::presets::PRESETS.iter().map(|(n, _)| *n).collect();
                    format!("unknown preset `{name}`; known: {}", names.join(", "))
                })?;
                match arch.topology {
                    Topology::Genome(g) => g,
                    Topology::Layers(_) => {
                        return Err(format!(
                            "preset `{name}` is a fixed layer list, not a genome of three stages; the search mutates genomes"
                        ));
                    }
                }
            }
            SeedDesign::Genome(g) => g.clone(),
        };
        self.space.contains(&genome).map_err(|e| format!("outside the search space: {e}"))?;
        Ok(genome)
    }
}

/// The model of a sweep's grid point: `pattern` repeated `depth` times at hidden size `width`.
pub fn sweep_architecture(model: &ModelSettings, pattern: &[OpKind], depth: u32, width: u32) -> Architecture {
    let layers = pattern.iter().copied().cycle().take(pattern.len() * depth as usize).collect();
    Architecture::from_layers(model.with_hidden_size(width), layers).named(format!("sweep-d{depth}-w{width}"))
}

impl SearchSpec {
    /// Parses TOML (the command line's spec files), naming the offending field on error.
    pub fn from_toml(text: &str) -> Result<Self, search_space::ParseError> {
        let de = toml::Deserializer::new(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." || path == "?" { "(document)".to_owned() } else { path };
            let message = e.into_inner().message().to_owned();
            search_space::ParseError::Syntax { path, message }
        })
    }

    /// Reads a spec file: TOML when the name ends in `.toml`, JSON otherwise.
    pub fn from_file_text(name: &str, text: &str) -> Result<Self, search_space::ParseError> {
        if name.ends_with(".toml") { Self::from_toml(text) } else { Self::from_json(text) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus_paths_stay_relative_and_inside_the_data_folder() {
        use crate::proxy::CorpusRef;
        for ok in ["corpus.txt", "books/a.jsonl", "./books", ".", "a..b.txt", "synthetic:in_context_recall"] {
            assert!(ok.parse::<CorpusRef>().is_ok(), "{ok}");
        }
        for bad in [
            "/etc/passwd",
            "/dev/zero",
            "/proc/self/environ",
            "../../etc/shadow",
            "books/../../x",
            "..",
            "\\\\server\\share",
            "C:\\data",
            "books\\..\\..\\x",
            "a\nb",
            "a\u{1b}b",
            "shards:../x",
        ] {
            assert!(bad.parse::<CorpusRef>().is_err(), "{bad:?}");
        }
    }

    fn example(name: &str) -> SearchSpec {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        let spec = SearchSpec::from_toml(&text).unwrap();
        spec.validate().unwrap();
        spec
    }

    #[test]
    fn the_shipped_examples_parse_and_validate() {
        let quick = example("quickstart.toml");
        assert_eq!(quick.model, search_space::presets::tiny_settings());
        assert!(quick.proxy.corpus.starts_with("synthetic:"), "the quickstart needs no download");
        assert!(quick.algorithm.planned_candidates() >= 20);
        let text = example("text.toml");
        assert!(text.halving.is_some());
        let sweep = example("sweep.toml");
        assert_eq!(sweep.algorithm.planned_candidates(), 16);
        assert_eq!(sweep.algorithm.sweep_budgets(sweep.proxy.tokens), [131_072]);
        let recall = example("recall.toml");
        assert_eq!(recall.accuracy.maximize, ["in_context_recall"]);
        assert_eq!(recall.accuracy.min.get("in_context_recall"), Some(&0.5));
        assert_eq!(recall.width, WidthMode::Evolved);
        let paper = example("paper-1b.toml");
        assert_eq!(paper.proxy.tokens, 10_000_000_000);
        assert_eq!(paper.proxy.micro_batch_size(), 8);
        assert_eq!(paper.proxy.checkpoint_every, Some(CheckpointEvery::Minutes(15)));
        assert_eq!(paper.proxy.corpus.parse(), Ok(crate::proxy::CorpusRef::Shards("web-v1".into())));
        assert_eq!(paper.model, search_space::presets::flash_1b_settings());
    }

    #[test]
    fn toml_errors_name_the_field() {
        let e =
            SearchSpec::from_toml("name = \"x\"\n[algorithm]\nkind = \"random\"\ncandidates = \"many\"\n")
                .unwrap_err();
        // The algorithm is an internally tagged enum, whose fields serde reads from a buffer: the
        // path stops at `algorithm`, and the message names the bad value and the expected type.
        assert!(e.to_string().starts_with("algorithm: invalid type: string \"many\""), "{e}");
        let e = SearchSpec::from_toml(
            "name = \"x\"\nmodel = \"huge\"\n[algorithm]\nkind = \"random\"\ncandidates = 1\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown model settings `huge`"), "{e}");
    }

    #[test]
    fn halving_budgets_divide_the_top_budget_by_eta_per_rung() {
        let h = Halving { rungs: 3, eta: 3 };
        assert_eq!([h.budget(900, 0), h.budget(900, 1), h.budget(900, 2)], [100, 300, 900]);
    }
}
