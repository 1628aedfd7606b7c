"""Group commit: deliveries that arrive while a commit is running go into the next one.

Each request hands its checked delivery to :meth:`InboxWriter.submit` and waits; one writer task
takes everything queued (up to ``max_batch``), writes it with :func:`inbox.insert_events` in a
worker thread, commits, and only then answers each waiting request (new or replay), or fails
them all (the receiver answers 503). One commit per batch instead of one per delivery is what
keeps a burst from queueing behind the warehouse's fsync; a single writer also means arrival
order, ``seq`` order and commit order are the same. New deliveries go to ``on_stored`` (the
notifications) after the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from starlette.concurrency import run_in_threadpool

from icr.webhooks.delivery import Delivery

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 500


class InboxWriter:
    def __init__(self, store_many: Callable[[Sequence[Delivery]], set[str]],
                 on_stored: Callable[[list[Delivery]], None] | None = None,
                 max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self._store_many = store_many
        self._on_stored = on_stored
        self._max_batch = max_batch
        self._queue: asyncio.Queue[tuple[Delivery, asyncio.Future[bool]]] | None = None
        self._task: asyncio.Task | None = None
        self.batches = 0

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="icr-inbox-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def submit(self, delivery: Delivery) -> bool:
        """Wait until ``delivery`` is committed: True if new, False if it was a replay."""
        if self._queue is None or self._task is None or self._task.done():
            raise RuntimeError("the inbox writer is not running")
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((delivery, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._write(batch)

    async def _write(self, batch: list[tuple[Delivery, asyncio.Future[bool]]]) -> None:
        try:
            new_ids = await run_in_threadpool(self._store_many, [d for d, _ in batch])
        except Exception as exc:  # noqa: BLE001 - every waiting request answers 503
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self.batches += 1
        stored: list[Delivery] = []
        for delivery, future in batch:
            is_new = delivery.delivery_id in new_ids
            if is_new:
                new_ids.discard(delivery.delivery_id)  # a second copy in the same batch is a replay
                stored.append(delivery)
            if not future.done():
                future.set_result(is_new)
        if stored and self._on_stored is not None:
            self._on_stored(stored)
