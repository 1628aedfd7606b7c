-- The set-based merge of one run's staging tables into the warehouse (PostgreSQL).
-- Run by icr.warehouse.merge, statement by statement, inside ONE transaction holding the
-- merge advisory lock. {stage} and {rejects} are the run's staging tables, {kept} the ids of records
-- the extract found unchanged (icr.unchanged: present, nothing to write); :params are bound.
-- The staging table holds permissions and raw as jsonb (parsed once, during the COPY); the CASTs
-- below are then no-ops, kept so that a staging table of an older release still loads.

-- name: create_changes
-- No key: ids come from the staging table's primary key, and a key built row by row in the
-- session's small temp buffers cost more than the whole planning query.
CREATE TEMP TABLE icr_tmp_changes (installation_id uuid NOT NULL, action text NOT NULL) ON COMMIT DROP;

-- name: plan_changes
-- Only rows that are new, changed (record_hash differs) or returning are touched at all.
INSERT INTO icr_tmp_changes (installation_id, action)
SELECT s.installation_id,
       CASE WHEN t.installation_id IS NULL THEN 'insert'
            WHEN t.deleted_at IS NOT NULL THEN 'restore'
            WHEN t.record_hash <> s.record_hash THEN 'update'
            ELSE 'resync' END
FROM {stage} s
LEFT JOIN icr_installation_state t ON t.installation_id = s.installation_id
WHERE (t.installation_id IS NULL OR t.deleted_at IS NOT NULL OR t.record_hash <> s.record_hash
       OR CAST(:full_resync AS boolean))
  -- not one a webhook event wrote after this list was read (removed or changed since): the older
  -- list must not undo it (count_removed_after_snapshot counts the removed ones)
  AND (t.installation_id IS NULL OR (t.last_seen_at <= :now AND (t.deleted_at IS NULL OR t.deleted_at <= :now)));

-- name: analyze_changes
-- Real row counts for the planner (a temp table has no statistics until analyzed).
ANALYZE icr_tmp_changes;

-- name: create_removals
CREATE TEMP TABLE icr_tmp_removals (installation_id uuid PRIMARY KEY) ON COMMIT DROP;

-- name: plan_removals
-- Active installations absent from a complete snapshot. A record that was received but
-- rejected still counts as present: a bad record is not a removal.
INSERT INTO icr_tmp_removals (installation_id)
SELECT t.installation_id
FROM icr_installation_state t
WHERE t.deleted_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM {stage} s WHERE s.installation_id = t.installation_id)
  AND NOT EXISTS (SELECT 1 FROM {kept} k WHERE k.installation_id = t.installation_id)
  AND NOT EXISTS (SELECT 1 FROM {rejects} r WHERE r.installation_id = CAST(t.installation_id AS text))
  -- not one seen after this snapshot was taken (a webhook event applied while the run paged):
  -- the older list cannot know it
  AND t.last_seen_at <= :now;

