//! Searches answered from a tabular benchmark (`proxy.corpus = "table:NAME"`): the committed
//! table in `bench/tables`, no worker training anything.

use std::path::PathBuf;

use axum::http::StatusCode;
use coordinator::app::ApiConfig;
use coordinator::search::{TABLE_WORKER, training_seed};
use coordinator::store::TrialState;
use coordinator::tabular::Table;
use serde_json::{Value, json};

use crate::helpers::TestDb;
use crate::protocol::{lease, register};
use crate::requests::{ADMIN, WORKER, api, api_with, post};

fn tables() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bench/tables")
}

/// The table's own spec as JSON, answered from the table, with a small aging evolution.
fn table_spec() -> Value {
    let path = tables().join("tiny-shakespeare.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let spec = api::SearchSpec::from_file_text(&path.to_string_lossy(), &text).unwrap();
    let mut spec = serde_json::to_value(spec).unwrap();
    spec["proxy"]["corpus"] = json!("table:tiny-shakespeare");
    spec["algorithm"] =
        json!({ "kind": "aging_evolution", "population": 6, "sample_size": 3, "per_cycle": 3, "cycles": 4 });
    spec
}

fn with_tables() -> ApiConfig {
    ApiConfig { table_dir: Some(tables()), ..ApiConfig::new(ADMIN, WORKER) }
}

pub async fn a_table_search_is_answered_with_the_tables_runs_and_no_worker_trains(db: TestDb) {
    let table = Table::read(&tables().join("tiny-shakespeare.json.gz")).unwrap();
    let (router, state) = api_with(&db.store, with_tables());
    let spec = table_spec();
    let (status, created) = post(&router, "/api/v1/searches", ADMIN, &spec).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_i64().unwrap();
    // A worker asking for work meanwhile never receives one of the table's trials.
    register(&router, "w1").await;
    assert!(lease(&router, "w1").await.is_none(), "a worker was handed a table trial");
    for _ in 0..50 {
        coordinator::server::background_step(&state).await.unwrap();
        if state.store.get_search(id).await.unwrap().unwrap().status == "completed" {
            break;
        }
    }
    assert_eq!(state.store.get_search(id).await.unwrap().unwrap().status, "completed");
    let seed = spec["seed"].as_u64().unwrap();
    let trials = state.store.search_trials(id).await.unwrap();
    // 6 members and 4 cycles of 3: at most 18 distinct candidates, each answered once.
    assert!(trials.len() >= 6 && trials.len() <= 18, "{} trials", trials.len());
    for t in &trials {
        assert_eq!(t.state, TrialState::Done);
        // Leased by the coordinator itself, or by the worker that asked first and was not
        // handed it: either way the table answered.
        let device = t.result.as_ref().and_then(|r| r["device"].as_str()).unwrap_or_default();
        assert!(device.starts_with("table `tiny-shakespeare`"), "{device}");
        assert!(matches!(t.worker_id.as_deref(), Some(TABLE_WORKER) | Some("w1")));
        let candidate = state.store.get_candidate(t.candidate_id).await.unwrap().unwrap();
        let run = table.answer(&candidate.arch_hash, training_seed(seed, &candidate.arch_hash)).unwrap();
        assert_eq!(t.ppl, Some(run.ppl), "candidate {} was not answered with its table run", candidate.id);
        assert_eq!(candidate.ppl, Some(run.ppl));
        // The latency the search saw is the table's.
        let model = table.by_hash(&candidate.arch_hash).unwrap();
        assert_eq!(candidate.est_latency_ms, Some(model.latency_ms));
    }
}

pub async fn a_table_search_names_a_missing_table_or_other_model_settings(db: TestDb) {
    let (router, _) = api_with(&db.store, with_tables());
    let mut spec = table_spec();
    spec["proxy"]["corpus"] = json!("table:no-such-table");
    let (status, body) = post(&router, "/api/v1/searches", ADMIN, &spec).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body.to_string().contains("proxy.corpus") && body.to_string().contains("no-such-table"),
        "{body}"
    );

    let mut spec = table_spec();
    spec["model"]["ffn"]["expand_ratio"] = json!(4.0);
    let (status, body) = post(&router, "/api/v1/searches", ADMIN, &spec).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("other model settings"), "{body}");

    for bad in ["table:../etc", "table:"] {
        let mut spec = table_spec();
        spec["proxy"]["corpus"] = json!(bad);
        let (status, body) = post(&router, "/api/v1/searches", ADMIN, &spec).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert!(body.to_string().contains("proxy.corpus"), "{body}");
    }

    // A coordinator without a table folder says how to give it one.
    let (plain, _) = api(&db.store);
    let (status, body) = post(&plain, "/api/v1/searches", ADMIN, &table_spec()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("--table-dir"), "{body}");
}
