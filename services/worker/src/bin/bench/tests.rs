use std::path::PathBuf;

use burn::prelude::*;
use burn::tensor::Distribution;
use clap::Parser;
use worker::backend::{Cpu, CpuAutodiff, default_device};
use worker::model::delta_rule::Scan;
use worker::model::lm::HybridLm;
use worker::model::mamba2::Mamba2Config;

use super::args::{Args, DeviceArg};
use super::backends::{copy_weights, token_ids};
use super::naive::relative_difference;
use super::report::Spread;
use super::{MODELS, model_spec};

type B = Cpu;

fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().expect("f32 data")
}

#[test]
fn per_token_mamba2_computes_the_same_outputs_as_the_chunked_forward() {
    let device = default_device();
    B::seed(&device, 1);
    for groups in [1, 2] {
        let m = Mamba2Config::new(16, 4, 8, 6).with_groups(groups).with_chunk_size(4).init::<B>(&device);
        // 11 tokens: two whole chunks and a partial one.
        let x = Tensor::<B, 3>::random([2, 11, 16], Distribution::Normal(0.0, 1.0), &device);
        let err = relative_difference(m.forward_scan(x.clone(), Scan::PerToken), m.forward(x));
        // Measured: 7.7e-8 with one group, 2.0e-8 with two (f32 rounding of two summation orders).
        assert!(err < 1e-5, "groups {groups}: per-token off the chunked form by {err}");
    }
}

#[test]
fn copied_weights_reproduce_the_source_models_logits() {
    let device = default_device();
    let spec = model_spec(&MODELS[4].1, 128);
    B::seed(&device, 2);
    let source = HybridLm::<B>::init(&spec, &device);
    B::seed(&device, 3);
    let fresh = HybridLm::<B>::init(&spec, &device);
    let tokens = token_ids::<B>(1, 16, 256, &device);
    let before = values(fresh.forward(tokens.clone()));
    let copied = copy_weights(&source, fresh);
    let want = values(source.forward(tokens.clone()));
    assert_ne!(before, want, "differently seeded models must differ for this test to mean anything");
    assert_eq!(values(copied.forward(tokens)), want);
}

#[test]
fn copied_weights_stay_trainable_on_an_autodiff_backend() {
    let device = default_device();
    let spec = model_spec(&MODELS[0].1, 128);
    let source = HybridLm::<CpuAutodiff>::init(&spec, &device);
    let copied = copy_weights(&source, HybridLm::<CpuAutodiff>::init(&spec, &device));
    let grads = copied.forward(token_ids(1, 8, 256, &device)).square().mean().backward();
    let grad = copied.final_norm.gamma.grad(&grads);
    assert!(grad.is_some(), "a copied parameter must still receive a gradient");
}

#[test]
fn spread_reports_median_mean_and_range() {
    let s = Spread::of(vec![3.0, 1.0, 2.0, 10.0]);
    assert_eq!((s.median, s.mean, s.min, s.max), (2.5, 4.0, 1.0, 10.0));
    assert_eq!(Spread::of(vec![5.0, 1.0, 3.0]).median, 3.0);
}

#[test]
fn arguments_parse_into_a_plan_and_reject_unknown_input() {
    let parse = |s: &str| {
        Args::try_parse_from(std::iter::once("bench").chain(s.split_whitespace())).map_err(|e| e.to_string())
    };
    let defaults = parse("").expect("no arguments are valid");
    assert!(!defaults.quick && defaults.json.is_none() && defaults.corpus.is_none());
    assert!(["train", "naive", "decode", "backends"].iter().all(|s| defaults.wants(s)));
    assert_eq!(defaults.device, DeviceArg::Cpu);
    let args = parse("--quick --json out.json --sections train,decode").expect("valid arguments");
    assert!(args.quick && args.wants("train") && args.wants("decode") && !args.wants("naive"));
    assert_eq!(args.json, Some(PathBuf::from("out.json")));
    assert_eq!(args.device, DeviceArg::Cpu);
    assert!(parse("--sections train,bogus").is_err_and(|e| e.contains("unknown section \"bogus\"")));
    // As with most tools, a repeated option takes its last value.
    let again = parse("--sections train --sections decode --json a --json b").expect("valid arguments");
    assert!(again.wants("decode") && !again.wants("train") && again.json == Some(PathBuf::from("b")));
    assert!(parse("--json").is_err());
    assert!(parse("--fast").is_err());
    assert!(parse("--device tpu").is_err());
    #[cfg(not(feature = "cuda"))]
    assert!(parse("--device cuda").is_err());
    #[cfg(feature = "cuda")]
    assert_eq!(parse("--device cuda:1").map(|a| a.device), Ok(DeviceArg::Cuda(1)));
}
