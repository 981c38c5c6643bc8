//! Search efficiency on a tabular benchmark: Frontier's engines (and outside samplers through
//! their traces, e.g. `bench/search/optuna_table.py`) over many seeds with the same evaluation
//! budget, printed as one table, with an SVG of the median best-so-far curves.
//!
//! ```sh
//! cargo run --release -p tools --bin search_bench -- \
//!     --table bench/tables/tiny-shakespeare.json.gz --seeds 30 --max-evals 100 \
//!     --peer target/optuna-traces.jsonl --svg bench/search/best-so-far.svg
//! ```
//!
//! For each algorithm: evaluations until the reported model (the lowest observed perplexity
//! among feasible evaluations) is within 1 % of the table's best feasible mean perplexity
//! (median and IQR over seeds, and how many runs got there), its true perplexity after 25/50/100
//! evaluations, the hypervolume share of the perplexity × latency front found by then, and a
//! two-sided Mann–Whitney U test of the evaluations-to-target against random search's.

use std::io::BufRead;
use std::path::PathBuf;

use clap::Parser;
use coordinator::tabular::Table;
use tools::search_bench::plot::{Series, best_so_far_svg};
use tools::search_bench::stats::{mann_whitney, median, quantile};
use tools::search_bench::{
    CHECKPOINTS, Summary, Trace, algorithms, best_so_far, evals_as_f64, simulate, summarise, trace_of,
};

#[derive(Debug, Parser)]
struct Args {
    /// The tabular benchmark (written by `frontier table build`).
    #[arg(long, default_value = "bench/tables/tiny-shakespeare.json.gz")]
    table: PathBuf,
    /// Latency budget in ms; the table spec's when omitted.
    #[arg(long)]
    budget_ms: Option<f64>,
    /// Seeds per algorithm (0, 1, ..).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    seeds: u64,
    /// Distinct models each run may evaluate.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    max_evals: u64,
    /// Only these algorithms (by the names in the table's first column); all when omitted.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Traces of outside samplers (JSON lines: `{"sampler", "seed", "hashes": [...]}`).
    #[arg(long)]
    peer: Vec<PathBuf>,
    /// Write the best-so-far plot here.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Write every run's figures here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(serde::Deserialize)]
struct PeerLine {
    sampler: String,
    seed: u64,
    hashes: Vec<String>,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let table = Table::read(&args.table)?;
    let budget = args.budget_ms.or(table.manifest.spec.target.latency_budget_ms);
    let max_evals = args.max_evals as usize;
    let mut groups: Vec<(String, Vec<Trace>)> = Vec::new();
    for (name, algorithm) in algorithms() {
        if !args.only.is_empty() && !args.only.iter().any(|o| o == name) {
            continue;
        }
        let traces = (0..args.seeds)
            .map(|seed| simulate(&table, name, &algorithm, budget, seed, max_evals))
            .collect::<Result<Vec<_>, _>>()?;
        groups.push((name.to_owned(), traces));
    }
    for path in &args.peer {
        let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let peer: PeerLine =
                serde_json::from_str(&line).map_err(|e| format!("{} line {}: {e}", path.display(), i + 1))?;
            let hashes: Vec<String> = peer.hashes.into_iter().take(max_evals).collect();
            let trace = trace_of(&table, &peer.sampler, peer.seed, &hashes, budget)?;
            match groups.iter_mut().find(|(n, _)| *n == peer.sampler) {
                Some((_, traces)) => traces.push(trace),
                None => groups.push((peer.sampler.clone(), vec![trace])),
            }
        }
    }
    let best = table.best_feasible(budget).ok_or("no model of the table meets the budget")?;
    let feasible = table.models.iter().filter(|m| budget.is_none_or(|b| m.latency_ms <= b)).count();
    println!(
        "table `{}`: {} models, {feasible} within {} ms; best feasible mean perplexity {:.4} ({}, h={})",
        table.manifest.name,
        table.models.len(),
        budget.map_or("any".to_owned(), |b| format!("{b:.3}")),
        best.mean_ppl(),
        best.layers,
        best.hidden_size
    );
    println!("{} seeds per algorithm, {max_evals} evaluations each\n", args.seeds);
    let summaries: Vec<Summary> = groups.iter().map(|(n, t)| summarise(&table, n, t, budget)).collect();
    let random = summaries.iter().find(|s| s.algorithm == "random").map(evals_as_f64);
    println!(
        "| algorithm | runs | within 1 % | evals to 1 % median [IQR] | best ppl @25 | @50 | @100 | HV @25 | @50 | @100 | vs random: U, p |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for s in &summaries {
        let evals = evals_as_f64(s);
        let cell = |v: f64| if v.is_finite() { format!("{v:.0}") } else { format!(">{max_evals}") };
        let at = |k: usize, of: &Vec<Vec<f64>>| {
            let col: Vec<f64> = of.iter().map(|r| r[k]).collect();
            format!("{:.3} [{:.3}–{:.3}]", median(&col), quantile(&col, 0.25), quantile(&col, 0.75))
        };
        let test = match (&random, s.algorithm.as_str()) {
            (_, "random") | (None, _) => "–".to_owned(),
            (Some(r), _) => {
                let t = mann_whitney(&evals, r);
                format!("{:.0}, {:.3}", t.u, t.p)
            }
        };
        let hv = |k: usize| median(&s.hypervolume_at.iter().map(|r| r[k]).collect::<Vec<_>>());
        println!(
            "| {} | {} | {} | {} [{}–{}] | {} | {} | {} | {:.3} | {:.3} | {:.3} | {test} |",
            s.algorithm,
            s.runs,
            s.reached,
            cell(median(&evals)),
            cell(quantile(&evals, 0.25)),
            cell(quantile(&evals, 0.75)),
            at(0, &s.best_at),
            at(1, &s.best_at),
            at(2, &s.best_at),
            hv(0),
            hv(1),
            hv(2),
        );
    }
    println!(
        "\nbest ppl @N: true (mean over seeds) perplexity of the model a run reports after N evaluations \
         (median [IQR]); HV: share of the table's perplexity × latency hypervolume; checkpoints {CHECKPOINTS:?}"
    );
    if let Some(path) = &args.svg {
        let series: Vec<Series<'_>> = groups
            .iter()
            .map(|(n, traces)| Series { name: n, runs: traces.iter().map(best_so_far).collect() })
            .collect();
        let target = best.mean_ppl();
        let starts: Vec<f64> = series
            .iter()
            .flat_map(|s| s.runs.iter().filter_map(|r| r.iter().find(|v| v.is_finite())))
            .copied()
            .collect();
        let top = quantile(&starts, 0.75).max(target * 1.05);
        let title = format!("{}: best feasible perplexity vs evaluations", table.manifest.name);
        std::fs::write(path, best_so_far_svg(&title, &series, (target * 0.995, top), Some(target * 1.01)))?;
        println!("plot: {}", path.display());
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&summaries)?)?;
    }
    Ok(())
}
