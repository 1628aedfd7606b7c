-- A nightly's per-day counts cost what the night's changes cost (issue 21): the load makes them
-- from the previous date's counts and the installations whose history moved since
-- (icr.warehouse.daily). Additive: one column, one index.
--
-- icr_daily_totals.counted_history_id: the largest icr_installation_history.history_id when the
-- date's counts were made from the current rows (a date loaded while in progress); every writer
-- of the state holds the merge lock and writes a history version for each change that can move a
-- count, so the installations changed since are exactly those with a later history_id. NULL: the
-- next date cannot build on this one (a past date, a date loaded before this migration, a date
-- with current rows created after its end, or forgotten after a full resync or a migration).
ALTER TABLE icr_daily_totals ADD COLUMN counted_history_id bigint;

-- Active installations created at or after a date's end: a nightly leaves them out of its counts
-- (an index range, empty unless ICR's createdAt is ahead of the date).
CREATE INDEX icr_installation_state_created_at_idx ON icr_installation_state (created_at) WHERE deleted_at IS NULL;
