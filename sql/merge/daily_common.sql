-- The per-day statements both dialects share (see daily_<dialect>.sql for the rest; the order
-- they run in: icr.warehouse.daily). icr_installation_daily is a view (migration 0011): a load
-- writes no per-installation rows, only these aggregates for its date, a few hundred rows.

-- The per-day aggregates the reporting views read (migration 0005), written by the load in its
-- transaction. A rerun or a backfill of a date rewrites its rows.

-- name: daily_archive_delete
-- A rerun of a date loaded before migration 0011: its rows in the view are derived from now on.
DELETE FROM icr_installation_daily_archive WHERE snapshot_date = :snapshot_date;

-- name: org_counts_insert_current
-- A date still in progress (the nightly run): its rows are the current ones (every history
-- version starts before the load's as_of, so the one in force is the current row), counted
-- straight from icr_installation_state: a grouped read that writes a few hundred rows.
INSERT INTO icr_daily_org_counts (snapshot_date, organization_type, organization_country_code, installations)
SELECT :snapshot_date, s.organization_type, s.organization_country_code, count(*)
FROM icr_installation_state s
WHERE s.deleted_at IS NULL AND s.created_at < :cutoff
GROUP BY s.organization_type, s.organization_country_code;

-- name: org_counts_delete
DELETE FROM icr_daily_org_counts WHERE snapshot_date = :snapshot_date;

-- name: org_counts_insert
-- A past date (a backfill): its rows as the view derives them from history (its totals row,
-- with as_of, is written first).
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
-- For a date still in progress the rows are the current ones, whose permissions are the rows of
-- icr_installation_permissions (see permission_counts_insert for a past date).
INSERT INTO icr_daily_permission_counts (snapshot_date, permission, access, installations)
SELECT :snapshot_date, p.permission, p.access, count(*)
FROM icr_installation_state s
JOIN icr_installation_permissions p ON p.installation_id = s.installation_id
WHERE s.deleted_at IS NULL AND s.created_at < :cutoff
GROUP BY p.permission, p.access;

-- name: org_counts_insert_since
-- A date in progress built on the counts of a date counted from the then current rows at
-- history_id :counted, copied aside (daily_base_*; icr.warehouse.daily.count_current): those
-- counts, less what the installations whose history moved since (icr_tmp_daily_changed) counted
-- then (their version at :counted, if not a removal: that date had no current row created after
-- its end), plus what their current rows count now (active and created before the date's end:
-- 1, else 0). Every change that can move a count writes a history version, so the others count
-- as they did; with no change this copies the base's rows.
WITH counts AS (
    SELECT c.organization_type, c.organization_country_code, c.installations AS n
    FROM icr_tmp_base_org_counts c
    UNION ALL
    SELECT h.organization_type, h.organization_country_code, -1
    FROM icr_tmp_daily_changed x
    JOIN icr_installation_history h ON h.history_id = x.counted_id
    WHERE NOT h.is_deleted
    UNION ALL
    SELECT s.organization_type, s.organization_country_code,
           CASE WHEN s.deleted_at IS NULL AND s.created_at < :cutoff THEN 1 ELSE 0 END
    FROM icr_tmp_daily_changed x
    JOIN icr_installation_state s ON s.installation_id = x.installation_id
)
INSERT INTO icr_daily_org_counts (snapshot_date, organization_type, organization_country_code, installations)
SELECT :snapshot_date, organization_type, organization_country_code, sum(n)
FROM counts
GROUP BY organization_type, organization_country_code
HAVING sum(n) <> 0;

-- name: daily_counted_base
-- What a date in progress :day can build its counts on (icr.warehouse.daily.count_current): of
-- the dates up to it (itself, on a rerun) counted from the then current rows, the one counted
-- last. None: it counts all current rows.
SELECT snapshot_date, counted_history_id FROM icr_daily_totals
WHERE snapshot_date <= :day AND counted_history_id IS NOT NULL
ORDER BY counted_history_id DESC, snapshot_date DESC
LIMIT 1;

-- name: daily_counted_history_id
-- What a date in progress stores as counted_history_id once counted: the history's end, unless
-- a current row created at or after the date's end was left out (the next date would count it
-- without a history version telling it so).
SELECT CASE WHEN EXISTS (SELECT 1 FROM icr_installation_state s
                         WHERE s.deleted_at IS NULL AND s.created_at >= :cutoff)
            THEN NULL
            ELSE (SELECT coalesce(max(h.history_id), 0) FROM icr_installation_history h) END;

