-- The daily snapshot for one date (SQLite); same meaning as daily_postgresql.sql.

-- name: daily_delete
DELETE FROM icr_installation_daily WHERE snapshot_date = :snapshot_date;

-- name: daily_insert
INSERT INTO icr_installation_daily (
    snapshot_date, installation_id, organization_id, organization_type,
    organization_country_code, sync_run_id)
SELECT :snapshot_date, v.installation_id, v.organization_id, v.organization_type,
       v.organization_country_code, :run_id
FROM (
    SELECT h.installation_id, h.is_deleted, h.organization_id, h.organization_type,
           h.organization_country_code,
           row_number() OVER (
               PARTITION BY h.installation_id
               ORDER BY CASE WHEN h.valid_from < :cutoff THEN 0 ELSE 1 END,
                        CASE WHEN h.valid_from < :cutoff THEN h.valid_from END DESC,
                        h.valid_from ASC) AS rn
    FROM icr_installation_history h
) v
JOIN icr_installation_state s ON s.installation_id = v.installation_id
WHERE v.rn = 1 AND NOT v.is_deleted AND s.created_at < :cutoff;

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
