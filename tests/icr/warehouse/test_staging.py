"""Staging writes: one COPY per pass on PostgreSQL, committed only at a clean end."""

from __future__ import annotations

import json

import pytest

from icr.normalize import normalize_records
from icr.warehouse.migrations import apply_migrations
from icr.warehouse.removals import removal_candidates
from icr.warehouse.staging import Staging
from tests.icr.warehouse.helpers import make_record, scalar


def _staging(warehouse, run_id: str) -> Staging:
    apply_migrations(warehouse)
    staging = Staging(warehouse, run_id)
    staging.create()
    return staging


def test_writer_appends_every_chunk_and_commits_at_the_end(warehouse):
    staging = _staging(warehouse, "stage_writer_ok")
    bad = {**make_record(99), "createdAt": "yesterday"}
    chunks = [normalize_records([make_record(i) for i in range(n, n + 10)]) for n in (0, 10, 20)]
    chunks.append(normalize_records([bad, make_record(30)]))
    with staging.writer() as writer:
        for chunk in chunks:
            writer.write(chunk.frame, chunk.rejects)
    assert scalar(warehouse, f"SELECT count(*) FROM {staging.table}") == 31
    assert scalar(warehouse, f"SELECT count(*) FROM {staging.rejects_table}") == 1
    # The staged raw record reads back as the record (jsonb on PostgreSQL, text on SQLite).
    raw = scalar(warehouse, f"SELECT raw FROM {staging.table} WHERE installation_id = :i",
                 i=make_record(5)["id"])
    assert (raw if isinstance(raw, dict) else json.loads(raw)) == make_record(5)
    staging.drop()


@pytest.mark.postgres
def test_a_pass_that_fails_midway_stages_nothing(pg_warehouse):
    staging = _staging(pg_warehouse, "stage_writer_abort")
    with pytest.raises(RuntimeError, match="fetch failed"):
        with staging.writer() as writer:
            for n in (0, 10):
                writer.write(normalize_records([make_record(i) for i in range(n, n + 10)]).frame)
            raise RuntimeError("fetch failed after two chunks")
    assert scalar(pg_warehouse, f"SELECT count(*) FROM {staging.table}") == 0
    # The pooled connection that held the aborted COPY is usable again.
    staging.write(normalize_records([make_record(1)]).frame)
    assert scalar(pg_warehouse, f"SELECT count(*) FROM {staging.table}") == 1
    staging.drop()


def test_removal_candidates_come_in_batches_and_skip_staged_and_rejected_ids(warehouse):
    from datetime import datetime, timezone

    from icr.sync import SyncSettings, run_sync
    from icr.warehouse.runlog import RunContext
    from tests.icr.warehouse.helpers import StaticHook

    records = [make_record(i) for i in range(10)]
    run_sync(warehouse, StaticHook(records), RunContext("candidates_seed", datetime.now(timezone.utc), "t"),
             SyncSettings())
    staging = _staging(warehouse, "candidates_next")
    bad = {**records[3], "createdAt": "not a date"}  # received but rejected: not a removal
    chunk = normalize_records([records[0], records[1], bad])
    staging.write(chunk.frame, chunk.rejects)
    batches = list(removal_candidates(staging, batch=3))
    assert [len(b) for b in batches] == [3, 3, 1]
    assert sorted(i for b in batches for i in b) == sorted(r["id"] for r in records[2:] if r is not records[3])
    staging.drop()


@pytest.mark.postgres
def test_a_copy_that_cannot_start_names_the_table_and_leaves_no_connection_busy(pg_warehouse):
    staging = _staging(pg_warehouse, "stage_writer_missing")
    staging.drop()  # e.g. cleaned up by a concurrent failure handler
    frame = normalize_records([make_record(1)]).frame
    with pytest.raises(Exception, match=staging.table):
        with staging.writer() as writer:
            writer.write(frame)
    assert pg_warehouse.engine.pool.checkedout() == 0


