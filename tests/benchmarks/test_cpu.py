"""The benchmark's CPU accounting reads real processes: this one, and the local PostgreSQL server."""

from __future__ import annotations

import os
import sys
import time

import pytest

from benchmarks import cpu
from tests.conftest import REQUIRE_PG, _libpq

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_a_busy_process_gains_cpu_seconds_and_a_missing_one_has_none() -> None:
    before = cpu.process_seconds(os.getpid())
    _spin(0.3)
    after = cpu.process_seconds(os.getpid())
    assert before is not None and after is not None
    assert after - before >= 0.25
    assert cpu.process_seconds(None) is None
    assert cpu.process_seconds(2**22 + 12345) is None  # above Linux's largest pid
    assert cpu.postmaster_pid(os.getpid()) is None  # not a PostgreSQL backend


def test_sample_delta_and_busy() -> None:
    a = cpu.sample({"simulator": os.getpid()})
    _spin(0.2)
    b = cpu.sample({"simulator": os.getpid()})
    d = cpu.delta(a, b)
    assert d["postgresql"] is None  # not asked for
    assert d["process"] >= 0.15 and d["simulator"] >= 0.15  # the same process, read two ways
    assert cpu.busy({"process": 1.0, "postgresql": None, "simulator": 0.5}, 1.5) == pytest.approx(1.0)
    assert cpu.busy({"process": None, "postgresql": None}, 1.0) is None
    assert cpu.busy({"process": 1.0}, 0.0) is None


def test_server_seconds_count_a_backend_after_its_connection_closed(pg_admin_url: str) -> None:
    """A backend's CPU still counts once it has exited: the postmaster's reaped-children time."""
    import psycopg

    url = _libpq(pg_admin_url)
    with psycopg.connect(url) as conn:
        postmaster = cpu.postmaster_pid(int(conn.execute("SELECT pg_backend_pid()").fetchone()[0]))
    if postmaster is None:
        message = f"the PostgreSQL server at {pg_admin_url} is not a process on this machine"
        if REQUIRE_PG:
            pytest.fail(message + " (CI runs it locally: the benchmark's CPU figures need it)")
        pytest.skip(message)
    before = cpu.server_seconds(postmaster)
    with psycopg.connect(url) as conn:  # work in a backend that is gone by the second reading
        backend = int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])
        conn.execute("SELECT count(*) FROM generate_series(1, 8000000)").fetchone()
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{backend}"):  # until the postmaster has reaped it
        assert time.monotonic() < deadline, f"backend {backend} still there 10 s after its connection closed"
        time.sleep(0.05)
    after = cpu.server_seconds(postmaster)
    assert before is not None and after is not None and after - before >= 0.2, (before, after)