-- name: totals_forget_counted
-- A change written without a history version (a full resync rewriting unchanged records, a
-- migration): no date counted before it may be built on.
UPDATE icr_daily_totals SET counted_history_id = NULL WHERE counted_history_id IS NOT NULL;

-- name: daily_previous_date
SELECT max(snapshot_date) FROM icr_daily_totals WHERE snapshot_date < :day;

-- name: daily_next_date
SELECT min(snapshot_date) FROM icr_daily_totals WHERE snapshot_date > :day;

-- name: daily_total
SELECT active, as_of, loaded_at FROM icr_daily_totals WHERE snapshot_date = :day;

-- name: org_counts_total
SELECT coalesce(sum(installations), 0) FROM icr_daily_org_counts WHERE snapshot_date = :snapshot_date;

-- name: daily_changes_from_history
-- New and removed on :day (its rows: as of :as_of, versions known by :loaded_at) against :prev
-- (:prev_as_of, :prev_loaded_at), and the removed that webhook events reported as uninstalled /
-- suspended. An installation can differ between the two only if a history version of it starts
-- in :since..:until (the earlier as_of to the later loaded_at) or it was created between the two
-- dates' next midnights (:prev_cutoff..:cutoff): only those are looked at, so the cost follows
-- the day's changes, not the installations. For each, "in the date's rows" is the view's rule
-- (migration 0011): of the versions known by loaded_at, the one in force just before as_of (else
-- its earliest) is not a removal, and it was created before the cutoff.
WITH candidates AS (
    SELECT h.installation_id FROM icr_installation_history h
    WHERE h.valid_from >= :since AND h.valid_from < :until
    UNION
    SELECT s.installation_id FROM icr_installation_state s
    WHERE s.created_at >= :prev_cutoff AND s.created_at < :cutoff
), flags AS (
    SELECT s.removal_reason,
           CASE WHEN s.created_at < :prev_cutoff AND NOT (
               SELECT h.is_deleted FROM icr_installation_history h
               WHERE h.installation_id = s.installation_id AND h.valid_from < :prev_loaded_at
               ORDER BY CASE WHEN h.valid_from < :prev_as_of THEN 0 ELSE 1 END,
                        CASE WHEN h.valid_from < :prev_as_of THEN h.valid_from END DESC, h.valid_from
               LIMIT 1) THEN 1 ELSE 0 END AS was_in,
           CASE WHEN s.created_at < :cutoff AND NOT (
               SELECT h.is_deleted FROM icr_installation_history h
               WHERE h.installation_id = s.installation_id AND h.valid_from < :loaded_at
               ORDER BY CASE WHEN h.valid_from < :as_of THEN 0 ELSE 1 END,
                        CASE WHEN h.valid_from < :as_of THEN h.valid_from END DESC, h.valid_from
               LIMIT 1) THEN 1 ELSE 0 END AS is_in
    FROM candidates c
    JOIN icr_installation_state s ON s.installation_id = c.installation_id
)
SELECT count(CASE WHEN is_in = 1 AND was_in = 0 THEN 1 END),
       count(CASE WHEN was_in = 1 AND is_in = 0 THEN 1 END),
       count(CASE WHEN was_in = 1 AND is_in = 0 AND removal_reason = 'uninstalled' THEN 1 END),
       count(CASE WHEN was_in = 1 AND is_in = 0 AND removal_reason = 'suspended' THEN 1 END)
FROM flags;

-- name: daily_count_kept
-- When :day or :prev was loaded before migration 0011 (its rows are archived, not derived):
-- installations in the rows of both: new = active - kept, removed = active on :prev - kept.
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
-- The date's row first (the view derives a date's rows only once it has one): active and the
-- changes are set by totals_set_active and totals_update_changes once counted.
INSERT INTO icr_daily_totals (snapshot_date, compared_to, active, sync_run_id, as_of, loaded_at)
VALUES (:day, :prev, 0, :run_id, :as_of, :loaded_at);

-- name: totals_set_active
UPDATE icr_daily_totals SET active = :active, counted_history_id = :counted WHERE snapshot_date = :day;

-- name: totals_update_changes
-- A date's changes against :prev (also: the next date after a backfilled one is now compared
-- with it).
UPDATE icr_daily_totals SET compared_to = :prev, new = :new, removed = :removed,
       removed_uninstalled = :removed_uninstalled, removed_suspended = :removed_suspended
WHERE snapshot_date = :day;