-- name: insert_new
-- New installations: a plain INSERT (merges are serialized by the advisory lock, so no other
-- writer can insert the same id; ON CONFLICT's per-row speculative insertion is not needed).
INSERT INTO icr_installation_state (
    installation_id, app_id, app_name_id, organization_id, organization_name, organization_type,
    organization_country_code, organization_is_public, permissions, created_at, updated_at,
    first_seen_at, last_seen_at, deleted_at, record_hash, raw, last_sync_run_id, wire_hash)
SELECT s.installation_id, s.app_id, s.app_name_id, s.organization_id, s.organization_name,
       s.organization_type, s.organization_country_code, s.organization_is_public,
       CAST(s.permissions AS jsonb), s.created_at, s.updated_at,
       :now, :now, NULL, s.record_hash, CAST(s.raw AS jsonb), :run_id, w.wire_hash
FROM {stage} s
JOIN icr_tmp_changes c ON c.installation_id = s.installation_id
LEFT JOIN {wire} w ON w.installation_id = s.installation_id
WHERE c.action = 'insert';

-- name: update_changed
-- Changed, returning (and, on a full resync, unchanged) installations; first_seen_at stays.
UPDATE icr_installation_state AS t SET
    app_id = s.app_id,
    app_name_id = s.app_name_id,
    organization_id = s.organization_id,
    organization_name = s.organization_name,
    organization_type = s.organization_type,
    organization_country_code = s.organization_country_code,
    organization_is_public = s.organization_is_public,
    permissions = CAST(s.permissions AS jsonb),
    created_at = s.created_at,
    updated_at = s.updated_at,
    last_seen_at = :now,
    deleted_at = NULL,
    record_hash = s.record_hash,
    raw = CAST(s.raw AS jsonb),
    last_sync_run_id = :run_id,
    wire_hash = w.wire_hash
FROM {stage} s
JOIN icr_tmp_changes c ON c.installation_id = s.installation_id
LEFT JOIN {wire} w ON w.installation_id = s.installation_id
WHERE t.installation_id = s.installation_id AND c.action <> 'insert';

-- name: wire_hashes_refresh
-- Unchanged rows that came with other bytes than the ones stored (or none stored: rows written
-- before migration 0012 or by a webhook event): store these bytes' wire hash, so the next night
-- recognises them undecoded. Same record_hash, so the bytes are this content; nothing else moves.
UPDATE icr_installation_state AS t SET wire_hash = w.wire_hash
FROM {wire} w
JOIN {stage} s ON s.installation_id = w.installation_id
WHERE t.installation_id = w.installation_id AND t.record_hash = s.record_hash
  AND t.deleted_at IS NULL AND t.wire_hash IS DISTINCT FROM w.wire_hash;

-- name: permissions_delete
DELETE FROM icr_installation_permissions p
USING icr_tmp_changes c
WHERE p.installation_id = c.installation_id;

-- name: permissions_insert
INSERT INTO icr_installation_permissions (installation_id, permission, access)
SELECT s.installation_id, kv.key, kv.value
FROM {stage} s
JOIN icr_tmp_changes c ON c.installation_id = s.installation_id
CROSS JOIN LATERAL jsonb_each_text(CAST(s.permissions AS jsonb)) AS kv;

-- name: history_close_changed
UPDATE icr_installation_history h
SET valid_to = :now
FROM icr_tmp_changes c
WHERE h.installation_id = c.installation_id AND h.valid_to IS NULL AND c.action <> 'resync';

-- name: history_insert_changed
INSERT INTO icr_installation_history (
    installation_id, valid_from, valid_to, is_deleted, record_hash, organization_id,
    organization_name, organization_type, organization_country_code, permissions, sync_run_id)
SELECT s.installation_id, :now, NULL, false, s.record_hash, s.organization_id,
       s.organization_name, s.organization_type, s.organization_country_code,
       CAST(s.permissions AS jsonb), :run_id
FROM {stage} s
JOIN icr_tmp_changes c ON c.installation_id = s.installation_id
WHERE c.action <> 'resync';

-- name: history_close_removed
UPDATE icr_installation_history h
SET valid_to = :now
FROM icr_tmp_removals r
WHERE h.installation_id = r.installation_id AND h.valid_to IS NULL;

-- name: history_insert_removed
INSERT INTO icr_installation_history (
    installation_id, valid_from, valid_to, is_deleted, record_hash, organization_id,
    organization_name, organization_type, organization_country_code, permissions, sync_run_id)
SELECT t.installation_id, :now, NULL, true, t.record_hash, t.organization_id,
       t.organization_name, t.organization_type, t.organization_country_code, t.permissions, :run_id
FROM icr_installation_state t
JOIN icr_tmp_removals r ON r.installation_id = t.installation_id;

-- name: mark_removed
UPDATE icr_installation_state t
SET deleted_at = :now, last_sync_run_id = :run_id
FROM icr_tmp_removals r
WHERE t.installation_id = r.installation_id;

-- name: count_active_rejected
-- Rejected records whose installation is still active (kept, not removed).
SELECT count(*) FROM icr_installation_state t
WHERE t.deleted_at IS NULL
  AND EXISTS (SELECT 1 FROM {rejects} r WHERE r.installation_id = CAST(t.installation_id AS text))
  AND NOT EXISTS (SELECT 1 FROM {stage} s WHERE s.installation_id = t.installation_id)
  AND NOT EXISTS (SELECT 1 FROM {kept} k WHERE k.installation_id = t.installation_id);
