//! The paper's genome (Nemotron-Flash, App. C.1).
//!
//! A model has N stages (3 in the paper); each stage repeats one [`BlockType`] `blocks` times.
//! A block type holds one or two token-mixer kinds in ratio 0:1, 1:1, 1:2 or 1:3 and 0, 1 or 2
//! FFNs after each mixer. Width is not part of the genome: it is chosen per candidate from the
//! latency table, so one genome expands at several hidden sizes.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ValidationErrors;
use crate::ops::{MixerKind, OpKind};

/// Most FFNs the paper places after one mixer.
pub const MAX_FFNS_PER_MIXER: u8 = 2;

/// The mixer ratio of a block type: how many of the first kind to how many of the second.
/// `0:1` means the block has one mixer kind only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MixerRatio {
    R0to1,
    R1to1,
    R1to2,
    R1to3,
}

impl MixerRatio {
    pub const ALL: [MixerRatio; 4] =
        [MixerRatio::R0to1, MixerRatio::R1to1, MixerRatio::R1to2, MixerRatio::R1to3];

    /// Count of (first, second) mixer kinds in one block.
    pub fn counts(self) -> (usize, usize) {
        match self {
            MixerRatio::R0to1 => (0, 1),
            MixerRatio::R1to1 => (1, 1),
            MixerRatio::R1to2 => (1, 2),
            MixerRatio::R1to3 => (1, 3),
        }
    }

    /// How many distinct mixer kinds a block with this ratio holds.
    pub fn kinds(self) -> usize {
        if self == MixerRatio::R0to1 { 1 } else { 2 }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MixerRatio::R0to1 => "0:1",
            MixerRatio::R1to1 => "1:1",
            MixerRatio::R1to2 => "1:2",
            MixerRatio::R1to3 => "1:3",
        }
    }
}

impl fmt::Display for MixerRatio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MixerRatio {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MixerRatio::ALL
            .into_iter()
            .find(|r| r.as_str() == s.trim())
            .ok_or_else(|| format!("unknown mixer ratio `{s}`; expected 0:1, 1:1, 1:2 or 1:3"))
    }
}

impl Serialize for MixerRatio {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for MixerRatio {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// One block type: its mixer kinds, their ratio, and the FFNs after each mixer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockType {
    /// One kind for ratio `0:1`, two distinct kinds otherwise (first, second).
    #[schemars(length(min = 1, max = 2))]
    pub mixers: Vec<MixerKind>,
    pub ratio: MixerRatio,
    /// FFNs after each mixer: 0, 1 or 2.
    #[schemars(range(max = MAX_FFNS_PER_MIXER))]
    pub ffns_per_mixer: u8,
}

impl BlockType {
    /// The operators of one block: each mixer in ratio order, each followed by its FFNs.
    pub fn operators(&self) -> Vec<OpKind> {
        let (first, second) = self.ratio.counts();
        let order: Vec<MixerKind> = match self.mixers.as_slice() {
            [only] => vec![*only; first + second],
            [a, b] => std::iter::repeat_n(*a, first).chain(std::iter::repeat_n(*b, second)).collect(),
            _ => Vec::new(),
        };
        let mut ops = Vec::with_capacity(order.len() * (1 + usize::from(self.ffns_per_mixer)));
        for m in order {
            ops.push(OpKind::Mixer(m));
            ops.extend(std::iter::repeat_n(OpKind::Ffn, usize::from(self.ffns_per_mixer)));
        }
        ops
    }

    /// Operators in one block, without building them.
    pub fn operator_count(&self) -> u32 {
        let (a, b) = self.ratio.counts();
        (a + b) as u32 * (1 + u32::from(self.ffns_per_mixer))
    }

    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::new();
        let want = self.ratio.kinds();
        if self.mixers.len() != want {
            errs.push(
                "mixers",
                format!(
                    "ratio {} needs {} mixer kind{}, got {}",
                    self.ratio,
                    want,
                    if want == 1 { "" } else { "s" },
                    self.mixers.len()
                ),
            );
        } else if want == 2 && self.mixers[0] == self.mixers[1] {
            errs.push(
                "mixers[1]",
                format!("repeats {}; a two-kind block needs two different mixers", self.mixers[1]),
            );
        }
        if self.ffns_per_mixer > MAX_FFNS_PER_MIXER {
            errs.push("ffns_per_mixer", format!("must be 0, 1 or 2, got {}", self.ffns_per_mixer));
        }
        errs.into_result(())
    }
}

/// One stage: a block type repeated `blocks` times.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub block: BlockType,
    #[schemars(range(min = 1, max = MAX_GENOME_OPERATORS))]
    pub blocks: u32,
}

/// The paper's genome.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Genome {
    #[schemars(length(min = 1, max = MAX_STAGES))]
    pub stages: Vec<Stage>,
}

/// Most operators any genome may expand to, whatever the search space allows; a guard against
/// typos such as `blocks: 100000`.
pub const MAX_GENOME_OPERATORS: u32 = 4096;

/// Most stages a genome (and so a search space) may have.
pub const MAX_STAGES: u32 = 16;

impl Genome {
    /// The flat operator list: stages in order, blocks repeated.
    pub fn operators(&self) -> Vec<OpKind> {
        let mut ops = Vec::with_capacity(self.operator_count() as usize);
        for stage in &self.stages {
            let block = stage.block.operators();
            for _ in 0..stage.blocks {
                ops.extend_from_slice(&block);
            }
        }
        ops
    }

    /// Mixers plus FFNs, saturating so that absurd inputs are still reported, not overflowed.
    pub fn operator_count(&self) -> u32 {
        self.stages
            .iter()
            .fold(0u32, |acc, s| acc.saturating_add(s.block.operator_count().saturating_mul(s.blocks)))
    }

    /// Structural validity of the genome on its own (a search space adds its bounds on top).
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::new();
        if self.stages.is_empty() {
            errs.push("stages", "a genome needs at least one stage");
        }
        if self.stages.len() > MAX_STAGES as usize {
            errs.push("stages", format!("at most {MAX_STAGES} stages, got {}", self.stages.len()));
            return Err(errs);
        }
        for (i, stage) in self.stages.iter().enumerate() {
            if let Err(e) = stage.block.validate() {
                errs.extend_under(&format!("stages[{i}].block"), e);
            }
            if stage.blocks == 0 {
                errs.push(format!("stages[{i}].blocks"), "must be at least 1");
            }
        }
        let count = self.operator_count();
        if count > MAX_GENOME_OPERATORS {
            errs.push(
                "stages",
                format!("expands to {count} operators, more than the limit of {MAX_GENOME_OPERATORS}"),
            );
        }
        errs.into_result(())
    }

    /// Trims blocks from the last stage (then the one before it, and so on, never below
    /// `min_blocks` per stage) until the genome has at most `cap` operators, as the paper does.
    /// Returns `None` when even `min_blocks` per stage is over the cap.
    pub fn trimmed_to(&self, cap: u32, min_blocks: u32) -> Option<Genome> {
        let mut g = self.clone();
        let mut over = g.operator_count().saturating_sub(cap);
        for stage in g.stages.iter_mut().rev() {
            if over == 0 {
                break;
            }
            let per_block = stage.block.operator_count().max(1);
            let removable = stage.blocks.saturating_sub(min_blocks.max(1));
            let remove = over.div_ceil(per_block).min(removable);
            stage.blocks -= remove;
            over = over.saturating_sub(remove * per_block);
        }
        (g.operator_count() <= cap).then_some(g)
    }
}
