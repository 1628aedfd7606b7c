import json
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from icr.warehouse.migrations import apply_migrations
from icr.webhooks import inbox
from icr.webhooks.delivery import parse_delivery
from icr.webhooks.signature import HEADER
from tests.icr.webhooks.helpers import SECRET, installation, signed


def make(event="installed", inst=None):
    body, headers = signed(event, inst or installation())
    return parse_delivery(body, SECRET, headers[HEADER])


@pytest.fixture
def wh(warehouse):
    apply_migrations(warehouse)
    return warehouse


def test_insert_once_then_replay_is_false(wh):
    d = make()
    assert inbox.insert_event(wh, d) is True
    assert inbox.insert_event(wh, d) is False
    with wh.read() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM icr_webhook_inbox")).scalar() == 1


def test_pending_in_arrival_order_with_what_was_received(wh):
    inst = installation()
    ds = [make("installed", inst), make("suspended", inst), make("unsuspended", inst)]
    at = datetime(2026, 12, 1, 15, 0, 0, 123456, tzinfo=timezone.utc)
    for d in ds:
        assert inbox.insert_event(wh, d, received_at=at)
    got = inbox.pending(wh, limit=10)
    assert [e.event for e in got] == ["installed", "suspended", "unsuspended"]
    assert [e.seq for e in got] == sorted(e.seq for e in got)
    first = got[0]
    assert (first.delivery_id, first.installation_id, first.payload) == (ds[0].delivery_id, inst["id"], ds[0].payload)
    assert first.received_at == at
    assert first.body["installation"] == json.loads(ds[0].payload)["installation"]
    assert [e.event for e in inbox.pending(wh, limit=2)] == ["installed", "suspended"]


def test_mark_removes_from_pending_and_records_who_and_why(wh):
    ds = [make() for _ in range(3)]
    for d in ds:
        inbox.insert_event(wh, d)
    seqs = [e.seq for e in inbox.pending(wh)]
    assert inbox.mark(wh, seqs[:2], "applied", "run-1") == 2
    assert inbox.mark(wh, seqs[2:], "failed", "run-1", error="404 from ICR") == 1
    assert inbox.pending(wh) == []
    with wh.read() as conn:
        rows = conn.execute(sa.text(
            "SELECT status, applied_by, error, applied_at FROM icr_webhook_inbox ORDER BY seq")).all()
    assert [r[:3] for r in rows] == [("applied", "run-1", None), ("applied", "run-1", None),
                                    ("failed", "run-1", "404 from ICR")]
    assert all(r[3] is not None for r in rows)
    assert inbox.mark(wh, [], "applied", "run-2") == 0


def test_mark_inside_the_callers_transaction_rolls_back_with_it(wh):
    inbox.insert_event(wh, make())
    seq = inbox.pending(wh)[0].seq
    with pytest.raises(RuntimeError):
        with wh.write() as conn:
            assert [e.seq for e in inbox.pending(wh, conn=conn)] == [seq]
            inbox.mark(wh, [seq], "applied", "run-1", conn=conn)
            raise RuntimeError("apply failed")
    assert [e.seq for e in inbox.pending(wh)] == [seq]


def test_mark_refuses_an_unknown_status(wh):
    with pytest.raises(ValueError, match="inbox status"):
        inbox.mark(wh, [1], "done", "run-1")
