"""The webhook receiver: an ASGI app (Starlette) that takes ICR's deliveries into the inbox.

Per delivery: read the body (413 as soon as it passes the size limit), check it and its
signature (:mod:`.delivery`: 403 / 400), hand it to the inbox writer and wait for the commit
(:mod:`.writer`, group commit; 503 when the warehouse cannot take it, so that ICR retries),
answer 202; new deliveries are then announced on Redis (:mod:`.notify`). A replay (same
signedData) is answered 202 and not written twice. Each refused delivery gets one log line
naming why; the secret and the signature never appear. Accepted deliveries are logged at DEBUG
and counted in a summary line every ``SUMMARY_EVERY_S``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from icr.warehouse.engine import Warehouse
from icr.webhooks import inbox
from icr.webhooks.delivery import Delivery, DeliveryRefused, parse_delivery
from icr.webhooks.heap import freeze_startup_heap
from icr.webhooks.notify import Notifier, Publisher, RedisPublisher
from icr.webhooks.secret import SecretSource, SecretUnavailable
from icr.webhooks.settings import ReceiverSettings
from icr.webhooks.signature import HEADER
from icr.webhooks.writer import InboxWriter

log = logging.getLogger(__name__)

SUMMARY_EVERY_S = 60.0


class Receiver:
    """The state the endpoint needs: settings, warehouse, secret, writer, notifier, counters."""

    def __init__(self, settings: ReceiverSettings, warehouse: Callable[[], Warehouse] | Warehouse,
                 secret: SecretSource, publisher: Publisher | None) -> None:
        self.settings = settings
        self._warehouse_factory = warehouse if callable(warehouse) else (lambda: warehouse)
        self._warehouse: Warehouse | None = None
        self._schema_ready = False
        self._ready_lock = threading.Lock()
        self.secret = secret
        self.notifier = Notifier(publisher) if publisher is not None else None
        self.writer = InboxWriter(self.store_many, self.notifier.enqueue if self.notifier else None)
        self.counts: Counter[str] = Counter()
        self._summary_at = time.monotonic()

    def ready(self) -> Warehouse:
        """The warehouse, with its migrations (the inbox table) applied once (blocking)."""
        if self._schema_ready and self._warehouse is not None:
            return self._warehouse
        with self._ready_lock:
            if self._warehouse is None:
                self._warehouse = self._warehouse_factory()
            if not self._schema_ready:
                from icr.warehouse.migrations import apply_migrations

                apply_migrations(self._warehouse)
                self._schema_ready = True
            return self._warehouse

    def store_many(self, deliveries: Sequence[Delivery]) -> set[str]:
        """Insert and commit (blocking; runs in a worker thread). Returns the new delivery ids."""
        return inbox.insert_events(self.ready(), deliveries)

    def count(self, what: str) -> None:
        self.counts[what] += 1
        now = time.monotonic()
        if now - self._summary_at >= SUMMARY_EVERY_S:
            log.info("ICR webhook deliveries in the last %.0f s: %s", now - self._summary_at,
                     ", ".join(f"{n} {k}" for k, n in sorted(self.counts.items())))
            self.counts.clear()
            self._summary_at = now

    def close(self) -> None:
        if self._warehouse is not None:
            self._warehouse.dispose()


async def receive(request: Request) -> JSONResponse:
    rx: Receiver = request.app.state.receiver
    try:
        body = await read_body(request, rx.settings.max_body_bytes)
        secret = await rx.secret.get()
        delivery = parse_delivery(body, secret, request.headers.get(HEADER))
    except DeliveryRefused as refused:
        client = request.client.host if request.client else "?"
        log.warning("Refused ICR webhook delivery from %s: %s (answered %d)", client, refused.reason, refused.status)
        rx.count(f"refused ({refused.status})")
        return JSONResponse({"error": refused.reason}, status_code=refused.status)
    except SecretUnavailable as exc:
        log.error("Cannot check ICR webhook deliveries: %s (answered 503)", exc)
        rx.count("unavailable (503)")
        return _unavailable(rx, "the receiver has no webhook secret configured")
    try:
        new = await rx.writer.submit(delivery)
    except Exception as exc:  # noqa: BLE001 - any failure to commit means "not accepted, retry"
        log.error("Could not write ICR webhook delivery %s (%s) to the inbox: %s (answered 503)",
                  delivery.delivery_id[:16], delivery.event, _short(exc))
        rx.count("unavailable (503)")
        return _unavailable(rx, "the warehouse cannot take the event now")
    if not new:
        log.info("ICR webhook delivery %s (%s) is a replay: already in the inbox, not written again",
                 delivery.delivery_id[:16], delivery.event)
        rx.count("replays (202)")
        return JSONResponse({"delivery_id": delivery.delivery_id, "status": "duplicate"}, status_code=202)
    log.debug("Accepted ICR webhook delivery %s: %s for installation %s",
              delivery.delivery_id[:16], delivery.event, delivery.installation_id)
    rx.count("accepted (202)")
    return JSONResponse({"delivery_id": delivery.delivery_id, "status": "accepted"}, status_code=202)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (413) as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise DeliveryRefused(400, "the Content-Length header is not a number")
        if int(declared) > limit:
            raise DeliveryRefused(413, f"the body ({int(declared)} bytes) is over the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise DeliveryRefused(413, f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def _warm_up(rx: Receiver) -> None:
    """Read the secret and ready the inbox at startup, so that a misconfiguration shows in the
    log now and the first delivery is not slow. A failure here is logged, not fatal: each
    delivery tries again (and is answered 503 while it fails)."""
    try:
        await rx.secret.get()
    except SecretUnavailable as exc:
        log.error("No webhook secret yet: %s. Deliveries are answered 503 until it is set.", exc)
    try:
        await run_in_threadpool(rx.ready)
    except Exception as exc:  # noqa: BLE001
        log.error("The warehouse inbox is not reachable yet (%s). Deliveries are answered 503 until it is.",
                  _short(exc))


def _unavailable(rx: Receiver, why: str) -> JSONResponse:
    return JSONResponse({"error": why}, status_code=503,
                        headers={"Retry-After": str(rx.settings.retry_after_s)})


def _short(exc: BaseException) -> str:
    """The driver's message, without SQLAlchemy's echo of the statement and its parameters."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    return f"{type(orig).__name__}: {text.splitlines()[0][:300] if text else ''}"


