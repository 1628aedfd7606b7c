-- The webhook inbox (issue 23): every delivery the receiver (python -m icr.webhooks) accepted,
-- written and committed before it answers 202, so an event is never lost once ICR was told
-- "accepted". The event run (DAG icr_installation_events) and the nightly sync apply the
-- pending rows in arrival order (seq) and mark them.
-- delivery_id is the lowercase hex SHA-256 of the signedData string: the same delivery sent
-- twice (ICR retrying, a replay) finds its row and is not written again.
CREATE TABLE icr_webhook_inbox (
    seq             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id     text        NOT NULL UNIQUE,
    event           text        NOT NULL,
    installation_id text,
    received_at     timestamptz NOT NULL,
    -- The JSON body as received (text, byte for byte after UTF-8 decoding).
    payload         text        NOT NULL,
    -- 'pending' | 'applied' | 'stored' (transaction events kept for later use) | 'failed'
    status          text        NOT NULL DEFAULT 'pending',
    applied_at      timestamptz,
    -- The run (DAG run id or sync run id) that applied or stored it.
    applied_by      text,
    error           text
);
CREATE INDEX icr_webhook_inbox_status_seq_idx ON icr_webhook_inbox (status, seq);
