-- Core tables of the ICR installations warehouse (SQLite, the embedded default).
-- Same names and columns as on PostgreSQL. Timestamps are ISO-8601 UTC text
-- ('2024-03-26T08:47:15.356000+00:00'), JSON is text; both sort and compare correctly as text.

CREATE TABLE icr_installation_state (
    installation_id           TEXT    PRIMARY KEY,
    app_id                    TEXT,
    app_name_id               TEXT,
    organization_id           TEXT,
    organization_name         TEXT,
    organization_type         TEXT,
    organization_country_code TEXT,
    organization_is_public    BOOLEAN,
    permissions               TEXT    NOT NULL,
    created_at                TEXT    NOT NULL,
    updated_at                TEXT    NOT NULL,
    first_seen_at             TEXT    NOT NULL,
    last_seen_at              TEXT    NOT NULL,
    deleted_at                TEXT,
    record_hash               TEXT    NOT NULL,
    raw                       TEXT    NOT NULL,
    last_sync_run_id          TEXT    NOT NULL
);

CREATE TABLE icr_installation_permissions (
    installation_id TEXT NOT NULL REFERENCES icr_installation_state (installation_id),
    permission      TEXT NOT NULL,
    access          TEXT NOT NULL,
    PRIMARY KEY (installation_id, permission)
);

CREATE TABLE icr_installation_history (
    history_id                INTEGER PRIMARY KEY AUTOINCREMENT,
    installation_id           TEXT    NOT NULL,
    valid_from                TEXT    NOT NULL,
    valid_to                  TEXT,
    is_deleted                BOOLEAN NOT NULL,
    record_hash               TEXT    NOT NULL,
    organization_id           TEXT,
    organization_name         TEXT,
    organization_type         TEXT,
    organization_country_code TEXT,
    permissions               TEXT    NOT NULL,
    sync_run_id               TEXT    NOT NULL
);
CREATE INDEX icr_installation_history_installation_idx ON icr_installation_history (installation_id, valid_from);
CREATE UNIQUE INDEX icr_installation_history_current_idx ON icr_installation_history (installation_id) WHERE valid_to IS NULL;

CREATE TABLE icr_installation_daily (
    snapshot_date             TEXT NOT NULL,
    installation_id           TEXT NOT NULL,
    organization_id           TEXT,
    organization_type         TEXT,
    organization_country_code TEXT,
    sync_run_id               TEXT NOT NULL,
    PRIMARY KEY (snapshot_date, installation_id)
);

CREATE TABLE icr_sync_runs (
    run_id               TEXT    PRIMARY KEY,
    dag_id               TEXT,
    logical_date         TEXT,
    snapshot_date        TEXT,
    started_at           TEXT    NOT NULL,
    finished_at          TEXT,
    status               TEXT    NOT NULL CHECK (status IN ('running', 'success', 'failed')),
    snapshot_source      TEXT,
    reused_run_id        TEXT,
    snapshot_at          TEXT,
    pages                INTEGER NOT NULL DEFAULT 0,
    records_fetched      INTEGER NOT NULL DEFAULT 0,
    inserted             INTEGER NOT NULL DEFAULT 0,
    updated              INTEGER NOT NULL DEFAULT 0,
    unchanged            INTEGER NOT NULL DEFAULT 0,
    removed              INTEGER NOT NULL DEFAULT 0,
    restored             INTEGER NOT NULL DEFAULT 0,
    rejected             INTEGER NOT NULL DEFAULT 0,
    duplicates           INTEGER NOT NULL DEFAULT 0,
    api_total            INTEGER,
    snapshot_complete    BOOLEAN,
    incomplete_reason    TEXT,
    removals_skipped     TEXT,
    api_requests         INTEGER NOT NULL DEFAULT 0,
    retries              INTEGER NOT NULL DEFAULT 0,
    retries_by_reason    TEXT,
    daily_rows           INTEGER,
    active_after         INTEGER,
    error                TEXT
);
CREATE INDEX icr_sync_runs_snapshot_idx ON icr_sync_runs (status, snapshot_complete, snapshot_at);

CREATE TABLE icr_rejected_records (
    reject_id       INTEGER PRIMARY KEY AUTOINCREMENT,
    sync_run_id     TEXT    NOT NULL,
    installation_id TEXT,
    reason          TEXT    NOT NULL,
    raw             TEXT    NOT NULL,
    rejected_at     TEXT    NOT NULL
);
CREATE INDEX icr_rejected_records_run_idx ON icr_rejected_records (sync_run_id);

CREATE VIEW icr_installations AS
SELECT s.installation_id,
       s.app_id,
       s.app_name_id,
       s.organization_id,
       s.organization_name,
       s.organization_type,
       s.organization_country_code,
       s.organization_is_public,
       s.permissions,
       s.created_at,
       s.updated_at,
       s.first_seen_at,
       CASE WHEN s.deleted_at IS NULL
            THEN MAX(s.last_seen_at, COALESCE(latest.snapshot_at, s.last_seen_at))
            ELSE s.last_seen_at END AS last_seen_at,
       s.deleted_at,
       s.record_hash,
       s.raw,
       s.last_sync_run_id
FROM icr_installation_state s
CROSS JOIN (SELECT max(snapshot_at) AS snapshot_at
            FROM icr_sync_runs
            WHERE status = 'success' AND snapshot_complete AND snapshot_source = 'api') latest;
