//! The table of one device under one deployment setting, and the estimator over it.
//!
//! A model's decode latency is the sum, over the decode steps that follow the prompt, of every
//! sub-layer's step cost plus the embedding/head's. Flat operators cost `steps × median`.
//! Attention's step cost grows with the cache: it is a piecewise-linear curve through the
//! context lengths it was profiled at, summed exactly over the integer contexts of the decode
//! range, each capped by the sliding window. A shape whose hidden size was not profiled is
//! interpolated between the nearest profiled shapes of its family along the weights it reads
//! (extrapolated, and flagged, outside them). A shape with nothing to go on makes the model
//! [`Unscorable`], never a silent zero.
//!
//! # Speed
//! All layers of one kind in a model share their dimensions, so `estimate` first groups the
//! layers into at most a handful of distinct shapes (on the stack), then resolves each once.
//! Lookups are hash probes on `Copy` keys; nothing allocates unless the model is unscorable.

use std::collections::HashMap;

use search_space::{LayerSpec, ModelSpec};
use serde::{Deserialize, Serialize};

use crate::DeploymentSetting;
use crate::calibration::{Calibration, GROUPS, RawCost, group_of};
use crate::shape::{Family, OpShape, context_grid, decode_contexts};

/// One measured operator latency, per decode step.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LutEntry {
    pub op: OpShape,
    pub median_ms: f64,
    pub p10_ms: f64,
    pub p90_ms: f64,
    pub repeats: u32,
}

/// The full key of a LUT row: device fingerprint, deployment setting and operator shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LutKey {
    pub device: String,
    pub setting: DeploymentSetting,
    pub op: OpShape,
}

/// A model's estimated decode latency.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Estimate {
    /// Calibrated when the table has a calibration, else equal to `raw_ms`.
    pub latency_ms: f64,
    /// The sum over operators before calibration.
    pub raw_ms: f64,
    /// `raw_ms` split over the calibration's operator groups ([`crate::calibration::GROUPS`]).
    pub raw_by_group_ms: [f64; GROUPS.len()],
    /// Some operator or context was outside what was profiled and was extrapolated.
    pub extrapolated: bool,
}

impl Estimate {
    /// The raw cost a calibration applies to, for a model of `layers` sub-layers.
    pub fn raw_cost(&self, layers: usize) -> RawCost {
        RawCost { total_ms: self.raw_ms, by_group_ms: self.raw_by_group_ms, layers }
    }
}

/// Where a model's decode latency goes: the uncalibrated cost of each sub-layer, in layer order,
/// and of the embedding/head. The parts sum to [`Estimate::raw_ms`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Breakdown {
    pub layers_ms: Vec<f64>,
    pub embed_head_ms: f64,
}

impl Breakdown {
    pub fn raw_ms(&self) -> f64 {
        self.layers_ms.iter().sum::<f64>() + self.embed_head_ms
    }
}

/// Why a model cannot be scored: the entries a profiler must add first.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unscorable: missing entries {}", missing.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
pub struct Unscorable {
    pub missing: Vec<OpShape>,
}

/// A step-cost curve over context length; flat operators have one point at context 0.
#[derive(Clone, Debug, Default)]
struct Curve {
    /// `(context, ms)` sorted by context, contexts distinct.
    points: Vec<(f64, f64)>,
}

impl Curve {
    fn min_context(&self) -> f64 {
        self.points.first().map_or(0.0, |p| p.0)
    }

    fn max_context(&self) -> f64 {
        self.points.last().map_or(0.0, |p| p.0)
    }

    /// Step cost at context `c`, linear between points and along the end segments outside them.
    fn at(&self, c: f64) -> f64 {
        let p = &self.points;
        if p.len() == 1 {
            return p[0].1;
        }
        let i = p.partition_point(|q| q.0 <= c).clamp(1, p.len() - 1);
        let ((x0, y0), (x1, y1)) = (p[i - 1], p[i]);
        y0 + (y1 - y0) * (c - x0) / (x1 - x0)
    }

    /// Σ over integer contexts `a..=b` of the step cost: exact for the piecewise-linear curve,
    /// segment by segment, so the cost is integrated over positions rather than one step scaled.
    fn sum(&self, a: u32, b: u32) -> f64 {
        if b < a {
            return 0.0;
        }
        let p = &self.points;
        if p.len() == 1 {
            return f64::from(b - a + 1) * p[0].1;
        }
        // Breakpoints between segments: interior profiled contexts. Integers up to and including
        // a breakpoint belong to the segment on its left.
        let mut total = 0.0;
        let mut lo = a;
        for i in 1..p.len() {
            let last_segment = i == p.len() - 1;
            let hi = if last_segment { b } else { b.min(p[i].0.floor().max(0.0) as u32) };
            if hi >= lo {
                let ((x0, y0), (x1, y1)) = (p[i - 1], p[i]);
                let slope = (y1 - y0) / (x1 - x0);
                let n = f64::from(hi - lo + 1);
                let mean_c = (f64::from(lo) + f64::from(hi)) / 2.0;
                total += n * (y0 + slope * (mean_c - x0));
                lo = hi + 1;
            }
            if lo > b {
                break;
            }
        }
        total
    }
}

