-- Reporting views over time (issue 22), over the per-day aggregates of migration 0005: each is
-- a plain read of one small table (no grouping at query time); filter on snapshot_date.
-- Plans and timings: docs/reporting.md.

-- Per snapshot date: active installations, new and removed vs the previous snapshot date.
-- (Same columns as before 0005; now kept when icr_installation_daily is pruned.)
CREATE VIEW icr_report_daily_counts AS
SELECT snapshot_date, compared_to, active, new, removed
FROM icr_daily_totals;

-- The dashboard summary: a plain view since 0005, so it answers right after the first sync.
CREATE VIEW icr_report_dashboard_summary AS
SELECT snapshot_date, compared_to, active, new, removed
FROM icr_daily_totals;

-- New and removed per snapshot date. removed_uninstalled / removed_suspended split removed by
-- reason once removal reasons are recorded (webhooks); NULL until then.
CREATE VIEW icr_report_new_removed_daily AS
SELECT snapshot_date, compared_to, new, removed, removed_uninstalled, removed_suspended
FROM icr_daily_totals;

-- Active installations per snapshot date and organization type.
CREATE VIEW icr_report_active_by_org_type_daily AS
SELECT snapshot_date, organization_type, installations
FROM icr_daily_type_counts;

-- Active installations per snapshot date and organization country.
CREATE VIEW icr_report_active_by_country_daily AS
SELECT snapshot_date, organization_country_code, installations
FROM icr_daily_country_counts;

-- Permission adoption per snapshot date: active installations granting each permission at each
-- access level, and the day's active installations (adoption share = installations / active).
CREATE VIEW icr_report_permission_adoption_daily AS
SELECT p.snapshot_date, p.permission, p.access, p.installations, t.active
FROM icr_daily_permission_counts p
JOIN icr_daily_totals t ON t.snapshot_date = p.snapshot_date;
