"""The webhook secret: the password of the Airflow connection ``icr_webhook``.

Read through Airflow's connection lookup, so ``AIRFLOW_CONN_ICR_WEBHOOK``, a secrets backend or
the metadata database all work. The value is cached for ``secret_ttl_s`` (a rotated secret takes
effect within that time); when a refresh fails, the last good value stays in use. No message
made here contains the secret.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool

from icr.webhooks.settings import ReceiverSettings

log = logging.getLogger(__name__)


class SecretUnavailable(Exception):
    """No secret to check signatures with (the connection is missing or has no password)."""


class SecretSource:
    def __init__(self, lookup: Callable[[], str], ttl_s: float = 60.0) -> None:
        self._lookup = lookup
        self._ttl_s = ttl_s
        self._value: str | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    @classmethod
    def fixed(cls, secret: str) -> SecretSource:
        return cls(lambda: secret, ttl_s=float("inf"))

    @classmethod
    def from_airflow(cls, settings: ReceiverSettings) -> SecretSource:
        conn_id = settings.secret_conn_id
        return cls(lambda: connection_password(conn_id), ttl_s=settings.secret_ttl_s)

    async def get(self) -> str:
        if self._value is not None and time.monotonic() - self._fetched_at < self._ttl_s:
            return self._value
        async with self._lock:
            if self._value is not None and time.monotonic() - self._fetched_at < self._ttl_s:
                return self._value
            try:
                value = await run_in_threadpool(self._lookup)
            except SecretUnavailable:
                if self._value is None:
                    raise
                log.warning("Could not refresh the webhook secret; keeping the one read before")
                value = self._value
            except Exception as exc:  # noqa: BLE001 - a lookup failure must not stop deliveries
                if self._value is None:
                    raise SecretUnavailable(f"the connection lookup failed ({type(exc).__name__})") from None
                log.warning("Could not refresh the webhook secret (%s); keeping the one read before",
                            type(exc).__name__)
                value = self._value
            self._value, self._fetched_at = value, time.monotonic()
            return value


def connection_password(conn_id: str) -> str:
    """The password of Airflow connection ``conn_id``; SecretUnavailable when missing or empty."""
    from airflow.sdk import BaseHook

    try:
        from airflow.sdk.exceptions import AirflowNotFoundException
    except ImportError:  # pragma: no cover - older task SDKs
        from airflow.exceptions import AirflowNotFoundException
    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise SecretUnavailable(
            f"Airflow connection {conn_id!r} not found: create it with the webhook secret as its "
            f"password (e.g. AIRFLOW_CONN_{conn_id.upper()}='{{\"conn_type\": \"generic\", "
            "\"password\": \"...\"}')") from None
    if not conn.password:
        raise SecretUnavailable(f"Airflow connection {conn_id!r} has no password (the webhook secret)")
    return conn.password
