//! End-to-end: real `frontier` processes over real HTTP. A coordinator (`frontier serve`) on a
//! fresh Postgres database, two `frontier worker` processes training tiny models on
//! tinyshakespeare, and the client commands (`submit`, `status`, `leaderboard`, `export`).
//!
//! They live in the `frontier` crate (not a separate `tests/` crate) because cargo builds the
//! binary under test, and names its path, only for its own package's tests.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::migrate::MigrateDatabase;
use sqlx::{Any, AnyConnection, Connection};

const ADMIN: &str = "e2e-admin-token";
const WORKER: &str = "e2e-worker-token";
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A child process killed when the test lets go of it, whatever the outcome.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn frontier() -> Command {
    Command::new(env!("CARGO_BIN_EXE_frontier"))
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/tinyshakespeare.txt")
}

/// A fresh Postgres database URL, or `None` (after saying so) when no server is reachable
/// outside CI. Under `CI=true` an unreachable server fails the test.
async fn fresh_database(test: &str) -> Option<String> {
    sqlx::any::install_default_drivers();
    let admin =
        std::env::var("FRONTIER_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
    match AnyConnection::connect(&admin).await {
        Ok(c) => c.close().await.expect("close the probe connection"),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but Postgres is unreachable: {e}")
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: Postgres is unreachable: {e}");
            return None;
        }
    }
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b).to_owned();
    let url = format!("{base}/frontier_e2e_{:016x}", rand::random::<u64>());
    Any::create_database(&url).await.expect("create the test database");
    Some(url)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind a free port").local_addr().expect("local address").port()
}

fn serve(database_url: &str, port: u16) -> Proc {
    let child = frontier()
        .args(["serve", "--bind", &format!("127.0.0.1:{port}"), "--lease-ttl-s", "20"])
        .env("FRONTIER_DATABASE_URL", database_url)
        .env("FRONTIER_ADMIN_TOKEN", ADMIN)
        .env("FRONTIER_WORKER_TOKEN", WORKER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the coordinator");
    Proc(child)
}

fn worker(port: u16, id: &str, cache: &Path) -> Proc {
    let child = frontier()
        .args(["worker", "--coordinator", &format!("http://127.0.0.1:{port}"), "--worker-id", id])
        .arg("--cache-dir")
        .arg(cache)
        .env("FRONTIER_WORKER_TOKEN", WORKER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a worker");
    Proc(child)
}

fn client(args: &[&str], port: u16) -> Output {
    frontier()
        .args(args)
        .args(["--coordinator", &format!("http://127.0.0.1:{port}")])
        .env("FRONTIER_ADMIN_TOKEN", ADMIN)
        .output()
        .expect("run a client command")
}

fn ok(args: &[&str], port: u16) -> String {
    let o = client(args, port);
    assert!(o.status.success(), "frontier {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn wait_ready(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let o = client(&["status", "0"], port);
            // The coordinator answers (a 404 for search 0 is an answer).
            if String::from_utf8_lossy(&o.stderr).contains("404") {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the coordinator did not come up on port {port}");
}

/// Writes a 2-cycle aging-evolution spec over tiny models on tinyshakespeare.
fn spec_file(dir: &Path) -> PathBuf {
    let spec = format!(
        r#"name = "e2e"
seed = 5
max_attempts = 3
model = "tiny"

[space]
mixers = ["attention", "mamba2", "deltanet"]
ratios = ["0:1", "1:1"]
ffns_per_mixer = [0, 1]
stages = 3
min_blocks_per_stage = 1
max_blocks_per_stage = 1
max_operators = 6
hidden_sizes = [64, 128]

[target]
setting = "batch=1,prompt=16,gen=32"

[proxy]
tokens = 2048
seq_len = 32
batch_size = 4
lr = 0.003
corpus = "{}"
eval_tokens = 1024

[algorithm]
kind = "aging_evolution"
population = 3
sample_size = 2
per_cycle = 2
cycles = 2
"#,
        corpus().display()
    );
    let path = dir.join("e2e.toml");
    std::fs::write(&path, spec).expect("write the spec");
    path
}

fn status(port: u16, id: i64) -> Value {
    serde_json::from_str(&ok(&["status", &id.to_string(), "--json"], port)).expect("status JSON")
}

fn wait_until(port: u16, id: i64, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let s = status(port, id);
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "timed out; last status {s}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn members(s: &Value) -> i64 {
    ["done", "diverged", "failed", "pending", "infeasible"]
        .iter()
        .map(|k| s["progress"]["candidates"][k].as_i64().unwrap_or(0))
        .sum()
}

/// A coordinator on `db` at a free port with the e2e spec submitted: (coordinator, port, search id).
async fn submitted_search(db: &str, dir: &Path) -> (Proc, u16, i64) {
    let port = free_port();
    let coordinator = serve(db, port);
    tokio::task::spawn_blocking(move || wait_ready(port)).await.expect("ready");
    let spec = spec_file(dir);
    let out = ok(&["submit", spec.to_str().expect("utf-8 path")], port);
    let id: i64 =
        out.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("search id in submit output");
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
    Any::force_drop_database(&db).await.expect("drop the test database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_survives_a_killed_coordinator() {
    let Some(db) = fresh_database("a_search_survives_a_killed_coordinator").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (coordinator, port, id) = submitted_search(&db, dir.path()).await;
    let _w = worker(port, "e2e-resume", &dir.path().join("cache"));
    // Kill the coordinator (SIGKILL: no graceful shutdown) once the second generation exists.
    tokio::task::spawn_blocking(move || {
        wait_until(port, id, Duration::from_secs(300), |s| s["progress"]["generations"].as_i64() >= Some(2))
    })
    .await
    .expect("wait");
    drop(coordinator);
    std::thread::sleep(Duration::from_secs(2));
    // A new coordinator on the same database and port; the worker reconnects by itself.
    let _coordinator = serve(&db, port);
    tokio::task::spawn_blocking(move || wait_ready(port)).await.expect("ready again");
    let s = tokio::task::spawn_blocking(move || {
        wait_until(port, id, Duration::from_secs(600), |s| {
            s["status"] != "running" && s["status"] != "pending"
        })
    })
    .await
    .expect("wait");
    assert_eq!(s["status"], "completed", "{s}");
    assert_eq!(s["progress"]["generations"], 3);
    let pool = sqlx::AnyPool::connect(&db).await.expect("connect");
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM search_members WHERE search_id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .expect("count");
    let (done,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM trials WHERE search_id = $1 AND state = 'done'")
            .bind(id)
            .fetch_one(&pool)
            .await
            .expect("count");
    let (distinct,): (i64,) =
        sqlx::query_as("SELECT COUNT(DISTINCT candidate_id) FROM search_members WHERE search_id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .expect("count");
    pool.close().await;
    assert_eq!(n, 3 + 2 * 2, "the population and two cycles of two, no more, no less");
    assert_eq!(done, distinct, "each candidate trained once despite the crash");
    assert!(members(&s) >= distinct);
    drop(_w);
    drop(_coordinator);
    Any::force_drop_database(&db).await.expect("drop the test database");
}
