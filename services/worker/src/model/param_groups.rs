//! Parameter groups for weight decay, and AdamW's decoupled decay applied to one group only.
//!
//! The reference recipes decay the weight matrices and nothing else. Exempt are:
//! - `A_log`, `D` and `dt_bias` of Mamba2 and `A_log`, `dt_bias` of Gated DeltaNet, which the
//!   reference modules mark `_no_weight_decay` (state-spaces/mamba `mamba_ssm/modules/mamba2.py`,
//!   fla `fla/layers/gated_deltanet.py`): decaying them would pull every head's decay rate and
//!   step size towards one fixed value rather than towards "small";
//! - biases, which fla's trainer groups out by name (names ending in `bias`, as the comment on
//!   `dt_bias` in `fla/layers/gated_deltanet.py` notes), and norm gains (every RMSNorm weight),
//!   as in the usual GPT recipe;
//! - the token embeddings and the meta tokens: rows that only the tokens present in a batch
//!   update, which decay would shrink every step whether they were seen or not.
//!
//! burn 0.21's `AdamW` applies one decay to every parameter, so [`adamw_step`] runs the
//! optimiser with its own decay at zero and first applies `p ← p·(1 − lr·wd)` to the decayed
//! group itself. That is PyTorch's AdamW order (decay from the current weights, then the Adam
//! update), and burn's own AdamW computes the same thing (`p·(1 − lr·wd) − lr·update`); the
//! Adam update does not depend on the weights, so only the group changes. As in PyTorch, a
//! parameter without a gradient is neither decayed nor updated.
//!
//! Groups are found by walking the module with burn's visitor, which names each parameter by
//! its field and the type of the module that holds it (`gamma` of `RmsNorm`, `a_log` of
//! `Mamba2`), so a new layer is classified by the same rules without a list to keep.

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

/// Whether the parameter `name` of a module of type `owner` (burn's type name, without
/// `Struct:`) is weight-decayed.
pub fn is_decayed(owner: &str, name: &str) -> bool {
    !matches!(
        (owner, name),
        (_, "bias")
            | ("RmsNorm" | "GatedRmsNorm", _)
            | ("Mamba2", "a_log" | "d" | "dt_bias")
            | ("GatedDeltaNet", "a_log" | "dt_bias")
            | ("Embedding", _)
            | ("TokenEmbedding", "meta")
    )
}

/// Where the walk is: the field names from the root and the type holding the innermost one.
#[derive(Default)]
struct Path {
    names: Vec<String>,
    owners: Vec<String>,
}

impl Path {
    fn enter(&mut self, name: &str, container: &str) {
        self.names.push(name.to_owned());
        self.owners.push(container.strip_prefix("Struct:").unwrap_or(container).to_owned());
    }

    fn exit(&mut self) {
        self.names.pop();
        self.owners.pop();
    }

    /// Whether the parameter at this point of the walk is decayed.
    fn decayed(&self) -> bool {
        match (self.owners.last(), self.names.last()) {
            (Some(owner), Some(name)) => is_decayed(owner, name),
            // A bare parameter as the root module: a weight.
            _ => true,
        }
    }
}

/// Every float parameter of `module` with its dotted path (`layers.2.op.Mamba2.a_log`) and
/// whether it is decayed, in the module's order.
pub fn decay_groups<B: Backend, M: Module<B>>(module: &M) -> Vec<(String, bool)> {
    struct Collect {
        path: Path,
        found: Vec<(String, bool)>,
    }
    impl<B: Backend> ModuleVisitor<B> for Collect {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.enter(name, container_type);
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.exit();
        }
        fn visit_float<const D: usize>(&mut self, _param: &Param<Tensor<B, D>>) {
            self.found.push((self.path.names.join("."), self.path.decayed()));
        }
    }
    let mut collect = Collect { path: Path::default(), found: Vec::new() };
    module.visit(&mut collect);
    collect.found
}

/// Ids of the parameters [`is_decayed`] exempts.
pub fn exempt_ids<B: Backend, M: Module<B>>(module: &M) -> Vec<ParamId> {
    struct Collect {
        path: Path,
        ids: Vec<ParamId>,
    }
    impl<B: Backend> ModuleVisitor<B> for Collect {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.enter(name, container_type);
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if !self.path.decayed() {
                self.ids.push(param.id);
            }
        }
    }
    let mut collect = Collect { path: Path::default(), ids: Vec::new() };
    module.visit(&mut collect);
    collect.ids
}

