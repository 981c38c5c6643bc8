//! The store's latency-table statements: devices listed, entries written in bulk, the tables
//! (device × setting) that exist, and calibrations kept as a history whose newest row is in use.
//!
//! Part of [`Store`]; kept in its own file so the LUT side reads on its own. Values stay plain
//! (keys as text, coefficients and fidelity as JSON) so the store never interprets a LUT.
//! Devices are written and read here too, since every LUT belongs to one.

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::rows::{device_from_row, json_column, lut_entry_from_row};
use super::{DeviceRow, LutEntryRow, NewDevice, NewLutEntry, Store, StoreError};
use crate::clock::clock_ms;

/// One LUT: a device under a deployment setting, with how many entries it holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LutTableRow {
    pub device: String,
    pub setting_key: String,
    pub entries: i64,
    /// Newest entry's time.
    pub updated_at_ms: i64,
}

/// A stored calibration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LutCalibrationRow {
    pub id: i64,
    pub device: String,
    pub setting_key: String,
    pub coefficients: Value,
    pub fidelity: Value,
    pub created_at_ms: i64,
}

impl Store {
    /// Registers a device, or updates its name, kind and info; its creation time is kept.
    pub async fn upsert_device(&self, device: &NewDevice) -> Result<DeviceRow, StoreError> {
        let row = sqlx::query(concat!(
            "INSERT INTO devices (fingerprint, name, kind, info, created_at_ms)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (fingerprint) DO UPDATE
             SET name = excluded.name, kind = excluded.kind, info = excluded.info
             RETURNING ",
            device_columns!()
        ))
        .bind(&device.fingerprint)
        .bind(&device.name)
        .bind(&device.kind)
        .bind(device.info.to_string())
        .bind(clock_ms())
        .fetch_one(&self.pool)
        .await?;
        device_from_row(&row)
    }

    pub async fn get_device(&self, fingerprint: &str) -> Result<Option<DeviceRow>, StoreError> {
        let row = sqlx::query(concat!("SELECT ", device_columns!(), " FROM devices WHERE fingerprint = $1"))
            .bind(fingerprint)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(device_from_row).transpose()
    }

    /// Stores a measurement, replacing any earlier one for the same (device, setting, operator).
    pub async fn put_lut_entry(&self, entry: &NewLutEntry) -> Result<(), StoreError> {
        self.put_lut_entries(std::slice::from_ref(entry)).await.map(|_| ())
    }

