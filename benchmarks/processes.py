"""The benchmark's processes: the simulator, the latency proxy and one measured worker task, each
in its own process (so each has its own peak memory and CPU seconds)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Simulator:
    """``python -m tests.simulator`` in its own process (warm: every record pre-generated)."""

    def __init__(self, installations: int, seed: int, workdir: Path, latency_ms: float = 0.0,
                 warm_workers: int = 2) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sim-", dir=workdir))
        info = self.dir / "info.json"
        cmd = [sys.executable, "-m", "tests.simulator", "--port", "0", "--installations", str(installations),
               "--seed", str(seed), "--key-out", str(self.dir / "key.pem"), "--info-out", str(info),
               "--latency-ms", str(latency_ms), "--warm", "--warm-workers", str(warm_workers),
               "--retry-after-seconds", "1"]
        t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while not info.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"simulator exited: {self.proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)
        time.sleep(0.05)
        self.info = json.loads(info.read_text())
        self.base_url = self.info["base_url"]
        self.pem = (self.dir / "key.pem").read_text()
        self.start_seconds = time.monotonic() - t0

    def admin(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as resp:
            return json.loads(resp.read())

    def conn_json(self, **extra: Any) -> str:
        return json.dumps({"conn_type": "icr", "host": self.base_url, "login": self.info["app_id"],
                           "password": self.pem, "extra": {"max_retry_wait": 30, **extra}})

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class Proxy:
    def __init__(self, target: str, delay_ms: float) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.proxy", "--target", target,
                                      "--delay-ms", str(delay_ms)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"proxy did not start: {line!r}")
        self.port = int(line.split()[1])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def worker(task: str, env_conn: str, **args: Any) -> dict[str, Any]:
    """Run one task of benchmarks.worker in a fresh process; its JSON result."""
    env = dict(os.environ)
    env["AIRFLOW_CONN_ICR_DEFAULT"] = env_conn
    env.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="icr-bench-airflow-"))
    if "pg_conn_id" in args:
        env[f"AIRFLOW_CONN_{args['pg_conn_id'].upper()}"] = args["libpq_url"]
    proc = subprocess.run([sys.executable, "-m", "benchmarks.worker", json.dumps({"task": task, **args})],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {task} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])

