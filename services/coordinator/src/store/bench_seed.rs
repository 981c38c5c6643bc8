//! Synthetic rows for the benchmarks (an `impl Store` of its own): scored candidates with their
//! done trials, or queued trials, written in a few set-based statements (`bin/queue_bench.rs`,
//! `bin/ui_bench.rs`).

use super::{Backend, Store, StoreError};

impl Store {
    /// Fills a search with `candidates` synthetic scored candidates and one done trial each, in a
    /// few set-based statements, for benchmarks of the read paths at scale. Architectures cycle
    /// through the tiny presets; perplexities, latencies, parameter counts and memory vary with
    /// the row number so every sort order is exercised, and one in ten is infeasible.
    pub async fn seed_benchmark_candidates(&self, search_id: i64, candidates: i64) -> Result<(), StoreError> {
        self.seed_scored_candidates(search_id, candidates).await?;
        sqlx::query(
            "INSERT INTO trials (search_id, candidate_id, state, budget_tokens, rung, attempt, max_attempts,
                                 ppl, val_loss, created_at_ms, updated_at_ms)
             SELECT search_id, id, 'done', 1000, 0, 1, 1, ppl, val_loss, created_at_ms, updated_at_ms
             FROM candidates WHERE search_id = $1",
        )
        .bind(search_id)
        .execute(&self.pool)
        .await?;
        sqlx::query("ANALYZE trials").execute(&self.pool).await?;
        Ok(())
    }

    async fn seed_scored_candidates(&self, search_id: i64, candidates: i64) -> Result<(), StoreError> {
        let series = match self.backend {
            Backend::Postgres => "SELECT generate_series(1, $2) AS n",
            Backend::Sqlite => {
                "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < $2) SELECT n FROM s"
            }
        };
        let presets = ["tiny-hybrid", "tiny-transformer", "tiny-mamba2", "tiny-deltanet"];
        let mut docs = Vec::with_capacity(presets.len());
        for name in presets {
            let arch = search_space::presets::preset(name)
                .ok_or_else(|| StoreError::Malformed(format!("preset `{name}` is missing")))?;
            docs.push(arch.to_json());
        }
        let sql = format!(
            "INSERT INTO candidates (search_id, arch_hash, architecture, hidden_size, params, est_latency_ms,
                                     created_at_ms, status, rung, val_loss, ppl, memory_bytes, feasible, updated_at_ms)
             SELECT $1, 'bench-' || n,
                    CASE n % 4 WHEN 0 THEN $3 WHEN 1 THEN $4 WHEN 2 THEN $5 ELSE $6 END,
                    128, 100000000 + (n * 7919) % 1000003,
                    1.0 + ((n * 104729) % 1000) / 10.0, n * 1000, 'done', 0, 2.0 + ((n * 15485863) % 100000) / 100000.0,
                    7.0 + ((n * 15485863) % 100000) / 1000.0, (n * 31) % 1000000, CASE WHEN n % 10 = 0 THEN 0 ELSE 1 END,
                    n * 1000
             FROM ({series}) AS series"
        );
        let mut query = sqlx::query(&sql).bind(search_id).bind(candidates);
        for doc in docs {
            query = query.bind(doc);
        }
        query.execute(&self.pool).await?;
        // Fresh statistics, as autovacuum would gather after organic growth, so the planner
        // sees the rows it is about to query.
        sqlx::query("ANALYZE candidates").execute(&self.pool).await?;
        Ok(())
    }

    /// Queues one trial for each of `n` new synthetic candidates of a search, for queue benchmarks.
    pub async fn seed_benchmark_trials(
        &self,
        search_id: i64,
        n: i64,
        max_attempts: i64,
    ) -> Result<(), StoreError> {
        self.seed_scored_candidates(search_id, n).await?;
        sqlx::query(
            "INSERT INTO trials (search_id, candidate_id, state, budget_tokens, rung, attempt, max_attempts,
                                 created_at_ms, updated_at_ms)
             SELECT search_id, id, 'queued', 1000, 0, 0, $2, 0, 0 FROM candidates WHERE search_id = $1",
        )
        .bind(search_id)
        .bind(max_attempts)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
