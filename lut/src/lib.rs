//! Per-device latency lookup tables.
//!
//! Frontier ranks candidates by perplexity under a latency budget on a target device; the latency
//! of a candidate comes from a table of operator latencies profiled on that device.
//!
//! # Layout
//! - this file: [`DeploymentSetting`], the setting part of every key;
//! - [`shape`]: [`OpShape`] (operator kind and every dimension that changes its cost), its
//!   canonical key string, and [`shapes_for`], what a model needs profiled;
//! - [`table`]: [`LutEntry`], [`Lut`] and the estimator (sum over layers and steps, attention
//!   integrated over context, interpolation over width, [`Unscorable`] when entries are missing);
//! - [`calibration`]: the fit from raw estimates to measured latency;
//! - [`fidelity`]: Spearman, Kendall τ, MAPE and the shares within ±5 % / ±10 %;
//! - [`row`]: a row as stored or uploaded (text keys, numbers), checked and parsed into an entry;
//!   [`table_from_rows`], the table of a device's stored rows.
//!
//! # Runtime model
//! Pure: no IO, no async, no database. The coordinator stores entries under the canonical key
//! strings defined here; the worker profiles the shapes they name.

pub mod calibration;
pub mod fidelity;
pub mod row;
pub mod shape;
pub mod table;

pub use calibration::{Calibration, CalibrationError, CalibrationSample, GROUPS, RawCost};
pub use fidelity::{Fidelity, fidelity};
pub use row::{RawRow, RowError, parse_row, table_from_rows};
pub use shape::{OpShape, ShapeError, shapes_for};
pub use table::{Breakdown, Estimate, Lut, LutEntry, LutKey, Unscorable};

use std::fmt;
use std::str::FromStr;

use search_space::Dtype;
use serde::{Deserialize, Serialize};

/// How a model is deployed: the part of every latency key that is not the operator.
///
/// The paper's headline setting is batch 1 generating 8k tokens; throughput is measured at a large
/// batch. Prompt and generated lengths both matter because attention's per-token cost grows with
/// the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSetting {
    pub batch_size: u32,
    pub prompt_tokens: u32,
    pub generated_tokens: u32,
    pub dtype: Dtype,
}

/// A setting string that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid deployment setting `{input}`: {reason}")]
pub struct SettingError {
    pub input: String,
    pub reason: String,
}

impl DeploymentSetting {
    /// Context length at the last generated token.
    pub fn context_tokens(&self) -> u64 {
        u64::from(self.prompt_tokens) + u64::from(self.generated_tokens)
    }

    /// The canonical key, e.g. `batch=1,prompt=128,gen=1024,dtype=bf16`: stable text used as the
    /// `setting_key` column of LUT rows, so it must never change for an existing setting.
    pub fn key(&self) -> String {
        format!(
            "batch={},prompt={},gen={},dtype={}",
            self.batch_size,
            self.prompt_tokens,
            self.generated_tokens,
            self.dtype.name()
        )
    }
}

impl fmt::Display for DeploymentSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

impl FromStr for DeploymentSetting {
    type Err = SettingError;

    /// Parses `batch=1,prompt=128,gen=1024[,dtype=bf16]` in any order; `dtype` defaults to bf16.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| SettingError { input: s.to_owned(), reason };
        let (mut batch, mut prompt, mut generated, mut dtype) = (None, None, None, None);
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) =
                part.split_once('=').ok_or_else(|| err(format!("`{part}` is not NAME=VALUE")))?;
            let number = || {
                value
                    .trim()
                    .parse::<u32>()
                    .map_err(|_| err(format!("{name} must be a whole number, got `{value}`")))
            };
            let slot = match name.trim() {
                "batch" => &mut batch,
                "prompt" => &mut prompt,
                "gen" | "generated" => &mut generated,
                "dtype" => {
                    dtype = Some(value.trim().parse::<Dtype>().map_err(err)?);
                    continue;
                }
                other => {
                    return Err(err(format!("unknown field `{other}`; expected batch, prompt, gen, dtype")));
                }
            };
            *slot = Some(number()?);
        }
        let batch_size = batch.ok_or_else(|| err("missing batch=N".into()))?;
        if batch_size == 0 {
            return Err(err("batch must be at least 1".into()));
        }
        let generated_tokens = generated.ok_or_else(|| err("missing gen=N".into()))?;
        if generated_tokens == 0 {
            return Err(err("gen must be at least 1: latency is measured while decoding".into()));
        }
        Ok(Self {
            batch_size,
            prompt_tokens: prompt.ok_or_else(|| err("missing prompt=N".into()))?,
            generated_tokens,
            dtype: dtype.unwrap_or(Dtype::Bf16),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_parses_in_any_order_and_prints_its_canonical_key() {
        let s: DeploymentSetting = "gen=8192, batch=1,prompt=0".parse().unwrap();
        assert_eq!(s.key(), "batch=1,prompt=0,gen=8192,dtype=bf16");
        assert_eq!(s.key().parse::<DeploymentSetting>().unwrap(), s);
        assert_eq!(s.context_tokens(), 8192);
        let f: DeploymentSetting = "batch=64,prompt=128,generated=1024,dtype=f32".parse().unwrap();
        assert_eq!(f.dtype, Dtype::F32);
    }

    #[test]
    fn bad_settings_say_what_is_wrong() {
        let e = |s: &str| s.parse::<DeploymentSetting>().unwrap_err().reason;
        assert_eq!(e("batch=1,prompt=128"), "missing gen=N");
        assert_eq!(e("batch=one,prompt=1,gen=1"), "batch must be a whole number, got `one`");
        assert_eq!(
            e("batch=1,prompt=1,gen=1,beams=4"),
            "unknown field `beams`; expected batch, prompt, gen, dtype"
        );
        assert_eq!(e("batch=0,prompt=1,gen=1"), "batch must be at least 1");
        assert!(e("batch=1,prompt=1,gen=1,dtype=int3").starts_with("unknown dtype `int3`"));
    }
}
