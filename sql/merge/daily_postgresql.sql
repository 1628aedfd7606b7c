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
