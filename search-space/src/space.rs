//! Search-space bounds, seeded sampling and the paper's four mutations.
//!
//! A [`SearchSpace`] says which mixers, ratios, FFN counts and blocks per stage a genome may use,
//! how many stages it has and the operator cap (30 in the paper, trimming the last stage when
//! over). Mutation changes exactly one factor (one operator of a block type, the mixer ratio, the
//! FFN ratio, or blocks per stage) and always yields a genome inside the space, or says why not.
//!
//! Randomness comes from the caller's RNG; [`rng`] gives the portable, seedable one Frontier uses
//! so the same seed gives the same genomes on every machine.

use rand::Rng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::ValidationErrors;
use crate::genome::{
    BlockType, Genome, MAX_FFNS_PER_MIXER, MAX_GENOME_OPERATORS, MAX_STAGES, MixerRatio, Stage,
};
use crate::model::{MAX_HIDDEN, ModelSettings};
use crate::ops::{MixerKind, OpKind};

/// Frontier's RNG: ChaCha8, whose stream is fixed by its seed on every platform.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Bounds of the genome search (paper App. C.1 by default).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SearchSpace {
    /// Mixer kinds a block type may use, each once. The paper: DeltaNet, Attention, Mamba2.
    #[schemars(length(min = 1, max = 4), extend("uniqueItems" = true))]
    pub mixers: Vec<MixerKind>,
    /// Mixer ratios a block type may use, each once.
    #[schemars(length(min = 1, max = 4), extend("uniqueItems" = true))]
    pub ratios: Vec<MixerRatio>,
    /// FFNs after each mixer (the paper: 0, 1 or 2), each once.
    #[schemars(length(min = 1, max = 3), inner(range(max = MAX_FFNS_PER_MIXER)), extend("uniqueItems" = true))]
    pub ffns_per_mixer: Vec<u8>,
    #[schemars(range(min = 1, max = MAX_STAGES))]
    pub stages: u32,
    #[schemars(range(min = 1, max = MAX_GENOME_OPERATORS))]
    pub min_blocks_per_stage: u32,
    /// At least `min_blocks_per_stage`.
    #[schemars(range(min = 1, max = MAX_GENOME_OPERATORS))]
    pub max_blocks_per_stage: u32,
    /// Cap on mixers + FFNs; over it, the last stage is trimmed.
    #[schemars(range(min = 1, max = MAX_GENOME_OPERATORS))]
    pub max_operators: u32,
    /// Hidden sizes the latency table chooses from (the paper: 1024, 1280, ..., 2560), each once.
    #[schemars(length(min = 1, max = MAX_HIDDEN_SIZES), inner(range(min = 1, max = MAX_HIDDEN)), extend("uniqueItems" = true))]
    pub hidden_sizes: Vec<u32>,
}

/// Most hidden sizes a space may list: every candidate's latency is estimated at each of them.
pub const MAX_HIDDEN_SIZES: usize = 64;

impl Default for SearchSpace {
    fn default() -> Self {
        Self {
            mixers: vec![MixerKind::DeltaNet, MixerKind::Attention, MixerKind::Mamba2],
            ratios: MixerRatio::ALL.to_vec(),
            ffns_per_mixer: vec![0, 1, 2],
            stages: 3,
            min_blocks_per_stage: 1,
            max_blocks_per_stage: 8,
            max_operators: 30,
            hidden_sizes: (1024..=2560).step_by(256).collect(),
        }
    }
}

/// Which of the four factors a mutation changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MutationKind {
    /// Swap one mixer of a block type for another kind.
    Operator,
    /// Change a block type's mixer ratio.
    MixerRatio,
    /// Change a block type's FFNs per mixer.
    FfnRatio,
    /// Change a stage's block count.
    Blocks,
}

impl MutationKind {
    pub const ALL: [MutationKind; 4] =
        [MutationKind::Operator, MutationKind::MixerRatio, MutationKind::FfnRatio, MutationKind::Blocks];
}

/// What a mutation did, for lineage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mutation {
    pub kind: MutationKind,
    pub stage: usize,
    /// Human-readable change, e.g. `mixers[0]: deltanet -> attention`.
    pub change: String,
}

