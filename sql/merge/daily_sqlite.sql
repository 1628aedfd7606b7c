-- The per-day statements of SQLite (see daily_common.sql; same meaning as daily_postgresql.sql).

-- name: permission_counts_insert
-- Permission adoption for a past date (as in daily_postgresql.sql).
INSERT INTO icr_daily_permission_counts (snapshot_date, permission, access, installations)
SELECT d.snapshot_date, kv.key, kv.value, count(*)
FROM (
    SELECT h.installation_id, h.permissions,
           row_number() OVER (
               PARTITION BY h.installation_id
               ORDER BY CASE WHEN h.valid_from < :cutoff THEN 0 ELSE 1 END,
                        CASE WHEN h.valid_from < :cutoff THEN h.valid_from END DESC,
                        h.valid_from ASC) AS rn
    FROM icr_installation_history h
) v
JOIN icr_installation_daily d ON d.snapshot_date = :snapshot_date AND d.installation_id = v.installation_id
JOIN json_each(v.permissions) AS kv
WHERE v.rn = 1
GROUP BY d.snapshot_date, kv.key, kv.value;

-- name: daily_base_org_counts
-- (as in daily_postgresql.sql)
CREATE TEMP TABLE icr_tmp_base_org_counts AS
SELECT organization_type, organization_country_code, installations
FROM icr_daily_org_counts WHERE snapshot_date = :base;

-- name: daily_base_permission_counts
CREATE TEMP TABLE icr_tmp_base_permission_counts AS
SELECT permission, access, installations
FROM icr_daily_permission_counts WHERE snapshot_date = :base;

-- name: create_daily_changed
-- (as in daily_postgresql.sql)
CREATE TEMP TABLE icr_tmp_daily_changed AS
SELECT x.installation_id,
       (SELECT max(CASE WHEN b.history_id <= :counted THEN b.history_id END)
        FROM icr_installation_history b WHERE b.installation_id = x.installation_id) AS counted_id
FROM (SELECT DISTINCT h.installation_id FROM icr_installation_history h WHERE h.history_id > :counted) x;

-- name: permission_counts_insert_since
-- (as in daily_postgresql.sql; json_each's value is cast as the permission rows store it)
WITH counts AS (
    SELECT c.permission, c.access, c.installations AS n
    FROM icr_tmp_base_permission_counts c
    UNION ALL
    SELECT kv.key, CAST(kv.value AS TEXT), -1
    FROM icr_tmp_daily_changed x
    JOIN icr_installation_history h ON h.history_id = x.counted_id
    JOIN json_each(h.permissions) AS kv
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
