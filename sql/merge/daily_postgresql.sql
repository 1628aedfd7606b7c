-- The per-day statements of PostgreSQL (see daily_common.sql).

-- name: permission_counts_insert
-- Permission adoption for a past date (as_of = :cutoff): the permissions of the history version
-- the view icr_installation_daily (migration 0011) chose for each installation in the date's rows.
INSERT INTO icr_daily_permission_counts (snapshot_date, permission, access, installations)
SELECT d.snapshot_date, kv.key, kv.value, count(*)
FROM (
    SELECT DISTINCT ON (h.installation_id) h.installation_id, h.permissions
    FROM icr_installation_history h
    ORDER BY h.installation_id,
             (h.valid_from < :cutoff) DESC,
             CASE WHEN h.valid_from < :cutoff THEN h.valid_from END DESC,
             h.valid_from ASC
) v
JOIN icr_installation_daily d ON d.snapshot_date = :snapshot_date AND d.installation_id = v.installation_id
CROSS JOIN LATERAL jsonb_each_text(v.permissions) AS kv
GROUP BY d.snapshot_date, kv.key, kv.value;

-- name: daily_base_org_counts
-- The counts a date in progress builds on (icr.warehouse.daily.count_current), copied aside
-- first: the base may be the date itself (a rerun), whose rows are replaced.
CREATE TEMP TABLE icr_tmp_base_org_counts ON COMMIT DROP AS
SELECT organization_type, organization_country_code, installations
FROM icr_daily_org_counts WHERE snapshot_date = :base;

-- name: daily_base_permission_counts
CREATE TEMP TABLE icr_tmp_base_permission_counts ON COMMIT DROP AS
SELECT permission, access, installations
FROM icr_daily_permission_counts WHERE snapshot_date = :base;

-- name: create_daily_changed
-- The installations with a history version after :counted, each with the one it had at
-- :counted (its latest up to it; NULL: it was not there yet), found among its few versions
-- per installation: a condition on history_id could lead the planner to read the primary
-- key's range up to :counted, all the history, instead.
CREATE TEMP TABLE icr_tmp_daily_changed ON COMMIT DROP AS
SELECT x.installation_id,
       (SELECT max(CASE WHEN b.history_id <= :counted THEN b.history_id END)
        FROM icr_installation_history b WHERE b.installation_id = x.installation_id) AS counted_id
FROM (SELECT DISTINCT h.installation_id FROM icr_installation_history h WHERE h.history_id > :counted) x;

-- name: analyze_daily_changed
-- Real row counts for the planner (a temp table has no statistics until analyzed).
ANALYZE icr_tmp_daily_changed;

-- name: permission_counts_insert_since
-- The base's permission counts, less the permissions of the changed installations' versions
-- at :counted, plus their current permission rows (see org_counts_insert_since).
WITH counts AS (
    SELECT c.permission, c.access, c.installations AS n
    FROM icr_tmp_base_permission_counts c
    UNION ALL
    SELECT kv.key, kv.value, -1
    FROM icr_tmp_daily_changed x
    JOIN icr_installation_history h ON h.history_id = x.counted_id
    CROSS JOIN LATERAL jsonb_each_text(h.permissions) AS kv
    WHERE NOT h.is_deleted
    UNION ALL
    SELECT p.permission, p.access, CASE WHEN s.deleted_at IS NULL AND s.created_at < :cutoff THEN 1 ELSE 0 END
    FROM icr_tmp_daily_changed x
    JOIN icr_installation_state s ON s.installation_id = x.installation_id
    JOIN icr_installation_permissions p ON p.installation_id = x.installation_id
)
INSERT INTO icr_daily_permission_counts (snapshot_date, permission, access, installations)
SELECT :snapshot_date, permission, access, sum(n)
FROM counts
GROUP BY permission, access
HAVING sum(n) <> 0;
