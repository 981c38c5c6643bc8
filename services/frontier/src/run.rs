//! `frontier run`: the whole system in one process — SQLite store, coordinator on 127.0.0.1,
//! local workers pulling over real HTTP, the latency table profiled for this machine when the
//! spec needs one, progress while it runs, and the leaderboard, Pareto front and exported winner
//! at the end.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use coordinator::app::ApiConfig;
use coordinator::server::Application;
use serde_json::Value;
use worker::pull::{Worker, WorkerConfig};
use worker::run::DeviceChoice;

use crate::service::{init_tracing, leaderboard_table, parse_spec, runtime, write_export};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The search spec (TOML or JSON).
    #[arg(long, required_unless_present = "resume")]
    spec: Option<PathBuf>,
    /// Continue search N of the database instead of creating one (after an interrupted run).
    #[arg(long)]
    resume: Option<i64>,
    /// Storage URL.
    #[arg(long, env = "FRONTIER_DATABASE_URL", default_value = "sqlite://frontier.db")]
    database_url: String,
    /// Local workers to start.
    #[arg(long, default_value_t = 1)]
    workers: u32,
    /// Training corpus, overriding the spec's `proxy.corpus` (a file or folder, or
    /// synthetic:TASKS). A path is read by the local workers from its own folder.
    #[arg(long)]
    corpus: Option<String>,
    /// Folder the local workers read a spec's relative `proxy.corpus` from (default: the working
    /// directory). Not needed with `--corpus PATH`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Where the winner is exported.
    #[arg(long, short = 'o', default_value = "frontier-out")]
    out: PathBuf,
    /// cpu, or cuda / cuda:N in builds with the `cuda` feature.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    /// Log what the coordinator and workers do (otherwise only progress is shown).
    #[arg(long)]
    verbose: bool,
    /// Where the local coordinator (and its web UI) listens; a free local port by default.
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: std::net::SocketAddr,
}

/// A corpus path given on this machine (absolute, or relative to the working directory) as the
/// folder it is in and its name there: the local workers read the name from that folder.
/// `None` for synthetic tasks.
fn local_corpus(corpus: &str) -> Result<Option<(PathBuf, String)>> {
    if corpus.starts_with(api::accuracy::SYNTHETIC_PREFIX) {
        return Ok(None);
    }
    let path = std::path::Path::new(corpus)
        .canonicalize()
        .with_context(|| format!("corpus {corpus} cannot be read"))?;
    match (path.parent(), path.file_name().and_then(|n| n.to_str())) {
        (Some(dir), Some(name)) => Ok(Some((dir.to_path_buf(), name.to_owned()))),
        _ => bail!("corpus {corpus}: give a file or a folder below the root, with a UTF-8 name"),
    }
}

pub fn run(args: RunArgs) -> Result<String> {
    if args.workers == 0 || args.workers > 64 {
        bail!("--workers must be in 1..=64");
    }
    if args.verbose {
        init_tracing();
    }
    runtime()?.block_on(run_async(args))
}

