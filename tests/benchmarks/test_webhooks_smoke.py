"""The webhook receiver benchmark's small run: the real receiver process, a PostgreSQL inbox,
each target's line with MET or MISS (the 500/s and 50 ms targets are judged by the full run,
``python -m benchmarks.webhooks``, not here)."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.slow


def test_webhooks_benchmark_smoke(pg_admin_url: str, capsys) -> None:
    from benchmarks import webhooks

    code = webhooks.main(["--rate", "50", "--seconds", "2", "--burst", "100", "--connections", "4",
                          "--pg-url", pg_admin_url, "--redis-url", "redis://127.0.0.1:1/0"])
    out = capsys.readouterr().out
    assert re.search(r"every delivery 202 and in the inbox once \(250 rows / 250 sent\)\s+MET", out), out
    for what in ("paced 50/s for 2 s: achieved", "latency p50", "memory (RSS)", "receiver CPU", "flat out"):
        line = next((ln for ln in out.splitlines() if what in ln), None)
        assert line is not None, (what, out)
    assert re.search(r"achieved \d+/s .*(MET|MISS)$", out, re.MULTILINE)
    assert re.search(r"max [\d.]+ ms, [\d,]+ over 50 ms", out), out
    # the receiver process froze its start-up heap (Airflow's) out of garbage collection
    assert re.search(r"receiver heap: [1-9][\d,]* start-up objects frozen out of garbage collection", out), out
    assert code == (0 if "MISS" not in out else 1)
