-- The webhook inbox (issue 23); same table and meaning as postgresql/0008_webhook_inbox.sql.
-- Timestamps are ISO-8601 UTC text, as in the other tables.
CREATE TABLE icr_webhook_inbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id     TEXT    NOT NULL UNIQUE,
    event           TEXT    NOT NULL,
    installation_id TEXT,
    received_at     TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'pending',
    applied_at      TEXT,
    applied_by      TEXT,
    error           TEXT
);
CREATE INDEX icr_webhook_inbox_status_seq_idx ON icr_webhook_inbox (status, seq);
