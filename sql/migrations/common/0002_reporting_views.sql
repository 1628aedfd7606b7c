-- Reporting views for BI dashboards. They read only the contract tables.

-- Installations active now (as of the latest successful sync).
CREATE VIEW icr_report_active_installations AS
SELECT installation_id, organization_id, organization_name, organization_type,
       organization_country_code, organization_is_public, permissions,
       created_at, updated_at, first_seen_at, last_seen_at
FROM icr_installations
WHERE deleted_at IS NULL;

-- Per snapshot date: active installations, and how many were new or removed compared with the
-- previous snapshot date present in icr_installation_daily (compared_to; NULL for the first).
CREATE VIEW icr_report_daily_counts AS
WITH dates AS (
    SELECT DISTINCT snapshot_date FROM icr_installation_daily
), paired AS (
    SELECT d.snapshot_date,
           (SELECT max(p.snapshot_date) FROM dates p WHERE p.snapshot_date < d.snapshot_date) AS compared_to
    FROM dates d
)
SELECT p.snapshot_date,
       p.compared_to,
       (SELECT count(*) FROM icr_installation_daily a WHERE a.snapshot_date = p.snapshot_date) AS active,
       CASE WHEN p.compared_to IS NULL THEN NULL ELSE
           (SELECT count(*) FROM icr_installation_daily a
            WHERE a.snapshot_date = p.snapshot_date
              AND NOT EXISTS (SELECT 1 FROM icr_installation_daily b
                              WHERE b.snapshot_date = p.compared_to AND b.installation_id = a.installation_id))
       END AS new,
       CASE WHEN p.compared_to IS NULL THEN NULL ELSE
           (SELECT count(*) FROM icr_installation_daily b
            WHERE b.snapshot_date = p.compared_to
              AND NOT EXISTS (SELECT 1 FROM icr_installation_daily a
                              WHERE a.snapshot_date = p.snapshot_date AND a.installation_id = b.installation_id))
       END AS removed
FROM paired p;

-- Active installations per organization type and country.
CREATE VIEW icr_report_by_org_type_country AS
SELECT organization_type, organization_country_code, count(*) AS installations
FROM icr_installation_state
WHERE deleted_at IS NULL
GROUP BY organization_type, organization_country_code;

-- How many active installations grant each permission, per access level.
CREATE VIEW icr_report_permissions_summary AS
SELECT p.permission, p.access, count(*) AS installations
FROM icr_installation_permissions p
JOIN icr_installation_state s ON s.installation_id = p.installation_id
WHERE s.deleted_at IS NULL
GROUP BY p.permission, p.access;
