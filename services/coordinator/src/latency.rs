//! Latency scoring for the search driver: the target device's latency table, loaded from the
//! store with its newest calibration, behind a small trait so the driver does not care how
//! estimates are made.

use lut::DeploymentSetting;
use search_space::ModelSpec;

use crate::store::{Store, StoreError};

/// Estimates a model's end-to-end decode latency at one deployment setting on one device.
pub trait LatencyModel: Send + Sync {
    /// Milliseconds, or why the model cannot be scored (a shape the table lacks).
    fn estimate_ms(&self, model: &ModelSpec) -> Result<f64, String>;
}

/// The latency table for `setting` on `device`, or on the only device that has one when `device`
/// is `None`. `Ok(Ok(None))`: no table; `Ok(Err(reason))`: the target is ambiguous or unusable.
pub async fn load(
    store: &Store,
    device: Option<&str>,
    setting: &DeploymentSetting,
) -> Result<Result<Option<Box<dyn LatencyModel>>, String>, StoreError> {
    Ok(load_table(store, device, setting).await?.map(|t| t.map(|t| Box::new(t) as Box<dyn LatencyModel>)))
}

/// As [`load`], but the table itself (for per-layer breakdowns).
pub async fn load_table(
    store: &Store,
    device: Option<&str>,
    setting: &DeploymentSetting,
) -> Result<Result<Option<lut::Lut>, String>, StoreError> {
    let key = setting.key();
    let devices = match device {
        Some(d) => vec![d.to_owned()],
        None => store.devices_with_lut(&key).await?,
    };
    let device = match devices.as_slice() {
        [] => return Ok(Ok(None)),
        [one] => one.clone(),
        many => {
            return Ok(Err(format!(
                "several devices have a latency table for `{key}` ({}); name one in target.device",
                many.join(", ")
            )));
        }
    };
    let rows = store.lut_entries(&device, &key).await?;
    if rows.is_empty() {
        return Ok(Ok(None));
    }
    let calibration = match store.lut_calibration(&device, &key).await? {
        Some(row) => match serde_json::from_value::<lut::Calibration>(row.coefficients) {
            Ok(c) => Some(c),
            Err(e) => {
                return Ok(Err(format!(
                    "the stored calibration of `{device}` for `{key}` is malformed: {e}"
                )));
            }
        },
        None => None,
    };
    Ok(table_from_rows(&device, setting, &rows, calibration).map(Some))
}

impl LatencyModel for lut::Lut {
    fn estimate_ms(&self, model: &ModelSpec) -> Result<f64, String> {
        self.estimate(model).map(|e| e.latency_ms).map_err(|u| u.to_string())
    }
}

/// Builds the in-memory table from stored rows.
fn table_from_rows(
    device: &str,
    setting: &DeploymentSetting,
    rows: &[crate::store::LutEntryRow],
    calibration: Option<lut::Calibration>,
) -> Result<lut::Lut, String> {
    let mut entries = Vec::with_capacity(rows.len());
    for r in rows {
        let op = r.op_key.parse().map_err(|e| {
            format!("stored latency entry `{}` of device `{device}` does not parse: {e}", r.op_key)
        })?;
        entries.push(lut::LutEntry {
            op,
            median_ms: r.median_ms,
            p10_ms: r.p10_ms,
            p90_ms: r.p90_ms,
            repeats: u32::try_from(r.repeats).unwrap_or(u32::MAX),
        });
    }
    let table = lut::Lut::from_entries(device, *setting, entries);
    Ok(match calibration {
        Some(c) => table.with_calibration(c),
        None => table,
    })
}
