//! `frontier table {build, show}`: tabular benchmarks, a search space with every model trained.
//!
//! `build` enumerates a spec's space at every hidden size, groups the genomes by the model they
//! expand to, scores each model with this machine's latency table (profiled first when shapes
//! are missing) and trains it once per seed with the spec's proxy budget. Finished runs are
//! appended to `OUT.runs.jsonl` as they end, so an interrupted build resumes where it stopped;
//! the table is written (gzip-compressed JSON, with its manifest) when every run is done.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use coordinator::Store;
use coordinator::tabular::{Manifest, Table, TableGenome, TableModel, TableRun};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use worker::pull::{JobPaths, data_config, train_config};
use worker::run::{DeviceChoice, DeviceSet, train_job};
use worker::train::Outcome;

#[derive(Debug, Subcommand)]
pub enum TableCommand {
    /// Train every model of a spec's space (each seed) and write the table.
    Build(BuildArgs),
    /// Summarise a table: models, latency range, seed-to-seed agreement, the best under a budget.
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The spec whose space, model settings, target setting and proxy budget make the table.
    #[arg(long)]
    spec: PathBuf,
    /// Where to write the table (`.json.gz`).
    #[arg(long)]
    out: PathBuf,
    /// Training seeds; every model is trained once with each.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    seeds: Vec<u64>,
    /// The folder the spec's corpus path is read from.
    #[arg(long, default_value = ".")]
    data_dir: PathBuf,
    /// Storage URL of this machine's latency tables (`sqlite://PATH` or `postgres://...`).
    #[arg(long, env = "FRONTIER_DATABASE_URL", default_value = "sqlite://frontier.db")]
    database_url: String,
    /// Most genomes the space may have.
    #[arg(long, default_value_t = 5000)]
    limit: usize,
    /// A line describing the table, kept in its manifest.
    #[arg(long, default_value = "")]
    description: String,
    /// `I/N`: train only every N-th model from the I-th (0-based) and stop without writing the
    /// table, so N processes (each with `--threads 1`) share a machine's cores; a last run
    /// without `--shard` finds every run in the log and writes the table.
    #[arg(long)]
    shard: Option<Shard>,
}

/// One of N shares of a build.
#[derive(Clone, Copy, Debug)]
pub struct Shard {
    index: usize,
    count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (i, n) = s.split_once('/').ok_or_else(|| format!("`{s}` is not I/N"))?;
        let index: usize = i.trim().parse().map_err(|_| format!("`{i}` is not a number"))?;
        let count: usize = n.trim().parse().map_err(|_| format!("`{n}` is not a number"))?;
        if count == 0 || index >= count {
            return Err(format!("`{s}`: I must be below N, and N at least 1"));
        }
        Ok(Self { index, count })
    }
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    table: PathBuf,
    /// Latency budget (ms) for the best feasible model; the spec's when omitted.
    #[arg(long)]
    budget_ms: Option<f64>,
}

pub fn run(cmd: TableCommand) -> Result<String> {
    match cmd {
        TableCommand::Build(args) => build(args),
        TableCommand::Show(args) => show(args),
    }
}

/// One finished training, as appended to the runs log.
#[derive(Debug, Serialize, Deserialize)]
struct LoggedRun {
    arch_hash: String,
    run: TableRun,
}

fn runs_log(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".runs.jsonl");
    PathBuf::from(name)
}

