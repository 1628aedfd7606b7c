"""The webhook receiver as a real process (``python -m icr.webhooks``) on a loopback port.

Used by the fault suite and the benchmark (and usable by the e2e tests): the secret comes from
``AIRFLOW_CONN_ICR_WEBHOOK``, the warehouse from ``AIRFLOW_CONN_ICR_WAREHOUSE`` and Redis from
``AIRFLOW_CONN_REDIS_DEFAULT``, as in a deployment.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_conn_json(url: str) -> str:
    """AIRFLOW_CONN_ICR_WAREHOUSE for a postgresql:// URL (any driver suffix)."""
    return url.replace("postgresql+psycopg://", "postgresql://")


class ReceiverProcess:
    def __init__(self, *, secret: str | None, warehouse_url: str, redis_url: str | None = None,
                 port: int | None = None, env: dict[str, str] | None = None, args: list[str] | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/webhooks/icr"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "ICR_WEBHOOK_"))}
        self.env.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="icr-receiver-airflow-"))
        self.env["PYTHONPATH"] = str(ROOT) + os.pathsep + self.env.get("PYTHONPATH", "")
        if secret is not None:
            self.env["AIRFLOW_CONN_ICR_WEBHOOK"] = json.dumps({"conn_type": "generic", "password": secret})
        self.env["AIRFLOW_CONN_ICR_WAREHOUSE"] = pg_conn_json(warehouse_url)
        if redis_url:
            self.env["AIRFLOW_CONN_REDIS_DEFAULT"] = _redis_conn(redis_url)
        self.env.update(env or {})
        self.args = args or []
        self.proc: subprocess.Popen | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="icr-receiver-", suffix=".log", delete=False)
        self.outputs: list[str] = []

    def start(self, timeout: float = 60.0) -> ReceiverProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "icr.webhooks", "--port", str(self.port), *self.args],
            env=self.env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the receiver exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the receiver did not answer within {timeout:.0f} s:\n{self.output()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def output(self) -> str:
        return Path(self._log.name).read_text(encoding="utf-8", errors="replace")

    def post(self, body: bytes, headers: dict[str, str], **kw: Any) -> requests.Response:
        return requests.post(self.url, data=body, headers=headers, timeout=kw.pop("timeout", 30), **kw)

    def __enter__(self) -> ReceiverProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _redis_conn(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    db = int((parts.path or "/0").strip("/") or 0)
    return json.dumps({"conn_type": "redis", "host": parts.hostname or "127.0.0.1",
                       "port": parts.port or 6379, "extra": {"db": db}})
