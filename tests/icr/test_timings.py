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
    from tests.icr.warehouse.helpers import StaticHook
    from tests.support.records import make_record

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
    assert {"merge:plan_changes", "merge:permissions_insert", "merge:org_counts_insert_current",
            "merge:check_run"} <= steps
    assert all(":" in k for k in timings.as_dict())  # the benchmark prints the part after the colon


def test_the_run_row_keeps_the_seconds_of_every_step(warehouse):
    """icr_sync_runs.step_seconds: what the extract task and the load task each measured (they may
    run on different workers), for an operator asking where a slow night's time went."""
    import json

    from icr.sync import NORMALIZE, SyncSettings, run_sync
    from icr.warehouse.runlog import RunContext, get_run
    from tests.icr.warehouse.helpers import StaticHook
    from tests.support.records import make_record

    run = RunContext(run_id="timings_row", logical_date=datetime.now(timezone.utc), dag_id="test")
    run_sync(warehouse, StaticHook([make_record(i) for i in range(40)]), run, SyncSettings())
    stored = get_run(warehouse, run.run_id)["step_seconds"]
    steps = stored if isinstance(stored, dict) else json.loads(stored)
    # Both tasks' steps are there (a fast step may round to 0.0 ms: the run row keeps 3 decimals).
    assert {NORMALIZE, "merge:plan_changes"} <= set(steps)
    assert all(isinstance(v, float) and v >= 0 for v in steps.values())
    assert sum(steps.values()) > 0
