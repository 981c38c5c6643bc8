//! The LUT profiler: measures operator shapes in decode mode on this device.
//!
//! Each sub-layer shape is built as a stack of identical pre-norm residual sub-layers
//! (`x + op(rmsnorm(x))`, separate weights, so they stream from memory as in a real model), their
//! caches or states filled by a prefill (attention up to the shape's context), and then timed over
//! a few decode steps per repeat after untimed warm-up repeats; the per-layer step times give the
//! median, p10 and p90. The embedding/head shape is timed the way the
//! decode benchmark steps: embedding, final norm, logits, greedy pick and reading the token back.
//! The output is a plain list of [`LutEntry`]s, so the caller decides where it goes (the local
//! store in embedded mode, the coordinator over HTTP in service mode).
//!
//! [`fingerprint`] names what the latencies describe: backend, device model and thread count.

use std::time::Instant;

use crate::kernels::Kernels;
use api::DeviceInfo;
use burn::prelude::*;
use burn::tensor::Distribution;
use lut::{DeploymentSetting, LutEntry, OpShape};
use search_space::ops::{AttentionSpec, DeltaNetSpec, FfnSpec, Mamba2Spec};
use search_space::{LayerSpec, ModelSpec};
use serde_json::json;

use crate::backend::{Cpu, CpuDevice, describe};
use crate::model::lm::{HybridLm, LayerState, Operator};
use crate::run::{DeviceChoice, RunError};

/// How long to measure each shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProfileConfig {
    /// Untimed repeats first (allocations, caches, lazy initialisation).
    pub warmup: usize,
    /// Timed repeats; each gives one per-step time.
    pub repeats: usize,
    /// Decode steps per repeat, averaged into that repeat's per-step time. Attention's context
    /// advances by one each step, so its cache is filled to centre the steps on the shape's
    /// context.
    pub steps_per_repeat: usize,
    /// Copies of a sub-layer (separate weights) stepped through in turn, the time divided among
    /// them. Alone, a layer's weights stay in the CPU's caches between steps; in a model, the other
    /// layers evict them and every step reads them from memory again. A stack about as deep as a
    /// searched model reproduces that (measured here: a lone FFN at hidden 256 looked 3-4x faster
    /// than the same FFN inside a 23-layer model).
    pub stack: usize,
}

impl Default for ProfileConfig {
    fn default() -> Self {
        Self { warmup: 3, repeats: 15, steps_per_repeat: 8, stack: 24 }
    }
}

/// Profiles every shape under `setting` on `device`, calling `progress(i, shape)` before each.
pub fn profile(
    shapes: &[OpShape],
    setting: &DeploymentSetting,
    config: ProfileConfig,
    device: DeviceChoice,
    mut progress: impl FnMut(usize, &OpShape),
) -> Result<Vec<LutEntry>, RunError> {
    if config.repeats == 0 || config.steps_per_repeat == 0 || config.stack == 0 {
        return Err(RunError::Profile("repeats, steps per repeat and stack must be at least 1".into()));
    }
    let batch = setting.batch_size as usize;
    if batch == 0 {
        return Err(RunError::Profile("batch size must be at least 1".into()));
    }
    let mut out = Vec::with_capacity(shapes.len());
    for (i, shape) in shapes.iter().enumerate() {
        progress(i, shape);
        let times = match device {
            DeviceChoice::Cpu => measure::<Cpu>(shape, batch, config, &CpuDevice::default())?,
            #[cfg(feature = "cuda")]
            DeviceChoice::Cuda(i) => {
                measure::<crate::backend::Cuda>(shape, batch, config, &crate::backend::cuda_device(i))?
            }
            #[cfg(not(feature = "cuda"))]
            DeviceChoice::Cuda(_) => return Err(RunError::NoCuda),
        };
        out.push(summarise(*shape, times));
    }
    Ok(out)
}

