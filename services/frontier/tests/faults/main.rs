//! Fault injection with real processes: a coordinator (`frontier serve`) on a fresh Postgres
//! database, `frontier worker` processes training tiny models on tinyshakespeare, and faults
//! made the way production makes them: `kill -9` of a worker or of the coordinator, a database
//! that drops every connection and refuses new ones, a worker that comes back after its lease
//! was handed on, a training run that diverges, a worker without the corpus. Each test ends with
//! the store's ledger: every candidate has exactly one result per rung, none is lost, no trial is
//! left queued or leased.

#[path = "../support/mod.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::AnyPool;
use support::{
    ADMIN, Ledger, Serve, WORKER, WorkerOpts, coordinator, corpus, drop_database, finished, fresh_database,
    http_get, ledger, submit, worker, worker_with, write_spec,
};

/// A random search over `candidates` tiny architectures, each trained for `tokens` tokens.
fn random_spec(name: &str, corpus: &str, candidates: u32, tokens: u64, lr: f64) -> String {
    format!(
        r#"name = "{name}"
seed = 3
max_attempts = 3
model = "tiny"

[space]
mixers = ["attention", "mamba2", "deltanet"]
ratios = ["0:1", "1:1"]
ffns_per_mixer = [0, 1]
stages = 2
min_blocks_per_stage = 1
max_blocks_per_stage = 1
max_operators = 4
hidden_sizes = [64]

[target]
setting = "batch=1,prompt=16,gen=32"

[proxy]
tokens = {tokens}
seq_len = 32
batch_size = 4
lr = {lr}
corpus = "{corpus}"
eval_tokens = 512

[algorithm]
kind = "random"
candidates = {candidates}
batch = {candidates}
"#
    )
}

fn corpus_path() -> String {
    support::CORPUS.to_owned()
}

async fn connect(db: &str) -> AnyPool {
    AnyPool::connect(db).await.expect("connect to the test database")
}

