//! The scaling-law fits of sweep searches (an `impl Store` of its own): each fit's report is kept
//! whole as JSON, so a stored fit reads back exactly as it was answered.

use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError};
use crate::clock::clock_ms;

/// A stored fit.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingFitRow {
    pub id: i64,
    pub search_id: i64,
    /// `depth_width` or `depth_width_tokens`.
    pub form: String,
    pub report: Value,
    pub created_at_ms: i64,
}

fn fit_from_row(row: &AnyRow) -> Result<ScalingFitRow, StoreError> {
    let report: String = row.try_get("report")?;
    Ok(ScalingFitRow {
        id: row.try_get("id")?,
        search_id: row.try_get("search_id")?,
        form: row.try_get("form")?,
        report: serde_json::from_str(&report)
            .map_err(|e| StoreError::Malformed(format!("scaling fit report: {e}")))?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

impl Store {
    /// Records a fit of search `search_id`.
    pub async fn insert_scaling_fit(
        &self,
        search_id: i64,
        form: &str,
        report: &Value,
    ) -> Result<ScalingFitRow, StoreError> {
        let row = sqlx::query(
            "INSERT INTO scaling_fits (search_id, form, report, created_at_ms) VALUES ($1, $2, $3, $4)
             RETURNING id, search_id, form, report, created_at_ms",
        )
        .bind(search_id)
        .bind(form)
        .bind(report.to_string())
        .bind(clock_ms())
        .persistent(false)
        .fetch_one(&self.pool)
        .await?;
        fit_from_row(&row)
    }

    pub async fn get_scaling_fit(&self, id: i64) -> Result<Option<ScalingFitRow>, StoreError> {
        let row =
            sqlx::query("SELECT id, search_id, form, report, created_at_ms FROM scaling_fits WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        row.as_ref().map(fit_from_row).transpose()
    }

    /// A search's fits, newest first.
    pub async fn list_scaling_fits(&self, search_id: i64) -> Result<Vec<ScalingFitRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, search_id, form, report, created_at_ms FROM scaling_fits
             WHERE search_id = $1 ORDER BY id DESC",
        )
        .bind(search_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(fit_from_row).collect()
    }
}