/// Median, p10 and p90 (nearest rank) of per-step times.
fn summarise(op: OpShape, mut times_ms: Vec<f64>) -> LutEntry {
    times_ms.sort_by(f64::total_cmp);
    let at = |q: f64| times_ms[((times_ms.len() - 1) as f64 * q).round() as usize];
    LutEntry { op, median_ms: at(0.5), p10_ms: at(0.1), p90_ms: at(0.9), repeats: times_ms.len() as u32 }
}

/// The model of `copies` identical sub-layers of `shape` (none for the embedding/head).
pub fn model_of(shape: &OpShape, copies: usize) -> ModelSpec {
    let layer = match *shape {
        OpShape::Attention { heads, kv_heads, head_dim, .. } => Some(LayerSpec::Attention(AttentionSpec {
            num_heads: heads,
            num_kv_heads: kv_heads,
            head_dim,
            sliding_window: None,
            rope_theta: 10_000.0,
        })),
        OpShape::Mamba2 { d_inner, heads, head_dim, state, groups, conv, .. } => {
            Some(LayerSpec::Mamba2(Mamba2Spec {
                d_inner,
                num_heads: heads,
                head_dim,
                state_size: state,
                groups,
                conv_kernel: conv,
            }))
        }
        OpShape::DeltaNet { heads, head_dim, conv, .. } => {
            Some(LayerSpec::DeltaNet(DeltaNetSpec { num_heads: heads, head_dim, conv_kernel: conv }))
        }
        OpShape::GatedDeltaNet { heads, head_dim, conv, .. } => {
            Some(LayerSpec::GatedDeltaNet(DeltaNetSpec { num_heads: heads, head_dim, conv_kernel: conv }))
        }
        OpShape::Ffn { intermediate, .. } => {
            Some(LayerSpec::Ffn(FfnSpec { intermediate_size: intermediate }))
        }
        OpShape::EmbedHead { .. } => None,
    };
    let (vocab, tied) = match *shape {
        OpShape::EmbedHead { vocab, tied, .. } => (vocab, tied),
        // The sub-layer is timed alone; a small vocabulary keeps the prefill that fills its state
        // cheap.
        _ => (16, true),
    };
    ModelSpec {
        hidden_size: shape.hidden(),
        vocab_size: vocab,
        tied_embeddings: tied,
        meta_tokens: 0,
        layers: layer.map(|l| vec![l; copies]).unwrap_or_default(),
    }
}

/// What the burn operators need beyond positive dimensions (they panic otherwise).
fn check_shape(shape: &OpShape) -> Result<(), String> {
    let spec = model_of(shape, 1);
    let positive = match *shape {
        OpShape::EmbedHead { hidden, vocab, .. } => hidden > 0 && vocab > 0,
        _ => spec.validate().is_ok(),
    };
    if !positive {
        return Err("every dimension must be at least 1".into());
    }
    match *shape {
        OpShape::Attention { heads, kv_heads, head_dim, .. }
            if heads % kv_heads != 0 || head_dim % 2 != 0 =>
        {
            Err("kv_heads must divide heads and head_dim must be even".into())
        }
        OpShape::Mamba2 { d_inner, heads, head_dim, groups, .. }
            if d_inner != heads * head_dim || heads % groups != 0 =>
        {
            Err("d_inner must equal heads × head_dim and groups must divide heads".into())
        }
        _ => Ok(()),
    }
}

