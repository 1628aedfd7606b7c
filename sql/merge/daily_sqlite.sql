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
