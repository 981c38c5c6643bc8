//! The `frontier` command.
//!
//! One binary for every role: `run` (the whole system in one process), `serve` (the
//! coordinator), `worker` (the pull loop), the client commands `submit`, `status`, `leaderboard`
//! and `export`, `space` (inspect, sample, validate and export architectures), `train`
//! (proxy-train one candidate), `decode-bench` (measure its decode latency), `lut` (latency
//! tables), `scaling-law` (fit and use depth-width scaling laws over a sweep) and `table` (tabular
//! benchmarks). Each subcommand lives in its own module; this file only parses arguments,
//! dispatches, and turns errors into one clear message and a non-zero exit status (never a panic
//! or a backtrace).

mod cost;
mod data;
mod lut;
mod run;
mod scaling;
mod service;
mod space;
mod table;
mod train;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Frontier: hardware-aware architecture search for hybrid small language models.
#[derive(Debug, Parser)]
#[command(name = "frontier", version, about, propagate_version = true)]
struct Cli {
    /// Threads the CPU backend computes with (default: one per core). Part of the device
    /// fingerprint, so latency tables profiled with different counts are kept apart; one thread
    /// gives steadier timings on a small shared machine.
    #[arg(long, global = true, env = "FRONTIER_THREADS")]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a whole search on this machine: store, coordinator, workers, latency table.
    Run(run::RunArgs),
    /// Run the coordinator (HTTP API, search driver, lease sweeper).
    Serve(service::ServeArgs),
    /// Pull proxy trainings from a coordinator and train them on this machine.
    Worker(service::WorkerArgs),
    /// Submit a search spec to a coordinator.
    Submit(service::SubmitArgs),
    /// Show a search's status and progress.
    Status(service::StatusArgs),
    /// Show a search's leaderboard.
    Leaderboard(service::LeaderboardArgs),
    /// Export a candidate (or a search's best) as a config.
    Export(service::ExportArgs),
    /// Inspect, sample, validate and export architectures of the search space.
    #[command(subcommand)]
    Space(space::SpaceCommand),
    /// Train one architecture for a token budget and report validation loss and perplexity.
    Train(train::TrainArgs),
    /// Measure one architecture's decode latency on this machine.
    DecodeBench(train::DecodeArgs),
    /// Token shard sets for training at scale: prepare, verify, show.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Latency tables: profile, show, export, import, validate, depth-sweep.
    #[command(subcommand)]
    Lut(lut::LutCommand),
    /// Depth-width scaling laws over a sweep search: fit, show, recommend for a latency budget.
    #[command(subcommand)]
    ScalingLaw(scaling::ScalingCommand),
    /// Tabular benchmarks: every model of a small space trained, for studying search algorithms.
    #[command(subcommand)]
    Table(table::TableCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(threads) = cli.threads
        && let Err(e) = worker::profile::set_compute_threads(threads)
    {
        eprintln!("error: --threads: {e}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Serve(args) => service::serve(args),
        Command::Worker(args) => service::worker(args),
        Command::Submit(args) => service::submit(args),
        Command::Status(args) => service::status(args),
        Command::Leaderboard(args) => service::leaderboard(args),
        Command::Export(args) => service::export(args),
        Command::Space(cmd) => space::run(cmd),
        Command::Train(args) => train::train(args),
        Command::DecodeBench(args) => train::decode_bench(args),
        Command::Data(cmd) => data::run(cmd),
        Command::Lut(cmd) => lut::run(cmd),
        Command::ScalingLaw(cmd) => scaling::run(cmd),
        Command::Table(cmd) => table::run(cmd),
    };
    match result {
        Ok(text) => {
            // A closed pipe (`frontier ... | head`) is the reader's choice, not an error.
            match std::io::stdout().lock().write_all(text.as_bytes()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    eprintln!("error: cannot write output: {e}");
                    ExitCode::FAILURE
                }
                _ => ExitCode::SUCCESS,
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
