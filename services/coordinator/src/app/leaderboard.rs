//! Leaderboard pages: the query parameters, their parsing (naming the bad one), the row view and
//! the cursor to the next page. The API and the web UI list candidates through these.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::AppError;
use crate::store::{CandidateRow, CursorValue, LeaderboardQuery, SortKey};

/// Leaderboard query parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaderboardParams {
    #[serde(default)]
    pub sort: Option<String>,
    #[serde(default)]
    pub order: Option<String>,
    #[serde(default)]
    pub feasible: Option<bool>,
    #[serde(default)]
    pub limit: Option<i64>,
    #[serde(default)]
    pub cursor: Option<String>,
}

/// One leaderboard row.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Entry {
    pub id: i64,
    pub arch_hash: String,
    pub name: Option<String>,
    /// Operator codes, e.g. `D F M2 F A F`.
    pub pattern: String,
    pub hidden_size: i64,
    pub params: i64,
    pub est_latency_ms: Option<f64>,
    pub measured_latency_ms: Option<f64>,
    pub memory_bytes: i64,
    pub ppl: Option<f64>,
    pub val_loss: Option<f64>,
    pub rung: i64,
    pub feasible: bool,
    pub status: crate::store::CandidateStatus,
    pub parent_id: Option<i64>,
    pub mutation: Option<String>,
    /// Per-task accuracy on synthetic corpora.
    pub accuracy: Option<Value>,
}

pub fn entry(c: &CandidateRow) -> Entry {
    let arch: Option<search_space::Architecture> = serde_json::from_value(c.architecture.clone()).ok();
    let pattern = arch
        .as_ref()
        .map(|a| a.operators().iter().map(|o| o.code()).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    Entry {
        id: c.id,
        arch_hash: c.arch_hash.clone(),
        name: arch.and_then(|a| a.name),
        pattern,
        hidden_size: c.hidden_size,
        params: c.params,
        est_latency_ms: c.est_latency_ms,
        measured_latency_ms: c.measured_latency_ms,
        memory_bytes: c.memory_bytes,
        ppl: c.ppl,
        val_loss: c.val_loss,
        rung: c.rung,
        feasible: c.feasible,
        status: c.status,
        parent_id: c.parent_id,
        mutation: c.mutation.clone(),
        accuracy: c.metrics.as_ref().and_then(|m| m.get("accuracy")).filter(|a| !a.is_null()).cloned(),
    }
}

/// Parses leaderboard parameters, naming the bad one.
pub fn leaderboard_query(p: &LeaderboardParams) -> Result<LeaderboardQuery, AppError> {
    let sort_name = p.sort.as_deref().unwrap_or("ppl");
    let sort = SortKey::from_name(sort_name).ok_or_else(|| {
        let names: Vec<&str> = SortKey::ALL.iter().map(|(n, _)| *n).collect();
        AppError::BadRequest(format!("sort: unknown key `{sort_name}`; expected one of {}", names.join(", ")))
    })?;
    let descending = match p.order.as_deref().unwrap_or("asc") {
        "asc" => false,
        "desc" => true,
        other => return Err(AppError::BadRequest(format!("order: expected asc or desc, got `{other}`"))),
    };
    let limit = p.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(AppError::BadRequest(format!("limit: must be in 1..=1000, got {limit}")));
    }
    let after = match &p.cursor {
        None => None,
        Some(c) => {
            let bad = || AppError::BadRequest(format!("cursor: `{c}` is not a cursor from a previous page"));
            let (value, id) = c.rsplit_once('_').ok_or_else(bad)?;
            Some((CursorValue::parse(sort, value).ok_or_else(bad)?, id.parse::<i64>().map_err(|_| bad())?))
        }
    };
    Ok(LeaderboardQuery { sort, descending, feasible_only: p.feasible.unwrap_or(false), limit, after })
}

/// The cursor that continues a page after its last row.
pub fn next_cursor(rows: &[CandidateRow], query: &LeaderboardQuery) -> Option<String> {
    if rows.len() as i64 == query.limit {
        rows.last().map(|c| format!("{}_{}", query.sort.cursor_value(c), c.id))
    } else {
        None
    }
}
