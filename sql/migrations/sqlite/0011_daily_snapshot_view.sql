-- icr_installation_daily becomes a view (issue 21); same meaning as
-- postgresql/0011_daily_snapshot_view.sql, where the semantics are described.
-- SQLite renames the table's indexes with it; timestamps are UTC ISO-8601 text, so the next
-- midnight of a date is date(snapshot_date, '+1 day') in the same format.
ALTER TABLE icr_installation_daily RENAME TO icr_installation_daily_archive;
ALTER TABLE icr_daily_totals ADD COLUMN as_of TEXT;
ALTER TABLE icr_daily_totals ADD COLUMN loaded_at TEXT;

-- A day's changes are found from the history versions that start between two dates' as_of and
-- loaded_at (icr.warehouse.daily): an index range, so they cost what the changes cost.
CREATE INDEX icr_installation_history_valid_from_idx ON icr_installation_history (valid_from);

CREATE VIEW icr_installation_daily AS
SELECT a.snapshot_date, a.installation_id, a.organization_id, a.organization_type,
       a.organization_country_code, a.sync_run_id
FROM icr_installation_daily_archive a
WHERE NOT EXISTS (SELECT 1 FROM icr_daily_totals t
                  WHERE t.snapshot_date = a.snapshot_date AND t.as_of IS NOT NULL)
UNION ALL
SELECT t.snapshot_date, h.installation_id, h.organization_id, h.organization_type,
       h.organization_country_code, t.sync_run_id
FROM icr_daily_totals t
JOIN icr_installation_history h ON NOT h.is_deleted
JOIN icr_installation_state s ON s.installation_id = h.installation_id
WHERE t.as_of IS NOT NULL
  AND h.valid_from < t.loaded_at
  AND s.created_at < date(t.snapshot_date, '+1 day') || 'T00:00:00.000000+00:00'
  AND NOT EXISTS (SELECT 1 FROM icr_installation_history n
                  WHERE n.installation_id = h.installation_id
                    AND ((n.valid_from > h.valid_from AND n.valid_from < t.as_of)
                         OR (h.valid_from >= t.as_of AND n.valid_from < h.valid_from)));
