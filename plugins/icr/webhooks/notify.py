"""Notify the event DAG: publish ``{"delivery_id", "event"}`` on a Redis pub/sub channel.

Runs after the delivery is committed to the inbox and answered. A failed publish is logged
(throttled) and dropped: the event stays ``pending`` in the inbox, and the next event run or
the nightly sync applies it. The message never carries the payload or a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any, Protocol
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool

from icr.webhooks.delivery import Delivery
from icr.webhooks.settings import ReceiverSettings

log = logging.getLogger(__name__)

# After a failure (Redis down, connection missing), look the connection up again and log again
# at most this often.
RETRY_LOOKUP_S = 30.0


class Publisher(Protocol):
    async def publish_many(self, deliveries: list[Delivery]) -> None: ...
    async def close(self) -> None: ...
    def describe(self) -> str: ...


def message(delivery: Delivery) -> str:
    return json.dumps({"delivery_id": delivery.delivery_id, "event": delivery.event})


class RedisPublisher:
    """Publishes with redis-py's asyncio client; the URL comes from an Airflow connection."""

    def __init__(self, url_lookup: Any, channel: str, timeout_s: float, where: str) -> None:
        self._url_lookup = url_lookup  # () -> redis URL (may contain a password: never logged)
        self.channel = channel
        self._timeout_s = timeout_s
        self._where = where
        self._client: Any = None
        self._failed_at: float | None = None
        self._failures = 0

    @classmethod
    def from_airflow(cls, settings: ReceiverSettings) -> RedisPublisher:
        conn_id = settings.redis_conn_id
        return cls(lambda: redis_url(conn_id), settings.channel, settings.redis_timeout_s,
                   f"Redis connection {conn_id!r}")

    @classmethod
    def from_url(cls, url: str, channel: str, timeout_s: float = 2.0) -> RedisPublisher:
        return cls(lambda: url, channel, timeout_s, "Redis")

    def describe(self) -> str:
        return f"on channel {self.channel!r} via {self._where}"

    async def publish_many(self, deliveries: list[Delivery]) -> None:
        """One message per delivery, sent in one round trip (a pipeline)."""
        if self._client is None and self._failed_at is not None \
                and time.monotonic() - self._failed_at < RETRY_LOOKUP_S:
            self._failures += len(deliveries)  # failed a moment ago: do not stall on a dead Redis
            return
        try:
            if self._client is None:
                import redis.asyncio as aioredis

                url = await run_in_threadpool(self._url_lookup)
                self._client = aioredis.Redis.from_url(
                    url, socket_timeout=self._timeout_s, socket_connect_timeout=self._timeout_s)
            pipe = self._client.pipeline(transaction=False)
            for delivery in deliveries:
                pipe.publish(self.channel, message(delivery))
            await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - the events are in the inbox; never fail a delivery
            self._failures += len(deliveries)
            await self._drop_client()
            now = time.monotonic()
            if self._failed_at is None or now - self._failed_at >= RETRY_LOOKUP_S:
                log.warning("Could not notify %s (%s; %d notifications failed since the last report): "
                            "the events stay pending in the inbox and the next event run or the "
                            "nightly sync applies them", self.describe(), type(exc).__name__, self._failures)
                self._failed_at, self._failures = now, 0
        else:
            self._failed_at = None

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.aclose()
            except Exception:  # noqa: BLE001
                pass

    async def close(self) -> None:
        await self._drop_client()


class Notifier:
    """Runs the publisher off the request path: stored deliveries are queued (at most
    ``max_queued``; beyond that they are only in the inbox, which is enough) and published in
    batches by one task."""

    def __init__(self, publisher: Publisher, max_queued: int = 100_000) -> None:
        self.publisher = publisher
        self._max_queued = max_queued
        self._queue: asyncio.Queue[Delivery] | None = None
        self._task: asyncio.Task | None = None
        self._busy = False
        self.dropped = 0

    def start(self) -> None:
        self._queue = asyncio.Queue(self._max_queued)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="icr-webhook-notifier")

    def enqueue(self, deliveries: list[Delivery]) -> None:
        if self._queue is None:
            return
        for delivery in deliveries:
            try:
                self._queue.put_nowait(delivery)
            except asyncio.QueueFull:
                self.dropped += 1

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            batch = [await self._queue.get()]
            while len(batch) < 1000 and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            self._busy = True
            try:
                await self.publisher.publish_many(batch)
            except Exception:  # noqa: BLE001 - a publisher bug must not stop the notifications
                log.exception("The webhook notifier failed; the events stay pending in the inbox")
            finally:
                self._busy = False

    async def stop(self, drain_s: float = 5.0) -> None:
        """Publish what is queued (for up to ``drain_s``), then stop and close the publisher."""
        if self._task is not None:
            deadline = asyncio.get_running_loop().time() + drain_s
            while (self._busy or (self._queue is not None and not self._queue.empty())) \
                    and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.02)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.publisher.close()


def redis_url(conn_id: str) -> str:
    """A redis:// URL from an Airflow Redis connection (host, port, login, password, extra db/ssl)."""
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    extra = conn.extra_dejson or {}
    scheme = "rediss" if str(extra.get("ssl", "")).lower() in ("true", "1") else "redis"
    auth = ""
    if conn.password:
        auth = f"{quote(conn.login or '', safe='')}:{quote(conn.password, safe='')}@"
    return f"{scheme}://{auth}{conn.host or '127.0.0.1'}:{conn.port or 6379}/{int(extra.get('db') or 0)}"
