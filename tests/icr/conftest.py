"""Shared fixtures for the ICR client tests: keys (generated once), a tiny loopback stub server
for answers the simulator cannot give, and a connection set through AIRFLOW_CONN_ICR_DEFAULT."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

# Airflow writes airflow.cfg into AIRFLOW_HOME on import: keep it out of the user's home.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="icr-tests-airflow-"))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from tests.support.logs import captured_log_text  # noqa: E402
from tests.support.secrets import assert_no_secrets  # noqa: E402

APP_ID = "d23967cc-dd16-452b-8af4-869965745978"
PASSPHRASE = "correct horse battery staple"

# The simulator's fixtures (simulator, make_simulator) are registered by tests/conftest.py
# (pytest_plugins must live in the top-level conftest).
try:
    import tests.simulator.fixtures  # noqa: F401

    HAVE_SIMULATOR = True
except Exception:  # pragma: no cover - simulator missing
    HAVE_SIMULATOR = False

needs_simulator = pytest.mark.skipif(not HAVE_SIMULATOR, reason="tests.simulator not available yet")


@dataclass(frozen=True)
class Keys:
    key: rsa.RSAPrivateKey
    pkcs1: str
    pkcs8: str
    encrypted_pkcs8: str
    encrypted_pkcs1: str


_KEYS: Keys | None = None


def make_keys() -> Keys:
    global _KEYS
    if _KEYS is None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        enc = serialization.BestAvailableEncryption(PASSPHRASE.encode())
        _KEYS = Keys(
            key=key,
            pkcs1=key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
            ).decode(),
            pkcs8=key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode(),
            encrypted_pkcs8=key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc).decode(),
            encrypted_pkcs1=key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, enc
            ).decode(),
        )
    return _KEYS


@pytest.fixture(scope="session")
def keys() -> Keys:
    return make_keys()


def pem_body(pem: str) -> str:
    """A long piece of the base64 body: must never show up in logs or messages."""
    lines = [line for line in pem.splitlines() if not line.startswith("-----")]
    return lines[len(lines) // 2]


# --------------------------------------------------------------------------- stub server


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list → JSON; str/bytes → raw
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


Responder = Callable[[Seen], Reply]


class StubServer:
    """A real loopback HTTP server whose answers come from a Python function."""

    def __init__(self, responder: Responder) -> None:
        self.responder = responder
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                parts = urlsplit(self.path)
                seen = Seen(
                    self.command,
                    parts.path,
                    {k: v[-1] for k, v in parse_qs(parts.query).items()},
                    {k.lower(): v for k, v in self.headers.items()},
                )
                with stub._lock:
                    stub.requests.append(seen)
                reply = stub.responder(seen)
                if reply.delay:
                    import time

                    time.sleep(reply.delay)
                body = reply.body
                ctype = "application/json"
                if isinstance(body, (dict, list)) or body is None:
                    data = json.dumps(body).encode() if body is not None else b""
                elif isinstance(body, str):
                    data = body.encode()
                    ctype = "text/plain"
                else:
                    data = body
                self.send_response(reply.status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def paths(self) -> list[str]:
        with self._lock:
            return [f"{r.path}?{'&'.join(f'{k}={v}' for k, v in sorted(r.query.items()))}" for r in self.requests]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def stub_server() -> Iterator[Callable[[Responder], StubServer]]:
    with contextlib.ExitStack() as cleanup:

        def make(responder: Responder) -> StubServer:
            s = StubServer(responder)
            cleanup.callback(s.stop)
            return s

        yield make


# --------------------------------------------------------------------------- clients and connections


@pytest.fixture
def app_jwt(keys: Keys):
    from icr.auth import AppJWT

    return AppJWT(APP_ID, keys.key)


@pytest.fixture
def make_client(app_jwt):
    """ICRClient with tiny backoff so retry tests take milliseconds."""
    from icr.client import ICRClient

    with contextlib.ExitStack() as cleanup:

        def make(base_url: str, auth=None, **kw: Any) -> ICRClient:
            kw.setdefault("backoff_base_s", 0.001)
            kw.setdefault("backoff_max_s", 0.01)
            kw.setdefault("timeout", 5.0)
            c = ICRClient(base_url, auth or app_jwt, **kw)
            cleanup.callback(c.close)
            return c

        yield make


@pytest.fixture
def set_icr_conn(monkeypatch):
    """Set AIRFLOW_CONN_<ID> in the JSON form (the way deployments and tests configure it)."""

    def set_conn(conn_id: str = "icr_default", **fields: Any) -> str:
        fields.setdefault("conn_type", "icr")
        value = json.dumps(fields)
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", value)
        return value

    return set_conn


def page_body(items: list[dict[str, Any]], *, total: int | None, page: int, page_count: int | None, next_page: Any = "auto", omit_next: bool = False) -> dict[str, Any]:
    pag: dict[str, Any] = {"currentPage": page, "prevPage": page - 1 if page > 0 else None}
    if total is not None:
        pag["total"] = total
    if page_count is not None:
        pag["pageCount"] = page_count
    if not omit_next:
        if next_page == "auto":
            next_page = page + 1 if page_count is not None and page + 1 < page_count else None
        pag["nextPage"] = next_page
    return {"pagination": pag, "installations": items}


@pytest.fixture(autouse=True)
def _fresh_secrets_masker() -> Iterator[None]:
    """Airflow's masker recompiles one regex over every secret ever added; tests load many keys,
    so start each test with an empty masker to keep the suite fast."""
    yield
    try:
        from airflow.sdk._shared.secrets_masker.secrets_masker import _secrets_masker

        _secrets_masker().reset_masker()
    except Exception:  # pragma: no cover
        pass


_MY_MODULES = {"test_auth", "test_client", "test_paging", "test_hooks", "test_provider"}


@pytest.fixture(autouse=True)
def _no_secrets_in_logs(request, caplog) -> Iterator[None]:
    """Across the client tests: no JWT, bearer header or PEM ever reaches a log record (any level)."""
    caplog.set_level(logging.DEBUG)
    yield
    if request.module.__name__.rsplit(".", 1)[-1] not in _MY_MODULES:
        return
    keys = _KEYS
    assert_no_secrets(captured_log_text(caplog), secrets=[keys.pkcs8, PASSPHRASE] if keys is not None else [])
