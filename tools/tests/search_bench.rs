//! The search-efficiency harness against tabular benchmarks: a synthetic table whose values are
//! known (so every answer can be checked) and the committed table (a 2-seed smoke run).

#![allow(clippy::unwrap_used, reason = "the helpers that build the tables are not tests themselves")]

use std::collections::{HashMap, HashSet};
use std::path::Path;

use api::SearchSpec;
use coordinator::search::training_seed;
use coordinator::tabular::{Manifest, Table, TableGenome, TableModel, TableRun};
use search_space::OpKind;
use tools::search_bench::{algorithms, best_so_far, evals_to_reach, simulate, summarise, trace_of};

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn spec() -> SearchSpec {
    let path = repo("bench/tables/tiny-shakespeare.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    SearchSpec::from_file_text(&path.to_string_lossy(), &text).unwrap()
}

/// Every model of the spec's space, with made-up values: perplexity falls with each attention
/// layer and rises with each FFN, plus a per-seed offset; latency is the layer count.
fn synthetic_table(seed_noise: f64) -> Table {
    let spec = spec();
    let mut models: Vec<TableModel> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut genomes = Vec::new();
    for genome in spec.space.enumerate(10_000).unwrap() {
        let model = search_space::Architecture::from_genome(spec.model.with_hidden_size(64), genome.clone())
            .expand()
            .unwrap();
        let hash = model.canonical_hash().0;
        let at = *index.entry(hash.clone()).or_insert_with(|| {
            let kinds: Vec<OpKind> = model.layers.iter().map(|l| l.kind()).collect();
            let attention = kinds.iter().filter(|k| k.code() == "A").count() as f64;
            let ffn = kinds.iter().filter(|k| **k == OpKind::Ffn).count() as f64;
            let mamba = kinds.iter().filter(|k| k.code() == "M2").count() as f64;
            let base = 10.0 - 0.5 * attention - 0.2 * mamba + 0.3 * ffn;
            let runs = [1u64, 2]
                .iter()
                .map(|&s| {
                    let ppl = base + seed_noise * if s == 1 { 1.0 } else { -1.0 };
                    TableRun { seed: s, val_loss: ppl.ln(), ppl, tokens: 1000, train_seconds: 1.0 }
                })
                .collect();
            models.push(TableModel {
                arch_hash: hash.clone(),
                hidden_size: 64,
                params: model.params().total,
                layers: kinds.iter().map(|k| k.code()).collect::<Vec<_>>().join(" "),
                latency_ms: kinds.len() as f64,
                runs,
            });
            models.len() - 1
        });
        genomes.push(TableGenome { genome, hidden_size: 64, model: at });
    }
    let manifest = Manifest {
        name: "synthetic".into(),
        description: String::new(),
        spec,
        seeds: vec![1, 2],
        latency_device: "none".into(),
        command: String::new(),
        corpus_sha256: String::new(),
        created_ms: 0,
        build_seconds: 0.0,
    };
    Table::new(manifest, models, genomes)
}

#[test]
fn a_simulated_search_is_answered_by_the_table_with_the_seed_its_training_seed_picks() {
    let table = synthetic_table(0.05);
    let budget = Some(5.0);
    let (name, aging) = &algorithms()[0];
    let trace = simulate(&table, name, aging, budget, 3, 40).unwrap();
    assert_eq!(trace.evals.len(), 40);
    let distinct: HashSet<&str> = trace.evals.iter().map(|e| e.arch_hash.as_str()).collect();
    assert_eq!(distinct.len(), 40, "a model was counted twice");
    for e in &trace.evals {
        let model = table.by_hash(&e.arch_hash).unwrap();
        let pick = (training_seed(3, &e.arch_hash) % 2) as usize;
        assert_eq!(e.observed_ppl, model.runs[pick].ppl);
        assert_eq!(e.true_ppl, model.mean_ppl());
        assert_eq!(e.feasible, model.latency_ms <= 5.0);
    }
    // The same seed gives the same search.
    assert_eq!(trace, simulate(&table, name, aging, budget, 3, 40).unwrap());
    // The round trip through the file format keeps every answer.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.json.gz");
    table.write(&path).unwrap();
    let back = Table::read(&path).unwrap();
    assert_eq!(back.models, table.models);
    assert_eq!(trace, simulate(&back, name, aging, budget, 3, 40).unwrap());
}

#[test]
fn every_engine_finds_the_best_model_of_a_noiseless_table_and_the_figures_agree() {
    let table = synthetic_table(0.0);
    let budget = Some(5.0);
    let best = table.best_feasible(budget).unwrap().mean_ppl();
    let models = table.models.len();
    for (name, algorithm) in algorithms() {
        let traces: Vec<_> =
            (0..2).map(|seed| simulate(&table, name, &algorithm, budget, seed, models).unwrap()).collect();
        for t in &traces {
            let curve = best_so_far(t);
            // Without noise the reported model's perplexity only falls.
            assert!(curve.windows(2).all(|w| w[1] <= w[0]), "{name}: {curve:?}");
            let reach = evals_to_reach(t, best, 0.01);
            // Random search and the evolutionary engines all get there within the whole table.
            assert!(
                reach.is_some(),
                "{name} seed {} never reached {best} in {} evals",
                t.seed,
                t.evals.len()
            );
            assert_eq!(curve[reach.unwrap() - 1], best);
        }
        let s = summarise(&table, name, &traces, budget);
        assert_eq!((s.runs, s.reached), (2, 2));
        assert!(s.hypervolume_at.iter().flatten().all(|h| (0.0..=1.0 + 1e-9).contains(h)));
    }
    // An outside sampler's trace is scored the same way as an engine's.
    let (name, random) = algorithms().pop().unwrap();
    let ours = simulate(&table, name, &random, budget, 5, 30).unwrap();
    let hashes: Vec<String> = ours.evals.iter().map(|e| e.arch_hash.clone()).collect();
    assert_eq!(trace_of(&table, name, 5, &hashes, budget).unwrap(), ours);
}

#[test]
fn the_committed_table_covers_its_space_and_the_harness_runs_on_it() {
    let table = Table::read(&repo("bench/tables/tiny-shakespeare.json.gz")).unwrap();
    let space = &table.manifest.spec.space;
    let genomes = space.enumerate(10_000).unwrap();
    assert!(genomes.len() >= 300, "{} genomes", genomes.len());
    assert_eq!(table.genomes.len(), genomes.len() * space.hidden_sizes.len());
    assert_eq!(table.manifest.seeds.len(), 2);
    // Every genome of the space expands to a model the table trained.
    for g in &genomes {
        let model = table.expand(g, space.hidden_sizes[0]).unwrap();
        let entry = table.lookup(&model).expect("a genome's model is missing");
        assert!(entry.runs.iter().all(|r| r.ppl.is_finite() && r.ppl > 1.0));
    }
    let budget = table.manifest.spec.target.latency_budget_ms;
    for (name, algorithm) in algorithms() {
        for seed in 0..2 {
            let t = simulate(&table, name, &algorithm, budget, seed, 50).unwrap();
            assert_eq!(t.evals.len(), 50, "{name}");
        }
    }
}
