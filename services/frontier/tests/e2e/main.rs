//! End-to-end: real `frontier` processes over real HTTP. A coordinator (`frontier serve`) on a
//! fresh Postgres database, two `frontier worker` processes training tiny models on
//! tinyshakespeare, and the client commands (`submit`, `status`, `leaderboard`, `export`).
//!
//! They live in the `frontier` crate (not a separate `tests/` crate) because cargo builds the
//! binary under test, and names its path, only for its own package's tests.

#[path = "../support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use support::{Proc, drop_database, fresh_database, ok, serve, submit, wait_ready, wait_until, worker};

/// Writes a 2-cycle aging-evolution spec over tiny models on tinyshakespeare.
fn spec_file(dir: &Path) -> PathBuf {
    support::write_spec(dir, "e2e", &support::aging_spec("e2e", support::CORPUS))
}

/// A coordinator on `db` at a free port with the e2e spec submitted: (coordinator, port, search id).
async fn submitted_search(db: &str, dir: &Path) -> (Proc, u16, i64) {
    let port = support::free_port();
    let coordinator = serve(db, port);
    tokio::task::spawn_blocking(move || wait_ready(port)).await.expect("ready");
    let id = submit(port, &spec_file(dir));
    (coordinator, port, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_run_a_search_on_postgres_to_completion() {
    let Some(db) = fresh_database("two_worker_processes_run_a_search_on_postgres_to_completion").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (_coordinator, port, id) = submitted_search(&db, dir.path()).await;
    let _w1 = worker(port, "e2e-1", &dir.path().join("cache"));
    let _w2 = worker(port, "e2e-2", &dir.path().join("cache"));
    let s = tokio::task::spawn_blocking(move || {
        wait_until(port, id, Duration::from_secs(600), |s| {
            s["status"] != "running" && s["status"] != "pending"
        })
    })
    .await
    .expect("wait");
    assert_eq!(s["status"], "completed", "{s}");
    assert_eq!(s["progress"]["generations"], 3, "{s}");

    let board: Value = serde_json::from_str(&ok(
        &["leaderboard", &id.to_string(), "--format", "json", "--top", "100"],
        port,
    ))
    .expect("leaderboard JSON");
    let ids: Vec<i64> =
        board.as_array().expect("rows").iter().map(|r| r["id"].as_i64().expect("id")).collect();
    let unique: std::collections::BTreeSet<i64> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "every candidate exactly once");
    assert_eq!(ids.len() as i64, s["progress"]["candidates"]["done"].as_i64().unwrap_or(0), "{s}");
    assert!(
        board
            .as_array()
            .expect("rows")
            .iter()
            .all(|r| r["ppl"].as_f64().is_some_and(|p| p > 1.0 && p < 256.0))
    );
    // Both workers took part.
    let trials: Vec<Value> = {
        let pool = sqlx::AnyPool::connect(&db).await.expect("connect");
        let rows: Vec<(String,)> = sqlx::query_as("SELECT worker_id FROM trials WHERE state = 'done'")
            .fetch_all(&pool)
            .await
            .expect("query");
        pool.close().await;
        rows.into_iter().map(|(w,)| Value::String(w)).collect()
    };
    assert!(trials.contains(&Value::from("e2e-1")) && trials.contains(&Value::from("e2e-2")), "{trials:?}");

    // The winner exports as a Nemotron-Flash config that imports back to the same layers.
    let out_dir = dir.path().join("export");
    ok(
        &[
            "export",
            "--best",
            &id.to_string(),
            "--format",
            "nemotron-flash",
            "-o",
            out_dir.to_str().expect("utf-8"),
        ],
        port,
    );
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("config.json")).expect("config.json"))
            .expect("JSON");
    let imported = search_space::nemotron_flash::import(config).expect("a valid Nemotron-Flash config");
    assert_eq!(
        imported.operators().iter().map(|o| o.code()).collect::<Vec<_>>().join(" "),
        board[0]["pattern"].as_str().expect("pattern")
    );
    drop(_w1);
    drop(_w2);
    drop(_coordinator);
    drop_database(&db).await;
}

/// A 3 × 3 depth-width sweep of the attention + FFN block on tinyshakespeare.
fn sweep_spec(corpus: &str) -> String {
    format!(
        r#"name = "e2e sweep"
seed = 2
max_attempts = 2
model = "tiny"

[target]
setting = "batch=1,prompt=16,gen=16,dtype=f32"

[proxy]
tokens = 4096
seq_len = 32
batch_size = 8
lr = 0.003
corpus = "{corpus}"
eval_tokens = 2048

[algorithm]
kind = "sweep"
depths = [1, 2, 3]
widths = [32, 48, 64]
"#
    )
}

/// A space for the evolutionary search the recommendation constrains: one stage, so any operator
/// cap of at least one fits.
const CONSTRAINED_SPEC: &str = r#"name = "constrained"
model = "tiny"

[space]
mixers = ["attention", "deltanet"]
ratios = ["0:1"]
ffns_per_mixer = [0, 1]
stages = 1
min_blocks_per_stage = 1
max_blocks_per_stage = 4
max_operators = 8
hidden_sizes = [64]

