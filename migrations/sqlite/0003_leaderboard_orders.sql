-- Leaderboard orders added with the web UI's sortable table: every sort key with the id as the
-- tie-breaker and cursor, so each page stays one index range scan.
CREATE INDEX candidates_search_hidden ON candidates (search_id, hidden_size, id);
CREATE INDEX candidates_search_measured ON candidates (search_id, measured_latency_ms, id);
CREATE INDEX candidates_search_rung ON candidates (search_id, rung, id);
CREATE INDEX candidates_search_status ON candidates (search_id, status, id);
CREATE INDEX candidates_search_id ON candidates (search_id, id);
