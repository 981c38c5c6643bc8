//! Leaderboards (an `impl Store` of its own): a search's scored candidates ordered by any sort key,
//! a page at a time with keyset cursors, and the best feasible candidate.

use serde::Serialize;

use super::rows::candidate_from_row;
use super::{CandidateRow, CandidateStatus, Store, StoreError};

/// How a leaderboard is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortKey {
    Ppl,
    Latency,
    Params,
    Memory,
    /// Hidden size.
    Hidden,
    /// Decode latency measured on a worker (only measured candidates are listed).
    Measured,
    /// Highest successive-halving rung with a result.
    Rung,
    /// Candidate status, alphabetically.
    Status,
    /// Candidate id: the order candidates were proposed in.
    Id,
}

impl SortKey {
    /// Every key, by its query-string name.
    pub const ALL: [(&'static str, SortKey); 9] = [
        ("ppl", Self::Ppl),
        ("latency", Self::Latency),
        ("params", Self::Params),
        ("memory", Self::Memory),
        ("hidden", Self::Hidden),
        ("measured", Self::Measured),
        ("rung", Self::Rung),
        ("status", Self::Status),
        ("id", Self::Id),
    ];

    /// The key named `name` in a query string.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, k)| *k)
    }

    /// This key's query-string name.
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, k)| *k == self).map_or("ppl", |(n, _)| n)
    }

    fn column(self) -> &'static str {
        match self {
            Self::Ppl => "ppl",
            Self::Latency => "est_latency_ms",
            Self::Params => "params",
            Self::Memory => "memory_bytes",
            Self::Hidden => "hidden_size",
            Self::Measured => "measured_latency_ms",
            Self::Rung => "rung",
            Self::Status => "status",
            Self::Id => "id",
        }
    }

    /// The sort value of a row, as a page cursor writes it.
    pub fn cursor_value(self, c: &CandidateRow) -> String {
        let real = |v: Option<f64>| v.map_or_else(String::new, |v| v.to_string());
        match self {
            Self::Ppl => real(c.ppl),
            Self::Latency => real(c.est_latency_ms),
            Self::Measured => real(c.measured_latency_ms),
            Self::Params => c.params.to_string(),
            Self::Memory => c.memory_bytes.to_string(),
            Self::Hidden => c.hidden_size.to_string(),
            Self::Rung => c.rung.to_string(),
            Self::Status => c.status.as_str().to_owned(),
            Self::Id => c.id.to_string(),
        }
    }
}

/// The sort value a page starts after, typed as its column is.
#[derive(Debug, Clone, PartialEq)]
pub enum CursorValue {
    Real(f64),
    Integer(i64),
    Text(String),
}

impl CursorValue {
    /// Parses a cursor's value for `key`; `None` when it is not a value of that column.
    pub fn parse(key: SortKey, text: &str) -> Option<Self> {
        match key {
            SortKey::Ppl | SortKey::Latency | SortKey::Measured => {
                text.parse::<f64>().ok().filter(|v| v.is_finite()).map(Self::Real)
            }
            SortKey::Params | SortKey::Memory | SortKey::Hidden | SortKey::Rung | SortKey::Id => {
                text.parse().ok().map(Self::Integer)
            }
            SortKey::Status => {
                text.parse::<CandidateStatus>().ok().map(|s| Self::Text(s.as_str().to_owned()))
            }
        }
    }
}

/// One page of a leaderboard query.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaderboardQuery {
    pub sort: SortKey,
    pub descending: bool,
    /// Only candidates within the latency budget.
    pub feasible_only: bool,
    pub limit: i64,
    /// Continue after this (sort value, id), as returned by the previous page.
    pub after: Option<(CursorValue, i64)>,
}

impl Store {
    /// The best feasible scored candidate of a search: the highest rung first, then the lowest
    /// perplexity (ties to the older candidate).
    pub async fn best_candidate(&self, search_id: i64) -> Result<Option<CandidateRow>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            candidate_columns!(),
            " FROM candidates
             WHERE search_id = $1 AND status = 'done' AND feasible = 1 AND ppl IS NOT NULL
             ORDER BY rung DESC, ppl ASC, id ASC LIMIT 1"
        ))
        .bind(search_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(candidate_from_row).transpose()
    }

    /// One page of a search's scored candidates, ordered by `query.sort` then id.
    ///
    /// Keyset pagination: the next page starts after the last row's (sort value, id), so a page
    /// costs one index range scan however deep it is.
    pub async fn leaderboard(
        &self,
        search_id: i64,
        query: &LeaderboardQuery,
    ) -> Result<Vec<CandidateRow>, StoreError> {
        let column = query.sort.column();
        let (cmp, order) = if query.descending { ("<", "DESC") } else { (">", "ASC") };
        let mut sql = format!(
            "SELECT {} FROM candidates WHERE search_id = $1 AND {column} IS NOT NULL",
            candidate_columns!()
        );
        if query.sort == SortKey::Ppl {
            sql.push_str(" AND status = 'done'");
        }
        if query.feasible_only {
            sql.push_str(" AND feasible = 1");
        }
        if query.after.is_some() {
            // A row-value comparison is one index range condition on (search_id, column, id);
            // the equivalent OR of two comparisons would be a filter that scans every earlier row.
            if query.sort == SortKey::Id {
                sql.push_str(&format!(" AND id {cmp} $2"));
            } else {
                sql.push_str(&format!(" AND ({column}, id) {cmp} ($2, $3)"));
            }
        }
        if query.sort == SortKey::Id {
            sql.push_str(&format!(" ORDER BY id {order} LIMIT {}", query.limit.clamp(1, 1000)));
        } else {
            sql.push_str(&format!(
                " ORDER BY {column} {order}, id {order} LIMIT {}",
                query.limit.clamp(1, 1000)
            ));
        }
        let mut q = sqlx::query(&sql).bind(search_id);
        if let Some((value, id)) = &query.after {
            if query.sort != SortKey::Id {
                q = match value {
                    CursorValue::Real(v) => q.bind(*v),
                    CursorValue::Integer(v) => q.bind(*v),
                    CursorValue::Text(v) => q.bind(v.clone()),
                };
            }
            q = q.bind(*id);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(candidate_from_row).collect()
    }
}
