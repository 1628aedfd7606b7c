-- The daily snapshot for one date (PostgreSQL). "Active at the end of :snapshot_date" as far as
-- the data can tell: the history version in force just before :cutoff (the next midnight,
-- UTC) is not a removal; an installation first seen later counts if it was created before
-- :cutoff (the API has no history, so the earliest version we know stands in for it).

-- name: daily_delete
DELETE FROM icr_installation_daily WHERE snapshot_date = :snapshot_date;

-- name: daily_insert
INSERT INTO icr_installation_daily (
    snapshot_date, installation_id, organization_id, organization_type,
    organization_country_code, sync_run_id)
SELECT :snapshot_date, v.installation_id, v.organization_id, v.organization_type,
       v.organization_country_code, :run_id
FROM (
    SELECT DISTINCT ON (h.installation_id)
           h.installation_id, h.is_deleted, h.organization_id, h.organization_type,
           h.organization_country_code
    FROM icr_installation_history h
    ORDER BY h.installation_id,
             (h.valid_from < :cutoff) DESC,
             CASE WHEN h.valid_from < :cutoff THEN h.valid_from END DESC,
             h.valid_from ASC
) v
JOIN icr_installation_state s ON s.installation_id = v.installation_id
WHERE NOT v.is_deleted AND s.created_at < :cutoff;

-- name: permission_counts_insert
-- Permission adoption for a past date: the permissions of the history version daily_insert
-- chose for each installation in the date's snapshot.
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
