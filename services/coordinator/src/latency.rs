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

/// The device whose table a target names: `device` itself, or the only device with a table for
/// `setting` when `device` is `None`. `Ok(Ok(None))`: no device has one; `Ok(Err(reason))`:
/// several do, and the reason tells the user to name one in `target.device`.
pub async fn resolve_device(
    store: &Store,
    device: Option<&str>,
    setting: &DeploymentSetting,
) -> Result<Result<Option<String>, String>, StoreError> {
    if let Some(d) = device {
        return Ok(Ok(Some(d.to_owned())));
    }
    let key = setting.key();
    let devices = store.devices_with_lut(&key).await?;
    Ok(match devices.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        many => {
            let shown: Vec<&str> = many.iter().take(5).map(String::as_str).collect();
            let more = if many.len() > shown.len() {
                format!(" and {} more", many.len() - shown.len())
            } else {
                String::new()
            };
            Err(format!(
                "{} devices have a latency table for `{key}` ({}{more}), so a search without \
                 target.device cannot tell which one it targets; name one in target.device \
                 (GET /api/v1/devices lists them)",
                many.len(),
                shown.join(", ")
            ))
        }
    })
}

/// As [`load`], but the table itself (for per-layer breakdowns).
pub async fn load_table(
    store: &Store,
    device: Option<&str>,
    setting: &DeploymentSetting,
) -> Result<Result<Option<lut::Lut>, String>, StoreError> {
    let key = setting.key();
    let device = match resolve_device(store, device, setting).await? {
        Ok(Some(d)) => d,
        Ok(None) => return Ok(Ok(None)),
        Err(reason) => return Ok(Err(reason)),
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
    Ok(Ok(Some(table_from_rows(&device, setting, &rows, calibration))))
}

impl LatencyModel for lut::Lut {
    fn estimate_ms(&self, model: &ModelSpec) -> Result<f64, String> {
        self.estimate(model).map(|e| e.latency_ms).map_err(|u| u.to_string())
    }
}

/// Builds the in-memory table from stored rows, each checked by [`lut::parse_row`] exactly as an
/// upload is. A row that fails (stored before uploads were checked) is left out with a warning,
/// so one bad row can never fail a search; it stays in the store until an admin deletes it.
pub fn table_from_rows(
    device: &str,
    setting: &DeploymentSetting,
    rows: &[crate::store::LutEntryRow],
    calibration: Option<lut::Calibration>,
) -> lut::Lut {
    let (table, skipped) = lut::table_from_rows(device, setting, rows.iter().map(|r| r.raw()), calibration);
    for (r, problem) in skipped {
        // Debug formatting escapes the keys: a newline in one cannot forge a log line.
        tracing::warn!(
            device = ?device,
            setting = ?r.setting_key,
            op = ?r.op_key,
            problem = %problem,
            "skipping a stored latency entry that does not parse; \
             DELETE /api/v1/devices/{{fingerprint}}/lut removes it"
        );
    }
    table
}
