//! Latency tables from outside: an uploaded row is parsed like a profiled one (a bad row is a 422
//! naming it), a stored row that does not parse never fails a search, an admin deletes a table or
//! one row, and another device's table cannot make a running search ambiguous.

use axum::Router;
use axum::http::{Method, StatusCode};
use coordinator::store::NewLutEntry;
use serde_json::{Value, json};

use crate::helpers::TestDb;
use crate::protocol::{device, register};
use crate::requests::{ADMIN, WORKER, aging, api, flat_latency_table, get, post, send, spec};

const SETTING: &str = "batch=1,prompt=16,gen=32";
const KEY: &str = "batch=1,prompt=16,gen=32,dtype=bf16";

/// A valid uploaded row at the test setting, with `patch`'s fields over it.
fn row(patch: Value) -> Value {
    let mut r = json!({ "setting_key": "batch=1,prompt=8,gen=8", "op_key": "ffn:hidden=64,intermediate=192",
                        "median_ms": 1.0, "p10_ms": 0.9, "p90_ms": 1.1, "repeats": 5 });
    for (k, v) in patch.as_object().unwrap() {
        r[k] = v.clone();
    }
    r
}

/// A spec that needs the latency table: a budget at the test setting.
fn budget_spec() -> Value {
    let mut s = spec(aging(2, 1, 2));
    s["target"]["latency_budget_ms"] = json!(1000.0);
    s
}

/// A row written straight into the store, as an older coordinator (which stored an uploaded
/// `op_key` unparsed) could have left it.
async fn store_raw_row(db: &TestDb, device: &str, op_key: &str) {
    db.store
        .put_lut_entries(&[NewLutEntry {
            device: device.into(),
            setting_key: KEY.into(),
            op_key: op_key.into(),
            median_ms: 0.1,
            p10_ms: 0.09,
            p90_ms: 0.11,
            repeats: 5,
        }])
        .await
        .unwrap();
}

pub async fn a_bad_latency_row_is_refused_naming_its_index_and_field(db: TestDb) {
    let (router, _) = api(&db.store);
    register(&router, "w1").await;
    let cases = [
        (json!({ "op_key": "not-an-op" }), "op_key"),
        (json!({ "op_key": "ffn:hidden=64,intermediate=192\nINFO forged log line" }), "op_key"),
        (json!({ "op_key": "ffn:hidden=64,intermediate=192\r" }), "op_key"),
        (json!({ "op_key": "ffn:hidden=64" }), "op_key"),
        (json!({ "setting_key": "batch=one,prompt=8,gen=8" }), "setting_key"),
        (json!({ "setting_key": "batch=1,prompt=8,gen=8\u{1b}[2J" }), "setting_key"),
        (json!({ "median_ms": -1.0, "p10_ms": -2.0 }), "median_ms"),
        (json!({ "median_ms": 1e308, "p90_ms": 1e308 }), "median_ms"),
        (json!({ "p10_ms": 2.0 }), "p10_ms"),
        (json!({ "p90_ms": 0.5 }), "p90_ms"),
        (json!({ "repeats": 0 }), "repeats"),
        (json!({ "repeats": 1_u64 << 40 }), "repeats"),
    ];
    for (patch, field) in cases {
        let body = json!([row(json!({})), row(patch.clone())]);
        let (status, err) = post(&router, "/api/v1/devices/cpu-test/lut", WORKER, &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{patch}: {err}");
        assert_eq!(err["fields"][0]["path"], format!("[1].{field}"), "{patch}: {err}");
        assert!(!err["error"].as_str().unwrap().contains('\n'), "the message is one line: {err}");
    }
    assert!(db.store.lut_entries_of_device("cpu-test").await.unwrap().is_empty(), "nothing was stored");
    // A good row is stored under its canonical keys, however it was written.
    let body = json!([row(
        json!({ "op_key": " ffn:intermediate=192, hidden=64 ", "setting_key": "gen=8,batch=1,prompt=8" })
    )]);
    let (status, r) = post(&router, "/api/v1/devices/cpu-test/lut", WORKER, &body).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let stored = db.store.lut_entries_of_device("cpu-test").await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].op_key, "ffn:hidden=64,intermediate=192");
    assert_eq!(stored[0].setting_key, "batch=1,prompt=8,gen=8,dtype=bf16");
}