/// Multiplies every decayed parameter that has a gradient in `grads` by `1 − lr·weight_decay`.
/// The rescaling happens outside the autodiff graph: each result is a fresh leaf, trainable
/// exactly when the old weight was.
pub fn decay_weights<B: AutodiffBackend, M: Module<B>>(
    module: M,
    grads: &GradientsParams,
    lr: f64,
    weight_decay: f64,
) -> M {
    struct Decay<'a> {
        path: Path,
        grads: &'a GradientsParams,
        factor: f64,
    }
    impl<B: AutodiffBackend> ModuleMapper<B> for Decay<'_> {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.enter(name, container_type);
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.exit();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            if !self.path.decayed() || self.grads.get::<B::InnerBackend, D>(param.id).is_none() {
                return param;
            }
            let factor = self.factor;
            param.map(|w| {
                let trainable = w.is_require_grad();
                let leaf = Tensor::from_inner(w.inner().mul_scalar(factor));
                if trainable { leaf.require_grad() } else { leaf }
            })
        }
    }
    if weight_decay == 0.0 {
        return module;
    }
    module.map(&mut Decay { path: Path::default(), grads, factor: 1.0 - lr * weight_decay })
}

/// One AdamW step with decoupled weight decay on the decayed group only: [`decay_weights`],
/// then `optimizer` (built with a weight decay of zero) on every parameter.
pub fn adamw_step<B, M, O>(
    optimizer: &mut O,
    lr: f64,
    weight_decay: f64,
    module: M,
    grads: GradientsParams,
) -> M
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    let module = decay_weights(module, &grads, lr, weight_decay);
    optimizer.step(lr, module, grads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{CpuAutodiff, CpuDevice};
    use crate::model::lm::HybridLm;
    use crate::train::{TrainConfig, Trainer};
    use burn::optim::AdamWConfig;
    use search_space::presets::tiny_settings;
    use search_space::{Architecture, ModelSpec};
    use std::collections::BTreeMap;

    type B = CpuAutodiff;

    /// Every operator, meta tokens, an untied head (a matrix that reads the residual stream,
    /// decayed like the others).
    fn every_operator() -> ModelSpec {
        let mut settings = tiny_settings();
        settings.tied_embeddings = false;
        let layers = ["A", "F", "M2", "F", "D", "F", "GD", "F"].iter().map(|c| c.parse().unwrap()).collect();
        Architecture::from_layers(settings, layers).expand().unwrap()
    }

    /// Each parameter's values, by path.
    fn values(model: &HybridLm<B>) -> BTreeMap<String, Vec<f32>> {
        struct Collect {
            path: Path,
            found: BTreeMap<String, Vec<f32>>,
        }
        impl ModuleVisitor<B> for Collect {
            fn enter_module(&mut self, name: &str, container_type: &str) {
                self.path.enter(name, container_type);
            }
            fn exit_module(&mut self, _name: &str, _container_type: &str) {
                self.path.exit();
            }
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                let v = param.val().into_data().convert::<f32>().to_vec::<f32>().unwrap();
                self.found.insert(self.path.names.join("."), v);
            }
        }
        let mut collect = Collect { path: Path::default(), found: BTreeMap::new() };
        model.visit(&mut collect);
        collect.found
    }

    /// The path with layer indices dropped, `op.Mamba2.a_log`, to name a kind of parameter.
    fn kind(path: &str) -> String {
        path.split('.')
            .filter(|p| p.parse::<usize>().is_err() && *p != "layers")
            .collect::<Vec<_>>()
            .join(".")
    }

    #[test]
    fn the_exempt_group_is_ssm_parameters_norm_gains_biases_embeddings_and_meta_tokens() {
        let device = CpuDevice::default();
        let model = HybridLm::<B>::init_seeded(&every_operator(), 0, &device);
        let groups = decay_groups(&model);
        let mut exempt: Vec<String> = groups.iter().filter(|(_, d)| !d).map(|(p, _)| kind(p)).collect();
        exempt.sort();
        exempt.dedup();
        let want = [
            "embedding.meta",
            "embedding.tokens.weight",
            "final_norm.gamma",
            "norm.gamma",
            "op.GatedDeltaNet.a_log",
            "op.GatedDeltaNet.dt_bias",
            "op.GatedDeltaNet.o_norm.weight",
            "op.Mamba2.a_log",
            "op.Mamba2.conv.bias",
            "op.Mamba2.d",
            "op.Mamba2.dt_bias",
            "op.Mamba2.norm.weight",
            "op.DeltaNet.o_norm.gamma",
        ];
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(exempt, want);
        // Every matrix is decayed: projections, conv filters, the untied head.
        for (path, decayed) in &groups {
            let matrix =
                path.ends_with("proj.weight") || path.ends_with("conv.weight") || path.contains("head");
            assert!(!matrix || *decayed, "{path} is a matrix and must be decayed");
        }
        assert_eq!(exempt_ids(&model).len(), groups.iter().filter(|(_, d)| !d).count());
    }

    #[test]
    fn with_a_zero_gradient_a_step_shrinks_exactly_the_decayed_weights() {
        let device = CpuDevice::default();
        let model = HybridLm::<B>::init_seeded(&every_operator(), 3, &device);
        let before = values(&model);
        // A zero gradient for every parameter: Adam's update is 0 / (0 + ε) = 0, so what moves
        // is the decay alone.
        struct Zeros(GradientsParams);
        impl ModuleVisitor<B> for Zeros {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                self.0.register::<<B as AutodiffBackend>::InnerBackend, D>(
                    param.id,
                    param.val().inner().zeros_like(),
                );
            }
        }
        let mut zeros = Zeros(GradientsParams::new());
        model.visit(&mut zeros);
        let (lr, wd) = (0.01, 0.1);
        let mut optimizer = AdamWConfig::new().with_weight_decay(0.0).init::<B, HybridLm<B>>();
        let model = adamw_step(&mut optimizer, lr, wd, model, zeros.0);
        let after = values(&model);
        let shrink = (1.0 - lr * wd) as f32;
        let groups: BTreeMap<String, bool> = decay_groups(&model).into_iter().collect();
        assert_eq!(groups.len(), before.len());
        for (path, old) in &before {
            let new = &after[path];
            let want: Vec<f32> =
                if groups[path] { old.iter().map(|v| v * shrink).collect() } else { old.clone() };
            let err = new.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(err <= 1e-6, "{path}: off by {err} (decayed: {})", groups[path]);
            if groups[path] {
                assert_ne!(new, old, "{path} should have shrunk");
            }
        }
        for name in ["a_log", "dt_bias", ".d", "norm", "embedding"] {
            assert!(before.keys().any(|p| p.contains(name) && !groups[p]), "no exempt {name} checked");
        }
    }

    #[test]
    fn the_trainer_decays_only_the_decayed_group() {
        let device = CpuDevice::default();
        let text: Vec<u32> =
            testdata::tinyshakespeare_bytes().into_iter().take(4096).map(u32::from).collect();
        let spec = every_operator();
        let config = TrainConfig {
            tokens: 2 * 32,
            seq_len: 32,
            batch_size: 2,
            lr: 1e-2,
            warmup_fraction: 0.0,
            weight_decay: 0.5,
            grad_clip: None,
            ..TrainConfig::default()
        };
        // One model for both runs: its tensors are immutable, each trainer steps its own copy.
        let model = HybridLm::<B>::init_seeded(&spec, 5, &device);
        let one_step = |weight_decay: f64| {
            let config = TrainConfig { weight_decay, ..config.clone() };
            let mut trainer = Trainer::new(model.clone(), &text, config, device).unwrap();
            let (_, lr) = trainer.step().expect("the text is inside the vocabulary");
            (lr, values(&trainer.model))
        };
        let initial = values(&model);
        let ((lr, decayed), (_, plain)) = (one_step(0.5), one_step(0.0));
        assert!((lr - 1e-2).abs() < 1e-12, "the one step runs at the peak rate, got {lr}");
        let groups: BTreeMap<String, bool> = decay_groups(&model).into_iter().collect();
        // Same gradients and Adam updates in both runs: they differ by lr·wd·p₀ on the decayed
        // group and not at all elsewhere.
        for (path, p0) in &initial {
            let decay = if groups[path] { lr * 0.5 } else { 0.0 };
            for ((a, b), p) in plain[path].iter().zip(&decayed[path]).zip(p0) {
                let want = decay as f32 * p;
                assert!((a - b - want).abs() <= 1e-6, "{path}: {a} − {b} ≠ {want}");
            }
        }
    }
}
