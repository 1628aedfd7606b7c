-- The record as the API sent it, for the nightly's fast path (icr.unchanged): the first 16 bytes
-- of the SHA-256 of the record's bytes exactly as they stood in the page (its span in the
-- installations array). A listed record whose bytes hash to the wire_hash of an active
-- installation is that installation, unchanged: it is neither decoded nor normalized again.
-- Written only together with record_hash from the same bytes (a load's new and changed rows,
-- and unchanged rows whose bytes differ from what was stored); NULL where the bytes are not
-- known (rows written before this migration, or by a webhook event): such a row takes the full
-- path once and gets its wire_hash then. Additive: one nullable column.
ALTER TABLE icr_installation_state ADD COLUMN wire_hash bytea;

-- The nightly reads every active installation's (id, wire_hash) before its first page: the
-- partial index of active ids now carries the wire hash, so that read is an index-only scan
-- (a few dozen MB) instead of a pass over every row's JSON (the load keeps the visibility map
-- current: icr.warehouse.housekeeping.tidy_after_load).
DROP INDEX icr_installation_state_active_idx;
CREATE INDEX icr_installation_state_active_idx ON icr_installation_state (installation_id) INCLUDE (wire_hash)
    WHERE deleted_at IS NULL;

-- The view icr_installation_daily (migration 0011) needs each installation's created_at: with
-- this index it reads it from the index (an index-only scan, ~30 MB at 1,000,000) instead of
-- every row's JSON (1.5 GB): the verify task's count of a date's rows, 2.8 s -> 1.8 s.
CREATE INDEX icr_installation_state_id_created_idx ON icr_installation_state (installation_id) INCLUDE (created_at);