/// Why no mutation could be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MutationError {
    #[error("the parent genome is outside the search space: {0}")]
    ParentOutsideSpace(ValidationErrors),
    #[error("no {kind:?} mutation leads to a different genome inside the search space")]
    NoAlternative { kind: MutationKind },
    #[error("no mutation of any kind leads to a different genome inside the search space")]
    Exhausted,
}

/// Operators in one block of that shape.
fn block_ops(ratio: MixerRatio, ffns_per_mixer: u8) -> u32 {
    let (a, b) = ratio.counts();
    (a + b) as u32 * (1 + u32::from(ffns_per_mixer))
}

impl SearchSpace {
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::new();
        // Lengths first: a list over its cap is not walked (duplicate checks are quadratic).
        check_list(&mut errs, "mixers", &self.mixers, MixerKind::ALL.len());
        check_list(&mut errs, "ratios", &self.ratios, MixerRatio::ALL.len());
        if check_list(&mut errs, "ffns_per_mixer", &self.ffns_per_mixer, usize::from(MAX_FFNS_PER_MIXER) + 1)
        {
            for (i, f) in self.ffns_per_mixer.iter().enumerate() {
                if *f > MAX_FFNS_PER_MIXER {
                    errs.push(format!("ffns_per_mixer[{i}]"), format!("must be 0, 1 or 2, got {f}"));
                }
            }
        }
        if check_list(&mut errs, "hidden_sizes", &self.hidden_sizes, MAX_HIDDEN_SIZES) {
            for (i, h) in self.hidden_sizes.iter().enumerate() {
                if !(1..=MAX_HIDDEN).contains(h) {
                    errs.push(format!("hidden_sizes[{i}]"), format!("must be in 1..={MAX_HIDDEN}, got {h}"));
                }
            }
        }
        if self.mixers.len() < 2 && !self.ratios.is_empty() && !self.ratios.contains(&MixerRatio::R0to1) {
            errs.push("ratios", "with fewer than two mixer kinds only ratio 0:1 is possible; add it");
        }
        if !(1..=MAX_STAGES).contains(&self.stages) {
            errs.push("stages", format!("must be in 1..={MAX_STAGES}, got {}", self.stages));
        }
        if !(1..=MAX_GENOME_OPERATORS).contains(&self.min_blocks_per_stage) {
            errs.push(
                "min_blocks_per_stage",
                format!("must be in 1..={MAX_GENOME_OPERATORS}, got {}", self.min_blocks_per_stage),
            );
        }
        if self.max_blocks_per_stage > MAX_GENOME_OPERATORS {
            errs.push(
                "max_blocks_per_stage",
                format!("must be in 1..={MAX_GENOME_OPERATORS}, got {}", self.max_blocks_per_stage),
            );
        } else if self.max_blocks_per_stage < self.min_blocks_per_stage {
            errs.push(
                "max_blocks_per_stage",
                format!(
                    "{} is below min_blocks_per_stage {}",
                    self.max_blocks_per_stage, self.min_blocks_per_stage
                ),
            );
        }
        if self.max_operators == 0 || self.max_operators > MAX_GENOME_OPERATORS {
            errs.push(
                "max_operators",
                format!("must be in 1..={}, got {}", MAX_GENOME_OPERATORS, self.max_operators),
            );
        }
        if errs.is_empty() {
            // The smallest genome: fewest operators per block, fewest blocks, every stage.
            let smallest_block =
                self.block_shapes().iter().map(|(r, f)| block_ops(*r, *f)).min().unwrap_or(1);
            let smallest = smallest_block * self.min_blocks_per_stage * self.stages;
            if smallest > self.max_operators {
                errs.push(
                    "max_operators",
                    format!(
                        "{} is below the smallest genome in the space ({smallest} operators)",
                        self.max_operators
                    ),
                );
            }
        }
        errs.into_result(())
    }

    /// Checks that every allowed operator can be dimensioned at every allowed hidden size, so no
    /// candidate fails late when the latency table picks its width.
    pub fn check_model(&self, model: &ModelSettings) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::new();
        let mut ops: Vec<OpKind> = self.mixers.iter().map(|m| OpKind::Mixer(*m)).collect();
        if self.ffns_per_mixer.iter().any(|f| *f > 0) {
            ops.push(OpKind::Ffn);
        }
        for (i, h) in self.hidden_sizes.iter().enumerate() {
            let at = model.with_hidden_size(*h);
            for op in &ops {
                if let Err(msg) = at.layer(*op) {
                    errs.push(format!("hidden_sizes[{i}]"), msg);
                }
            }
        }
        errs.into_result(())
    }

    /// Whether a genome lies inside these bounds (its own validity included).
    pub fn contains(&self, genome: &Genome) -> Result<(), ValidationErrors> {
        genome.validate()?;
        let mut errs = ValidationErrors::new();
        if genome.stages.len() != self.stages as usize {
            errs.push(
                "stages",
                format!("the space has {} stages, the genome {}", self.stages, genome.stages.len()),
            );
        }
        for (i, stage) in genome.stages.iter().enumerate() {
            let b = &stage.block;
            for (j, m) in b.mixers.iter().enumerate() {
                if !self.mixers.contains(m) {
                    errs.push(
                        format!("stages[{i}].block.mixers[{j}]"),
                        format!("{m} is not among the space's mixers"),
                    );
                }
            }
            if !self.ratios.contains(&b.ratio) {
                errs.push(
                    format!("stages[{i}].block.ratio"),
                    format!("{} is not among the space's ratios", b.ratio),
                );
            }
            if !self.ffns_per_mixer.contains(&b.ffns_per_mixer) {
                errs.push(
                    format!("stages[{i}].block.ffns_per_mixer"),
                    format!("{} is not among the space's FFN counts", b.ffns_per_mixer),
                );
            }
            if !(self.min_blocks_per_stage..=self.max_blocks_per_stage).contains(&stage.blocks) {
                errs.push(
                    format!("stages[{i}].blocks"),
                    format!(
                        "{} is outside {}..={}",
                        stage.blocks, self.min_blocks_per_stage, self.max_blocks_per_stage
                    ),
                );
            }
        }
        let count = genome.operator_count();
        if count > self.max_operators {
            errs.push("stages", format!("{count} operators exceed the cap of {}", self.max_operators));
        }
        errs.into_result(())
    }

    /// Draws a random genome inside the space (the space must be valid).
    ///
    /// Stages are drawn in order; a stage may only take a block type whose minimum blocks still
    /// leave room for the smallest blocks of the stages after it, so every draw can be trimmed
    /// under the cap (rejection alone can starve in tight spaces). Blocks per stage are drawn
    /// freely and the genome is then trimmed, last stage first, as the paper does.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Result<Genome, ValidationErrors> {
        self.validate()?;
        let shapes = self.block_shapes();
        let smallest = shapes.iter().map(|(r, f)| block_ops(*r, *f)).min().unwrap_or(1);
        let mut reserved = 0;
        let mut stages = Vec::with_capacity(self.stages as usize);
        for i in 0..self.stages {
            let later = (self.stages - i - 1) * smallest * self.min_blocks_per_stage;
            let room = self.max_operators.saturating_sub(reserved + later);
            let fitting: Vec<(MixerRatio, u8)> = shapes
                .iter()
                .copied()
                .filter(|(r, f)| block_ops(*r, *f) * self.min_blocks_per_stage <= room)
                .collect();
            let Some(&(ratio, ffns_per_mixer)) = fitting.choose(rng) else {
                return Err(ValidationErrors::single(
                    "max_operators",
                    "no genome of the space fits under the operator cap",
                ));
            };
            reserved += block_ops(ratio, ffns_per_mixer) * self.min_blocks_per_stage;
            let mixers: Vec<MixerKind> = self.mixers.choose_multiple(rng, ratio.kinds()).copied().collect();
            stages.push(Stage {
                block: BlockType { mixers, ratio, ffns_per_mixer },
                blocks: rng.random_range(self.min_blocks_per_stage..=self.max_blocks_per_stage),
            });
        }
        (Genome { stages }).trimmed_to(self.max_operators, self.min_blocks_per_stage).ok_or_else(|| {
            ValidationErrors::single("max_operators", "no genome of the space fits under the operator cap")
        })
    }

    /// Every genome of the space, in a fixed order (stage by stage: ratio, FFNs per mixer, the
    /// mixers in order, blocks), or an error naming the count when there are more than `limit`.
    ///
    /// Each genome is listed once; two genomes may still expand to the same model (e.g. `A` then
    /// `M2·D` and `A·M2` then `D`), which callers deduplicate by the model's canonical hash. A
    /// genome over the operator cap is left out, not trimmed: trimming yields a genome that is
    /// listed anyway.
    pub fn enumerate(&self, limit: usize) -> Result<Vec<Genome>, ValidationErrors> {
        self.validate()?;
        let mut stage_options: Vec<Stage> = Vec::new();
        for (ratio, ffns_per_mixer) in self.block_shapes() {
            let mixer_lists: Vec<Vec<MixerKind>> = if ratio.kinds() == 1 {
                self.mixers.iter().map(|m| vec![*m]).collect()
            } else {
                let mut pairs = Vec::new();
                for a in &self.mixers {
                    for b in self.mixers.iter().filter(|b| *b != a) {
                        pairs.push(vec![*a, *b]);
                    }
                }
                pairs
            };
            for mixers in mixer_lists {
                for blocks in self.min_blocks_per_stage..=self.max_blocks_per_stage {
                    let block = BlockType { mixers: mixers.clone(), ratio, ffns_per_mixer };
                    stage_options.push(Stage { block, blocks });
                }
            }
        }
        let total = (stage_options.len() as u128).checked_pow(self.stages).unwrap_or(u128::MAX);
        if total > limit as u128 {
            return Err(ValidationErrors::single(
                "stages",
                format!("the space has {total} stage combinations, more than the limit of {limit}"),
            ));
        }
        let mut out = Vec::new();
        let mut index = vec![0usize; self.stages as usize];
        loop {
            let genome = Genome { stages: index.iter().map(|&i| stage_options[i].clone()).collect() };
            if self.contains(&genome).is_ok() {
                out.push(genome);
            }
            // The next combination, the last stage fastest.
            let mut pos = index.len();
            loop {
                if pos == 0 {
                    return Ok(out);
                }
                pos -= 1;
                index[pos] += 1;
                if index[pos] < stage_options.len() {
                    break;
                }
                index[pos] = 0;
            }
        }
    }

    /// Every (ratio, FFNs per mixer) pair a block of this space can have.
    fn block_shapes(&self) -> Vec<(MixerRatio, u8)> {
        let ratios = self.ratios.iter().copied().filter(|r| r.kinds() <= self.mixers.len());
        ratios.flat_map(|r| self.ffns_per_mixer.iter().map(move |f| (r, *f))).collect()
    }

    /// Every genome one mutation of `kind` away from `parent`, trimmed to the cap, inside the
    /// space and different from the parent.
    pub fn neighbours(&self, parent: &Genome, kind: MutationKind) -> Vec<(Genome, Mutation)> {
        let mut out = Vec::new();
        let mut push = |stage: usize, change: String, child: Genome| {
            if let Some(child) = child.trimmed_to(self.max_operators, self.min_blocks_per_stage)
                && child != *parent
                && self.contains(&child).is_ok()
            {
                out.push((child, Mutation { kind, stage, change }));
            }
        };
        for (i, stage) in parent.stages.iter().enumerate() {
            let block = &stage.block;
            let with_block = |b: BlockType| {
                let mut g = parent.clone();
                g.stages[i].block = b;
                g
            };
            match kind {
                MutationKind::Operator => {
                    for (j, current) in block.mixers.iter().enumerate() {
                        for m in &self.mixers {
                            if m == current || block.mixers.contains(m) {
                                continue;
                            }
                            let mut b = block.clone();
                            b.mixers[j] = *m;
                            push(i, format!("mixers[{j}]: {current} -> {m}"), with_block(b));
                        }
                    }
                }
                MutationKind::MixerRatio => {
                    for r in &self.ratios {
                        if *r == block.ratio {
                            continue;
                        }
                        let change = format!("ratio: {} -> {r}", block.ratio);
                        match (block.mixers.as_slice(), r.kinds()) {
                            // Two kinds stay two kinds: only the ratio moves.
                            (_, 2) if block.mixers.len() == 2 => {
                                push(i, change, with_block(BlockType { ratio: *r, ..block.clone() }));
                            }
                            // One kind becomes two: the new kind joins, in either position.
                            ([only], 2) => {
                                for m in self.mixers.iter().filter(|m| *m != only) {
                                    for mixers in [vec![*m, *only], vec![*only, *m]] {
                                        let change = format!("{change} (adds {m})");
                                        push(
                                            i,
                                            change,
                                            with_block(BlockType { mixers, ratio: *r, ..block.clone() }),
                                        );
                                    }
                                }
                            }
                            // Two kinds become one: either kind may stay.
                            ([a, b], 1) => {
                                for keep in [*a, *b] {
                                    let change = format!("{change} (keeps {keep})");
                                    push(
                                        i,
                                        change,
                                        with_block(BlockType {
                                            mixers: vec![keep],
                                            ratio: *r,
                                            ..block.clone()
                                        }),
                                    );
                                }
                            }
                            _ => {}
                        }
                    }
                }
                MutationKind::FfnRatio => {
                    for f in &self.ffns_per_mixer {
                        if *f != block.ffns_per_mixer {
                            let change = format!("ffns_per_mixer: {} -> {f}", block.ffns_per_mixer);
                            push(i, change, with_block(BlockType { ffns_per_mixer: *f, ..block.clone() }));
                        }
                    }
                }
                MutationKind::Blocks => {
                    for n in self.min_blocks_per_stage..=self.max_blocks_per_stage {
                        if n != stage.blocks {
                            let mut g = parent.clone();
                            g.stages[i].blocks = n;
                            push(i, format!("blocks: {} -> {n}", stage.blocks), g);
                        }
                    }
                }
            }
        }
        out
    }

    /// Applies one mutation of the given kind, chosen uniformly among its neighbours.
    pub fn mutate_with<R: Rng + ?Sized>(
        &self,
        parent: &Genome,
        kind: MutationKind,
        rng: &mut R,
    ) -> Result<(Genome, Mutation), MutationError> {
        self.contains(parent).map_err(MutationError::ParentOutsideSpace)?;
        let options = self.neighbours(parent, kind);
        options.choose(rng).cloned().ok_or(MutationError::NoAlternative { kind })
    }

    /// The paper's mutation: pick one of the four factors at random (among those that can
    /// change), then one change of it.
    pub fn mutate<R: Rng + ?Sized>(
        &self,
        parent: &Genome,
        rng: &mut R,
    ) -> Result<(Genome, Mutation), MutationError> {
        self.contains(parent).map_err(MutationError::ParentOutsideSpace)?;
        let mut kinds = MutationKind::ALL.to_vec();
        while !kinds.is_empty() {
            let k = rng.random_range(0..kinds.len());
            let kind = kinds.swap_remove(k);
            if let Some(choice) = self.neighbours(parent, kind).choose(rng) {
                return Ok(choice.clone());
            }
        }
        Err(MutationError::Exhausted)
    }
}

/// Checks that a list is not empty, holds at most `max` entries and none twice; `false` when it
/// is empty or too long (its entries are then not looked at).
fn check_list<T: PartialEq + std::fmt::Debug>(
    errs: &mut ValidationErrors,
    path: &str,
    items: &[T],
    max: usize,
) -> bool {
    if items.is_empty() {
        errs.push(path, "must not be empty");
        return false;
    }
    if items.len() > max {
        errs.push(path, format!("at most {max} entries, got {}", items.len()));
        return false;
    }
    for (i, item) in items.iter().enumerate() {
        if items[..i].contains(item) {
            errs.push(format!("{path}[{i}]"), format!("{item:?} is listed twice"));
        }
    }
    true
}
