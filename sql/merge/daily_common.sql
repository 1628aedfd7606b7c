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

-- The per-day aggregates the reporting views read (migration 0005), written right after the
-- date's snapshot in the same transaction. A rerun or a backfill of a date rewrites its rows.

-- name: org_counts_delete
DELETE FROM icr_daily_org_counts WHERE snapshot_date = :snapshot_date;

-- name: org_counts_insert
INSERT INTO icr_daily_org_counts (snapshot_date, organization_type, organization_country_code, installations)
SELECT d.snapshot_date, d.organization_type, d.organization_country_code, count(*)
FROM icr_installation_daily d
WHERE d.snapshot_date = :snapshot_date
GROUP BY d.snapshot_date, d.organization_type, d.organization_country_code;

-- name: type_counts_delete
DELETE FROM icr_daily_type_counts WHERE snapshot_date = :snapshot_date;

-- name: type_counts_insert
INSERT INTO icr_daily_type_counts (snapshot_date, organization_type, installations)
SELECT c.snapshot_date, c.organization_type, sum(c.installations)
FROM icr_daily_org_counts c
WHERE c.snapshot_date = :snapshot_date
GROUP BY c.snapshot_date, c.organization_type;

-- name: country_counts_delete
DELETE FROM icr_daily_country_counts WHERE snapshot_date = :snapshot_date;

-- name: country_counts_insert
INSERT INTO icr_daily_country_counts (snapshot_date, organization_country_code, installations)
SELECT c.snapshot_date, c.organization_country_code, sum(c.installations)
FROM icr_daily_org_counts c
WHERE c.snapshot_date = :snapshot_date
GROUP BY c.snapshot_date, c.organization_country_code;

-- name: permission_counts_delete
DELETE FROM icr_daily_permission_counts WHERE snapshot_date = :snapshot_date;

-- name: permission_counts_insert_current
-- For a date still in progress the snapshot holds the current rows, whose permissions are the
-- rows of icr_installation_permissions (see permission_counts_insert for a past date).
INSERT INTO icr_daily_permission_counts (snapshot_date, permission, access, installations)
SELECT d.snapshot_date, p.permission, p.access, count(*)
FROM icr_installation_daily d
JOIN icr_installation_permissions p ON p.installation_id = d.installation_id
WHERE d.snapshot_date = :snapshot_date
GROUP BY d.snapshot_date, p.permission, p.access;

-- name: daily_previous_date
SELECT max(snapshot_date) FROM icr_installation_daily WHERE snapshot_date < :day;

-- name: daily_next_date
SELECT min(snapshot_date) FROM icr_installation_daily WHERE snapshot_date > :day;

-- name: daily_count
SELECT count(*) FROM icr_installation_daily WHERE snapshot_date = :day;

-- name: daily_count_kept
-- Installations in the snapshots of both :day and :prev: new = active - kept, removed = active
-- on :prev - kept (a join of two primary-key ranges).
SELECT count(*)
FROM icr_installation_daily a
JOIN icr_installation_daily b ON b.snapshot_date = :prev AND b.installation_id = a.installation_id
WHERE a.snapshot_date = :day;

-- name: daily_removed_by_reason
-- Of the installations in :prev's snapshot and not in :day's, how many webhook events removed as
-- uninstalled or as suspended (their removal_reason; migration 0009). Few rows carry a reason.
SELECT count(CASE WHEN t.removal_reason = 'uninstalled' THEN 1 END),
       count(CASE WHEN t.removal_reason = 'suspended' THEN 1 END)
FROM icr_installation_state t
JOIN icr_installation_daily b ON b.snapshot_date = :prev AND b.installation_id = t.installation_id
WHERE t.removal_reason IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM icr_installation_daily a
                  WHERE a.snapshot_date = :day AND a.installation_id = t.installation_id);

-- name: totals_delete
DELETE FROM icr_daily_totals WHERE snapshot_date = :day;

-- name: totals_insert
INSERT INTO icr_daily_totals (snapshot_date, compared_to, active, new, removed, removed_uninstalled,
                              removed_suspended, sync_run_id)
VALUES (:day, :prev, :active, :new, :removed, :removed_uninstalled, :removed_suspended, :run_id);

-- name: totals_update_changes
-- The next snapshot date after a backfilled one is now compared with it.
UPDATE icr_daily_totals SET compared_to = :prev, new = :new, removed = :removed,
       removed_uninstalled = :removed_uninstalled, removed_suspended = :removed_suspended
WHERE snapshot_date = :day;
