"""The reporting benchmark's small run: the load's aggregate step and every per-day view, each
view's line with MET or MISS (the 1 s target is judged by the full run, not here)."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.slow


def test_reporting_benchmark_smoke(pg_admin_url: str, capsys) -> None:
    from benchmarks import reporting

    code = reporting.main(["--installations", "2000", "--days", "30", "--pg-url", pg_admin_url])
    out = capsys.readouterr().out
    assert "Reporting at 2,000 installations x 30 days" in out
    assert re.search(r"the load's per-day aggregate step: \d+\.\d\d s", out)
    for view in reporting.VIEWS:
        line = next((ln for ln in out.splitlines() if ln.strip().startswith(view + " ")), None)
        assert line is not None and re.search(r"(MET|MISS)$", line), (view, out)
    # issue 21's two questions, on PostgreSQL and on SQLite (the aggregates copied into a file)
    for label, _ in reporting.QUESTIONS:
        lines = [ln for ln in out.splitlines() if ln.strip().startswith(label)]
        assert len(lines) == 2 and all(re.search(r"(MET|MISS)$", ln) for ln in lines), (label, out)
    assert "SQLite (target <= 3 s)" in out
    assert code == (0 if "MISS" not in out else 1)
