//! The store's reads for the web UI's plots: every candidate of a search as a point (id, status,
//! perplexity, latency, feasibility, without the architecture or metrics documents), and every
//! finished evaluation in the order it finished.
//!
//! Part of [`Store`]; these stay narrow so a search of ten thousand candidates plots from two
//! small index reads.

use serde::Serialize;
use sqlx::Row;

use super::{CandidateStatus, Store, StoreError};

/// A candidate as a plot needs it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlotPoint {
    pub id: i64,
    pub status: CandidateStatus,
    pub ppl: Option<f64>,
    pub est_latency_ms: Option<f64>,
    pub feasible: bool,
}

/// One finished trial: when it finished and the perplexity it reported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    pub candidate_id: i64,
    pub finished_at_ms: i64,
    pub ppl: f64,
    pub feasible: bool,
}

impl Store {
    /// Every candidate of a search as a plot point, in id order.
    pub async fn search_points(&self, search_id: i64) -> Result<Vec<PlotPoint>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, status, ppl, est_latency_ms, feasible FROM candidates WHERE search_id = $1 ORDER BY id",
        )
        .bind(search_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let status: String = row.try_get("status")?;
                Ok(PlotPoint {
                    id: row.try_get("id")?,
                    status: status.parse()?,
                    ppl: row.try_get("ppl")?,
                    est_latency_ms: row.try_get("est_latency_ms")?,
                    feasible: row.try_get::<i64, _>("feasible")? != 0,
                })
            })
            .collect()
    }

    /// A search's trials that reported a perplexity, in the order they finished.
    pub async fn search_evaluations(&self, search_id: i64) -> Result<Vec<Evaluation>, StoreError> {
        let rows = sqlx::query(
            "SELECT t.candidate_id, t.updated_at_ms, t.ppl, c.feasible
             FROM trials t JOIN candidates c ON c.id = t.candidate_id
             WHERE t.search_id = $1 AND t.state = 'done' AND t.ppl IS NOT NULL
             ORDER BY t.updated_at_ms, t.id",
        )
        .bind(search_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Evaluation {
                    candidate_id: row.try_get("candidate_id")?,
                    finished_at_ms: row.try_get("updated_at_ms")?,
                    ppl: row.try_get("ppl")?,
                    feasible: row.try_get::<i64, _>("feasible")? != 0,
                })
            })
            .collect()
    }
}