fn build(args: BuildArgs) -> Result<String> {
    let started = Instant::now();
    let spec = crate::service::read_spec(&args.spec)?;
    if args.seeds.is_empty() {
        bail!("--seeds: name at least one seed");
    }
    let setting = spec.target.deployment().map_err(|e| anyhow::anyhow!("target.setting: {}", e.reason))?;
    let runtime = crate::service::runtime()?;
    let (latency, device) = runtime.block_on(async {
        let store = Store::connect(&args.database_url).await.context("cannot open the store")?;
        crate::lut::ensure_profiled(&store, &spec, DeviceChoice::Cpu).await?;
        let device = worker::profile::fingerprint(DeviceChoice::Cpu)?.fingerprint;
        let latency = coordinator::latency::load(&store, Some(&device), &setting)
            .await?
            .map_err(|reason| anyhow::anyhow!(reason))?
            .context("no latency table after profiling")?;
        anyhow::Ok((latency, device))
    })?;

    // Every genome at every width, grouped by the model it expands to.
    let genomes = spec
        .space
        .enumerate(args.limit)
        .map_err(|e| anyhow::anyhow!("{}: space: {e}", args.spec.display()))?;
    let mut models: Vec<TableModel> = Vec::new();
    let mut specs = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut table_genomes = Vec::new();
    for genome in &genomes {
        for &h in &spec.space.hidden_sizes {
            let arch =
                search_space::Architecture::from_genome(spec.model.with_hidden_size(h), genome.clone());
            let model = arch.expand().map_err(|e| anyhow::anyhow!("a genome does not expand: {e}"))?;
            let hash = model.canonical_hash().0;
            let at = match index.get(&hash) {
                Some(&i) => i,
                None => {
                    let latency_ms =
                        latency.estimate_ms(&model).map_err(|e| anyhow::anyhow!("latency: {e}"))?;
                    let layers = model.layers.iter().map(|l| l.kind().code()).collect::<Vec<_>>().join(" ");
                    models.push(TableModel {
                        arch_hash: hash.clone(),
                        hidden_size: h,
                        params: model.params().total,
                        layers,
                        latency_ms,
                        runs: Vec::new(),
                    });
                    specs.push((model, genome.clone()));
                    index.insert(hash, models.len() - 1);
                    models.len() - 1
                }
            };
            table_genomes.push(TableGenome { genome: genome.clone(), hidden_size: h, model: at });
        }
    }

    // Runs already finished by an earlier, interrupted build.
    let log_path = runs_log(&args.out);
    let mut done: BTreeMap<(String, u64), TableRun> = BTreeMap::new();
    if let Ok(file) = std::fs::File::open(&log_path) {
        for line in std::io::BufReader::new(file).lines() {
            let line = line.with_context(|| format!("cannot read {}", log_path.display()))?;
            if let Ok(r) = serde_json::from_str::<LoggedRun>(&line) {
                done.insert((r.arch_hash, r.run.seed), r.run);
            }
        }
    }
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot write {}", log_path.display()))?;
    let corpus_path = args.data_dir.join(&spec.proxy.corpus);
    let corpus = std::fs::read(&corpus_path)
        .with_context(|| format!("cannot read the corpus {}", corpus_path.display()))?;
    let corpus_sha256 = format!("{:x}", Sha256::digest(&corpus));
    let paths = JobPaths {
        cache_dir: Some(std::env::temp_dir().join("frontier-table-cache")),
        data_dir: Some(args.data_dir.clone()),
    };
    let data = data_config(&spec.proxy, &paths).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let total = models.len() * args.seeds.len();
    eprintln!(
        "{} genomes, {} distinct models × {} seeds = {total} trainings ({} done before)",
        table_genomes.len(),
        models.len(),
        args.seeds.len(),
        done.len()
    );
    let mut trained = 0;
    let mut missing = 0;
    for (i, (entry, (model, genome))) in models.iter_mut().zip(&specs).enumerate() {
        for &seed in &args.seeds {
            if let Some(run) = done.get(&(entry.arch_hash.clone(), seed)) {
                entry.runs.push(*run);
                continue;
            }
            if args.shard.is_some_and(|s| i % s.count != s.index) {
                missing += 1;
                continue;
            }
            let job = api::TrialJob {
                architecture: search_space::Architecture::from_genome(
                    spec.model.with_hidden_size(entry.hidden_size),
                    genome.clone(),
                ),
                proxy: spec.proxy.clone(),
                budget_tokens: spec.proxy.tokens,
                seed,
                measure_latency: None,
            };
            let config = train_config(&job);
            let t = Instant::now();
            let result =
                train_job(model, &data, &config, DeviceSet::Cpu, false, |_| {}).with_context(|| {
                    format!("training {} ({}) with seed {seed}", entry.layers, entry.arch_hash)
                })?;
            let report = match result.outcome {
                Outcome::Completed(report) => report,
                Outcome::Diverged { step, loss } => bail!(
                    "{} (h={}) diverged with seed {seed} at step {step} (loss {loss}); lower the spec's proxy.lr",
                    entry.layers,
                    entry.hidden_size
                ),
            };
            let run = TableRun {
                seed,
                val_loss: report.val_loss,
                ppl: report.val_ppl,
                tokens: report.tokens,
                train_seconds: t.elapsed().as_secs_f64(),
            };
            writeln!(
                log,
                "{}",
                serde_json::to_string(&LoggedRun { arch_hash: entry.arch_hash.clone(), run })?
            )?;
            entry.runs.push(run);
            trained += 1;
            eprintln!(
                "[{}/{total}] {} h={} seed {seed}: ppl {:.3} in {:.1}s",
                done.len() + trained,
                entry.layers,
                entry.hidden_size,
                run.ppl,
                run.train_seconds
            );
        }
    }
    if let Some(s) = args.shard {
        return Ok(format!(
            "shard {}/{}: trained {trained}; {missing} runs are other shards' (a run without --shard writes the table)\n",
            s.index, s.count
        ));
    }
    let command = format!(
        "frontier table build --spec {} --out {} --seeds {} --data-dir {}",
        args.spec.display(),
        args.out.display(),
        args.seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(","),
        args.data_dir.display()
    );
    let manifest = Manifest {
        name: spec.name.clone(),
        description: args.description.clone(),
        spec,
        seeds: args.seeds.clone(),
        latency_device: device,
        command,
        corpus_sha256,
        created_ms: coordinator::clock::clock_ms(),
        build_seconds: started.elapsed().as_secs_f64(),
    };
    let table = Table::new(manifest, models, table_genomes);
    table.write(&args.out)?;
    std::fs::remove_file(&log_path).ok();
    Ok(format!("{}\n", summary(&table, None)))
}

