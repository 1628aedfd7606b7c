-- icr_installation_daily becomes a view (issue 21: a no-change night writes O(1) rows, not one
-- row per active installation). Same name, same columns, same rows for every date loaded so far.
--
-- What the view returns, for every date that has a row in icr_daily_totals:
-- * a date loaded before this migration (icr_daily_totals.as_of IS NULL): the rows the old table
--   held for it, exactly as stored, now kept in icr_installation_daily_archive (frozen: loads
--   never add to it; a rerun of such a date replaces them with the derived rows below);
-- * any other date: derived from the history as the load that wrote the date's totals knew it.
--   icr_daily_totals.loaded_at is that load's time: history versions starting later are not part
--   of the date (an installation first listed by a later run does not join a past date). as_of is
--   the instant the date is read at: the end of the date (the next midnight, UTC) for a past
--   date, or loaded_at for a date still in progress (the nightly run), so the view shows what the
--   load counted. An installation is in the date's rows if, of its versions known by loaded_at,
--   the one in force just before as_of (the latest starting before it; for an installation first
--   seen later, its earliest) is not a removal, and it was created before the next midnight: the
--   rule the stored daily snapshot followed. Its organization columns are that version's;
--   sync_run_id is the run that wrote the date's totals.
-- Filter on snapshot_date: the derivation reads the history once per date asked for. Dashboards
-- read the per-day count tables (icr_report_*_daily); pruning old dates: delete them from
-- icr_installation_daily_archive (derived dates store nothing).
ALTER TABLE icr_installation_daily RENAME TO icr_installation_daily_archive;
ALTER TABLE icr_daily_totals ADD COLUMN as_of timestamptz;
ALTER TABLE icr_daily_totals ADD COLUMN loaded_at timestamptz;

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
  AND s.created_at < ((t.snapshot_date + 1)::timestamp AT TIME ZONE 'UTC')
  AND NOT EXISTS (SELECT 1 FROM icr_installation_history n
                  WHERE n.installation_id = h.installation_id
                    AND ((n.valid_from > h.valid_from AND n.valid_from < t.as_of)
                         OR (h.valid_from >= t.as_of AND n.valid_from < h.valid_from)));
