-- Why an installation was removed (issue 23, webhooks): NULL = unknown (it disappeared from
-- GET /app/installations), 'uninstalled' or 'suspended' (from the webhook event that removed it).
-- Additive: new columns only, on the state table, the history and the view icr_installations.
-- The nightly run row records drift: installations whose state the applied events had wrong.
ALTER TABLE icr_installation_state ADD COLUMN removal_reason TEXT;
ALTER TABLE icr_installation_history ADD COLUMN removal_reason TEXT;
ALTER TABLE icr_sync_runs ADD COLUMN drift INTEGER;
ALTER TABLE icr_sync_runs ADD COLUMN drift_detail TEXT;

-- SQLite: the view is dropped and recreated (views that read it bind by name, at query time).
DROP VIEW icr_installations;
CREATE VIEW icr_installations AS
SELECT s.installation_id,
       s.app_id,
       s.app_name_id,
       s.organization_id,
       s.organization_name,
       s.organization_type,
       s.organization_country_code,
       s.organization_is_public,
       s.permissions,
       s.created_at,
       s.updated_at,
       s.first_seen_at,
       CASE WHEN s.deleted_at IS NULL
            THEN MAX(s.last_seen_at, COALESCE(latest.snapshot_at, s.last_seen_at))
            ELSE s.last_seen_at END AS last_seen_at,
       s.deleted_at,
       s.record_hash,
       s.raw,
       s.last_sync_run_id,
       s.removal_reason
FROM icr_installation_state s
CROSS JOIN (SELECT max(snapshot_at) AS snapshot_at
            FROM icr_sync_runs
            WHERE status = 'success' AND snapshot_complete AND snapshot_source = 'api') latest;
