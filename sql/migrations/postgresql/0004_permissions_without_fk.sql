-- icr_installation_permissions loses its foreign key on PostgreSQL (columns unchanged).
-- The key's trigger ran once per inserted permission row and took a FOR KEY SHARE lock on the
-- parent installation: at 1,000,000 installations that was the slowest step of a first load
-- (every parent row locked and rewritten). Rows are only ever inserted by the merge, from
-- installations upserted in the same transaction, and installations are never deleted, so the
-- key could not fail (tests/icr/warehouse check that no permission row is ever orphaned).
ALTER TABLE icr_installation_permissions
    DROP CONSTRAINT IF EXISTS icr_installation_permissions_installation_id_fkey;
