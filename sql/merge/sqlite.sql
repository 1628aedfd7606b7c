-- The merge of one run's staging tables into the warehouse (SQLite). Same steps and meaning
-- as postgresql.sql; run inside ONE transaction opened with BEGIN IMMEDIATE.
-- Rows are inserted in installation_id order: every index of the written tables leads with it,
-- so sorted inserts append to the B-trees instead of touching a random page per row (beyond
-- SQLite's 2 MB page cache that is a page read per row: the slowest part of a large first load).

-- name: create_changes
CREATE TEMP TABLE icr_tmp_changes (installation_id TEXT PRIMARY KEY, action TEXT NOT NULL);

-- name: plan_changes
INSERT INTO icr_tmp_changes (installation_id, action)
SELECT s.installation_id,
       CASE WHEN t.installation_id IS NULL THEN 'insert'
            WHEN t.deleted_at IS NOT NULL THEN 'restore'
            WHEN t.record_hash <> s.record_hash THEN 'update'
            ELSE 'resync' END
FROM {stage} s
LEFT JOIN icr_installation_state t ON t.installation_id = s.installation_id
WHERE (t.installation_id IS NULL OR t.deleted_at IS NOT NULL OR t.record_hash <> s.record_hash
       OR :full_resync)
  -- not one a webhook event wrote after this list was read (removed or changed since): the older
  -- list must not undo it (count_removed_after_snapshot counts the removed ones)
  AND (t.installation_id IS NULL OR (t.last_seen_at <= :now AND (t.deleted_at IS NULL OR t.deleted_at <= :now)));

-- name: create_removals
CREATE TEMP TABLE icr_tmp_removals (installation_id TEXT PRIMARY KEY);

-- name: plan_removals
INSERT INTO icr_tmp_removals (installation_id)
SELECT t.installation_id
FROM icr_installation_state t
WHERE t.deleted_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM {stage} s WHERE s.installation_id = t.installation_id)
  AND NOT EXISTS (SELECT 1 FROM {kept} k WHERE k.installation_id = t.installation_id)
  AND NOT EXISTS (SELECT 1 FROM {rejects} r WHERE r.installation_id = t.installation_id)
  -- not one seen after this snapshot was taken (a webhook event applied while the run paged):
  -- the older list cannot know it
  AND t.last_seen_at <= :now;

-- name: upsert_changed
INSERT INTO icr_installation_state (
    installation_id, app_id, app_name_id, organization_id, organization_name, organization_type,
    organization_country_code, organization_is_public, permissions, created_at, updated_at,
    first_seen_at, last_seen_at, deleted_at, record_hash, raw, last_sync_run_id, wire_hash)
SELECT s.installation_id, s.app_id, s.app_name_id, s.organization_id, s.organization_name,
       s.organization_type, s.organization_country_code, s.organization_is_public,
       s.permissions, s.created_at, s.updated_at,
       :now, :now, NULL, s.record_hash, s.raw, :run_id, w.wire_hash
FROM {stage} s
JOIN icr_tmp_changes c ON c.installation_id = s.installation_id
LEFT JOIN {wire} w ON w.installation_id = s.installation_id
WHERE true
ORDER BY s.installation_id
ON CONFLICT (installation_id) DO UPDATE SET
    app_id = excluded.app_id,
    app_name_id = excluded.app_name_id,
    organization_id = excluded.organization_id,
    organization_name = excluded.organization_name,
    organization_type = excluded.organization_type,
    organization_country_code = excluded.organization_country_code,
    organization_is_public = excluded.organization_is_public,
    permissions = excluded.permissions,
    created_at = excluded.created_at,
    updated_at = excluded.updated_at,
    last_seen_at = excluded.last_seen_at,
    deleted_at = NULL,
    record_hash = excluded.record_hash,
    raw = excluded.raw,
    last_sync_run_id = excluded.last_sync_run_id,
    wire_hash = excluded.wire_hash;

-- name: wire_hashes_refresh
-- Unchanged rows that came with other bytes than the ones stored (see postgresql.sql).
UPDATE icr_installation_state AS t SET wire_hash = (
    SELECT w.wire_hash FROM {wire} w WHERE w.installation_id = t.installation_id)
WHERE t.deleted_at IS NULL
  AND t.installation_id IN (
    SELECT w.installation_id FROM {wire} w
    JOIN {stage} s ON s.installation_id = w.installation_id
    JOIN icr_installation_state u ON u.installation_id = w.installation_id
    WHERE u.record_hash = s.record_hash AND u.wire_hash IS NOT w.wire_hash);

-- name: permissions_delete
DELETE FROM icr_installation_permissions
WHERE installation_id IN (SELECT installation_id FROM icr_tmp_changes);

-- name: permissions_insert
INSERT INTO icr_installation_permissions (installation_id, permission, access)
SELECT s.installation_id, kv.key, kv.value
FROM {stage} s
JOIN icr_tmp_changes c ON c.installation_id = s.installation_id
JOIN json_each(s.permissions) AS kv
ORDER BY s.installation_id, kv.key;

-- name: history_close_changed
UPDATE icr_installation_history
SET valid_to = :now
WHERE valid_to IS NULL
  AND installation_id IN (SELECT installation_id FROM icr_tmp_changes WHERE action <> 'resync');

-- name: history_insert_changed
INSERT INTO icr_installation_history (
    installation_id, valid_from, valid_to, is_deleted, record_hash, organization_id,
    organization_name, organization_type, organization_country_code, permissions, sync_run_id)
SELECT s.installation_id, :now, NULL, 0, s.record_hash, s.organization_id,
       s.organization_name, s.organization_type, s.organization_country_code,
       s.permissions, :run_id
FROM {stage} s
JOIN icr_tmp_changes c ON c.installation_id = s.installation_id
WHERE c.action <> 'resync'
ORDER BY s.installation_id;

-- name: history_close_removed
UPDATE icr_installation_history
SET valid_to = :now
WHERE valid_to IS NULL
  AND installation_id IN (SELECT installation_id FROM icr_tmp_removals);

-- name: history_insert_removed
INSERT INTO icr_installation_history (
    installation_id, valid_from, valid_to, is_deleted, record_hash, organization_id,
    organization_name, organization_type, organization_country_code, permissions, sync_run_id)
SELECT t.installation_id, :now, NULL, 1, t.record_hash, t.organization_id,
       t.organization_name, t.organization_type, t.organization_country_code, t.permissions, :run_id
FROM icr_installation_state t
JOIN icr_tmp_removals r ON r.installation_id = t.installation_id
ORDER BY t.installation_id;

-- name: mark_removed
UPDATE icr_installation_state
SET deleted_at = :now, last_sync_run_id = :run_id
WHERE installation_id IN (SELECT installation_id FROM icr_tmp_removals);

-- name: count_active_rejected
SELECT count(*) FROM icr_installation_state t
WHERE t.deleted_at IS NULL
  AND EXISTS (SELECT 1 FROM {rejects} r WHERE r.installation_id = t.installation_id)
  AND NOT EXISTS (SELECT 1 FROM {stage} s WHERE s.installation_id = t.installation_id)
  AND NOT EXISTS (SELECT 1 FROM {kept} k WHERE k.installation_id = t.installation_id);