/// The LUT of one device under one deployment setting, ready to score models.
#[derive(Clone, Debug)]
pub struct Lut {
    device: String,
    setting: DeploymentSetting,
    entries: Vec<LutEntry>,
    /// Step-cost curve per shape (attention keyed with context 0).
    curves: HashMap<OpShape, Curve>,
    /// Shapes of each family sorted by size, for interpolation over width.
    families: HashMap<Family, Vec<(f64, OpShape)>>,
    calibration: Option<Calibration>,
}

/// Distinct shapes one model is made of; models have a handful, so a fixed array suffices and
/// the hot path does not allocate.
const MAX_DISTINCT: usize = 16;

impl Lut {
    /// Builds the table. A later entry for the same shape replaces an earlier one.
    pub fn from_entries(
        device: impl Into<String>,
        setting: DeploymentSetting,
        entries: impl IntoIterator<Item = LutEntry>,
    ) -> Lut {
        let mut by_shape: HashMap<OpShape, LutEntry> = HashMap::new();
        for e in entries {
            if e.median_ms.is_finite() && e.median_ms >= 0.0 {
                by_shape.insert(e.op, e);
            }
        }
        let mut entries: Vec<LutEntry> = by_shape.into_values().collect();
        entries.sort_by_key(|e| e.op);
        let mut curves: HashMap<OpShape, Curve> = HashMap::new();
        for e in &entries {
            let context = f64::from(e.op.context().unwrap_or(0));
            curves.entry(e.op.without_context()).or_default().points.push((context, e.median_ms));
        }
        let mut families: HashMap<Family, Vec<(f64, OpShape)>> = HashMap::new();
        for (shape, curve) in &mut curves {
            curve.points.sort_by(|a, b| a.0.total_cmp(&b.0));
            families.entry(shape.family()).or_default().push((shape.size(), *shape));
        }
        for members in families.values_mut() {
            members.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            // Two shapes of one size would make interpolation divide by zero; keep the first.
            members.dedup_by(|a, b| a.0 == b.0);
        }
        Lut { device: device.into(), setting, entries, curves, families, calibration: None }
    }

    /// Applies `calibration` to every estimate from now on.
    pub fn with_calibration(mut self, calibration: Calibration) -> Lut {
        self.calibration = Some(calibration);
        self
    }

    pub fn device(&self) -> &str {
        &self.device
    }

    pub fn setting(&self) -> &DeploymentSetting {
        &self.setting
    }

    pub fn calibration(&self) -> Option<&Calibration> {
        self.calibration.as_ref()
    }

    /// The entries, sorted by shape.
    pub fn entries(&self) -> &[LutEntry] {
        &self.entries
    }

    /// Estimated decode latency of `model` (the steps after the prompt) under this table's setting.
    pub fn estimate(&self, model: &ModelSpec) -> Result<Estimate, Unscorable> {
        let (first, last) = decode_contexts(model, &self.setting);
        // Group layers by (shape, window): identical sub-layers cost the same.
        let mut distinct: [(OpShape, Option<u32>, u32); MAX_DISTINCT] =
            [(OpShape::Ffn { hidden: 0, intermediate: 0 }, None, 0); MAX_DISTINCT];
        let mut used = 0;
        let mut overflow: Vec<(OpShape, Option<u32>, u32)> = Vec::new();
        for layer in &model.layers {
            let shape = OpShape::of_layer(layer, model.hidden_size, 0);
            let window = match layer {
                LayerSpec::Attention(a) => a.sliding_window,
                _ => None,
            };
            if let Some(slot) = distinct[..used].iter_mut().find(|d| d.0 == shape && d.1 == window) {
                slot.2 += 1;
            } else if used < MAX_DISTINCT {
                distinct[used] = (shape, window, 1);
                used += 1;
            } else if let Some(slot) = overflow.iter_mut().find(|d| d.0 == shape && d.1 == window) {
                slot.2 += 1;
            } else {
                overflow.push((shape, window, 1));
            }
        }
        let mut by_group = [0.0; GROUPS.len()];
        let mut extrapolated = false;
        let mut missing = false;
        let head = OpShape::embed_head(model);
        for &(shape, window, count) in distinct[..used].iter().chain(&overflow).chain([&(head, None, 1)]) {
            match self.decode_cost(shape, window, first, last) {
                Some((ms, extra)) => {
                    by_group[group_of(&shape)] += f64::from(count) * ms;
                    extrapolated |= extra;
                }
                None => missing = true,
            }
        }
        if missing {
            return Err(self.missing_for(model));
        }
        let raw =
            RawCost { total_ms: by_group.iter().sum(), by_group_ms: by_group, layers: model.layers.len() };
        let latency_ms = match &self.calibration {
            Some(c) => c.apply(&raw),
            None => raw.total_ms,
        };
        Ok(Estimate { latency_ms, raw_ms: raw.total_ms, raw_by_group_ms: by_group, extrapolated })
    }

