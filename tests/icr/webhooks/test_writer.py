import asyncio
import threading

import pytest

from icr.warehouse.migrations import apply_migrations
from icr.webhooks import inbox
from icr.webhooks.delivery import parse_delivery
from icr.webhooks.signature import HEADER
from icr.webhooks.writer import InboxWriter
from tests.icr.webhooks.helpers import SECRET, signed


def make():
    body, headers = signed("installed")
    return parse_delivery(body, SECRET, headers[HEADER])


def test_deliveries_that_arrive_during_a_commit_share_the_next_one():
    release = threading.Event()
    batches: list[list[str]] = []
    stored: list[str] = []

    def store_many(ds):
        batches.append([d.delivery_id for d in ds])
        if len(batches) == 1:
            release.wait(5)  # a slow first commit: the others queue behind it
        return {d.delivery_id for d in ds}

    ds = [make() for _ in range(6)]

    async def main():
        writer = InboxWriter(store_many, on_stored=lambda got: stored.extend(d.delivery_id for d in got))
        writer.start()
        first = asyncio.create_task(writer.submit(ds[0]))
        await asyncio.sleep(0.05)
        rest = [asyncio.create_task(writer.submit(d)) for d in ds[1:]] + [asyncio.create_task(writer.submit(ds[1]))]
        await asyncio.sleep(0.05)
        release.set()
        results = [await first] + [await t for t in rest]
        await writer.stop()
        return results

    results = asyncio.run(main())
    assert results == [True] * 6 + [False]  # the second copy of ds[1] in the same batch is a replay
    assert len(batches) == 2 and len(batches[1]) == 6
    assert stored == [d.delivery_id for d in ds]


def test_a_failed_commit_fails_every_waiting_delivery():
    def store_many(ds):
        raise ConnectionError("warehouse down")

    async def main():
        writer = InboxWriter(store_many)
        writer.start()
        results = await asyncio.gather(*(writer.submit(make()) for _ in range(3)), return_exceptions=True)
        await writer.stop()
        return results

    assert all(isinstance(r, ConnectionError) for r in asyncio.run(main()))


def test_submit_without_a_running_writer_raises():
    with pytest.raises(RuntimeError, match="not running"):
        asyncio.run(InboxWriter(lambda ds: set()).submit(make()))


def test_insert_events_writes_a_batch_once_in_order(warehouse):
    apply_migrations(warehouse)
    ds = [make() for _ in range(inbox.MAX_ROWS_PER_INSERT + 10)]  # more than one statement
    assert inbox.insert_events(warehouse, ds + ds[:3]) == {d.delivery_id for d in ds}
    assert inbox.insert_events(warehouse, ds[:5]) == set()
    assert [e.delivery_id for e in inbox.pending(warehouse, limit=10_000)] == [d.delivery_id for d in ds]
