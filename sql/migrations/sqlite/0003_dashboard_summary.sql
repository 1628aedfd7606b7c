-- The dashboard summary. SQLite has no materialized views: this table plays the part and is
-- rebuilt by the DAG icr_reporting_refresh whenever the sync publishes its Asset.
CREATE TABLE icr_report_dashboard_summary (
    snapshot_date TEXT PRIMARY KEY,
    compared_to   TEXT,
    active        INTEGER NOT NULL,
    new           INTEGER,
    removed       INTEGER
);
