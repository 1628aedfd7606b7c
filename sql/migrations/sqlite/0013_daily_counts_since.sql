-- A nightly load costs what the night's changes cost (issue 21); same meaning as
-- postgresql/0013_daily_counts_since.sql, where the column and the indexes are described.
-- history_id is an AUTOINCREMENT key here: it only grows, and a deleted row's id is never reused.
ALTER TABLE icr_daily_totals ADD COLUMN counted_history_id INTEGER;

CREATE INDEX icr_installation_state_created_at_idx ON icr_installation_state (created_at) WHERE deleted_at IS NULL;

CREATE INDEX icr_installation_state_deleted_at_idx ON icr_installation_state (deleted_at) WHERE deleted_at IS NOT NULL;
