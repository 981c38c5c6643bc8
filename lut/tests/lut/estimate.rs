use lut::{Calibration, DeploymentSetting, Lut, LutEntry, OpShape, shapes_for};
use search_space::presets::tiny_settings;
use search_space::{Architecture, ModelSettings, ModelSpec, OpKind};

fn setting() -> DeploymentSetting {
    // Meta tokens 0 below, so decode steps attend over 11..=20 keys.
    "batch=1,prompt=10,gen=10,dtype=f32".parse().expect("valid setting")
}

fn settings(hidden: u32, window: Option<u32>) -> ModelSettings {
    let mut s = tiny_settings().with_hidden_size(hidden);
    s.meta_tokens = 0;
    s.attention.sliding_window = window;
    s
}

fn model(hidden: u32, window: Option<u32>, pattern: &str) -> ModelSpec {
    let ops: Vec<OpKind> = pattern.split_whitespace().map(|c| c.parse().expect("valid code")).collect();
    Architecture::from_layers(settings(hidden, window), ops).expand().expect("valid model")
}

fn entry(op: OpShape, median_ms: f64) -> LutEntry {
    LutEntry { op, median_ms, p10_ms: median_ms, p90_ms: median_ms, repeats: 5 }
}

fn ffn(hidden: u32) -> OpShape {
    OpShape::of_layer(&model(hidden, None, "F").layers[0], hidden, 0)
}

fn head(hidden: u32) -> OpShape {
    OpShape::embed_head(&model(hidden, None, "F"))
}

fn attention(hidden: u32, context: u32) -> OpShape {
    OpShape::of_layer(&model(hidden, None, "A").layers[0], hidden, context)
}

#[test]
fn flat_operators_cost_steps_times_median_summed_over_layers() {
    let m = model(128, None, "F F M2 F");
    let mamba = OpShape::of_layer(&m.layers[2], 128, 0);
    let lut = Lut::from_entries(
        "cpu",
        setting(),
        [entry(ffn(128), 0.5), entry(mamba, 2.0), entry(head(128), 0.25)],
    );
    let e = lut.estimate(&m).unwrap();
    // 10 steps × (3 × 0.5 + 2.0 + 0.25)
    assert!((e.raw_ms - 37.5).abs() < 1e-9, "{e:?}");
    assert_eq!(e.latency_ms, e.raw_ms, "no calibration");
    assert!(!e.extrapolated);
}

#[test]
fn attention_is_integrated_over_every_context_not_one_step_scaled() {
    let m = model(128, None, "A");
    // Step cost 0.1 · context, profiled at the ends of the range 11..=20.
    let lut = Lut::from_entries(
        "cpu",
        setting(),
        [entry(attention(128, 11), 1.1), entry(attention(128, 20), 2.0), entry(head(128), 0.0)],
    );
    let e = lut.estimate(&m).unwrap();
    // Σ_{c=11}^{20} 0.1 c = 0.1 · 155
    assert!((e.raw_ms - 15.5).abs() < 1e-9, "{e:?}");
    assert!(!e.extrapolated);
}

#[test]
fn a_sliding_window_caps_the_context_attention_pays_for() {
    let m = model(128, Some(15), "A");
    let lut = Lut::from_entries(
        "cpu",
        setting(),
        [entry(attention(128, 11), 1.1), entry(attention(128, 20), 2.0), entry(head(128), 0.0)],
    );
    let e = lut.estimate(&m).unwrap();
    // Contexts 11..=15 at 0.1 c, then 5 steps at 15 keys: 6.5 + 5 · 1.5
    assert!((e.raw_ms - 14.0).abs() < 1e-9, "{e:?}");
}

#[test]
fn attention_outside_the_profiled_contexts_is_extrapolated_and_flagged() {
    let m = model(128, None, "A");
    let lut = Lut::from_entries(
        "cpu",
        setting(),
        [entry(attention(128, 11), 1.1), entry(attention(128, 15), 1.5), entry(head(128), 0.0)],
    );
    let e = lut.estimate(&m).unwrap();
    assert!((e.raw_ms - 15.5).abs() < 1e-9, "the line continues: {e:?}");
    assert!(e.extrapolated);
}

#[test]
fn an_unprofiled_width_is_interpolated_between_its_neighbours() {
    // FFN sizes are 3·h·i with i = 3h (multiple of 32): 128 → 384, 192 → 576, 256 → 768.
    let lut = Lut::from_entries(
        "cpu",
        setting(),
        [entry(ffn(128), 1.0), entry(ffn(256), 3.0), entry(head(128), 0.0), entry(head(256), 0.0)],
    );
    let size = |h: f64| 3.0 * h * 3.0 * h;
    let t = (size(192.0) - size(128.0)) / (size(256.0) - size(128.0));
    let want_step = 1.0 + 2.0 * t;
    let e = lut.estimate(&model(192, None, "F")).unwrap();
    assert!((e.raw_ms - 10.0 * want_step).abs() < 1e-9, "{e:?} vs {}", 10.0 * want_step);
    assert!(!e.extrapolated, "between two profiled widths");
    let wide = lut.estimate(&model(320, None, "F")).unwrap();
    assert!(wide.extrapolated, "beyond the widest profiled width");
    assert!(wide.raw_ms > 30.0);
}

