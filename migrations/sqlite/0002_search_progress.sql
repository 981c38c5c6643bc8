-- What a search has learned about each candidate, kept on the candidate row so the leaderboard is
-- one indexed read; the queue updates it in the same transaction that records a trial's outcome.
--   status: pending (queued, not yet trained) | training | done | diverged | failed | infeasible
--   rung:   highest successive-halving rung with a result (-1 before the first)
ALTER TABLE candidates ADD COLUMN status TEXT NOT NULL DEFAULT 'pending';
ALTER TABLE candidates ADD COLUMN rung INTEGER NOT NULL DEFAULT -1;
ALTER TABLE candidates ADD COLUMN val_loss REAL;
ALTER TABLE candidates ADD COLUMN ppl REAL;
ALTER TABLE candidates ADD COLUMN memory_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE candidates ADD COLUMN feasible INTEGER NOT NULL DEFAULT 1;
ALTER TABLE candidates ADD COLUMN measured_latency_ms REAL;
ALTER TABLE candidates ADD COLUMN metrics TEXT;
ALTER TABLE candidates ADD COLUMN error TEXT;
ALTER TABLE candidates ADD COLUMN updated_at_ms INTEGER NOT NULL DEFAULT 0;

-- Leaderboard orders: every sort key with the id as the tie-breaker and cursor.
CREATE INDEX candidates_search_ppl ON candidates (search_id, ppl, id);
CREATE INDEX candidates_search_latency ON candidates (search_id, est_latency_ms, id);
CREATE INDEX candidates_search_params ON candidates (search_id, params, id);
CREATE INDEX candidates_search_memory ON candidates (search_id, memory_bytes, id);
CREATE INDEX trials_candidate ON trials (candidate_id, rung);

ALTER TABLE searches ADD COLUMN error TEXT;

-- The engine's view of a search: the members of every generation, in the order they were
-- proposed. Engine state is rebuilt from this table after a restart. A candidate may appear in
-- several generations (an architecture proposed again reuses its result).
CREATE TABLE search_members (
    search_id    INTEGER NOT NULL REFERENCES searches (id),
    generation   INTEGER NOT NULL,
    slot         INTEGER NOT NULL,
    candidate_id INTEGER NOT NULL REFERENCES candidates (id),
    parents      TEXT NOT NULL,
    origin       TEXT NOT NULL,
    PRIMARY KEY (search_id, generation, slot)
);
