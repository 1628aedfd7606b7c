-- The merge statements both dialects share (see <dialect>.sql for the rest; same rules).

-- name: plan_removals_no_rejects
-- plan_removals (in <dialect>.sql) when the run rejected nothing (the usual case): one
-- anti-join instead of two.
INSERT INTO icr_tmp_removals (installation_id)
SELECT t.installation_id
FROM icr_installation_state t
WHERE t.deleted_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM {stage} s WHERE s.installation_id = t.installation_id)
  AND NOT EXISTS (SELECT 1 FROM {kept} k WHERE k.installation_id = t.installation_id)
  -- not one seen after this snapshot was taken (a webhook event applied while the run paged):
  -- the older list cannot know it
  AND t.last_seen_at <= :now;

-- name: clear_returning_reasons
-- A returning installation (planned 'restore') is active again: it keeps no removal reason.
-- Run by the nightly merge and the webhook events alike, after plan_changes.
UPDATE icr_installation_state SET removal_reason = NULL
WHERE removal_reason IS NOT NULL
  AND installation_id IN (SELECT installation_id FROM icr_tmp_changes WHERE action = 'restore');

-- name: count_seen_after_snapshot
-- What plan_removals leaves active only because a webhook event applied it after the list was read.
SELECT count(*)
FROM icr_installation_state t
WHERE t.deleted_at IS NULL
  AND t.last_seen_at > :now
  AND NOT EXISTS (SELECT 1 FROM {stage} s WHERE s.installation_id = t.installation_id)
  AND NOT EXISTS (SELECT 1 FROM {kept} k WHERE k.installation_id = t.installation_id)
  AND NOT EXISTS (SELECT 1 FROM {rejects} r WHERE r.installation_id = CAST(t.installation_id AS TEXT));

-- name: count_removed_after_snapshot
-- Listed installations (staged or kept unchanged) that a webhook event removed after the list was
-- read: plan_changes leaves them removed, so they are not active after this run.
SELECT count(*)
FROM icr_installation_state t
WHERE t.deleted_at > :now
  AND (EXISTS (SELECT 1 FROM {stage} s WHERE s.installation_id = t.installation_id)
       OR EXISTS (SELECT 1 FROM {kept} k WHERE k.installation_id = t.installation_id));

-- name: count_unplanned_wire_hashes
-- Staged rows with a wire hash that the merge did not write (unchanged by record_hash): only
-- then can a stored wire hash be missing or stale (wire_hashes_refresh), which after an upgrade
-- to migration 0012 is every row once, and otherwise none on most nights.
SELECT count(*) FROM {wire} w
WHERE NOT EXISTS (SELECT 1 FROM icr_tmp_changes c WHERE c.installation_id = w.installation_id);

-- name: rejects_clear
DELETE FROM icr_rejected_records WHERE sync_run_id = :run_id;

-- name: rejects_insert
INSERT INTO icr_rejected_records (sync_run_id, installation_id, reason, raw, rejected_at)
SELECT :run_id, r.installation_id, r.reason, r.raw, :now FROM {rejects} r;