async fn run_async(args: RunArgs) -> Result<String> {
    let started = Instant::now();
    let store = coordinator::Store::connect(&args.database_url)
        .await
        .with_context(|| format!("cannot open the store at {}", args.database_url))?;
    let device = crate::service::device_info(args.device)?;

    // The search to run: a new one from the spec, or one to resume. A corpus path reaches the
    // coordinator relative to the local workers' data folder, as it would on a cluster.
    let mut data_dir = args.data_dir.clone();
    let spec_value: Option<Value> = match (&args.spec, args.resume) {
        (_, Some(id)) => {
            let row = store.get_search(id).await?.with_context(|| format!("search {id} does not exist"))?;
            if !matches!(row.status.as_str(), "pending" | "running") {
                bail!("search {id} has already ended ({})", row.status);
            }
            None
        }
        (Some(path), None) => {
            // Validated once the corpus is in the form the coordinator takes.
            let mut spec = parse_spec(path)?;
            if let Some(c) = &args.corpus {
                spec.proxy.corpus = c.clone();
            }
            if spec.proxy.corpus.trim().is_empty() {
                bail!("the spec names no corpus: set proxy.corpus or pass --corpus");
            }
            if (args.corpus.is_some() || spec.proxy.corpus.parse::<api::proxy::CorpusRef>().is_err())
                && let Some((dir, name)) = local_corpus(&spec.proxy.corpus)?
            {
                data_dir = Some(dir);
                spec.proxy.corpus = name;
            }
            spec.validate().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            // A sweep's table serves the recommendation printed at the end.
            let needs_table = spec.target.latency_budget_ms.is_some()
                || spec.target.latency_budget_of.is_some()
                || matches!(spec.algorithm, api::Algorithm::Nsga2 { .. } | api::Algorithm::Sweep { .. });
            if spec.target.device.is_none() {
                spec.target.device = Some(device.fingerprint.clone());
            }
            if needs_table {
                crate::lut::ensure_profiled(&store, &spec, args.device).await?;
            }
            Some(serde_json::to_value(&spec)?)
        }
        (None, None) => bail!("give --spec FILE or --resume ID"),
    };

    // The coordinator, on a free local port, with tokens nobody else knows.
    let admin = format!("{:032x}", rand_token());
    let worker_token = format!("{:032x}", rand_token());
    let mut config = ApiConfig::new(admin.clone(), worker_token.clone());
    config.lease_ttl = Duration::from_secs(120);
    let app = Application::build(store.clone(), config, args.bind)
        .await
        .with_context(|| format!("cannot start the local coordinator on {}", args.bind))?
        .with_tick(Duration::from_millis(250));
    let base = format!("http://{}", app.local_addr());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stop_rx.await;
    }));

    let http = reqwest::Client::new();
    let search_id = match (spec_value, args.resume) {
        (_, Some(id)) => id,
        (Some(spec), None) => {
            let r =
                http.post(format!("{base}/api/v1/searches")).bearer_auth(&admin).json(&spec).send().await?;
            let status = r.status();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                bail!("the search was refused: {}", body["error"].as_str().unwrap_or("unknown error"));
            }
            body["id"].as_i64().context("the coordinator returned no search id")?
        }
        (None, None) => unreachable!("checked above"),
    };
    let planned = search_planned(&store, search_id).await;
    eprintln!(
        "search {search_id}: {} candidates planned, {} local worker(s) on {}; watch it at {base}/ui/searches/{search_id}",
        planned.map_or("?".into(), |p| p.to_string()),
        args.workers,
        device.name
    );

    // Workers: each a real pull loop over HTTP.
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for i in 0..args.workers {
        let config = WorkerConfig {
            coordinator: base.clone(),
            token: worker_token.clone(),
            worker_id: format!("local-{i}"),
            device: args.device.into(),
            cache_dir: Some(std::env::temp_dir().join("frontier-cache")),
            data_dir: data_dir.clone(),
            // Used when the spec sets `proxy.checkpoint_every`: a run interrupted and resumed
            // (`--resume`) then continues its trials where they stopped.
            checkpoint_dir: Some(std::env::temp_dir().join("frontier-checkpoints")),
            lease_wait: Duration::from_secs(2),
            max_backoff: Duration::from_secs(2),
        };
        let mut w = Worker::new(config, device.clone());
        let flag = w.stop_flag();
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            flag.store(true, Ordering::Relaxed);
        });
        workers.push(tokio::spawn(async move { w.run(None).await }));
    }

    // Follow the search until it ends or the user interrupts.
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let interrupted = interrupted.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                interrupted.store(true, Ordering::Relaxed);
            }
        });
    }
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut last_line = String::new();
    let final_status = loop {
        let s = http.get(format!("{base}/api/v1/searches/{search_id}")).send().await?.json::<Value>().await?;
        let status = s["status"].as_str().unwrap_or("?").to_owned();
        let line = progress_line(&s, planned, started.elapsed());
        if tty {
            eprint!("\r{line:<100}");
        } else if line != last_line {
            eprintln!("{line}");
        }
        last_line = line;
        if !matches!(status.as_str(), "pending" | "running") || interrupted.load(Ordering::Relaxed) {
            if tty {
                eprintln!();
            }
            break s;
        }
        tokio::time::sleep(Duration::from_millis(if tty { 250 } else { 5_000 })).await;
    };
    stop.store(true, Ordering::Relaxed);
    if interrupted.load(Ordering::Relaxed) {
        let _ = stop_tx.send(());
        return Ok(format!(
            "interrupted: search {search_id} is saved in {}; continue it with `frontier run --resume {search_id}`\n",
            args.database_url
        ));
    }
    for w in workers {
        let _ = tokio::time::timeout(Duration::from_secs(5), w).await;
    }

    // The result.
    let mut out = String::new();
    out.push_str(&crate::service::status_text(&final_status));
    if final_status["status"] != "completed" {
        let _ = stop_tx.send(());
        let _ = server.await;
        bail!(
            "search {search_id} ended {}: {}",
            final_status["status"].as_str().unwrap_or("?"),
            final_status["error"].as_str().unwrap_or("no error recorded")
        );
    }
    if final_status["algorithm"] == "sweep" {
        out.push_str(&sweep_summary(&http, &base, &admin, search_id, &final_status).await?);
    }
    let page = http
        .get(format!("{base}/api/v1/searches/{search_id}/leaderboard?limit=10"))
        .send()
        .await?
        .json::<Value>()
        .await?;
    out.push_str("\nleaderboard (lowest perplexity first):\n");
    out.push_str(&leaderboard_table(page["items"].as_array().map_or(&[][..], |v| v)));
    let pareto =
        http.get(format!("{base}/api/v1/searches/{search_id}/pareto")).send().await?.json::<Value>().await?;
    out.push_str("\nPareto front (perplexity × estimated latency):\n");
    out.push_str(&leaderboard_table(pareto["front"].as_array().map_or(&[][..], |v| v)));
    for format in ["frontier", "nemotron-flash"] {
        let r = http
            .get(format!("{base}/api/v1/searches/{search_id}/best/export?format={format}"))
            .send()
            .await?;
        let ok = r.status().is_success();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if ok {
            out.push_str(&write_export(&body, format, &args.out)?);
        } else {
            out.push_str(&format!("no {format} export: {}\n", body["error"].as_str().unwrap_or("?")));
        }
    }
    out.push_str(&format!("finished in {:.1} s\n", started.elapsed().as_secs_f64()));
    let _ = stop_tx.send(());
    let _ = server.await;
    Ok(out)
}

