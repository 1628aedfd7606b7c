-- The daily snapshot statements both dialects share (see daily_<dialect>.sql for the rest).

-- name: daily_insert_current
-- The daily snapshot (as daily_insert in daily_<dialect>.sql) for a date that has not ended yet
-- (the nightly run): every history version starts before :cutoff, so the version in force is
-- the current row of icr_installation_state. Reading it directly avoids a pass over all history.
-- In key order: the date's rows then append to the primary key's B-tree instead of splitting
-- pages at random (measured on PostgreSQL, 1,000,000 rows for a new date: 3.6-4.1 s unsorted,
-- 2.1-2.4 s sorted, the sort included).
INSERT INTO icr_installation_daily (
    snapshot_date, installation_id, organization_id, organization_type,
    organization_country_code, sync_run_id)
SELECT :snapshot_date, s.installation_id, s.organization_id, s.organization_type,
       s.organization_country_code, :run_id
FROM icr_installation_state s
WHERE s.deleted_at IS NULL AND s.created_at < :cutoff
ORDER BY s.installation_id;