/// Polls `sql` (one integer, `$1` = search id) until it is at least `at_least`.
async fn wait_for_count(pool: &AnyPool, sql: &str, search_id: i64, at_least: i64, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let n = support::count(pool, sql, search_id).await;
        if n >= at_least {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for `{sql}` >= {at_least} (last {n})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every figure a fault must leave intact: `planned` candidates, one result each (or a recorded
/// failure), nothing lost, nothing left open.
fn assert_intact(l: &Ledger, planned: i64) {
    assert_eq!(l.members, planned, "{l:?}");
    assert_eq!(l.distinct, planned, "{l:?}");
    assert_eq!(l.duplicates, 0, "a candidate has two results: {l:?}");
    assert_eq!(l.open_trials, 0, "a trial was left queued or leased: {l:?}");
    assert_eq!(l.lost, 0, "a candidate has neither a result nor a recorded failure: {l:?}");
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("HTTP client")
}

async fn candidate_detail(port: u16, id: i64) -> Value {
    let r = http()
        .get(format!("http://127.0.0.1:{port}/api/v1/candidates/{id}"))
        .send()
        .await
        .expect("candidate detail");
    assert_eq!(r.status(), 200);
    r.json().await.expect("candidate JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_s_trial_is_finished_by_another_worker_exactly_once() {
    let Some(db) = fresh_database("a_killed_worker_s_trial_is_finished_by_another_worker_exactly_once").await
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    // A short lease so the dead worker's trial comes back within seconds.
    let (_coordinator, port) = coordinator(&db, &Serve { lease_ttl_s: 3, ..Serve::default() }).await;
    // Long enough (256 steps) that the worker is still training when the test kills it: a short
    // trial could finish between the test seeing its progress and the kill.
    let spec =
        write_spec(dir.path(), "kill-worker", &random_spec("kill-worker", &corpus_path(), 2, 32_768, 3e-3));
    let id = submit(port, &spec);
    let doomed = worker(port, "doomed", &dir.path().join("cache"));
    // Kill it once it has reported progress: mid-training, lease held. The trial is read in the
    // same query that sees the progress, so it is the one leased at that moment.
    let pool = connect(&db).await;
    let deadline = Instant::now() + Duration::from_secs(300);
    let killed_trial = loop {
        let leased: Option<(i64,)> = sqlx::query_as(
            "SELECT t.id FROM trials t WHERE t.search_id = $1 AND t.state = 'leased' AND t.worker_id = 'doomed'
             AND EXISTS (SELECT 1 FROM trial_events e WHERE e.trial_id = t.id AND e.kind = 'progress')",
        )
        .bind(id)
        .fetch_optional(&pool)
        .await
        .expect("the doomed worker's trial");
        if let Some((trial,)) = leased {
            break trial;
        }
        assert!(Instant::now() < deadline, "timed out waiting for the doomed worker's progress");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    doomed.kill();
    let _rescuer = worker(port, "rescuer", &dir.path().join("cache"));
    let s = finished(port, id, Duration::from_secs(600)).await;
    assert_eq!(s["status"], "completed", "{s}");

    let l = ledger(&db, id).await;
    assert_intact(&l, 2);
    assert_eq!(l.results, 2, "{l:?}");
    // The killed trial: leased by the doomed worker, requeued when its lease expired, finished by
    // the rescuer on its second attempt.
    let (state, worker_id, attempt, candidate): (String, String, i64, i64) =
        sqlx::query_as("SELECT state, worker_id, attempt, candidate_id FROM trials WHERE id = $1")
            .bind(killed_trial)
            .fetch_one(&pool)
            .await
            .expect("the killed trial");
    pool.close().await;
    assert_eq!((state.as_str(), worker_id.as_str(), attempt), ("done", "rescuer", 2));
    let detail = candidate_detail(port, candidate).await;
    let history: Vec<(String, String)> = detail["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or_default().to_owned(),
                e["payload"]["worker_id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let kinds: Vec<(&str, &str)> = history.iter().map(|(k, w)| (k.as_str(), w.as_str())).collect();
    assert_eq!(
        kinds,
        [
            ("queued", ""),
            ("leased", "doomed"),
            ("requeued", "doomed"),
            ("leased", "rescuer"),
            ("done", "rescuer")
        ]
    );
    drop(_rescuer);
    drop(_coordinator);
    drop_database(&db).await;
}

/// A worker that lost its lease (a network partition, a long GC pause) and comes back with its
/// old lease token: its heartbeat, result and failure are all refused, and the result the next
/// holder stored stays as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_comes_back_after_its_lease_was_handed_on_is_refused() {
    let Some(db) = fresh_database("a_worker_that_comes_back_after_its_lease_was_handed_on_is_refused").await
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (_coordinator, port) = coordinator(&db, &Serve { lease_ttl_s: 2, ..Serve::default() }).await;
    let spec = write_spec(dir.path(), "stale", &random_spec("stale", &corpus_path(), 1, 2048, 3e-3));
    let id = submit(port, &spec);

    // The partitioned worker, over plain HTTP: it registers, leases the trial, then goes silent.
    let base = format!("http://127.0.0.1:{port}/api/v1");
    let client = http();
    let post = |path: String, body: Value| {
        let client = client.clone();
        async move {
            let r = client.post(path).bearer_auth(WORKER).json(&body).send().await.expect("request");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let device =
        json!({ "fingerprint": "cpu-partitioned", "name": "partitioned", "kind": "cpu", "info": {} });
    let (status, _) = post(
        format!("{base}/workers/register"),
        json!({ "worker_id": "partitioned", "hostname": "elsewhere", "device": device }),
    )
    .await;
    assert_eq!(status, 200);
    let (status, grant) =
        post(format!("{base}/workers/lease"), json!({ "worker_id": "partitioned", "wait_ms": 10_000 })).await;
    assert_eq!(status, 200, "{grant}");
    let trial = grant["trial_id"].as_i64().expect("trial id");
    let stale_token = grant["lease_token"].as_str().expect("lease token").to_owned();

    // Its lease expires; a healthy worker takes the trial and finishes the search.
    let _healthy = worker(port, "healthy", &dir.path().join("cache"));
    let s = finished(port, id, Duration::from_secs(600)).await;
    assert_eq!(s["status"], "completed", "{s}");
    let pool = connect(&db).await;
    let stored: (String, String, f64, String) =
        sqlx::query_as("SELECT state, worker_id, ppl, result FROM trials WHERE id = $1")
            .bind(trial)
            .fetch_one(&pool)
            .await
            .expect("the trial");
    assert_eq!((stored.0.as_str(), stored.1.as_str()), ("done", "healthy"));

    // The partitioned worker comes back.
    let (status, body) = post(
        format!("{base}/trials/{trial}/heartbeat"),
        json!({ "lease_token": stale_token, "progress": null }),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    let metrics = json!({
        "outcome": "completed", "val_loss": 0.01, "ppl": 1.01, "train_loss": 0.01, "steps": 1, "tokens": 128,
        "tokens_per_s": 1.0, "train_seconds": 1.0, "params": 1, "loss_curve": [], "measured_latency_ms": null,
        "accuracy": null, "device": "cpu-partitioned"
    });
    let (status, body) = post(
        format!("{base}/trials/{trial}/complete"),
        json!({ "lease_token": stale_token, "metrics": metrics }),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("stale")), "{body}");
    let (status, body) = post(
        format!("{base}/trials/{trial}/fail"),
        json!({ "lease_token": stale_token, "error": "late failure", "retryable": false }),
    )
    .await;
    assert_eq!(status, 409, "{body}");

    let after: (String, String, f64, String) =
        sqlx::query_as("SELECT state, worker_id, ppl, result FROM trials WHERE id = $1")
            .bind(trial)
            .fetch_one(&pool)
            .await
            .expect("the trial");
    assert_eq!(after, stored, "the stored result changed");
    let (candidate_ppl,): (f64,) = sqlx::query_as("SELECT ppl FROM candidates WHERE search_id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .expect("ppl");
    assert_eq!(candidate_ppl, stored.2);
    pool.close().await;
    let l = ledger(&db, id).await;
    assert_intact(&l, 1);
    assert_eq!(l.results, 1);
    drop(_healthy);
    drop(_coordinator);
    drop_database(&db).await;
}

/// `kill -9` of the coordinator mid-search, then a new one on the same database: the search ends
/// with exactly the planned candidates, each trained once, and no trial left leased.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_survives_a_killed_coordinator() {
    let Some(db) = fresh_database("a_search_survives_a_killed_coordinator").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let how = Serve { lease_ttl_s: 5, ..Serve::default() };
    let (first, port) = coordinator(&db, &how).await;
    let spec =
        write_spec(dir.path(), "kill-coordinator", &support::aging_spec("kill-coordinator", &corpus_path()));
    let id = submit(port, &spec);
    let _w = worker(port, "survivor", &dir.path().join("cache"));
    // SIGKILL (no graceful shutdown) once the second generation exists.
    tokio::task::spawn_blocking(move || {
        support::wait_until(port, id, Duration::from_secs(300), |s| {
            s["progress"]["generations"].as_i64() >= Some(2)
        })
    })
    .await
    .expect("wait");
    first.kill();
    std::thread::sleep(Duration::from_secs(2));
    // A new coordinator on the same database and port; the worker reconnects by itself.
    let _second = support::serve_with(&db, port, &how);
    tokio::task::spawn_blocking(move || support::wait_ready(port)).await.expect("ready again");
    let s = finished(port, id, Duration::from_secs(600)).await;
    assert_eq!(s["status"], "completed", "{s}");
    assert_eq!(s["progress"]["generations"], 3);
    let l = ledger(&db, id).await;
    // The population and two cycles of two: seven proposals. Aging evolution may propose an
    // architecture it has already trained; that reuses the result, so members >= distinct.
    let planned = 3 + 2 * 2;
    assert_eq!(l.members, planned, "{l:?}");
    assert_eq!(l.results, l.distinct, "each candidate trained once despite the crash: {l:?}");
    assert_eq!(l.duplicates, 0, "{l:?}");
    assert_eq!(l.open_trials, 0, "{l:?}");
    assert_eq!(l.lost, 0, "{l:?}");
    drop(_w);
    drop(_second);
    drop_database(&db).await;
}

/// The database drops every connection of the coordinator and refuses new ones for a while (a
/// restart, a failover): `/readyz` says so, the coordinator reconnects when it is back, and the
/// search finishes with every result stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_reconnects_after_a_database_outage() {
    let Some(db) = fresh_database("the_coordinator_reconnects_after_a_database_outage").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (_coordinator, port) = coordinator(&db, &Serve::default()).await;
    let spec = write_spec(dir.path(), "outage", &random_spec("outage", &corpus_path(), 3, 4096, 3e-3));
    let id = submit(port, &spec);
    let _w = worker(port, "steady", &dir.path().join("cache"));
    let pool = connect(&db).await;
    wait_for_count(
        &pool,
        "SELECT COUNT(*) FROM trials WHERE search_id = $1 AND state = 'done'",
        id,
        1,
        Duration::from_secs(300),
    )
    .await;
    pool.close().await;

    // The outage: no new connections to the database, every open one terminated.
    let admin = AnyPool::connect(&support::admin_url()).await.expect("connect as the server admin");
    let name = support::database_name(&db).to_owned();
    sqlx::query(&format!(r#"ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false"#))
        .execute(&admin)
        .await
        .expect("refuse connections");
    let terminated: Vec<(bool,)> = sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(&name)
    .fetch_all(&admin)
    .await
    .expect("terminate the coordinator's connections");
    assert!(!terminated.is_empty(), "the coordinator held no connection to terminate");
    let not_ready = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some((status, _)) = http_get(port, "/readyz")
                && status != 200
            {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    })
    .await
    .expect("probe readiness");
    assert_eq!(not_ready, Some(503), "/readyz must report the outage as 503");
    // A read that needs the database is a 503 the client may retry, not a 500; the same for the UI.
    let (api, ui) = tokio::task::spawn_blocking(move || {
        (http_get(port, &format!("/api/v1/searches/{id}")), http_get(port, &format!("/ui/searches/{id}")))
    })
    .await
    .expect("reads during the outage");
    assert_eq!(api.map(|(status, _)| status), Some(503), "API read during the outage");
    assert_eq!(ui.map(|(status, _)| status), Some(503), "UI page during the outage");
    tokio::time::sleep(Duration::from_secs(5)).await;
    sqlx::query(&format!(r#"ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true"#))
        .execute(&admin)
        .await
        .expect("accept connections again");
    admin.close().await;

    tokio::task::spawn_blocking(move || support::wait_ready(port)).await.expect("ready after the outage");
    let s = finished(port, id, Duration::from_secs(600)).await;
    assert_eq!(s["status"], "completed", "{s}");
    let l = ledger(&db, id).await;
    assert_intact(&l, 3);
    assert_eq!(l.results, 3, "{l:?}");
    drop(_w);
    drop(_coordinator);
    drop_database(&db).await;
}

/// An absurd learning rate makes every trial diverge: each candidate is recorded as diverged
/// (once, not retried), and the evolution goes on through all its cycles to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diverging_trials_mark_their_candidates_diverged_and_the_search_goes_on() {
    let Some(db) =
        fresh_database("diverging_trials_mark_their_candidates_diverged_and_the_search_goes_on").await
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (_coordinator, port) = coordinator(&db, &Serve::default()).await;
    let spec = support::aging_spec("diverge", &corpus_path()).replace("lr = 0.003", "lr = 1000.0");
    let id = submit(port, &write_spec(dir.path(), "diverge", &spec));
    let _w = worker(port, "diverger", &dir.path().join("cache"));
    let s = finished(port, id, Duration::from_secs(600)).await;
    assert_eq!(s["status"], "completed", "{s}");
    assert_eq!(s["progress"]["generations"], 3, "{s}");
    let l = ledger(&db, id).await;
    assert_eq!(l.members, 3 + 2 * 2, "{l:?}");
    assert_eq!((l.duplicates, l.open_trials, l.lost), (0, 0, 0), "{l:?}");
    let pool = connect(&db).await;
    let states: Vec<(String, i64)> = sqlx::query_as("SELECT state, attempt FROM trials WHERE search_id = $1")
        .bind(id)
        .fetch_all(&pool)
        .await
        .expect("q");
    let statuses: Vec<(String,)> = sqlx::query_as("SELECT status FROM candidates WHERE search_id = $1")
        .bind(id)
        .fetch_all(&pool)
        .await
        .expect("q");
    pool.close().await;
    assert_eq!(states.len() as i64, l.distinct, "one trial per candidate");
    assert!(states.iter().all(|(state, attempt)| state == "diverged" && *attempt == 1), "{states:?}");
    assert!(statuses.iter().all(|(status,)| status == "diverged"), "{statuses:?}");
    assert_eq!(s["progress"]["candidates"]["diverged"].as_i64(), Some(l.distinct), "{s}");
    drop(_w);
    drop(_coordinator);
    drop_database(&db).await;
}

/// A worker whose data folder lacks the spec's corpus fails its trials with the missing path,
/// visible in the API and the UI, and backs off; a worker that has the corpus keeps the search
/// going to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_the_corpus_fails_visibly_and_the_search_goes_on() {
    let Some(db) = fresh_database("a_worker_without_the_corpus_fails_visibly_and_the_search_goes_on").await
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (with_data, without_data) = (dir.path().join("with-data"), dir.path().join("without-data"));
    std::fs::create_dir_all(&with_data).expect("data dir");
    std::fs::create_dir_all(&without_data).expect("empty data dir");
    std::fs::copy(corpus(), with_data.join("shakespeare.txt")).expect("copy the corpus");
    let (_coordinator, port) = coordinator(&db, &Serve::default()).await;
    // A relative corpus path: each worker reads it from its own data folder.
    let spec =
        write_spec(dir.path(), "no-corpus", &random_spec("no-corpus", "shakespeare.txt", 3, 4096, 3e-3));
    let id = submit(port, &spec);
    let opts = |data: &Path| WorkerOpts { data_dir: Some(data.to_owned()), ..WorkerOpts::default() };
    let _broken = worker_with(port, "no-data", &dir.path().join("cache-a"), &opts(&without_data));
    let _healthy = worker_with(port, "has-data", &dir.path().join("cache-b"), &opts(&with_data));
    let s = finished(port, id, Duration::from_secs(600)).await;
    assert_eq!(s["status"], "completed", "{s}");
    let l = ledger(&db, id).await;
    assert_intact(&l, 3);
    assert!(l.results >= 1, "the healthy worker trained nothing: {l:?}");

    // The broken worker's failures name the missing file, in the store and through the API.
    let missing = without_data.join("shakespeare.txt").display().to_string();
    let pool = connect(&db).await;
    let failed: Vec<(i64, String)> = sqlx::query_as(
        "SELECT t.candidate_id, e.payload FROM trial_events e JOIN trials t ON t.id = e.trial_id
         WHERE t.search_id = $1 AND e.kind IN ('requeued', 'failed') ORDER BY e.id",
    )
    .bind(id)
    .fetch_all(&pool)
    .await
    .expect("failure events");
    pool.close().await;
    assert!(!failed.is_empty(), "the worker without the corpus failed nothing");
    let (candidate, payload) = &failed[0];
    let payload: Value = serde_json::from_str(payload).expect("event payload");
    assert_eq!(payload["worker_id"], "no-data", "{payload}");
    let expected = format!("corpus path {missing} does not exist");
    assert!(payload["error"].as_str().is_some_and(|e| e.contains(&expected)), "{payload}");
    let detail = candidate_detail(port, *candidate).await;
    assert!(
        detail["history"].as_array().expect("history").iter().any(|e| {
            e["payload"]["error"].as_str().is_some_and(|m| m.contains(&expected))
                && e["payload"]["worker_id"] == "no-data"
        }),
        "{}",
        detail["history"]
    );
    let (status, page) = http_get(port, &format!("/ui/candidates/{candidate}")).expect("candidate page");
    assert_eq!(status, 200);
    assert!(page.contains(&expected), "the candidate page does not show the failure");
    // A candidate whose every attempt met the broken worker is failed with that message; every
    // other one was trained by the healthy worker.
    let board: Value = http()
        .get(format!("http://127.0.0.1:{port}/api/v1/searches/{id}/leaderboard?limit=100"))
        .send()
        .await
        .expect("leaderboard")
        .json()
        .await
        .expect("leaderboard JSON");
    let scored = board["items"].as_array().expect("rows").iter().filter(|r| r["ppl"].is_number()).count();
    assert_eq!(scored as i64, l.results, "{board}");
    drop(_broken);
    drop(_healthy);
    drop(_coordinator);
    drop_database(&db).await;
}

/// With debug logging on both sides, neither token nor a lease token is ever written to a log,
/// even when a request presents a wrong token or puts one in a query string.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_appear_in_logs() {
    let Some(db) = fresh_database("tokens_never_appear_in_logs").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (coordinator_log, worker_log) = (dir.path().join("coordinator.log"), dir.path().join("worker.log"));
    let debug = Some("debug".to_owned());
    let how = Serve { log_filter: debug.clone(), log: Some(coordinator_log.clone()), ..Serve::default() };
    let (coordinator, port) = coordinator(&db, &how).await;
    let spec = write_spec(dir.path(), "logs", &random_spec("logs", &corpus_path(), 1, 1024, 3e-3));
    let id = submit(port, &spec);
    let client = http();
    let base = format!("http://127.0.0.1:{port}/api/v1");
    // A wrong token, with the admin token where no token belongs (a query string).
    let wrong = "not-the-admin-token-0123";
    let r = client
        .post(format!("{base}/searches/{id}/cancel?token={ADMIN}"))
        .bearer_auth(wrong)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 401);
    // A lease taken, extended and handed back over HTTP, so a lease token crosses the wire both ways.
    let device = json!({ "fingerprint": "cpu-probe", "name": "probe", "kind": "cpu", "info": {} });
    let send = |path: String, body: Value| {
        let client = client.clone();
        async move {
            let r = client.post(path).bearer_auth(WORKER).json(&body).send().await.expect("request");
            assert!(r.status().is_success(), "{}", r.status());
            r.json::<Value>().await.expect("JSON")
        }
    };
    send(
        format!("{base}/workers/register"),
        json!({ "worker_id": "probe", "hostname": "h", "device": device }),
    )
    .await;
    let grant =
        send(format!("{base}/workers/lease"), json!({ "worker_id": "probe", "wait_ms": 10_000 })).await;
    let trial = grant["trial_id"].as_i64().expect("trial id");
    let lease_token = grant["lease_token"].as_str().expect("lease token").to_owned();
    send(format!("{base}/trials/{trial}/heartbeat"), json!({ "lease_token": lease_token })).await;
    send(
        format!("{base}/trials/{trial}/fail"),
        json!({ "lease_token": lease_token, "error": "probe hands the trial back", "retryable": true }),
    )
    .await;
    // A real worker leases it again (a second lease token) and finishes the search.
    let opts = WorkerOpts { log_filter: debug, log: Some(worker_log.clone()), ..WorkerOpts::default() };
    let w = worker_with(port, "logged", &dir.path().join("cache"), &opts);
    let s = finished(port, id, Duration::from_secs(600)).await;
    assert_eq!(s["status"], "completed", "{s}");
    w.kill();
    coordinator.kill();
    let logs = [
        std::fs::read_to_string(&coordinator_log).expect("coordinator log"),
        std::fs::read_to_string(&worker_log).expect("worker log"),
    ];
    assert!(logs.iter().all(|l| l.contains("DEBUG")), "debug logging was not on");
    assert!(logs[1].contains("leased"), "the worker log does not show its lease");
    for (log, who) in logs.iter().zip(["coordinator", "worker"]) {
        for secret in [ADMIN, WORKER, wrong, lease_token.as_str()] {
            assert!(!log.contains(secret), "the {who} log contains the token `{secret}`");
        }
    }
    drop_database(&db).await;
}

/// A search on a shard set with a BPE tokenizer file, both in the workers' data folder, whose
/// trials checkpoint every 25 steps. Its one candidate is the same for every search of this spec
/// (the same seed draws the same sample), and so is its training seed.
fn shards_spec(name: &str, tokens: u64) -> String {
    let model = search_space::ModelSettings { vocab_size: 320, ..search_space::presets::tiny_settings() };
    let spec = json!({
        "name": name,
        "seed": 5,
        "max_attempts": 3,
        "model": model,
        "space": {
            "mixers": ["attention", "mamba2", "deltanet"], "ratios": ["1:1"], "ffns_per_mixer": [1],
            "stages": 1, "min_blocks_per_stage": 1, "max_blocks_per_stage": 1, "max_operators": 4,
            "hidden_sizes": [64]
        },
        "target": { "setting": "batch=1,prompt=16,gen=32" },
        "proxy": {
            "tokens": tokens, "seq_len": 32, "batch_size": 4, "micro_batch": 2, "lr": 3e-3,
            "corpus": "shards:shake", "tokenizer": "file:shake/tokenizer.json", "eval_tokens": 1024,
            "checkpoint_every": "25 steps"
        },
        "algorithm": { "kind": "random", "candidates": 1, "batch": 1 }
    });
    spec.to_string()
}

/// The finished candidate of a one-candidate search: its id and validation loss.
async fn only_candidate(pool: &AnyPool, search_id: i64) -> (i64, f64) {
    sqlx::query_as("SELECT id, val_loss FROM candidates WHERE search_id = $1 AND status = 'done'")
        .bind(search_id)
        .fetch_one(pool)
        .await
        .expect("the search's one finished candidate")
}

fn checkpoint_files(root: &Path) -> Vec<std::path::PathBuf> {
    let Ok(trials) = std::fs::read_dir(root) else { return Vec::new() };
    trials
        .filter_map(|t| std::fs::read_dir(t.ok()?.path()).ok())
        .flatten()
        .filter_map(|f| Some(f.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "ckpt"))
        .collect()
}

/// Preemption at scale: a worker is killed with SIGKILL after its trial saved a checkpoint, and
/// another worker resumes the trial from that checkpoint instead of step 0. Its result equals an
/// uninterrupted run of the same job (same candidate, same seed), the history shows the resume,
/// and the finished trial leaves no checkpoint behind. The data is a shard set made by
/// `frontier data prepare` with a BPE `tokenizer.json`, named in the spec as `shards:` and
/// `file:`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_s_trial_resumes_from_its_checkpoint_with_the_uninterrupted_result() {
    let Some(db) =
        fresh_database("a_killed_worker_s_trial_resumes_from_its_checkpoint_with_the_uninterrupted_result")
            .await
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let checkpoints = dir.path().join("checkpoints");
    std::fs::create_dir_all(&data).expect("data folder");
    let prepared = support::frontier()
        .args(["data", "prepare", "--tokenizer", "bpe:320", "--shard-tokens", "100000", "--corpus"])
        .arg(corpus())
        .arg("--out")
        .arg(data.join("shake"))
        .output()
        .expect("run frontier data prepare");
    assert!(prepared.status.success(), "{}", String::from_utf8_lossy(&prepared.stderr));
    assert!(String::from_utf8_lossy(&prepared.stdout).contains("bpe-320"));

    let (_coordinator, port) = coordinator(&db, &Serve { lease_ttl_s: 3, ..Serve::default() }).await;
    let opts = WorkerOpts {
        data_dir: Some(data.clone()),
        checkpoint_dir: Some(checkpoints.clone()),
        ..WorkerOpts::default()
    };
    // 400 steps: long enough that the worker is still training after its first checkpoints.
    let tokens = 400 * 4 * 32;
    let killed = submit(port, &write_json_spec(dir.path(), "preempted", &shards_spec("preempted", tokens)));
    let doomed = worker_with(port, "doomed", &dir.path().join("cache"), &opts);
    let deadline = Instant::now() + Duration::from_secs(300);
    while checkpoint_files(&checkpoints).is_empty() {
        assert!(Instant::now() < deadline, "timed out waiting for the first checkpoint");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    doomed.kill();
    let saved: Vec<u64> = checkpoint_files(&checkpoints)
        .iter()
        .filter_map(|p| p.file_stem()?.to_str()?.strip_prefix("step-")?.parse().ok())
        .collect();
    assert!(!saved.is_empty() && saved.iter().all(|s| s % 25 == 0), "{saved:?}");

    let rescuer = worker_with(port, "rescuer", &dir.path().join("cache"), &opts);
    let s = finished(port, killed, Duration::from_secs(600)).await;
    assert_eq!(s["status"], "completed", "{s}");
    assert!(checkpoint_files(&checkpoints).is_empty(), "a finished trial leaves no checkpoint");

    // The same job uninterrupted: another search with the same spec trains the same candidate
    // with the same seed.
    let reference =
        submit(port, &write_json_spec(dir.path(), "reference", &shards_spec("reference", tokens)));
    let s = finished(port, reference, Duration::from_secs(600)).await;
    assert_eq!(s["status"], "completed", "{s}");
    drop(rescuer);

    let pool = connect(&db).await;
    let (candidate, resumed_loss) = only_candidate(&pool, killed).await;
    let (_, reference_loss) = only_candidate(&pool, reference).await;
    pool.close().await;
    assert!(
        (resumed_loss - reference_loss).abs() < 1e-5,
        "resumed {resumed_loss} vs uninterrupted {reference_loss}"
    );
    let detail = candidate_detail(port, candidate).await;
    let history: Vec<(&str, Option<u64>)> = detail["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|e| (e["kind"].as_str().unwrap_or_default(), e["payload"]["step"].as_u64()))
        .collect();
    let resumed: Vec<u64> = history.iter().filter(|(k, _)| *k == "resumed").filter_map(|(_, s)| *s).collect();
    assert_eq!(resumed.len(), 1, "{history:?}");
    assert_eq!(Some(&resumed[0]), saved.iter().max(), "the newest checkpoint is the one resumed");
    let kinds: Vec<&str> = history.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds, ["queued", "leased", "requeued", "leased", "resumed", "done"], "{history:?}");
    drop(_coordinator);
    drop_database(&db).await;
}

fn write_json_spec(dir: &Path, name: &str, spec: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, spec).expect("write the spec");
    path
}
