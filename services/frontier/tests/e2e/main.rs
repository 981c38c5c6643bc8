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
use support::{
    Proc, corpus, drop_database, fresh_database, ok, serve, submit, wait_ready, wait_until, worker,
};

/// Writes a 2-cycle aging-evolution spec over tiny models on tinyshakespeare.
fn spec_file(dir: &Path) -> PathBuf {
    let corpus = corpus();
    support::write_spec(dir, "e2e", &support::aging_spec("e2e", corpus.to_str().expect("utf-8 path")))
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
