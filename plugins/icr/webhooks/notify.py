"""Notify the event DAG: publish ``{"delivery_id", "event"}`` on a Redis pub/sub channel.

Runs after the delivery is committed to the inbox and answered. A failed publish is logged
(throttled) and dropped: the event stays ``pending`` in the inbox, and the next event run or
the nightly sync applies it. The message never carries the payload or a secret.
"""

from __future__ import annotations

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
    async def publish(self, delivery: Delivery) -> None: ...
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

    async def publish(self, delivery: Delivery) -> None:
        if self._client is None and self._failed_at is not None \
                and time.monotonic() - self._failed_at < RETRY_LOOKUP_S:
            self._failures += 1  # failed a moment ago: do not stall every delivery on a dead Redis
            return
        try:
            if self._client is None:
                import redis.asyncio as aioredis

                url = await run_in_threadpool(self._url_lookup)
                self._client = aioredis.Redis.from_url(
                    url, socket_timeout=self._timeout_s, socket_connect_timeout=self._timeout_s)
            await self._client.publish(self.channel, message(delivery))
        except Exception as exc:  # noqa: BLE001 - the event is in the inbox; never fail the delivery
            self._failures += 1
            await self._drop_client()
            now = time.monotonic()
            if self._failed_at is None or now - self._failed_at >= RETRY_LOOKUP_S:
                log.warning("Could not notify %s for delivery %s (%s; %d failed since the last report): "
                            "the event stays pending in the inbox and the next event run or the "
                            "nightly sync applies it", self.describe(), delivery.delivery_id[:16],
                            type(exc).__name__, self._failures)
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