pub async fn a_stored_row_that_does_not_parse_never_fails_a_search(db: TestDb) {
    let (router, state) = api(&db.store);
    flat_latency_table(&db.store, "cpu-test", SETTING).await;
    let (status, created) = post(&router, "/api/v1/searches", ADMIN, &budget_spec()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_i64().unwrap();
    // The row the probe uploaded, now in the store beside a good table.
    store_raw_row(&db, "cpu-test", "not-an-op").await;
    store_raw_row(&db, "cpu-test", "ffn:hidden=1\nforged").await;
    // The running search goes on to its next generation.
    register(&router, "w1").await;
    while let Some(grant) = crate::protocol::lease(&router, "w1").await {
        let (status, r) = crate::protocol::complete(&router, &grant, 5.0).await;
        assert_eq!(status, StatusCode::OK, "{r}");
    }
    coordinator::server::background_step(&state).await.unwrap();
    let (_, search) = get(&router, &format!("/api/v1/searches/{id}")).await;
    assert_ne!(search["status"], "failed", "{search}");
    assert!(search["error"].is_null(), "{search}");
    // New searches at that setting are accepted, and scored from the rows that parse.
    let (status, again) = post(&router, "/api/v1/searches", ADMIN, &budget_spec()).await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert_eq!(again["status"], "running", "{again}");
    // The table still shows every stored row, so an admin can see what to delete.
    let (_, table) = get(&router, &format!("/api/v1/devices/cpu-test/lut?setting={SETTING}")).await;
    let ops: Vec<&str> =
        table["entries"].as_array().unwrap().iter().map(|e| e["op_key"].as_str().unwrap()).collect();
    assert!(ops.contains(&"not-an-op"), "{ops:?}");
}

/// `DELETE /api/v1/devices/{fingerprint}/lut` with a query string.
async fn delete(router: &Router, token: &str, query: &str) -> (StatusCode, Value) {
    send(router, Method::DELETE, &format!("/api/v1/devices/cpu-test/lut{query}"), Some(token), None).await
}

pub async fn an_admin_deletes_a_devices_table_or_one_row(db: TestDb) {
    let (router, _) = api(&db.store);
    flat_latency_table(&db.store, "cpu-test", SETTING).await;
    store_raw_row(&db, "cpu-test", "not-an-op").await;
    let other = "batch=1,prompt=8,gen=8";
    let (status, _) = post(&router, "/api/v1/devices/cpu-test/lut", WORKER, &json!([row(json!({}))])).await;
    assert_eq!(status, StatusCode::OK);
    let count = |db: &TestDb| {
        let store = db.store.clone();
        async move { store.lut_entries_of_device("cpu-test").await.unwrap().len() }
    };
    let total = count(&db).await;
    let (status, err) = delete(&router, WORKER, "").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    let (status, err) = send(&router, Method::DELETE, "/api/v1/devices/cpu-test/lut", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{err}");
    assert_eq!(count(&db).await, total, "a refused deletion deletes nothing");
    for (query, want) in
        [("?setting=batch=x", StatusCode::BAD_REQUEST), ("?colour=red", StatusCode::BAD_REQUEST)]
    {
        let (status, err) = delete(&router, ADMIN, query).await;
        assert_eq!(status, want, "{query}: {err}");
    }
    let (status, err) = send(&router, Method::DELETE, "/api/v1/devices/unknown/lut", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
    // One row, by its stored text.
    let (status, r) = delete(&router, ADMIN, &format!("?setting={SETTING}&op=not-an-op")).await;
    assert_eq!((status, r["deleted"].as_u64()), (StatusCode::OK, Some(1)), "{r}");
    assert_eq!(count(&db).await, total - 1);
    // One setting's table, and its calibration.
    db.store.put_lut_calibration("cpu-test", KEY, &json!({ "scale": 1.0 }), &json!({})).await.unwrap();
    let (status, r) = delete(&router, ADMIN, &format!("?setting={SETTING}")).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["deleted"].as_u64(), Some(total as u64 - 2));
    assert!(db.store.lut_calibration("cpu-test", KEY).await.unwrap().is_none());
    let left = db.store.lut_entries_of_device("cpu-test").await.unwrap();
    assert_eq!(left.len(), 1);
    assert!(left[0].setting_key.starts_with(other));
    // Every table of the device; the device itself stays.
    let (status, r) = delete(&router, ADMIN, "").await;
    assert_eq!((status, r["deleted"].as_u64()), (StatusCode::OK, Some(1)), "{r}");
    assert_eq!(count(&db).await, 0);
    assert!(db.store.get_device("cpu-test").await.unwrap().is_some());
}

pub async fn another_devices_table_cannot_make_a_running_search_ambiguous(db: TestDb) {
    let (router, state) = api(&db.store);
    flat_latency_table(&db.store, "cpu-test", SETTING).await;
    let (status, created) = post(&router, "/api/v1/searches", ADMIN, &budget_spec()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_i64().unwrap();
    assert_eq!(created["spec"]["target"]["device"], "cpu-test", "pinned to the one device with a table");
    // A second device, with a table at the same setting.
    let body = json!({ "worker_id": "w2", "hostname": "h", "device": device("cpu-other") });
    let (status, _) = post(&router, "/api/v1/workers/register", WORKER, &body).await;
    assert_eq!(status, StatusCode::OK);
    flat_latency_table(&db.store, "cpu-other", SETTING).await;
    register(&router, "w1").await;
    while let Some(grant) = crate::protocol::lease(&router, "w1").await {
        crate::protocol::complete(&router, &grant, 5.0).await;
    }
    coordinator::server::background_step(&state).await.unwrap();
    let (_, search) = get(&router, &format!("/api/v1/searches/{id}")).await;
    assert_ne!(search["status"], "failed", "{search}");
    // A new search that does not say which device is told to name one.
    let (status, err) = post(&router, "/api/v1/searches", ADMIN, &budget_spec()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["fields"][0]["path"], "target.device", "{err}");
    let message = err["fields"][0]["message"].as_str().unwrap();
    assert!(message.contains("cpu-other") && message.contains("name one in target.device"), "{message}");
    let mut named = budget_spec();
    named["target"]["device"] = json!("cpu-other");
    let (status, created) = post(&router, "/api/v1/searches", ADMIN, &named).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
}
