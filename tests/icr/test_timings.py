"""The timings collector: what the extract's summary and the benchmark read."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from icr.timings import Timings


def test_measure_sums_every_pass_and_counts_a_failed_one():
    timings = Timings()
    for _ in range(2):
        with timings.measure("a"):
            time.sleep(0.01)
    with pytest.raises(RuntimeError), timings.measure("b"):
        time.sleep(0.01)
        raise RuntimeError("boom")
    timings.add("c", 5.0)
    assert timings["a"] >= 0.02 and timings["b"] >= 0.01 and timings["missing"] == 0.0
    assert list(timings.as_dict())[0] == "c"  # slowest first


def test_extract_and_load_fill_the_collector_the_summary_reads(warehouse):
    """One collector through extract and load: the summary's normalize/stage seconds are its
    figures, staging's keying is timed on its own, and each merge statement under its name."""
    from icr.sync import NORMALIZE, STAGE, STAGING_FINISH, SyncSettings, cleanup, extract, load, migrate
    from icr.warehouse.runlog import RunContext
    from tests.icr.warehouse.helpers import StaticHook, make_record

    run = RunContext(run_id="timings_run", logical_date=datetime.now(timezone.utc), dag_id="test")
    timings = Timings()
    migrate(warehouse)
    summary = extract(warehouse, StaticHook([make_record(i) for i in range(40)]), run, SyncSettings(), timings)
    assert summary["normalize_seconds"] == round(timings[NORMALIZE], 3) > 0
    assert summary["stage_seconds"] == round(timings[STAGE], 3) > 0
    assert 0 < timings[STAGING_FINISH] <= timings[STAGE]
    load(warehouse, run, SyncSettings(), timings)
    cleanup(warehouse, run)
    steps = {k for k in timings.as_dict() if k.startswith("merge:")}
    assert {"merge:plan_changes", "merge:permissions_insert", "merge:daily_insert_current",
            "merge:check_run"} <= steps
    assert all(":" in k for k in timings.as_dict())  # the benchmark prints the part after the colon
