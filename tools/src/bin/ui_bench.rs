//! Server time of the web UI's pages with a large search, beside the JSON endpoints that serve
//! the same data, printed as a table.
//!
//! A search of `--candidates` scored candidates (default 10 000, one done trial each) is seeded,
//! then each page is requested `--requests` times through the whole router in-process (routing,
//! queries, template rendering; no network), and p50/p90/max and body size are reported.
//!
//! ```sh
//! cargo run --release -p tools --bin ui_bench -- --database-url sqlite
//! cargo run --release -p tools --bin ui_bench -- --database-url postgres://postgres@127.0.0.1/postgres
//! ```
//!
//! A fresh database is created next to the one named (and dropped afterwards) for Postgres; a
//! temporary file for SQLite.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use clap::Parser;
use coordinator::app::{ApiConfig, AppState};
use coordinator::routes::app;
use coordinator::store::{NewDevice, Store};
use http_body_util::BodyExt;
use tools::scratch::ScratchDatabase;
use tower::ServiceExt;

/// Server time of every web UI page beside the JSON endpoints.
#[derive(Debug, Parser)]
struct Args {
    /// `sqlite` (a temporary file), or a postgres:// URL to make a fresh database beside.
    #[arg(long, default_value = "sqlite")]
    database_url: String,
    /// Candidates in the search the pages show.
    #[arg(long, default_value_t = 10_000)]
    candidates: i64,
    /// Requests per page (the median and p99 are over them).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    requests: u64,
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
    let db = ScratchDatabase::create(&args.database_url, "frontier_ui_bench").await?;
    let store = Store::connect(&db.url).await?;
    let result = measure(&store, &args).await;
    store.close().await;
    db.remove().await?;
    result
}

async fn measure(store: &Store, args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let setting = "batch=1,prompt=64,gen=256,dtype=f32";
    store
        .upsert_device(&NewDevice {
            fingerprint: "bench-cpu".into(),
            name: "bench cpu".into(),
            kind: "cpu".into(),
            info: serde_json::json!({}),
        })
        .await?;
    let spec = serde_json::json!({
        "algorithm": { "kind": "aging_evolution" },
        "target": { "device": "bench-cpu", "setting": setting, "latency_budget_ms": 90.0 }
    });
    let search = store.create_search("ui-bench", &spec).await?;
    let seeded = Instant::now();
    store.seed_benchmark_candidates(search.id, args.candidates).await?;
    let best = store.best_candidate(search.id).await?.ok_or("no best candidate after seeding")?;
    println!(
        "backend: {}; seeded {} candidates (one done trial each) in {:.1} s; {} requests per page",
        store.backend(),
        args.candidates,
        seeded.elapsed().as_secs_f64(),
        args.requests
    );
    let router = app(AppState::new(store.clone(), ApiConfig::new("admin", "worker")));
    let id = search.id;
    let pages = [
        ("UI: searches list", "/ui/searches".to_owned()),
        ("UI: search page (plot + table)", format!("/ui/searches/{id}")),
        ("UI: search page, sorted by latency", format!("/ui/searches/{id}?sort=latency&order=desc")),
        ("UI: candidate page", format!("/ui/candidates/{}", best.id)),
        ("UI: devices page", "/ui/devices".to_owned()),
        ("UI: leaderboard CSV (all rows)", format!("/ui/searches/{id}/leaderboard.csv")),
        ("JSON: search", format!("/api/v1/searches/{id}")),
        ("JSON: Pareto (all points)", format!("/api/v1/searches/{id}/pareto")),
        ("JSON: leaderboard page", format!("/api/v1/searches/{id}/leaderboard")),
        ("JSON: candidate", format!("/api/v1/candidates/{}", best.id)),
    ];
    println!();
    println!("| request | p50 ms | p90 ms | max ms | body KiB |");
    println!("|---|---|---|---|---|");
    for (label, uri) in pages {
        let mut times = Vec::with_capacity(args.requests as usize);
        let mut size = 0;
        for _ in 0..args.requests {
            let started = Instant::now();
            let response = router.clone().oneshot(Request::get(&uri).body(Body::empty())?).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            times.push(started.elapsed());
            if status != StatusCode::OK {
                return Err(format!("{uri} answered {status}: {}", String::from_utf8_lossy(&body)).into());
            }
            size = body.len();
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
        println!(
            "| {label} | {:.1} | {:.1} | {:.1} | {:.0} |",
            ms(at(0.5)),
            ms(at(0.9)),
            ms(times[times.len() - 1]),
            size as f64 / 1024.0
        );
    }
    Ok(())
}
