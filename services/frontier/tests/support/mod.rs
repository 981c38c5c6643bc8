//! What the process-level tests share: real `frontier` processes (a coordinator, workers, client
//! commands) on a fresh Postgres database, and reads of the store they leave behind.
#![allow(dead_code)]

use std::fs::File;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::migrate::MigrateDatabase;
use sqlx::{Any, AnyConnection, AnyPool, Connection};

pub const ADMIN: &str = "e2e-admin-token";
pub const WORKER: &str = "e2e-worker-token";
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A child process killed (SIGKILL) when the test lets go of it, whatever the outcome.
#[derive(Debug)]
pub struct Proc(pub Child);

impl Proc {
    /// `kill -9`: no signal handler runs, nothing is flushed or reported.
    pub fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn frontier() -> Command {
    Command::new(env!("CARGO_BIN_EXE_frontier"))
}

/// tinyshakespeare, the test corpus.
pub fn corpus() -> PathBuf {
    testdata::tinyshakespeare()
}

/// The test corpus as a spec names it: relative to the workers' data folder, [`data_dir`].
pub const CORPUS: &str = "tinyshakespeare.txt";

/// The folder holding the test corpus: the data folder of workers started without one.
pub fn data_dir() -> PathBuf {
    corpus().parent().expect("the corpus is in a folder").to_owned()
}

/// The server's admin URL (the `postgres` database), from `FRONTIER_TEST_POSTGRES_URL`.
pub fn admin_url() -> String {
    std::env::var("FRONTIER_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

/// A fresh Postgres database URL, or `None` (after saying so) when no server is reachable
/// outside CI. Under `CI=true` an unreachable server fails the test.
pub async fn fresh_database(test: &str) -> Option<String> {
    sqlx::any::install_default_drivers();
    let admin = admin_url();
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

/// The database's name in `url`.
pub fn database_name(url: &str) -> &str {
    url.rsplit_once('/').map_or(url, |(_, name)| name)
}

pub async fn drop_database(url: &str) {
    Any::force_drop_database(url).await.expect("drop the test database");
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind a free port").local_addr().expect("local address").port()
}

/// How a coordinator process is started.
#[derive(Debug, Clone)]
pub struct Serve {
    pub lease_ttl_s: u64,
    /// `RUST_LOG` for the process; `None` keeps its default.
    pub log_filter: Option<String>,
    /// Where its stderr goes; discarded when `None`.
    pub log: Option<PathBuf>,
}

impl Default for Serve {
    fn default() -> Self {
        Self { lease_ttl_s: 20, log_filter: None, log: None }
    }
}

/// Where a child's stderr goes: appended to `log`, or discarded.
fn stderr_to(log: Option<&Path>) -> Stdio {
    match log {
        Some(path) => {
            let file = File::options().create(true).append(true).open(path).expect("open the log file");
            Stdio::from(file)
        }
        None => Stdio::null(),
    }
}

pub fn serve_with(database_url: &str, port: u16, how: &Serve) -> Proc {
    let mut cmd = frontier();
    cmd.args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .args(["--lease-ttl-s", &how.lease_ttl_s.to_string()])
        .env("FRONTIER_DATABASE_URL", database_url)
        .env("FRONTIER_ADMIN_TOKEN", ADMIN)
        .env("FRONTIER_WORKER_TOKEN", WORKER)
        .stdout(Stdio::null())
        .stderr(stderr_to(how.log.as_deref()));
    if let Some(filter) = &how.log_filter {
        cmd.env("RUST_LOG", filter);
    }
    Proc(cmd.spawn().expect("start the coordinator"))
}

pub fn serve(database_url: &str, port: u16) -> Proc {
    serve_with(database_url, port, &Serve::default())
}

/// How a worker process is started.
#[derive(Debug, Clone, Default)]
pub struct WorkerOpts {
    pub data_dir: Option<PathBuf>,
    pub checkpoint_dir: Option<PathBuf>,
    pub log_filter: Option<String>,
    pub log: Option<PathBuf>,
}

pub fn worker_with(port: u16, id: &str, cache: &Path, how: &WorkerOpts) -> Proc {
    let mut cmd = frontier();
    cmd.args(["worker", "--coordinator", &format!("http://127.0.0.1:{port}"), "--worker-id", id])
        .arg("--cache-dir")
        .arg(cache)
        .env("FRONTIER_WORKER_TOKEN", WORKER)
        .stdout(Stdio::null())
        .stderr(stderr_to(how.log.as_deref()));
    // Specs name corpora relative to the data folder; by default the test corpus's.
    cmd.arg("--data-dir").arg(how.data_dir.clone().unwrap_or_else(data_dir));
    if let Some(dir) = &how.checkpoint_dir {
        cmd.arg("--checkpoint-dir").arg(dir);
    }
    if let Some(filter) = &how.log_filter {
        cmd.env("RUST_LOG", filter);
    }
    Proc(cmd.spawn().expect("start a worker"))
}

pub fn worker(port: u16, id: &str, cache: &Path) -> Proc {
    worker_with(port, id, cache, &WorkerOpts::default())
}

pub fn client(args: &[&str], port: u16) -> Output {
    frontier()
        .args(args)
        .args(["--coordinator", &format!("http://127.0.0.1:{port}")])
        .env("FRONTIER_ADMIN_TOKEN", ADMIN)
        .output()
        .expect("run a client command")
}

pub fn ok(args: &[&str], port: u16) -> String {
    let o = client(args, port);
    assert!(o.status.success(), "frontier {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Waits until the coordinator on `port` answers `/readyz` with 200.
pub fn wait_ready(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if http_get(port, "/readyz").is_some_and(|(status, _)| status == 200) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the coordinator did not come up on port {port}");
}

/// A plain HTTP/1.1 GET on loopback: (status, body), or `None` when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::Read as _;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    Some((status, body))
}

pub fn status(port: u16, id: i64) -> Value {
    serde_json::from_str(&ok(&["status", &id.to_string(), "--json"], port)).expect("status JSON")
}

pub fn wait_until(port: u16, id: i64, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
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

/// Waits (from async code) until the search has ended; returns its last status.
pub async fn finished(port: u16, id: i64, limit: Duration) -> Value {
    tokio::task::spawn_blocking(move || {
        wait_until(port, id, limit, |s| s["status"] != "running" && s["status"] != "pending")
    })
    .await
    .expect("wait for the search")
}

pub fn members(s: &Value) -> i64 {
    ["done", "diverged", "failed", "pending", "infeasible"]
        .iter()
        .map(|k| s["progress"]["candidates"][k].as_i64().unwrap_or(0))
        .sum()
}

/// A 2-cycle aging-evolution spec over tiny models (seven proposals).
pub fn aging_spec(name: &str, corpus: &str) -> String {
    format!(
        r#"name = "{name}"
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
corpus = "{corpus}"
eval_tokens = 1024

[algorithm]
kind = "aging_evolution"
population = 3
sample_size = 2
per_cycle = 2
cycles = 2
"#
    )
}

/// Writes `spec` to `dir/name.toml`.
pub fn write_spec(dir: &Path, name: &str, spec: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, spec).expect("write the spec");
    path
}

/// Submits the spec at `path`; returns the search id.
pub fn submit(port: u16, path: &Path) -> i64 {
    let out = ok(&["submit", path.to_str().expect("utf-8 path")], port);
    out.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("search id in submit output")
}

/// A coordinator on `db` at a free port, ready.
pub async fn coordinator(db: &str, how: &Serve) -> (Proc, u16) {
    let port = free_port();
    let proc = serve_with(db, port, how);
    tokio::task::spawn_blocking(move || wait_ready(port)).await.expect("ready");
    (proc, port)
}

/// One integer from the store.
pub async fn count(pool: &AnyPool, sql: &str, search_id: i64) -> i64 {
    sqlx::query_scalar(sql).bind(search_id).fetch_one(pool).await.expect("count query")
}

/// What a finished search left in the store: the figures every fault test checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ledger {
    /// Search members (candidates proposed).
    pub members: i64,
    /// Distinct candidates among them.
    pub distinct: i64,
    /// Trials in a terminal state with a stored result (done or diverged).
    pub results: i64,
    /// Candidates with more than one stored result at the same rung.
    pub duplicates: i64,
    /// Trials still leased or queued.
    pub open_trials: i64,
    /// Candidates neither scored, diverged, failed nor infeasible.
    pub lost: i64,
}

pub async fn ledger(db: &str, search_id: i64) -> Ledger {
    let pool = AnyPool::connect(db).await.expect("connect to the test database");
    let ledger = Ledger {
        members: count(&pool, "SELECT COUNT(*) FROM search_members WHERE search_id = $1", search_id).await,
        distinct: count(
            &pool,
            "SELECT COUNT(DISTINCT candidate_id) FROM search_members WHERE search_id = $1",
            search_id,
        )
        .await,
        results: count(
            &pool,
            "SELECT COUNT(*) FROM trials WHERE search_id = $1 AND state IN ('done', 'diverged')",
            search_id,
        )
        .await,
        duplicates: count(
            &pool,
            "SELECT COUNT(*) FROM (SELECT candidate_id, rung FROM trials
             WHERE search_id = $1 AND state IN ('done', 'diverged')
             GROUP BY candidate_id, rung HAVING COUNT(*) > 1) d",
            search_id,
        )
        .await,
        open_trials: count(
            &pool,
            "SELECT COUNT(*) FROM trials WHERE search_id = $1 AND state IN ('queued', 'leased')",
            search_id,
        )
        .await,
        lost: count(
            &pool,
            "SELECT COUNT(*) FROM candidates
             WHERE search_id = $1 AND status NOT IN ('done', 'diverged', 'failed', 'infeasible')",
            search_id,
        )
        .await,
    };
    pool.close().await;
    // Printed so a run's log carries the figures (`--nocapture`).
    eprintln!("ledger of search {search_id}: {ledger:?}");
    ledger
}