    /// The LUT of one device under one deployment setting, ordered by operator key.
    pub async fn lut_entries(&self, device: &str, setting_key: &str) -> Result<Vec<LutEntryRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            lut_entry_columns!(),
            " FROM lut_entries WHERE device = $1 AND setting_key = $2 ORDER BY op_key"
        ))
        .bind(device)
        .bind(setting_key)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(lut_entry_from_row).collect()
    }

    /// Every registered device.
    pub async fn list_devices(&self) -> Result<Vec<DeviceRow>, StoreError> {
        let rows = sqlx::query(concat!("SELECT ", device_columns!(), " FROM devices ORDER BY fingerprint"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(device_from_row).collect()
    }

    /// Devices with at least one latency entry for a setting.
    pub async fn devices_with_lut(&self, setting_key: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT device FROM lut_entries WHERE setting_key = $1 ORDER BY device",
        )
        .bind(setting_key)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every registered device, by fingerprint.
    pub async fn devices(&self) -> Result<Vec<DeviceRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT fingerprint, name, kind, info, created_at_ms FROM devices ORDER BY fingerprint",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(device_from_row).collect()
    }

    /// Stores many measurements in one transaction (all or none), each replacing any earlier one
    /// for the same (device, setting, operator). Returns how many were written.
    pub async fn put_lut_entries(&self, entries: &[NewLutEntry]) -> Result<usize, StoreError> {
        let now_ms = clock_ms();
        let mut tx = self.pool.begin().await?;
        for entry in entries {
            sqlx::query(
                "INSERT INTO lut_entries
                     (device, setting_key, op_key, median_ms, p10_ms, p90_ms, repeats, created_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (device, setting_key, op_key) DO UPDATE
                 SET median_ms = excluded.median_ms, p10_ms = excluded.p10_ms,
                     p90_ms = excluded.p90_ms, repeats = excluded.repeats,
                     created_at_ms = excluded.created_at_ms",
            )
            .bind(&entry.device)
            .bind(&entry.setting_key)
            .bind(&entry.op_key)
            .bind(entry.median_ms)
            .bind(entry.p10_ms)
            .bind(entry.p90_ms)
            .bind(entry.repeats)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(entries.len())
    }

    /// Every LUT in the store, by device then setting; `device` narrows it to one device.
    pub async fn lut_tables(&self, device: Option<&str>) -> Result<Vec<LutTableRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT device, setting_key, COUNT(*) AS entries, MAX(created_at_ms) AS updated_at_ms
             FROM lut_entries WHERE (CAST($1 AS TEXT) IS NULL OR device = $1)
             GROUP BY device, setting_key ORDER BY device, setting_key",
        )
        .bind(device)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(LutTableRow {
                    device: row.try_get("device")?,
                    setting_key: row.try_get("setting_key")?,
                    entries: row.try_get("entries")?,
                    updated_at_ms: row.try_get("updated_at_ms")?,
                })
            })
            .collect()
    }

    /// Every entry of every LUT of `device` (all settings), by setting then operator.
    pub async fn lut_entries_of_device(&self, device: &str) -> Result<Vec<LutEntryRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT device, setting_key, op_key, median_ms, p10_ms, p90_ms, repeats, created_at_ms
             FROM lut_entries WHERE device = $1 ORDER BY setting_key, op_key",
        )
        .bind(device)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(lut_entry_from_row).collect()
    }

    /// Deletes latency entries of `device` in one transaction: every setting's, or only
    /// `setting_key`'s, or only the one row keyed `op_key` (matched as stored text, so a row that
    /// does not parse can be named). Calibrations of a deleted table go with it (not when a
    /// single row is deleted). Returns how many entries were deleted.
    pub async fn delete_lut_entries(
        &self,
        device: &str,
        setting_key: Option<&str>,
        op_key: Option<&str>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query(
            "DELETE FROM lut_entries WHERE device = $1
             AND (CAST($2 AS TEXT) IS NULL OR setting_key = $2)
             AND (CAST($3 AS TEXT) IS NULL OR op_key = $3)",
        )
        .bind(device)
        .bind(setting_key)
        .bind(op_key)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if op_key.is_none() {
            sqlx::query(
                "DELETE FROM lut_calibrations WHERE device = $1
                 AND (CAST($2 AS TEXT) IS NULL OR setting_key = $2)",
            )
            .bind(device)
            .bind(setting_key)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    /// Records a calibration; it becomes the one in use for its device and setting.
    pub async fn put_lut_calibration(
        &self,
        device: &str,
        setting_key: &str,
        coefficients: &Value,
        fidelity: &Value,
    ) -> Result<LutCalibrationRow, StoreError> {
        let row = sqlx::query(
            "INSERT INTO lut_calibrations (device, setting_key, coefficients, fidelity, created_at_ms)
             VALUES ($1, $2, $3, $4, $5)
             RETURNING id, device, setting_key, coefficients, fidelity, created_at_ms",
        )
        .bind(device)
        .bind(setting_key)
        .bind(coefficients.to_string())
        .bind(fidelity.to_string())
        .bind(clock_ms())
        .fetch_one(&self.pool)
        .await?;
        calibration_from_row(&row)
    }

    /// The calibration in use (the newest) for a device and setting, if any.
    pub async fn lut_calibration(
        &self,
        device: &str,
        setting_key: &str,
    ) -> Result<Option<LutCalibrationRow>, StoreError> {
        let row = sqlx::query(
            "SELECT id, device, setting_key, coefficients, fidelity, created_at_ms
             FROM lut_calibrations WHERE device = $1 AND setting_key = $2
             ORDER BY id DESC LIMIT 1",
        )
        .bind(device)
        .bind(setting_key)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(calibration_from_row).transpose()
    }
}

fn calibration_from_row(row: &AnyRow) -> Result<LutCalibrationRow, StoreError> {
    Ok(LutCalibrationRow {
        id: row.try_get("id")?,
        device: row.try_get("device")?,
        setting_key: row.try_get("setting_key")?,
        coefficients: json_column(row, "coefficients")?,
        fidelity: json_column(row, "fidelity")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}