/// Per-step times (ms) of one shape, one per timed repeat.
fn measure<B: Kernels>(
    shape: &OpShape,
    batch: usize,
    config: ProfileConfig,
    device: &B::Device,
) -> Result<Vec<f64>, RunError> {
    check_shape(shape).map_err(|reason| RunError::Profile(format!("cannot profile {shape}: {reason}")))?;
    let spec = model_of(shape, config.stack);
    let model = HybridLm::<B>::init_seeded(&spec, 0, device);
    let steps = config.steps_per_repeat;
    // Keys already cached when the timed steps start: step `s` then attends over
    // `filled + s + 1` keys, centred on the shape's context.
    let filled = match shape.context() {
        Some(context) => (context as usize).saturating_sub(1 + steps / 2).max(1),
        None => 1,
    };
    let prompt = Tensor::<B, 2>::random([batch, filled], Distribution::Uniform(0.0, 1.0), device)
        .mul_scalar(f64::from(spec.vocab_size))
        .int()
        .clamp(0, i64::from(spec.vocab_size) - 1);
    let (logits, state) = model.prefill(prompt);
    let first_token = logits.argmax(1).squeeze_dim::<1>(1);
    let x0 =
        Tensor::<B, 2>::random([batch, spec.hidden_size as usize], Distribution::Normal(0.0, 1.0), device);
    let mut times = Vec::with_capacity(config.repeats);
    for run in 0..config.warmup + config.repeats {
        let mut state = state.clone();
        let start = Instant::now();
        if !model.layers.is_empty() {
            let mut x = x0.clone();
            for _ in 0..steps {
                for (layer, layer_state) in model.layers.iter().zip(state.layers.iter_mut()) {
                    let h = layer.norm.forward(x.clone());
                    let h = match (&layer.op, layer_state) {
                        (Operator::Attention(a), LayerState::Attention(cache)) => a.step(h, cache),
                        (Operator::Mamba2(m), LayerState::Mamba2(s)) => m.step(h, s),
                        (Operator::DeltaNet(d), LayerState::Delta(s)) => d.step(h, s),
                        (Operator::GatedDeltaNet(d), LayerState::Delta(s)) => d.step(h, s),
                        (Operator::Ffn(f), _) => f.forward(h),
                        _ => return Err(RunError::Profile(format!("{shape}: layer and state disagree"))),
                    };
                    x = x + h;
                }
            }
            // Reading the result back makes the device finish the work being timed.
            let _ = x.into_data();
        } else {
            let mut next = first_token.clone();
            for _ in 0..steps {
                let logits = model.step(next, &mut state);
                next = logits.argmax(1).squeeze_dim::<1>(1);
                let _ = next.clone().into_data();
            }
        }
        if run >= config.warmup {
            let layers = model.layers.len().max(1);
            times.push(start.elapsed().as_secs_f64() * 1e3 / (steps * layers) as f64);
        }
    }
    Ok(times)
}

/// Sizes the CPU backend's thread pool (rayon's global pool, which flex's kernels and matrix
/// products run on); call once, before any computation. Without it the pool has one thread per
/// available core. Measuring with one thread on a small shared machine keeps other tenants'
/// work and the scheduler out of the timings.
pub fn set_compute_threads(threads: usize) -> Result<(), RunError> {
    if threads == 0 {
        return Err(RunError::Profile("the thread count must be at least 1".into()));
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .map_err(|e| RunError::Profile(format!("cannot size the compute thread pool: {e}")))
}

/// Threads the CPU backend computes with.
pub fn compute_threads() -> usize {
    rayon::current_num_threads()
}

/// What the latencies measured here describe: backend, device model and the number of threads
/// the backend computes with. Two machines with the same fingerprint are expected to share a
/// LUT; a table profiled with `--threads 1` is a different device from one profiled with all
/// cores.
pub fn fingerprint(device: DeviceChoice) -> Result<DeviceInfo, RunError> {
    let threads = compute_threads();
    match device {
        DeviceChoice::Cpu => {
            let backend = describe::<Cpu>(&CpuDevice::default());
            let model = cpu_model().unwrap_or_else(|| std::env::consts::ARCH.to_owned());
            Ok(DeviceInfo {
                fingerprint: format!("cpu/{backend}/{model}/{threads} threads"),
                name: format!("{model} ({threads} threads)"),
                kind: "cpu".into(),
                info: json!({ "backend": backend, "cpu": model, "threads": threads }),
            })
        }
        #[cfg(feature = "cuda")]
        DeviceChoice::Cuda(i) => {
            let backend = describe::<crate::backend::Cuda>(&crate::backend::cuda_device(i));
            let model = gpu_model(i).unwrap_or_else(|| format!("cuda:{i}"));
            Ok(DeviceInfo {
                fingerprint: format!("cuda/{backend}/{model}"),
                name: model.clone(),
                kind: "cuda".into(),
                info: json!({ "backend": backend, "gpu": model, "index": i, "host_threads": threads }),
            })
        }
        #[cfg(not(feature = "cuda"))]
        DeviceChoice::Cuda(_) => Err(RunError::NoCuda),
    }
}

/// The CPU's model name from `/proc/cpuinfo` (Linux); `None` elsewhere.
fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim()))
        .map(str::to_owned)
}

