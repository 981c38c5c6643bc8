//! Fresh stores for tests: a SQLite file in a temp dir, or a new Postgres database.

use std::future::Future;
use std::io::Write;

use coordinator::store::{NewCandidate, Store};
use sqlx::migrate::MigrateDatabase;
use sqlx::{Any, AnyConnection, Connection};

/// Where the Postgres tests create their databases unless `FRONTIER_TEST_POSTGRES_URL` says
/// otherwise; `.ci/run` makes sure a server listens there.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A store on a database no other test uses, and the URL that opens it again.
#[derive(Debug)]
pub struct TestDb {
    pub store: Store,
    pub url: String,
}

/// Runs `test` against a new SQLite file.
pub async fn with_sqlite<F, Fut>(test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("create a temp dir");
    let url = format!("sqlite://{}", dir.path().join("frontier.db").display());
    let store = Store::connect(&url).await.expect("open a SQLite store");
    test(TestDb { store: store.clone(), url }).await;
    store.close().await;
}

/// Runs `test` against a new Postgres database, dropped afterwards.
///
/// A missing server fails the test under `CI=true` and skips it (with a line on stderr) elsewhere,
/// so a laptop without Postgres can still run the suite but CI can never pass without it.
pub async fn with_postgres<F, Fut>(test_name: &str, test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    sqlx::any::install_default_drivers();
    let admin_url =
        std::env::var("FRONTIER_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
    // One plain connection attempt: the pool would keep retrying a refused connection.
    match AnyConnection::connect(&admin_url).await {
        Ok(conn) => conn.close().await.expect("close the probe connection"),
        Err(err) if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!("CI=true but Postgres (FRONTIER_TEST_POSTGRES_URL) is unreachable: {err}")
        }
        Err(err) => {
            // Written to the stderr handle, not with `eprintln!`, which the test harness captures
            // and hides for tests that pass: a skip must be seen.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED postgres::{test_name}: Postgres (FRONTIER_TEST_POSTGRES_URL, default \
                 {DEFAULT_POSTGRES_URL}) is unreachable: {err}"
            );
            return;
        }
    }
    let url = with_database_name(&admin_url, &format!("frontier_test_{:016x}", rand::random::<u64>()));
    Any::create_database(&url).await.expect("create a test database");
    let store = Store::connect(&url).await.expect("open a Postgres store");
    // Run the body as its own task so that a failing assertion still lets the database be
    // dropped before the panic is passed on.
    let outcome = tokio::spawn(test(TestDb { store: store.clone(), url: url.clone() })).await;
    store.close().await;
    Any::force_drop_database(&url).await.expect("drop the test database");
    if let Err(err) = outcome {
        std::panic::resume_unwind(err.into_panic());
    }
}

/// Replaces the database named in a `postgres://` URL, keeping credentials and query.
fn with_database_name(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{server}/{database}?{query}"),
        None => format!("{server}/{database}"),
    }
}

/// A distinct architecture per `n`, as the engine would propose it.
pub fn candidate(n: i64) -> NewCandidate {
    NewCandidate {
        arch_hash: format!("arch-{n:04}"),
        architecture: serde_json::json!({ "stages": [["A", "F"], ["M2", "F"], ["D", "F"]], "n": n }),
        parent_id: None,
        mutation: None,
        hidden_size: 1024,
        params: 100_000_000 + n,
        est_latency_ms: Some(12.5),
        memory_bytes: 1 << 30,
        feasible: true,
    }
}

/// When [`queued_trials`] queues its trials: the queue tests' first instant, so every step of a
/// test runs on the one fake clock.
pub const QUEUED_AT_MS: i64 = 1_700_000_000_000;

/// A search with `trials` queued trials (one per candidate), returning their ids in queue order.
pub async fn queued_trials(store: &Store, trials: i64, max_attempts: i64) -> Vec<i64> {
    let search = store
        .create_search("queue", &serde_json::json!({ "algorithm": "aging_evolution" }))
        .await
        .expect("create search");
    let mut ids = Vec::new();
    for n in 0..trials {
        let (candidate, _) =
            store.insert_candidate(search.id, &candidate(n)).await.expect("insert candidate");
        let trial = store
            .enqueue_trial(search.id, candidate.id, 1_000_000, 0, max_attempts, QUEUED_AT_MS)
            .await
            .expect("enqueue trial");
        ids.push(trial.id);
    }
    ids
}

/// Generates `mod sqlite` and `mod postgres`, each with one `#[tokio::test]` per listed test body
/// (an `async fn(TestDb)` in a module of the test crate).
#[macro_export]
macro_rules! on_both_backends {
    ($($module:ident :: $test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    $crate::helpers::with_sqlite($crate::$module::$test).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    $crate::helpers::with_postgres(stringify!($test), $crate::$module::$test).await;
                }
            )*
        }
    };
}
