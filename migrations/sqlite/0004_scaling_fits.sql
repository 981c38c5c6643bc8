-- Scaling-law fits of a sweep search: the request and the whole report (coefficients with their
-- intervals, goodness of fit, the held-out extrapolation, the observations) as JSON.
CREATE TABLE scaling_fits (
    id            INTEGER PRIMARY KEY,
    search_id     INTEGER NOT NULL REFERENCES searches (id),
    form          TEXT NOT NULL,
    report        TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX scaling_fits_search ON scaling_fits (search_id, id);