fn show(args: ShowArgs) -> Result<String> {
    let table = Table::read(&args.table)?;
    Ok(format!("{}\n", summary(&table, args.budget_ms)))
}

/// What a table holds, in a few lines.
pub fn summary(table: &Table, budget_ms: Option<f64>) -> String {
    let m = &table.manifest;
    let budget = budget_ms.or(m.spec.target.latency_budget_ms);
    let lat: Vec<f64> = table.models.iter().map(|x| x.latency_ms).collect();
    let ppl: Vec<f64> = table.models.iter().map(TableModel::mean_ppl).collect();
    let (lo, hi) =
        (lat.iter().copied().fold(f64::INFINITY, f64::min), lat.iter().copied().fold(0.0, f64::max));
    let (plo, phi) =
        (ppl.iter().copied().fold(f64::INFINITY, f64::min), ppl.iter().copied().fold(0.0, f64::max));
    let mut out = format!(
        "table `{}`: {} genomes, {} models, seeds {:?}\nlatency {lo:.2}–{hi:.2} ms at `{}` on {}\nmean perplexity {plo:.3}–{phi:.3}; {:.0} s of training, made by\n  {}",
        m.name,
        table.genomes.len(),
        table.models.len(),
        m.seeds,
        m.spec.target.setting,
        m.latency_device,
        table.train_seconds(),
        m.command
    );
    if m.seeds.len() >= 2 {
        let a: Vec<f64> = table.models.iter().map(|x| x.runs[0].ppl).collect();
        let b: Vec<f64> = table.models.iter().map(|x| x.runs[1].ppl).collect();
        let rho = lut::fidelity::spearman(&a, &b);
        let gap: Vec<f64> = a.iter().zip(&b).map(|(x, y)| ((x - y) / y).abs() * 100.0).collect();
        out.push_str(&format!(
            "\nseed {} vs seed {}: Spearman {rho:.3}, median |Δppl| {:.2} %",
            m.seeds[0],
            m.seeds[1],
            median(&gap)
        ));
    }
    if let Some(b) = budget {
        let feasible = table.models.iter().filter(|x| x.latency_ms <= b).count();
        match table.best_feasible(Some(b)) {
            Some(best) => out.push_str(&format!(
                "\nunder {b:.2} ms: {feasible} models; best {} (h={}, {:.2} ms) at perplexity {:.3}",
                best.layers,
                best.hidden_size,
                best.latency_ms,
                best.mean_ppl()
            )),
            None => out.push_str(&format!("\nunder {b:.2} ms: no model")),
        }
    }
    out
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() { f64::NAN } else { s[s.len() / 2] }
}