def create_app(settings: ReceiverSettings | None = None, *, warehouse: Any = None,
               secret: SecretSource | None = None, publisher: Publisher | None | bool = True,
               freeze_heap: bool = True) -> Starlette:
    """The ASGI app. Defaults come from Airflow: the ``icr_warehouse`` connection (or the embedded
    SQLite file), the secret of the ``icr_webhook`` connection, Redis from ``redis_default``.
    ``publisher=False`` turns notifications off; tests pass their own parts. ``freeze_heap``:
    after the warm-up, freeze the process's heap out of garbage collection (:mod:`.heap`); a
    process that hosts more than the receiver (a test run) passes False.
    """
    settings = settings or ReceiverSettings.from_env()
    if warehouse is None:
        warehouse = lambda: Warehouse.from_airflow(settings.warehouse_conn_id)  # noqa: E731
    if publisher is True:
        publisher = RedisPublisher.from_airflow(settings)
    rx = Receiver(settings, warehouse, secret or SecretSource.from_airflow(settings), publisher or None)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        log.info("ICR webhook receiver: POST %s, body limit %d bytes, secret from connection %r, "
                 "notifications %s", settings.path, settings.max_body_bytes, settings.secret_conn_id,
                 rx.notifier.publisher.describe() if rx.notifier else "off")
        await _warm_up(rx)
        if rx.notifier:
            rx.notifier.start()
        rx.writer.start()
        if freeze_heap:
            freeze_startup_heap()
        try:
            yield
        finally:
            await rx.writer.stop()
            if rx.notifier:
                await rx.notifier.stop()
            rx.close()

    app = Starlette(routes=[Route(settings.path, receive, methods=["POST"]),
                            Route("/healthz", health, methods=["GET"])], lifespan=lifespan)
    app.state.receiver = rx
    return app