[target]
setting = "batch=1,prompt=16,gen=16,dtype=f32"

[proxy]
tokens = 2048
seq_len = 32
batch_size = 4
corpus = "corpus.txt"

[algorithm]
kind = "random"
candidates = 4
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_trains_through_the_service_and_its_fitted_law_recommends_a_model() {
    let Some(db) = fresh_database("a_sweep_trains_through_the_service_and_its_fitted_law").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    // This machine's latency table for the sweep's block at the widths around the sweep.
    let space = dir.path().join("space.json");
    std::fs::write(&space, r#"{"mixers": ["attention"], "ratios": ["0:1"], "ffns_per_mixer": [1]}"#)
        .expect("space");
    let profiled = support::frontier()
        .args(["lut", "profile", "--database-url", &db, "--setting", "batch=1,prompt=16,gen=16,dtype=f32"])
        .args(["--hidden", "16,32,48,64,96,128", "--settings", "tiny-transformer"])
        .arg("--space")
        .arg(&space)
        .args(["--warmup", "1", "--repeats", "3", "--steps", "2", "--stack", "4"])
        .output()
        .expect("run lut profile");
    assert!(profiled.status.success(), "{}", String::from_utf8_lossy(&profiled.stderr));

    let (_coordinator, port) = support::coordinator(&db, &support::Serve::default()).await;
    let spec = support::write_spec(dir.path(), "sweep", &sweep_spec(support::CORPUS));
    let id = submit(port, &spec);
    let _w = worker(port, "sweep-1", &dir.path().join("cache"));
    let s = support::finished(port, id, Duration::from_secs(600)).await;
    assert_eq!(s["status"], "completed", "{s}");
    assert_eq!(s["progress"]["trials"]["done"], 9, "{s}");

    // The law, fitted through the CLI: nine real perplexities on byte-level text.
    let fit: Value = serde_json::from_str(&ok(
        &["scaling-law", "fit", &id.to_string(), "--resamples", "20", "--json"],
        port,
    ))
    .expect("fit JSON");
    assert_eq!(fit["form"], "depth_width", "{fit}");
    assert_eq!(fit["n"], 9, "{fit}");
    let shapes: std::collections::BTreeSet<(u64, u64)> = fit["observations"]
        .as_array()
        .expect("observations")
        .iter()
        .map(|o| {
            let loss = o["loss"].as_f64().expect("loss");
            assert!(loss > 0.0 && loss < 256f64.ln(), "a byte model's loss is below uniform: {o}");
            (o["depth"].as_u64().expect("depth"), o["width"].as_u64().expect("width"))
        })
        .collect();
    let grid: std::collections::BTreeSet<(u64, u64)> =
        [1, 2, 3].iter().flat_map(|&d| [32, 48, 64].map(|w| (d, w))).collect();
    assert_eq!(shapes, grid);
    let fit_id = fit["id"].as_i64().expect("fit id").to_string();
    let shown = ok(&["scaling-law", "show", &fit_id], port);
    assert!(shown.contains("L0 + a·D^-α + b·W^-β") && shown.contains("alpha"), "{shown}");

    // A recommendation within a budget that cuts the default grid, written into a search spec.
    let all: Value = serde_json::from_str(&ok(
        &["scaling-law", "recommend", "--fit", &fit_id, "--budget-ms", "1e9", "--json"],
        port,
    ))
    .expect("recommendation JSON");
    let mut latencies: Vec<f64> =
        all["grid"].as_array().expect("grid").iter().map(|g| g["latency_ms"].as_f64().expect("ms")).collect();
    latencies.sort_by(f64::total_cmp);
    let budget = latencies[latencies.len() / 2];
    let constrained = support::write_spec(dir.path(), "constrained", CONSTRAINED_SPEC);
    let written = dir.path().join("constrained.json");
    let rec: Value = serde_json::from_str(&ok(
        &[
            "scaling-law",
            "recommend",
            "--fit",
            &fit_id,
            "--budget-ms",
            &budget.to_string(),
            "--json",
            "--spec",
            constrained.to_str().expect("utf-8"),
            "--write-spec",
            written.to_str().expect("utf-8"),
        ],
        port,
    ))
    .expect("recommendation JSON");
    let best = &rec["best"];
    assert!(best["latency_ms"].as_f64().expect("ms") <= budget, "{rec}");
    let best_loss = best["predicted_loss"].as_f64().expect("loss");
    for g in rec["grid"].as_array().expect("grid") {
        if g["latency_ms"].as_f64().expect("ms") <= budget {
            assert!(g["predicted_loss"].as_f64().expect("loss") >= best_loss - 1e-12, "{g} beats {best}");
        }
    }
    let spec: api::SearchSpec =
        serde_json::from_str(&std::fs::read_to_string(&written).expect("written spec")).expect("a spec");
    spec.validate().expect("the constrained spec validates");
    assert_eq!(spec.space.hidden_sizes, [best["width"].as_u64().expect("width") as u32]);
    assert_eq!(u64::from(spec.space.max_operators), best["layers"].as_u64().expect("layers"));
    drop(_w);
    drop(_coordinator);
    drop_database(&db).await;
}
