"""``python -m tests.simulator`` as a separate process."""

from __future__ import annotations

import json
import os
import selectors
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import jwt
import requests

ROOT = Path(__file__).resolve().parents[2]


def _start(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.simulator", "--port", "0", "--installations", "50", "--seed", "3",
         "--key-out", str(tmp_path / "key.pem"), "--info-out", str(tmp_path / "info.json"), *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout=30):
        proc.kill()
        raise AssertionError(f"simulator did not start: {proc.stderr.read()}")
    return proc, proc.stdout.readline().strip()


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_cli_serves_writes_key_and_info_and_restarts_with_the_same_key(tmp_path):
    proc, line = _start(tmp_path, "--latency-ms", "1")
    try:
        info = json.loads((tmp_path / "info.json").read_text())
        assert line == f"ICR simulator listening on {info['base_url']} (app {info['app_id']}, 50 installations)"
        key_path = Path(info["private_key_path"])
        assert key_path == tmp_path / "key.pem"
        assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
        pem = key_path.read_text()
        assert pem.startswith("-----BEGIN PRIVATE KEY-----")
        now = int(time.time())
        token = jwt.encode({"iat": now - 60, "exp": now + 540, "iss": info["app_id"]}, pem, algorithm="RS256")
        r = requests.get(info["base_url"] + "/app/installations", params={"limit": 20, "page": 2},
                         headers={"Authorization": f"Bearer {token}", "X-ICR-Api-Version": "2023-06-16"}, timeout=5)
        assert r.status_code == 200
        assert r.json()["pagination"]["total"] == 50 and len(r.json()["installations"]) == 10
        ch = requests.post(info["base_url"] + "/_sim/changes", json={"add": 4}, timeout=5).json()
        assert ch["count"] == 54
        state = requests.get(info["base_url"] + "/_sim/state", timeout=5).json()
        assert state["stats"]["requests"] == 1 and state["fingerprints"] == info["fingerprints"]
    finally:
        rc = _stop(proc)
    assert rc == 0
    proc2, _ = _start(tmp_path)
    try:
        info2 = json.loads((tmp_path / "info.json").read_text())
        assert info2["fingerprints"] == info["fingerprints"]  # the existing key was loaded
        assert (tmp_path / "key.pem").read_text() == pem
    finally:
        assert _stop(proc2) == 0
