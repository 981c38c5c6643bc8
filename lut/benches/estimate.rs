//! Candidate latency estimates per second from an in-memory table: the search scores every
//! proposal with the LUT, so this is the coordinator's scoring throughput per core.
//!
//! The table holds every shape of a paper-sized space (hidden 1024..=2560, the Nemotron-Flash-1B
//! settings, batch 1, prompt 512, 8k generated tokens); the candidates are 256 random genomes of
//! that space, cycled. Criterion reports time per estimate; estimates/s = 1 / that.

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use lut::{DeploymentSetting, Lut, LutEntry, shapes_for};
use search_space::presets::flash_1b_settings;
use search_space::space::rng;
use search_space::{Architecture, MixerKind, ModelSpec, SearchSpace};

fn candidates(space: &SearchSpace, count: usize) -> Vec<ModelSpec> {
    let mut r = rng(7);
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let genome = space.sample(&mut r).expect("the default space samples");
        let hidden = space.hidden_sizes[out.len() % space.hidden_sizes.len()];
        let arch = Architecture::from_genome(flash_1b_settings().with_hidden_size(hidden), genome);
        out.push(arch.expand().expect("sampled genomes expand"));
    }
    out
}

fn table(models: &[ModelSpec], setting: DeploymentSetting) -> Lut {
    let mut entries = Vec::new();
    for m in models {
        for op in shapes_for(m, &setting) {
            // Any positive cost that differs by shape: the lookups, not the values, are measured.
            let median_ms =
                0.01 + f64::from(op.hidden()) * 1e-5 + f64::from(op.context().unwrap_or(0)) * 1e-6;
            entries.push(LutEntry { op, median_ms, p10_ms: median_ms, p90_ms: median_ms, repeats: 10 });
        }
    }
    Lut::from_entries("bench", setting, entries)
}

fn estimate(c: &mut Criterion) {
    let setting: DeploymentSetting = "batch=1,prompt=512,gen=8192,dtype=bf16".parse().expect("valid setting");
    let mut space = SearchSpace::default();
    space.mixers.push(MixerKind::GatedDeltaNet);
    let models = candidates(&space, 256);
    let lut = table(&models, setting);
    assert!(models.iter().all(|m| lut.estimate(m).is_ok()), "every candidate is scorable");
    let mut group = c.benchmark_group("lut");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function("estimate_one_candidate", |b| {
        b.iter(|| {
            i = (i + 1) % models.len();
            black_box(lut.estimate(black_box(&models[i])))
        })
    });
    // Half the space's widths profiled: every other candidate interpolates over width.
    let half: Vec<LutEntry> =
        lut.entries().iter().copied().filter(|e| e.op.hidden() % 512 == 0 || e.op.hidden() == 2560).collect();
    let sparse = Lut::from_entries("bench", setting, half);
    group.bench_function("estimate_one_candidate_interpolated", |b| {
        b.iter(|| {
            i = (i + 1) % models.len();
            black_box(sparse.estimate(black_box(&models[i])))
        })
    });
    group.finish();
}

criterion_group!(benches, estimate);
criterion_main!(benches);
