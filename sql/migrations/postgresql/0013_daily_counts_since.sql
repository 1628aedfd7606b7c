-- A nightly load costs what the night's changes cost (issue 21). Additive: a column, two indexes.
--
-- icr_daily_totals.counted_history_id: for a date counted from the then current rows (loaded
-- while in progress, the nightly), the largest icr_installation_history.history_id at that
-- moment. Every writer of the state holds the merge lock and writes a history version for each
-- change that can move a count, so the installations changed since are exactly those with a
-- later history_id, and a later load of a date in progress makes its counts from this date's and
-- theirs (icr.warehouse.daily.count_current). NULL: no date builds on this one (a past date, a
-- date loaded before this migration, a date with current rows created after its end, or
-- forgotten after a full resync or a later migration).
ALTER TABLE icr_daily_totals ADD COLUMN counted_history_id bigint;

-- Active installations created at or after a date's end: a date in progress leaves them out of
-- its counts, and its check counts them (an index range, empty unless ICR's createdAt is ahead).
CREATE INDEX icr_installation_state_created_at_idx ON icr_installation_state (created_at) WHERE deleted_at IS NULL;

-- Removed installations by removal time: the merge counts the listed ones a webhook event removed
-- after the list was read (count_removed_after_snapshot, every night) from an index range over
-- the removed rows instead of a pass over all rows.
CREATE INDEX icr_installation_state_deleted_at_idx ON icr_installation_state (deleted_at) WHERE deleted_at IS NOT NULL;
