-- Frontier's schema for SQLite.
--
-- Column types are chosen so one set of Rust types reads both backends through sqlx's Any driver:
-- ids and counts are INTEGER (64-bit in SQLite), timestamps are milliseconds since the Unix epoch in
-- columns named *_ms, JSON documents are TEXT, floats are REAL (8 bytes), booleans are stored as
-- INTEGER 0/1. Keep this file and ../postgres/0001_init.sql describing the same tables.

-- A device is a (machine, accelerator, software stack) whose latency the LUT describes.
CREATE TABLE devices (
    fingerprint   TEXT PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL,
    kind          TEXT NOT NULL,
    info          TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);

-- One measured operator latency per (device, deployment setting, operator shape).
CREATE TABLE lut_entries (
    device        TEXT NOT NULL REFERENCES devices (fingerprint),
    setting_key   TEXT NOT NULL,
    op_key        TEXT NOT NULL,
    median_ms     REAL NOT NULL,
    p10_ms        REAL NOT NULL,
    p90_ms        REAL NOT NULL,
    repeats       INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (device, setting_key, op_key)
);

-- Calibrations are kept as a history: the newest row for a (device, setting) is the one in use.
CREATE TABLE lut_calibrations (
    id            INTEGER PRIMARY KEY,
    device        TEXT NOT NULL REFERENCES devices (fingerprint),
    setting_key   TEXT NOT NULL,
    coefficients  TEXT NOT NULL,
    fidelity      TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX lut_calibrations_device_setting ON lut_calibrations (device, setting_key, id);

CREATE TABLE searches (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL,
    spec          TEXT NOT NULL,
    status        TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);

-- A candidate is one architecture of one search; the canonical hash makes a search evaluate each
-- architecture once, however many times the engine proposes it.
CREATE TABLE candidates (
    id             INTEGER PRIMARY KEY,
    search_id      INTEGER NOT NULL REFERENCES searches (id),
    arch_hash      TEXT NOT NULL,
    architecture   TEXT NOT NULL,
    parent_id      INTEGER REFERENCES candidates (id),
    mutation       TEXT,
    hidden_size    INTEGER NOT NULL,
    params         INTEGER NOT NULL,
    est_latency_ms REAL,
    created_at_ms  INTEGER NOT NULL,
    UNIQUE (search_id, arch_hash)
);

-- A trial is one proxy training of a candidate: the unit the queue leases to workers.
CREATE TABLE trials (
    id                  INTEGER PRIMARY KEY,
    search_id           INTEGER NOT NULL REFERENCES searches (id),
    candidate_id        INTEGER NOT NULL REFERENCES candidates (id),
    state               TEXT NOT NULL
        CHECK (state IN ('queued', 'leased', 'done', 'failed', 'diverged')),
    budget_tokens       INTEGER NOT NULL,
    rung                INTEGER NOT NULL,
    attempt             INTEGER NOT NULL,
    max_attempts        INTEGER NOT NULL,
    lease_token         TEXT,
    worker_id           TEXT,
    lease_expires_at_ms INTEGER,
    val_loss            REAL,
    ppl                 REAL,
    result              TEXT,
    created_at_ms       INTEGER NOT NULL,
    updated_at_ms       INTEGER NOT NULL
);
-- Serves the lease claim (oldest queued trial) and the reclaim scan (leased trials).
CREATE INDEX trials_state_id ON trials (state, id);
CREATE INDEX trials_search ON trials (search_id, id);

CREATE TABLE trial_events (
    id       INTEGER PRIMARY KEY,
    trial_id INTEGER NOT NULL REFERENCES trials (id),
    at_ms    INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    payload  TEXT NOT NULL
);
CREATE INDEX trial_events_trial ON trial_events (trial_id, id);

CREATE TABLE workers (
    id              TEXT PRIMARY KEY NOT NULL,
    device          TEXT NOT NULL REFERENCES devices (fingerprint),
    hostname        TEXT NOT NULL,
    last_seen_at_ms INTEGER NOT NULL,
    created_at_ms   INTEGER NOT NULL
);

-- Only a hash of each token is stored, so a copy of the database does not grant access.
CREATE TABLE api_tokens (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    scopes        TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
);
