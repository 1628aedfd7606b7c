"""Make the UI's "Test Connection" button work for ``icr`` connections (Airflow 3.3 api-server).

Airflow 3.3.2's connection list posts ``port: Number(connection.port)`` to
``POST /api/v2/connections/test``: ``0`` for a connection stored without a port, which is every
``icr`` connection saved from the form (it hides ``port``: the base URL carries it). The route
then compares that 0 with the stored NULL, finds "a different destination" and answers 400 "The
host or port to test differs from the stored connection" unless the body carries a real
password -- the UI only has the mask ``***``. The UI's form cannot store a port it does not show,
and the hook never sees the request, so the fix sits in front of the route: for an ``icr`` test
request whose port is exactly ``0``, drop ``port`` from the body (the route then keeps the stored
port and the stored credentials, as for an unchanged connection). Nothing else is touched: other
connection types, other routes, real ports, and bodies that are not a JSON object pass as sent.

The middleware is a no-op on Airflow versions whose UI sends the stored port (or null), and on
versions whose route treats 0 as "no port"; the Chromium e2e test checks the button itself.

Airflow loads :class:`ICRConnectionTestPlugin` in the api-server through this package's
``airflow.plugins`` entry point (``fastapi_root_middlewares``, Airflow 3.1+).
"""

from __future__ import annotations

import json
from typing import Any

from airflow.plugins_manager import AirflowPlugin

from icr.provider import CONN_TYPE

TEST_ROUTE_SUFFIX = "/api/v2/connections/test"
#: Bodies larger than this are not read here (a connection test body is a few KB at most).
MAX_BODY_BYTES = 1 << 20

Scope = dict[str, Any]
Message = dict[str, Any]


class PortZeroMiddleware:
    """Pure ASGI middleware: drop the UI's ``"port": 0`` from ``icr`` connection test requests."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if not _is_test_request(scope) or _declared_length(scope) > MAX_BODY_BYTES:
            await self.app(scope, receive, send)
            return
        body, disconnected = await _read_body(receive)
        new_body = _without_port_zero(body)
        if new_body is not None:
            scope = _with_content_length(scope, len(new_body))
            body = new_body
        await self.app(scope, _replay(body, receive, disconnected), send)


def _is_test_request(scope: Scope) -> bool:
    return (
        scope.get("type") == "http"
        and scope.get("method") == "POST"
        and str(scope.get("path", "")).rstrip("/").endswith(TEST_ROUTE_SUFFIX)
    )


def _declared_length(scope: Scope) -> int:
    for name, value in scope.get("headers") or ():
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return MAX_BODY_BYTES + 1  # let the app answer the malformed request
    return 0


async def _read_body(receive: Any) -> tuple[bytes, bool]:
    """The whole request body, and whether the client went away while we read it."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks), True
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), False


def _without_port_zero(body: bytes) -> bytes | None:
    """The body without ``port`` when it is an icr test with port 0; None to keep it as sent."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or data.get("conn_type") != CONN_TYPE:
        return None
    port = data.get("port")
    if port != 0 or isinstance(port, bool):
        return None
    del data["port"]
    return json.dumps(data).encode()


def _with_content_length(scope: Scope, length: int) -> Scope:
    headers = [(k, v) for k, v in scope.get("headers") or () if k.lower() != b"content-length"]
    headers.append((b"content-length", str(length).encode()))
    return {**scope, "headers": headers}


def _replay(body: bytes, receive: Any, disconnected: bool) -> Any:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        if disconnected:
            return {"type": "http.disconnect"}
        return await receive()  # waits for the client's disconnect, as the server's receive does

    return replay


class ICRConnectionTestPlugin(AirflowPlugin):
    """Registers :class:`PortZeroMiddleware` on the api-server."""

    name = "icr_connection_test"
    fastapi_root_middlewares = [
        {
            "middleware": PortZeroMiddleware,
            "args": [],
            "kwargs": {},
            "name": "ICR: let the UI's Test button test icr connections saved without a port",
        }
    ]
