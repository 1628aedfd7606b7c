-- Per-day aggregates for the reporting views over time (issue 22), and the dashboard summary
-- as a plain view over them (issue 18: it was a table filled only by icr_reporting_refresh).
-- Same tables and meaning as postgresql/0005_daily_aggregates.sql; the load writes these rows
-- for its snapshot date in its own transaction (sql/merge/daily_*.sql).

CREATE TABLE icr_daily_totals (
    snapshot_date       TEXT    PRIMARY KEY,
    compared_to         TEXT,
    active              INTEGER NOT NULL,
    new                 INTEGER,
    removed             INTEGER,
    removed_uninstalled INTEGER,
    removed_suspended   INTEGER,
    sync_run_id         TEXT    NOT NULL
);

CREATE TABLE icr_daily_org_counts (
    snapshot_date             TEXT    NOT NULL,
    organization_type         TEXT,
    organization_country_code TEXT,
    installations             INTEGER NOT NULL
);
CREATE INDEX icr_daily_org_counts_date_idx ON icr_daily_org_counts (snapshot_date);

CREATE TABLE icr_daily_type_counts (
    snapshot_date     TEXT    NOT NULL,
    organization_type TEXT,
    installations     INTEGER NOT NULL
);
CREATE INDEX icr_daily_type_counts_date_idx ON icr_daily_type_counts (snapshot_date);
CREATE TABLE icr_daily_country_counts (
    snapshot_date             TEXT    NOT NULL,
    organization_country_code TEXT,
    installations             INTEGER NOT NULL
);
CREATE INDEX icr_daily_country_counts_date_idx ON icr_daily_country_counts (snapshot_date);

CREATE TABLE icr_daily_permission_counts (
    snapshot_date TEXT    NOT NULL,
    permission    TEXT    NOT NULL,
    access        TEXT    NOT NULL,
    installations INTEGER NOT NULL,
    PRIMARY KEY (snapshot_date, permission, access)
);

INSERT INTO icr_daily_totals (snapshot_date, compared_to, active, new, removed, sync_run_id)
SELECT c.snapshot_date, c.compared_to, c.active, c.new, c.removed, r.sync_run_id
FROM icr_report_daily_counts c
JOIN (SELECT snapshot_date, max(sync_run_id) AS sync_run_id FROM icr_installation_daily GROUP BY snapshot_date) r
  ON r.snapshot_date = c.snapshot_date;

INSERT INTO icr_daily_org_counts (snapshot_date, organization_type, organization_country_code, installations)
SELECT snapshot_date, organization_type, organization_country_code, count(*)
FROM icr_installation_daily
GROUP BY snapshot_date, organization_type, organization_country_code;

INSERT INTO icr_daily_type_counts (snapshot_date, organization_type, installations)
SELECT snapshot_date, organization_type, sum(installations)
FROM icr_daily_org_counts
GROUP BY snapshot_date, organization_type;

INSERT INTO icr_daily_country_counts (snapshot_date, organization_country_code, installations)
SELECT snapshot_date, organization_country_code, sum(installations)
FROM icr_daily_org_counts
GROUP BY snapshot_date, organization_country_code;

INSERT INTO icr_daily_permission_counts (snapshot_date, permission, access, installations)
SELECT v.snapshot_date, kv.key, kv.value, count(*)
FROM (
    SELECT d.snapshot_date, h.permissions,
           row_number() OVER (
               PARTITION BY d.snapshot_date, d.installation_id
               ORDER BY CASE WHEN h.valid_from < date(d.snapshot_date, '+1 day') || 'T00:00:00.000000+00:00' THEN 0 ELSE 1 END,
                        CASE WHEN h.valid_from < date(d.snapshot_date, '+1 day') || 'T00:00:00.000000+00:00' THEN h.valid_from END DESC,
                        h.valid_from ASC) AS rn
    FROM icr_installation_daily d
    JOIN icr_installation_history h ON h.installation_id = d.installation_id
) v
JOIN json_each(v.permissions) AS kv
WHERE v.rn = 1
GROUP BY v.snapshot_date, kv.key, kv.value;

DROP TABLE icr_report_dashboard_summary;
DROP VIEW icr_report_daily_counts;