def test_sqlite_rows_carry_timestamps_as_utc_text_writes_them():
    """The vectorised timestamp text equals utc_text() of each value, the form the merge and the
    dashboards compare as text; missing values stay NULL."""
    import numpy as np
    import pandas as pd

    from icr.warehouse.engine import utc_text
    from icr.warehouse.copy_format import driver_rows

    rng = np.random.default_rng(7)
    lo, hi = np.datetime64("0001-01-01T00:00:00", "us"), np.datetime64("9999-12-31T23:59:59.999999", "us")
    span = (hi - lo).astype(np.int64)
    values = lo + rng.integers(0, span, 2_000).astype("timedelta64[us]")
    edges = np.array(["0001-01-01T00:00:00", "0999-12-31T23:59:59.999999", "1969-12-31T23:59:59.5",
                      "1970-01-01T00:00:00", "9999-12-31T23:59:59.999999", "NaT"], dtype="datetime64[us]")
    stamps = pd.Series(np.concatenate([values, edges])).dt.tz_localize("UTC")
    frame = normalize_records([make_record(i) for i in range(len(stamps))]).frame
    frame["created_at"] = stamps.to_numpy()
    frame["app_id"] = [None, float("nan")] + frame["app_id"].tolist()[2:]

    rows = driver_rows(frame, sqlite=True)
    created = [row[frame.columns.get_loc("created_at")] for row in rows]
    assert created == [None if ts is pd.NaT else utc_text(ts.to_pydatetime()) for ts in stamps]
    assert created[-2] == "9999-12-31T23:59:59.999999+00:00" and created[-1] is None
    app_ids = [row[frame.columns.get_loc("app_id")] for row in rows]
    assert app_ids[:2] == [None, None] and all(isinstance(v, str) for v in app_ids[2:])


def test_finish_builds_the_key_that_refuses_a_duplicate_installation(warehouse):
    """The unique key on staged ids is built once after the inserts (on both warehouses), and it
    still refuses a second row for one installation."""
    import sqlalchemy as sa

    staging = _staging(warehouse, "stage_dup")
    with staging.writer() as writer:
        writer.write(normalize_records([make_record(i) for i in range(10)]).frame)
        writer.write(normalize_records([make_record(5)]).frame)  # a second chunk repeating an id
    with pytest.raises(sa.exc.IntegrityError):
        staging.finish()
    staging.drop()


def test_a_retried_pass_restages_after_the_key_was_built(warehouse):
    """SQLite builds the key early when the removal check needs it; a retried pass empties the
    table (and drops that key) and stages the same ids again."""
    staging = _staging(warehouse, "stage_retry")
    records = [make_record(i) for i in range(20)]
    staging.write(normalize_records(records).frame)
    assert list(removal_candidates(staging)) == []  # nothing active yet
    staging.truncate()
    staging.write(normalize_records(records).frame)
    staging.finish()
    assert scalar(warehouse, f"SELECT count(DISTINCT installation_id) FROM {staging.table}") == 20
    staging.drop()


def test_a_run_start_drops_staging_tables_of_runs_that_are_not_running(warehouse):
    """A failed run that could not drop its staging tables (the disk was full) leaves them to the
    next run start; a running run's tables, and tables that only look alike, are kept."""
    from datetime import datetime, timedelta, timezone

    from icr.warehouse.housekeeping import start_run
    from icr.warehouse.runlog import RunContext, fail_run

    def run(run_id: str) -> RunContext:
        return RunContext(run_id=run_id, logical_date=datetime.now(timezone.utc))

    apply_migrations(warehouse)
    start_run(warehouse, run("orphan_running"), stale_after=timedelta(hours=3))
    start_run(warehouse, run("orphan_failed"), stale_after=timedelta(hours=3))
    running, failed = Staging(warehouse, "orphan_running"), Staging(warehouse, "orphan_failed")
    never_recorded = Staging(warehouse, "orphan_without_a_run_row")  # killed before its row? still an orphan
    for staging in (running, failed, never_recorded):
        staging.create()
    fail_run(warehouse, "orphan_failed", "disk full")
    with warehouse.engine.begin() as conn:  # a team's own table with a similar name
        conn.exec_driver_sql("CREATE TABLE icr_stage_notes (x INTEGER)")

    start_run(warehouse, run("orphan_next"), stale_after=timedelta(hours=3))

    assert running.exists() and Staging(warehouse, "orphan_running").rejects_table in _tables(warehouse)
    assert not failed.exists() and failed.rejects_table not in _tables(warehouse)
    assert not never_recorded.exists()
    assert "icr_stage_notes" in _tables(warehouse)


def _tables(warehouse) -> set[str]:
    import sqlalchemy as sa

    return set(sa.inspect(warehouse.engine).get_table_names())