/// The GPU's model from the NVIDIA driver's `/proc` entries, in PCI order like CUDA's default.
#[cfg(feature = "cuda")]
fn gpu_model(index: usize) -> Option<String> {
    let mut dirs: Vec<_> =
        std::fs::read_dir("/proc/driver/nvidia/gpus").ok()?.flatten().map(|e| e.path()).collect();
    dirs.sort();
    let text = std::fs::read_to_string(dirs.get(index)?.join("information")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("Model:")).map(|m| m.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use search_space::presets::tiny_settings;

    #[test]
    fn profiling_a_models_shapes_gives_one_ordered_positive_entry_per_shape() {
        let mut settings = tiny_settings();
        settings.hidden_size = 64;
        let model = search_space::Architecture::from_layers(
            settings,
            ["A", "F", "M2", "D", "GD"].iter().map(|c| c.parse().expect("valid code")).collect(),
        )
        .expand()
        .expect("valid model");
        let setting: DeploymentSetting = "batch=1,prompt=8,gen=8,dtype=f32".parse().expect("valid setting");
        let shapes = lut::shapes_for(&model, &setting);
        let config = ProfileConfig { warmup: 1, repeats: 3, steps_per_repeat: 2, stack: 2 };
        let mut seen = Vec::new();
        let entries = profile(&shapes, &setting, config, DeviceChoice::Cpu, |i, _| seen.push(i)).unwrap();
        assert_eq!(seen, (0..shapes.len()).collect::<Vec<_>>());
        assert_eq!(entries.iter().map(|e| e.op).collect::<Vec<_>>(), shapes);
        for e in &entries {
            assert!(e.median_ms > 0.0 && e.p10_ms <= e.median_ms && e.median_ms <= e.p90_ms, "{e:?}");
            assert_eq!(e.repeats, 3);
        }
        // The table built from them scores the model.
        let table = lut::Lut::from_entries("test", setting, entries);
        assert!(table.estimate(&model).is_ok());
    }

    #[test]
    fn the_model_of_a_shape_has_that_shape() {
        let shape = OpShape::Ffn { hidden: 64, intermediate: 192 };
        let spec = model_of(&shape, 3);
        assert_eq!(spec.layers.len(), 3);
        assert!(spec.layers.iter().all(|l| OpShape::of_layer(l, 64, 0) == shape));
        let head = OpShape::EmbedHead { hidden: 64, vocab: 256, tied: false };
        assert_eq!(OpShape::embed_head(&model_of(&head, 3)), head);
        assert!(model_of(&head, 3).layers.is_empty());
    }

    #[test]
    fn the_cpu_fingerprint_names_backend_model_and_threads() {
        let info = fingerprint(DeviceChoice::Cpu).unwrap();
        assert_eq!(info.kind, "cpu");
        assert!(info.fingerprint.starts_with("cpu/flex on Cpu/"), "{}", info.fingerprint);
        assert!(info.fingerprint.ends_with(" threads"), "{}", info.fingerprint);
        assert!(info.info["threads"].as_u64().is_some_and(|t| t >= 1));
    }
}