/// A finished sweep's scaling law, and the recommendation at the spec's latency budget when it
/// has one.
async fn sweep_summary(
    http: &reqwest::Client,
    base: &str,
    admin: &str,
    search_id: i64,
    search: &Value,
) -> Result<String> {
    let r = http
        .post(format!("{base}/api/v1/searches/{search_id}/scaling-fits"))
        .bearer_auth(admin)
        .json(&serde_json::json!({}))
        .send()
        .await?;
    let ok = r.status().is_success();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    if !ok {
        return Ok(format!("\nno scaling-law fit: {}\n", body["error"].as_str().unwrap_or("?")));
    }
    let fit: coordinator::scaling::ScalingFit = serde_json::from_value(body)?;
    let mut out = format!("\n{}", crate::scaling::fit_text(&fit));
    if let Some(budget) = search["spec"]["target"]["latency_budget_ms"].as_f64() {
        let r = http
            .post(format!("{base}/api/v1/scaling-fits/{}/recommend", fit.id))
            .json(&serde_json::json!({ "budget_ms": budget }))
            .send()
            .await?;
        let ok = r.status().is_success();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if ok {
            let rec: coordinator::scaling::Recommendation = serde_json::from_value(body)?;
            out.push_str(&format!("\n{}", crate::scaling::recommendation_text(&rec)));
        } else {
            let detail = body["fields"][0]["message"].as_str().or(body["error"].as_str()).unwrap_or("?");
            out.push_str(&format!("\nno recommendation at {budget} ms: {detail}\n"));
        }
    }
    out.push_str(&format!(
        "fit {} is kept in the store; with `frontier serve` on the same database: `frontier scaling-law recommend --fit {} --budget-ms X`\n",
        fit.id, fit.id
    ));
    Ok(out)
}

async fn search_planned(store: &coordinator::Store, id: i64) -> Option<u64> {
    let row = store.get_search(id).await.ok()??;
    let spec: api::SearchSpec = serde_json::from_value(row.spec).ok()?;
    Some(spec.algorithm.planned_candidates())
}

fn progress_line(s: &Value, planned: Option<u64>, elapsed: Duration) -> String {
    let count = |section: &str, key: &str| s["progress"][section][key].as_i64().unwrap_or(0);
    let scored = count("candidates", "done")
        + count("candidates", "diverged")
        + count("candidates", "failed")
        + count("candidates", "infeasible");
    let total = planned.map_or("?".to_owned(), |p| p.to_string());
    format!(
        "[{:>5.0}s] generation {} · candidates {scored}/{total} · trials: {} running, {} queued, {} done",
        elapsed.as_secs_f64(),
        s["progress"]["generations"],
        count("trials", "leased"),
        count("trials", "queued"),
        count("trials", "done"),
    )
}

fn rand_token() -> u128 {
    rand::random()
}
