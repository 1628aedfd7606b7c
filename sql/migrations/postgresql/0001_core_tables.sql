-- Core tables of the ICR installations warehouse (PostgreSQL).
-- Table and column names are a contract with BI dashboards: add, never rename.

-- One row per installation ever seen. Written only when a record changes, disappears or comes
-- back, so a no-change rerun rewrites nothing. Dashboards read the view icr_installations.
CREATE TABLE icr_installation_state (
    installation_id           uuid        PRIMARY KEY,
    app_id                    text,
    app_name_id               text,
    organization_id           text,
    organization_name         text,
    organization_type         text,
    organization_country_code text,
    organization_is_public    boolean,
    permissions               jsonb       NOT NULL,
    created_at                timestamptz NOT NULL,
    updated_at                timestamptz NOT NULL,
    first_seen_at             timestamptz NOT NULL,
    last_seen_at              timestamptz NOT NULL,
    deleted_at                timestamptz,
    record_hash               text        NOT NULL,
    raw                       jsonb       NOT NULL,
    last_sync_run_id          text        NOT NULL
);
CREATE INDEX icr_installation_state_active_idx ON icr_installation_state (installation_id) WHERE deleted_at IS NULL;

-- One row per permission of each installation, for "how many installations grant X".
CREATE TABLE icr_installation_permissions (
    installation_id uuid NOT NULL REFERENCES icr_installation_state (installation_id),
    permission      text NOT NULL,
    access          text NOT NULL,
    PRIMARY KEY (installation_id, permission)
);

-- Type-2 history: a version row whenever record_hash changes, or an installation is removed
-- (is_deleted) or comes back. valid_to IS NULL marks the current version.
CREATE TABLE icr_installation_history (
    history_id                bigserial   PRIMARY KEY,
    installation_id           uuid        NOT NULL,
    valid_from                timestamptz NOT NULL,
    valid_to                  timestamptz,
    is_deleted                boolean     NOT NULL,
    record_hash               text        NOT NULL,
    organization_id           text,
    organization_name         text,
    organization_type         text,
    organization_country_code text,
    permissions               jsonb       NOT NULL,
    sync_run_id               text        NOT NULL
);
CREATE INDEX icr_installation_history_installation_idx ON icr_installation_history (installation_id, valid_from);
CREATE UNIQUE INDEX icr_installation_history_current_idx ON icr_installation_history (installation_id) WHERE valid_to IS NULL;

-- One narrow row per installation per snapshot date (see README: how to prune it).
CREATE TABLE icr_installation_daily (
    snapshot_date             date NOT NULL,
    installation_id           uuid NOT NULL,
    organization_id           text,
    organization_type         text,
    organization_country_code text,
    sync_run_id               text NOT NULL,
    PRIMARY KEY (snapshot_date, installation_id)
);

-- One row per DAG run (or sync call): what it read, what it changed, how it ended.
CREATE TABLE icr_sync_runs (
    run_id               text        PRIMARY KEY,
    dag_id               text,
    logical_date         timestamptz,
    snapshot_date        date,
    started_at           timestamptz NOT NULL,
    finished_at          timestamptz,
    status               text        NOT NULL CHECK (status IN ('running', 'success', 'failed')),
    snapshot_source      text,
    reused_run_id        text,
    snapshot_at          timestamptz,
    pages                integer     NOT NULL DEFAULT 0,
    records_fetched      integer     NOT NULL DEFAULT 0,
    inserted             integer     NOT NULL DEFAULT 0,
    updated              integer     NOT NULL DEFAULT 0,
    unchanged            integer     NOT NULL DEFAULT 0,
    removed              integer     NOT NULL DEFAULT 0,
    restored             integer     NOT NULL DEFAULT 0,
    rejected             integer     NOT NULL DEFAULT 0,
    duplicates           integer     NOT NULL DEFAULT 0,
    api_total            integer,
    snapshot_complete    boolean,
    incomplete_reason    text,
    removals_skipped     text,
    api_requests         integer     NOT NULL DEFAULT 0,
    retries              integer     NOT NULL DEFAULT 0,
    retries_by_reason    text,
    daily_rows           integer,
    active_after         integer,
    error                text
);
CREATE INDEX icr_sync_runs_snapshot_idx ON icr_sync_runs (status, snapshot_complete, snapshot_at);

-- Records that failed validation, with the reason and the record as received.
CREATE TABLE icr_rejected_records (
    reject_id       bigserial   PRIMARY KEY,
    sync_run_id     text        NOT NULL,
    installation_id text,
    reason          text        NOT NULL,
    raw             text        NOT NULL,
    rejected_at     timestamptz NOT NULL
);
CREATE INDEX icr_rejected_records_run_idx ON icr_rejected_records (sync_run_id);

-- The contract table for dashboards. last_seen_at of an active installation is the time of
-- the latest complete snapshot, so that nightly "still there" facts cost no row writes.
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
            THEN GREATEST(s.last_seen_at, COALESCE(latest.snapshot_at, s.last_seen_at))
            ELSE s.last_seen_at END AS last_seen_at,
       s.deleted_at,
       s.record_hash,
       s.raw,
       s.last_sync_run_id
FROM icr_installation_state s
CROSS JOIN (SELECT max(snapshot_at) AS snapshot_at
            FROM icr_sync_runs
            WHERE status = 'success' AND snapshot_complete AND snapshot_source = 'api') latest;
