//! Benchmarks of the coordinator's hot paths on a real database, printed as a table:
//!
//! - **lease throughput**: `--workers` concurrent lessees (default 1 000) drain a queue of
//!   `--trials` trials (lease + complete each), counting leases per second and checking that no
//!   trial was ever handed to two lessees at once;
//! - **leaderboard latency**: with `--candidates` scored candidates (default 1 000 000) in one
//!   search, the p50/p99 of first pages and of deep keyset pages for each sort order.
//!
//! ```sh
//! cargo run --release -p tools --bin queue_bench -- --database-url postgres://postgres@127.0.0.1/postgres
//! ```
//!
//! A fresh database is created next to the one named (and dropped afterwards) for Postgres; a
//! temporary file for SQLite.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use coordinator::store::{CursorValue, LeaderboardQuery, SortKey, Store, StoreOptions, TrialResult};
use tools::scratch::ScratchDatabase;

/// The trial queue and the leaderboard on a real database.
#[derive(Debug, Parser)]
struct Args {
    /// The database to benchmark beside (a fresh database is made on its server), or `sqlite`.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    database_url: String,
    /// Concurrent lessees.
    #[arg(long, default_value_t = 1000)]
    workers: usize,
    /// Trials queued for them to drain.
    #[arg(long, default_value_t = 20_000)]
    trials: i64,
    /// Scored candidates in the leaderboard's search.
    #[arg(long, default_value_t = 1_000_000)]
    candidates: i64,
    /// The store's connection pool size.
    #[arg(long, default_value_t = 32)]
    connections: u32,
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(e) = run(args).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let db = ScratchDatabase::create(&args.database_url, "frontier_bench").await?;
    let url = db.url.clone();
    let options =
        StoreOptions { max_connections: args.connections, acquire_timeout: Duration::from_secs(120) };
    let store = Store::connect_with(&url, &options).await?;
    println!("backend: {}, pool: {} connections", store.backend(), args.connections);

    // Lease throughput.
    let search = store.create_search("bench-queue", &serde_json::json!({})).await?;
    store.seed_benchmark_trials(search.id, args.trials, 3).await?;
    let holders: Arc<Mutex<HashSet<i64>>> = Arc::new(Mutex::new(HashSet::new()));
    let duplicates = Arc::new(Mutex::new(0u64));
    let now = coordinator::clock::clock_ms();
    // Phase 1: every lessee leases until the queue is empty, holding what it got, so a trial
    // handed out twice would show up as a second holder.
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.workers);
    for w in 0..args.workers {
        let (store, holders, duplicates) = (store.clone(), holders.clone(), duplicates.clone());
        tasks.push(tokio::spawn(async move {
            let worker = format!("bench-{w}");
            let mut held = Vec::new();
            while let Some(lease) = store.lease_trial(&worker, now, 600_000).await.expect("lease") {
                if !holders.lock().expect("lock").insert(lease.trial_id) {
                    *duplicates.lock().expect("lock") += 1;
                }
                held.push(lease);
            }
            held
        }));
    }
    let mut held = Vec::with_capacity(tasks.len());
    for t in tasks {
        held.push(t.await?);
    }
    let lease_s = started.elapsed().as_secs_f64();
    let leased: usize = held.iter().map(Vec::len).sum();
    // Phase 2: every lessee reports its trials.
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(held.len());
    for leases in held {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for lease in leases {
                let result = TrialResult {
                    val_loss: 2.0,
                    ppl: 7.4,
                    result_json: serde_json::json!({}),
                    measured_latency_ms: None,
                    meets_floors: None,
                };
                store
                    .complete_trial(lease.trial_id, &lease.lease_token, &result, now)
                    .await
                    .expect("complete");
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let complete_s = started.elapsed().as_secs_f64();
    let dups = *duplicates.lock().expect("lock");
    println!();
    println!("| lessees | trials | leased | double leases | lease s | leases/s | completions/s |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {leased} | {dups} | {lease_s:.2} | {:.0} | {:.0} |",
        args.workers,
        args.trials,
        leased as f64 / lease_s,
        leased as f64 / complete_s
    );

    // Leaderboard latency at scale.
    let search = store.create_search("bench-leaderboard", &serde_json::json!({})).await?;
    let seeded = Instant::now();
    store.seed_benchmark_candidates(search.id, args.candidates).await?;
    println!();
    println!("seeded {} candidates in {:.1} s", args.candidates, seeded.elapsed().as_secs_f64());
    println!();
    println!("| query | requests | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    for (label, sort, descending, feasible_only) in [
        ("ppl asc, first page", SortKey::Ppl, false, false),
        ("ppl asc, feasible only", SortKey::Ppl, false, true),
        ("latency desc", SortKey::Latency, true, false),
        ("params asc", SortKey::Params, false, false),
        ("memory asc", SortKey::Memory, false, false),
    ] {
        let mut times = Vec::new();
        let mut query = LeaderboardQuery { sort, descending, feasible_only, limit: 50, after: None };
        // 200 pages: the first, then keyset pages ever deeper, restarting every 40.
        for i in 0..200 {
            if i % 40 == 0 {
                query.after = None;
            }
            let t = Instant::now();
            let page = store.leaderboard(search.id, &query).await?;
            times.push(t.elapsed());
            let last = page.last().ok_or("empty leaderboard page")?;
            let value = CursorValue::parse(sort, &sort.cursor_value(last)).ok_or("unparsable cursor")?;
            query.after = Some((value, last.id));
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "| {label} | {} | {:.2} | {:.2} | {:.2} |",
            times.len(),
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.99)),
            ms(*times.last().ok_or("no timings")?)
        );
    }
    store.close().await;
    db.remove().await
}
