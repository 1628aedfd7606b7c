-- Per-day aggregates for the reporting views over time (issue 22), and the dashboard summary
-- as a plain view over them (issue 18: it failed with "materialized view ... has not been
-- populated" until icr_reporting_refresh had run once).
-- The load writes these rows for its snapshot date in its own transaction (sql/merge/daily_*.sql):
-- a few thousand rows a day, so a 365-day range reads a few hundred thousand small rows instead
-- of 365 million rows of icr_installation_daily. Pruning icr_installation_daily keeps them.

-- Per snapshot date: active, and new/removed compared with the previous snapshot date present
-- in icr_installation_daily (compared_to; NULL for the first). removed_uninstalled and
-- removed_suspended split removed by reason once removal reasons are recorded (webhooks); NULL
-- until then.
CREATE TABLE icr_daily_totals (
    snapshot_date       date    PRIMARY KEY,
    compared_to         date,
    active              integer NOT NULL,
    new                 integer,
    removed             integer,
    removed_uninstalled integer,
    removed_suspended   integer,
    sync_run_id         text    NOT NULL
);

-- Active installations per snapshot date, organization type and country.
CREATE TABLE icr_daily_org_counts (
    snapshot_date             date    NOT NULL,
    organization_type         text,
    organization_country_code text,
    installations             integer NOT NULL
);
CREATE INDEX icr_daily_org_counts_date_idx ON icr_daily_org_counts (snapshot_date);

-- The same counts per organization type, and per country: what the views over time read, so
-- that a 365-day range is an index range scan with nothing left to group.
CREATE TABLE icr_daily_type_counts (
    snapshot_date     date    NOT NULL,
    organization_type text,
    installations     integer NOT NULL
);
CREATE INDEX icr_daily_type_counts_date_idx ON icr_daily_type_counts (snapshot_date);
CREATE TABLE icr_daily_country_counts (
    snapshot_date             date    NOT NULL,
    organization_country_code text,
    installations             integer NOT NULL
);
CREATE INDEX icr_daily_country_counts_date_idx ON icr_daily_country_counts (snapshot_date);

-- Active installations per snapshot date that grant a permission, per access level.
CREATE TABLE icr_daily_permission_counts (
    snapshot_date date    NOT NULL,
    permission    text    NOT NULL,
    access        text    NOT NULL,
    installations integer NOT NULL,
    PRIMARY KEY (snapshot_date, permission, access)
);

-- The dates loaded before this migration, from what the warehouse holds.
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

-- Permissions of the history version in force at the end of each date (as the daily snapshot
-- chose it: the latest version before the next midnight UTC, else the earliest).
INSERT INTO icr_daily_permission_counts (snapshot_date, permission, access, installations)
SELECT v.snapshot_date, kv.key, kv.value, count(*)
FROM (
    SELECT DISTINCT ON (d.snapshot_date, d.installation_id) d.snapshot_date, h.permissions
    FROM icr_installation_daily d
    JOIN icr_installation_history h ON h.installation_id = d.installation_id
    ORDER BY d.snapshot_date, d.installation_id,
             (h.valid_from < ((d.snapshot_date + 1)::timestamp AT TIME ZONE 'UTC')) DESC,
             CASE WHEN h.valid_from < ((d.snapshot_date + 1)::timestamp AT TIME ZONE 'UTC') THEN h.valid_from END DESC,
             h.valid_from ASC
) v
CROSS JOIN LATERAL jsonb_each_text(v.permissions) AS kv
GROUP BY v.snapshot_date, kv.key, kv.value;

-- Replaced by views over icr_daily_totals (0006_reporting_views_over_time.sql), same columns.
DROP MATERIALIZED VIEW icr_report_dashboard_summary;
DROP VIEW icr_report_daily_counts;
