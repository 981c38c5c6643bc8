//! Latency tables: bulk entries, the tables listed, calibrations as a history, and LUT keys that
//! round-trip through the store's text columns.

use coordinator::store::{NewDevice, NewLutEntry};
use lut::{DeploymentSetting, Lut, LutEntry, OpShape};
use serde_json::json;

use crate::helpers::TestDb;

const CPU: &str = "cpu/flex on Cpu/Test CPU/2 threads";

fn device(fingerprint: &str) -> NewDevice {
    NewDevice {
        fingerprint: fingerprint.to_owned(),
        name: "test".to_owned(),
        kind: "cpu".to_owned(),
        info: json!({ "threads": 2 }),
    }
}

fn setting() -> DeploymentSetting {
    "batch=1,prompt=64,gen=256,dtype=f32".parse().unwrap()
}

fn entries() -> Vec<LutEntry> {
    let shapes = [
        OpShape::Attention { hidden: 128, heads: 4, kv_heads: 2, head_dim: 32, context: 69 },
        OpShape::Attention { hidden: 128, heads: 4, kv_heads: 2, head_dim: 32, context: 324 },
        OpShape::Mamba2 { hidden: 128, d_inner: 256, heads: 8, head_dim: 32, state: 16, groups: 1, conv: 4 },
        OpShape::Ffn { hidden: 128, intermediate: 384 },
        OpShape::EmbedHead { hidden: 128, vocab: 256, tied: true },
    ];
    shapes
        .into_iter()
        .enumerate()
        .map(|(i, op)| {
            let median_ms = 0.05 + 0.01 * i as f64;
            LutEntry { op, median_ms, p10_ms: median_ms * 0.95, p90_ms: median_ms * 1.2, repeats: 15 }
        })
        .collect()
}

fn rows(device: &str, setting: &DeploymentSetting, entries: &[LutEntry]) -> Vec<NewLutEntry> {
    NewLutEntry::rows(device, setting, entries)
}

pub async fn lut_entries_round_trip_through_the_store_to_the_same_table(db: TestDb) {
    db.store.upsert_device(&device(CPU)).await.unwrap();
    let written = entries();
    assert_eq!(db.store.put_lut_entries(&rows(CPU, &setting(), &written)).await.unwrap(), 5);

    let stored = db.store.lut_entries(CPU, &setting().key()).await.unwrap();
    let read: Vec<LutEntry> = stored
        .iter()
        .map(|r| LutEntry {
            op: r.op_key.parse().unwrap(),
            median_ms: r.median_ms,
            p10_ms: r.p10_ms,
            p90_ms: r.p90_ms,
            repeats: u32::try_from(r.repeats).unwrap(),
        })
        .collect();
    let setting_back: DeploymentSetting = stored[0].setting_key.parse().unwrap();
    assert_eq!(setting_back, setting());
    let before = Lut::from_entries(CPU, setting(), written);
    let after = Lut::from_entries(CPU, setting_back, read);
    assert_eq!(before.entries(), after.entries(), "every shape and number comes back unchanged");
}

pub async fn bulk_entries_are_all_or_nothing(db: TestDb) {
    db.store.upsert_device(&device(CPU)).await.unwrap();
    let mut batch = rows(CPU, &setting(), &entries());
    // The last row names a device that does not exist: the foreign key fails the transaction.
    batch[4].device = "no-such-device".to_owned();
    assert!(db.store.put_lut_entries(&batch).await.is_err());
    assert!(db.store.lut_entries(CPU, &setting().key()).await.unwrap().is_empty(), "nothing was kept");
}

pub async fn lut_tables_list_each_device_and_setting_with_its_entry_count(db: TestDb) {
    db.store.upsert_device(&device(CPU)).await.unwrap();
    db.store.upsert_device(&device("cuda/h200")).await.unwrap();
    let other: DeploymentSetting = "batch=8,prompt=64,gen=256,dtype=f32".parse().unwrap();
    db.store.put_lut_entries(&rows(CPU, &setting(), &entries())).await.unwrap();
    db.store.put_lut_entries(&rows(CPU, &other, &entries()[..2])).await.unwrap();
    db.store.put_lut_entries(&rows("cuda/h200", &setting(), &entries()[..3])).await.unwrap();

    let all = db.store.lut_tables(None).await.unwrap();
    let summary: Vec<(&str, String, i64)> =
        all.iter().map(|t| (t.device.as_str(), t.setting_key.clone(), t.entries)).collect();
    assert_eq!(
        summary,
        [(CPU, setting().key(), 5), (CPU, other.key(), 2), ("cuda/h200", setting().key(), 3),]
    );
    assert!(all.iter().all(|t| t.updated_at_ms > 0));
    assert_eq!(db.store.lut_tables(Some("cuda/h200")).await.unwrap().len(), 1);
    assert_eq!(db.store.lut_entries_of_device(CPU).await.unwrap().len(), 7);
    let devices: Vec<String> = db.store.devices().await.unwrap().into_iter().map(|d| d.fingerprint).collect();
    assert_eq!(devices, [CPU.to_owned(), "cuda/h200".to_owned()]);
}

pub async fn the_newest_calibration_is_the_one_in_use(db: TestDb) {
    db.store.upsert_device(&device(CPU)).await.unwrap();
    let key = setting().key();
    assert_eq!(db.store.lut_calibration(CPU, &key).await.unwrap(), None);
    let first = json!({ "scale": 1.1, "per_layer_ms": 0.2, "constant_ms": 1.0, "samples": 30 });
    let second = json!({ "scale": 0.9, "per_layer_ms": 0.1, "constant_ms": 0.5, "samples": 30 });
    db.store.put_lut_calibration(CPU, &key, &first, &json!({ "spearman": 0.9 })).await.unwrap();
    let newest =
        db.store.put_lut_calibration(CPU, &key, &second, &json!({ "spearman": 0.97 })).await.unwrap();

    let in_use = db.store.lut_calibration(CPU, &key).await.unwrap().unwrap();
    assert_eq!(in_use, newest);
    assert_eq!(in_use.coefficients, second);
    assert_eq!(in_use.fidelity["spearman"], 0.97);
    let coefficients: lut::Calibration = serde_json::from_value(in_use.coefficients).unwrap();
    assert_eq!(coefficients.scale, 0.9);
    assert_eq!(db.store.lut_calibration(CPU, "batch=2,prompt=1,gen=1,dtype=f32").await.unwrap(), None);
}
