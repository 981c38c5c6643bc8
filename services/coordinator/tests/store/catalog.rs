//! Devices, LUT entries and searches.

use coordinator::StoreError;
use coordinator::store::{NewDevice, NewLutEntry};
use serde_json::json;

use crate::helpers::TestDb;

fn device(name: &str) -> NewDevice {
    NewDevice {
        fingerprint: "h200-cuda12.8".to_owned(),
        name: name.to_owned(),
        kind: "gpu".to_owned(),
        info: json!({ "memory_gib": 139, "driver": "570" }),
    }
}

fn lut_entry(device: &str, setting_key: &str, op_key: &str, median_ms: f64) -> NewLutEntry {
    NewLutEntry {
        device: device.to_owned(),
        setting_key: setting_key.to_owned(),
        op_key: op_key.to_owned(),
        median_ms,
        p10_ms: median_ms * 0.9,
        p90_ms: median_ms * 1.1,
        repeats: 20,
    }
}

pub async fn upserting_a_device_updates_it_and_keeps_its_creation_time(db: TestDb) {
    let first = db.store.upsert_device(&device("node-a")).await.expect("insert");

    let mut renamed = device("node-b");
    renamed.info = json!({ "memory_gib": 141 });
    let second = db.store.upsert_device(&renamed).await.expect("update");

    assert_eq!(second.name, "node-b");
    assert_eq!(second.info, json!({ "memory_gib": 141 }));
    assert_eq!(second.created_at_ms, first.created_at_ms);
    let stored = db.store.get_device("h200-cuda12.8").await.expect("get");
    assert_eq!(stored, Some(second));
}

pub async fn missing_device_is_none(db: TestDb) {
    assert_eq!(db.store.get_device("no-such-device").await.expect("get"), None);
}

pub async fn lut_entry_put_twice_keeps_one_row_with_the_latest_measurement(db: TestDb) {
    db.store.upsert_device(&device("node")).await.expect("device");
    let setting = "b1-p512-g8192-bf16";

    db.store.put_lut_entry(&lut_entry("h200-cuda12.8", setting, "mamba2/d1024", 1.5)).await.unwrap();
    db.store.put_lut_entry(&lut_entry("h200-cuda12.8", setting, "mamba2/d1024", 1.25)).await.unwrap();

    let entries = db.store.lut_entries("h200-cuda12.8", setting).await.expect("read");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].median_ms, 1.25);
    assert_eq!(entries[0].p90_ms, 1.25 * 1.1);
    assert_eq!(entries[0].repeats, 20);
}

pub async fn lut_entries_are_scoped_to_device_and_setting(db: TestDb) {
    db.store.upsert_device(&device("node")).await.expect("device");
    let mut other = device("other");
    other.fingerprint = "cpu-epyc".to_owned();
    db.store.upsert_device(&other).await.expect("device");
    for (device, setting, op) in [
        ("h200-cuda12.8", "b1", "attention/d1024"),
        ("h200-cuda12.8", "b1", "ffn/d1024"),
        ("h200-cuda12.8", "b64", "ffn/d1024"),
        ("cpu-epyc", "b1", "ffn/d1024"),
    ] {
        db.store.put_lut_entry(&lut_entry(device, setting, op, 2.0)).await.expect("put");
    }

    let entries = db.store.lut_entries("h200-cuda12.8", "b1").await.expect("read");

    let ops: Vec<_> = entries.iter().map(|e| e.op_key.as_str()).collect();
    assert_eq!(ops, ["attention/d1024", "ffn/d1024"]);
    assert!(entries.iter().all(|e| e.device == "h200-cuda12.8" && e.setting_key == "b1"));
}

pub async fn lut_entry_for_an_unknown_device_is_rejected(db: TestDb) {
    let err = db
        .store
        .put_lut_entry(&lut_entry("never-registered", "b1", "ffn/d1024", 1.0))
        .await
        .expect_err("the device must exist");

    assert!(matches!(err, StoreError::Database(_)), "{err:?}");
    assert!(db.store.lut_entries("never-registered", "b1").await.unwrap().is_empty());
}

pub async fn created_search_reads_back_with_its_spec(db: TestDb) {
    let spec = json!({ "device": "h200", "latency_budget_ms": 30.5, "population": 64 });

    let created = db.store.create_search("flash-1b", &spec).await.expect("create");

    assert_eq!(created.name, "flash-1b");
    assert_eq!(created.spec, spec);
    assert_eq!(created.status, "pending");
    assert_eq!(db.store.get_search(created.id).await.expect("get"), Some(created.clone()));
    assert_eq!(db.store.get_search(created.id + 1000).await.expect("get"), None);
}

pub async fn searches_are_listed_newest_first(db: TestDb) {
    let first = db.store.create_search("first", &json!({})).await.unwrap();
    let second = db.store.create_search("second", &json!({})).await.unwrap();

    let listed = db.store.list_searches().await.expect("list");

    assert_eq!(listed, [second, first]);
}
