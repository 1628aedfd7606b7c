"""The webhook receiver: an ASGI app (Starlette) that takes ICR's deliveries into the inbox.

Per delivery: read the body (413 as soon as it passes the size limit), check it and its
signature (:mod:`.delivery`: 403 / 400), write it to the inbox and commit (503 when the
warehouse cannot take it, so that ICR retries), answer 202, then publish a small notification
on Redis (:mod:`.notify`). A replay (same signedData) is answered 202 and not written twice.
Each refused delivery gets one log line naming why; the secret and the signature never appear.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from icr.warehouse.engine import Warehouse
from icr.webhooks import inbox
from icr.webhooks.delivery import Delivery, DeliveryRefused, parse_delivery
from icr.webhooks.notify import Publisher, RedisPublisher
from icr.webhooks.secret import SecretSource, SecretUnavailable
from icr.webhooks.settings import ReceiverSettings
from icr.webhooks.signature import HEADER

log = logging.getLogger(__name__)


class Receiver:
    """The state the endpoint needs: settings, warehouse, secret source, publisher."""

    def __init__(self, settings: ReceiverSettings, warehouse: Callable[[], Warehouse] | Warehouse,
                 secret: SecretSource, publisher: Publisher | None) -> None:
        self.settings = settings
        self._warehouse_factory = warehouse if callable(warehouse) else (lambda: warehouse)
        self._warehouse: Warehouse | None = None
        self._schema_ready = False
        self._ready_lock = threading.Lock()
        self.secret = secret
        self.publisher = publisher

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

    def store(self, delivery: Delivery) -> bool:
        """Insert and commit (blocking; runs in a worker thread). True = new, False = replay."""
        return inbox.insert_event(self.ready(), delivery)

    def close(self) -> None:
        if self._warehouse is not None:
            self._warehouse.dispose()


async def receive(request: Request) -> JSONResponse:
    rx: Receiver = request.app.state.receiver
    client = request.client.host if request.client else "?"
    try:
        body = await read_body(request, rx.settings.max_body_bytes)
        secret = await rx.secret.get()
        delivery = parse_delivery(body, secret, request.headers.get(HEADER))
    except DeliveryRefused as refused:
        log.warning("Refused ICR webhook delivery from %s: %s (answered %d)", client, refused.reason, refused.status)
        return JSONResponse({"error": refused.reason}, status_code=refused.status)
    except SecretUnavailable as exc:
        log.error("Cannot check ICR webhook deliveries: %s (answered 503)", exc)
        return _unavailable(rx, "the receiver has no webhook secret configured")
    try:
        new = await run_in_threadpool(rx.store, delivery)
    except Exception as exc:  # noqa: BLE001 - any failure to commit means "not accepted, retry"
        log.error("Could not write ICR webhook delivery %s (%s) to the inbox: %s (answered 503)",
                  delivery.delivery_id[:16], delivery.event, _short(exc))
        return _unavailable(rx, "the warehouse cannot take the event now")
    if not new:
        log.info("ICR webhook delivery %s (%s) is a replay: already in the inbox, not written again",
                 delivery.delivery_id[:16], delivery.event)
        return JSONResponse({"delivery_id": delivery.delivery_id, "status": "duplicate"}, status_code=202)
    log.info("Accepted ICR webhook delivery %s: %s for installation %s",
             delivery.delivery_id[:16], delivery.event, delivery.installation_id)
    task = BackgroundTask(rx.publisher.publish, delivery) if rx.publisher else None
    return JSONResponse({"delivery_id": delivery.delivery_id, "status": "accepted"}, status_code=202,
                        background=task)


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
    return f"{type(orig).__name__}: {str(orig).strip().splitlines()[0][:300] if str(orig).strip() else ''}"


def create_app(settings: ReceiverSettings | None = None, *, warehouse: Any = None,
               secret: SecretSource | None = None, publisher: Publisher | None | bool = True) -> Starlette:
    """The ASGI app. Defaults come from Airflow: the ``icr_warehouse`` connection (or the embedded
    SQLite file), the secret of the ``icr_webhook`` connection, Redis from ``redis_default``.
    ``publisher=False`` turns notifications off; tests pass their own parts.
    """
    settings = settings or ReceiverSettings.from_env()
    if warehouse is None:
        warehouse = lambda: Warehouse.from_airflow(settings.warehouse_conn_id)  # noqa: E731
    if publisher is True:
        publisher = RedisPublisher.from_airflow(settings)
    rx = Receiver(settings, warehouse, secret or SecretSource.from_airflow(settings),
                  publisher or None)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        log.info("ICR webhook receiver: POST %s, body limit %d bytes, secret from connection %r, "
                 "notifications %s", settings.path, settings.max_body_bytes, settings.secret_conn_id,
                 rx.publisher.describe() if rx.publisher else "off")
        await _warm_up(rx)
        try:
            yield
        finally:
            if rx.publisher:
                await rx.publisher.close()
            rx.close()

    app = Starlette(routes=[Route(settings.path, receive, methods=["POST"]),
                            Route("/healthz", health, methods=["GET"])], lifespan=lifespan)
    app.state.receiver = rx
    return app