    /// The uncalibrated decode cost of each of `model`'s sub-layers and of its embedding/head:
    /// which layers cost the latency. A calibration adjusts the total, not the parts.
    pub fn breakdown(&self, model: &ModelSpec) -> Result<Breakdown, Unscorable> {
        let (first, last) = decode_contexts(model, &self.setting);
        let mut layers_ms = Vec::with_capacity(model.layers.len());
        for layer in &model.layers {
            let shape = OpShape::of_layer(layer, model.hidden_size, 0);
            let window = match layer {
                LayerSpec::Attention(a) => a.sliding_window,
                _ => None,
            };
            match self.decode_cost(shape, window, first, last) {
                Some((ms, _)) => layers_ms.push(ms),
                None => return Err(self.missing_for(model)),
            }
        }
        let embed_head_ms = match self.decode_cost(OpShape::embed_head(model), None, first, last) {
            Some((ms, _)) => ms,
            None => return Err(self.missing_for(model)),
        };
        Ok(Breakdown { layers_ms, embed_head_ms })
    }

    /// The shapes `model` needs that this table can neither look up nor interpolate.
    fn missing_for(&self, model: &ModelSpec) -> Unscorable {
        let (first, last) = decode_contexts(model, &self.setting);
        let mut missing = Vec::new();
        for layer in &model.layers {
            let (window, contexts) = match layer {
                LayerSpec::Attention(a) => (a.sliding_window, context_grid(first, last, a.sliding_window)),
                _ => (None, vec![0]),
            };
            let shape = OpShape::of_layer(layer, model.hidden_size, 0);
            if self.decode_cost(shape, window, first, last).is_none() {
                for context in contexts {
                    let needed = OpShape::of_layer(layer, model.hidden_size, context);
                    if !missing.contains(&needed) {
                        missing.push(needed);
                    }
                }
            }
        }
        let head = OpShape::embed_head(model);
        if self.decode_cost(head, None, first, last).is_none() {
            missing.push(head);
        }
        Unscorable { missing }
    }

    /// Total cost of one sub-layer (or the embedding/head) over the decode steps whose contexts
    /// are `first..=last`, and whether anything was extrapolated. `None`: nothing to go on.
    fn decode_cost(&self, shape: OpShape, window: Option<u32>, first: u32, last: u32) -> Option<(f64, bool)> {
        if let Some(curve) = self.curves.get(&shape) {
            return Some(self.curve_cost(curve, shape, window, first, last));
        }
        // Interpolate over width between the nearest profiled shapes of the family.
        let members = self.families.get(&shape.family())?;
        if members.len() < 2 {
            return None;
        }
        let size = shape.size();
        let i = members.partition_point(|m| m.0 <= size).clamp(1, members.len() - 1);
        let ((s0, k0), (s1, k1)) = (members[i - 1], members[i]);
        let (c0, e0) = self.curve_cost(self.curves.get(&k0)?, k0, window, first, last);
        let (c1, e1) = self.curve_cost(self.curves.get(&k1)?, k1, window, first, last);
        let outside = size < s0 || size > s1;
        let cost = c0 + (c1 - c0) * (size - s0) / (s1 - s0);
        Some((cost.max(0.0), e0 || e1 || outside))
    }

    fn curve_cost(
        &self,
        curve: &Curve,
        shape: OpShape,
        window: Option<u32>,
        first: u32,
        last: u32,
    ) -> (f64, bool) {
        if last < first {
            return (0.0, false);
        }
        if !matches!(shape, OpShape::Attention { .. }) {
            return (f64::from(last - first + 1) * curve.points[0].1, false);
        }
        // A step at context `c` attends over `min(c, window)` keys.
        let (total, lo, hi) = match window {
            Some(w) if w < first => (f64::from(last - first + 1) * curve.at(f64::from(w)), w, w),
            Some(w) if w < last => {
                (curve.sum(first, w) + f64::from(last - w) * curve.at(f64::from(w)), first, w)
            }
            _ => (curve.sum(first, last), first, last),
        };
        let extrapolated = f64::from(lo) < curve.min_context() || f64::from(hi) > curve.max_context();
        (total, extrapolated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(points: &[(f64, f64)]) -> Curve {
        Curve { points: points.to_vec() }
    }

    #[test]
    fn curve_sum_equals_the_sum_of_its_values_at_every_integer() {
        let c = curve(&[(10.0, 1.0), (20.0, 3.0), (40.0, 4.0)]);
        for (a, b) in [(10, 40), (1, 50), (15, 25), (20, 20), (33, 60)] {
            let direct: f64 = (a..=b).map(|x| c.at(f64::from(x))).sum();
            assert!((c.sum(a, b) - direct).abs() < 1e-9, "{a}..={b}: {} vs {direct}", c.sum(a, b));
        }
        assert_eq!(c.at(15.0), 2.0);
        assert_eq!(c.at(50.0), 4.5, "extends the last segment");
    }
}