#[test]
fn a_missing_shape_makes_the_model_unscorable_and_names_it() {
    let m = model(128, None, "A F M2 F");
    let lut = Lut::from_entries("cpu", setting(), [entry(ffn(128), 1.0), entry(head(128), 0.1)]);
    let err = lut.estimate(&m).unwrap_err();
    let needed = shapes_for(&m, &setting());
    let want: Vec<OpShape> = needed
        .iter()
        .copied()
        .filter(|s| matches!(s, OpShape::Attention { .. } | OpShape::Mamba2 { .. }))
        .collect();
    assert_eq!(err.missing, want);
    assert!(err.to_string().starts_with("unscorable: missing entries attention:hidden=128"), "{err}");
    // Profiling exactly what `shapes_for` names makes it scorable.
    let full = Lut::from_entries("cpu", setting(), needed.into_iter().map(|s| entry(s, 1.0)));
    assert!(full.estimate(&m).is_ok());
}

#[test]
fn calibration_is_applied_to_the_estimate() {
    let m = model(128, None, "F F");
    let lut =
        Lut::from_entries("cpu", setting(), [entry(ffn(128), 0.5), entry(head(128), 0.0)]).with_calibration(
            Calibration { scale: 2.0, per_layer_ms: 1.0, constant_ms: 3.0, samples: 9, group_scales: None },
        );
    let e = lut.estimate(&m).unwrap();
    assert!((e.raw_ms - 10.0).abs() < 1e-9);
    assert!((e.latency_ms - (2.0 * 10.0 + 2.0 + 3.0)).abs() < 1e-9, "{e:?}");
}

#[test]
fn group_scales_apply_to_each_groups_share_of_the_estimate() {
    let m = model(128, None, "F M2");
    let mamba = OpShape::of_layer(&m.layers[1], 128, 0);
    let lut = Lut::from_entries(
        "cpu",
        setting(),
        [entry(ffn(128), 0.5), entry(mamba, 2.0), entry(head(128), 0.25)],
    );
    let e = lut.estimate(&m).unwrap();
    // 10 decode steps: FFN 5.0 and the head 2.5 are dense, Mamba2 20.0.
    assert_eq!(e.raw_by_group_ms, [0.0, 20.0, 0.0, 0.0, 7.5]);
    assert!((e.raw_ms - 27.5).abs() < 1e-9);
    let calibrated = lut.with_calibration(Calibration {
        scale: 1.0,
        per_layer_ms: 0.5,
        constant_ms: 1.0,
        samples: 9,
        group_scales: Some([1.0, 1.5, 1.0, 1.0, 0.8]),
    });
    let e = calibrated.estimate(&m).unwrap();
    assert!((e.latency_ms - (1.5 * 20.0 + 0.8 * 7.5 + 0.5 * 2.0 + 1.0)).abs() < 1e-9, "{e:?}");
}

#[test]
fn the_breakdown_names_each_layers_cost_and_sums_to_the_raw_estimate() {
    let m = model(128, None, "F A F M2");
    let mamba = OpShape::of_layer(&m.layers[3], 128, 0);
    let lut = Lut::from_entries(
        "cpu",
        setting(),
        [
            entry(ffn(128), 0.5),
            entry(mamba, 2.0),
            entry(attention(128, 11), 1.1),
            entry(attention(128, 20), 2.0),
            entry(head(128), 0.25),
        ],
    );
    let b = lut.breakdown(&m).unwrap();
    // 10 steps each: FFN 0.5, attention Σ_{c=11}^{20} 0.1 c, FFN 0.5, Mamba2 2.0; head 0.25.
    let expected = [5.0, 15.5, 5.0, 20.0];
    assert_eq!(b.layers_ms.len(), 4);
    for (got, want) in b.layers_ms.iter().zip(expected) {
        assert!((got - want).abs() < 1e-9, "{:?} vs {expected:?}", b.layers_ms);
    }
    assert!((b.embed_head_ms - 2.5).abs() < 1e-9);
    assert!((b.raw_ms() - lut.estimate(&m).unwrap().raw_ms).abs() < 1e-9);
    let missing = Lut::from_entries("cpu", setting(), [entry(ffn(128), 0.5)]);
    assert!(missing.breakdown(&m).is_err(), "a missing shape makes the breakdown unscorable too");
}
