"""The run log, ``icr_sync_runs``: one row per run, from 'running' to 'success' or 'failed'.

The 'running' row is committed on its own when a run starts, so a run that dies (a killed
worker, a lost connection) stays visible; the next run marks such rows failed once they are
older than the stale-run age. The final counts commit inside the merge transaction, together
with the data they describe. Only ``icr_sync_runs`` is touched here: dropping the staging tables
that died runs left behind is :mod:`icr.warehouse.housekeeping`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from icr.redact import redact
from icr.warehouse.engine import Warehouse

log = logging.getLogger(__name__)

#: ``icr_sync_runs.error`` keeps this many characters of the (redacted) error text.
MAX_ERROR_CHARS = 4000


@dataclass(frozen=True)
class RunContext:
    """Who is running: the Airflow run id and the date its daily snapshot is for."""

    run_id: str
    logical_date: datetime
    dag_id: str | None = None

    @property
    def snapshot_date(self) -> date:
        return self.logical_date.astimezone(timezone.utc).date()


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def record_start(warehouse: Warehouse, run: RunContext) -> None:
    """Record the run as 'running' (resetting a previous try of the same run id)."""
    started = now_utc()
    with warehouse.write() as conn:
        conn.execute(sa.text("DELETE FROM icr_sync_runs WHERE run_id = :r"), {"r": run.run_id})
        conn.execute(
            sa.text("INSERT INTO icr_sync_runs (run_id, dag_id, logical_date, snapshot_date, started_at, status) "
                    "VALUES (:r, :d, :ld, :sd, :s, 'running')"),
            {"r": run.run_id, "d": run.dag_id, "ld": warehouse.ts(run.logical_date),
             "sd": warehouse.day(run.snapshot_date), "s": warehouse.ts(started)},
        )


def fail_stale_runs(warehouse: Warehouse, *, older_than: timedelta, except_run: str | None = None) -> list[str]:
    """Mark 'running' rows older than ``older_than`` as failed; returns their run ids."""
    cutoff = now_utc() - older_than
    with warehouse.write() as conn:
        stale = [r[0] for r in conn.execute(
            sa.text("SELECT run_id FROM icr_sync_runs WHERE status = 'running' AND started_at < :c "
                    "AND run_id <> :me"),
            {"c": warehouse.ts(cutoff), "me": except_run or ""})]
        for run_id in stale:
            conn.execute(
                sa.text("UPDATE icr_sync_runs SET status = 'failed', finished_at = :f, "
                        "error = :e WHERE run_id = :r AND status = 'running'"),
                {"f": warehouse.ts(now_utc()), "r": run_id,
                 "e": f"abandoned: still 'running' after {older_than}; the process was killed or lost"},
            )
    for run_id in stale:
        log.warning("Run %s was abandoned (no result after %s): marked failed", run_id, older_than)
    return stale


def running_run_ids(warehouse: Warehouse) -> list[str]:
    with warehouse.read() as conn:
        return [r[0] for r in conn.execute(sa.text("SELECT run_id FROM icr_sync_runs WHERE status = 'running'"))]


def update_run(warehouse: Warehouse, run_id: str, conn: sa.Connection | None = None, **fields: Any) -> None:
    if not fields:
        return
    for key, value in list(fields.items()):
        if isinstance(value, datetime):
            fields[key] = warehouse.ts(value)
        elif isinstance(value, dict):
            fields[key] = json.dumps(value, sort_keys=True)
    sets = ", ".join(f"{k} = :{k}" for k in fields)
    stmt = sa.text(f"UPDATE icr_sync_runs SET {sets} WHERE run_id = :run_id")
    if conn is not None:
        conn.execute(stmt, {**fields, "run_id": run_id})
    else:
        with warehouse.write() as own:
            own.execute(stmt, {**fields, "run_id": run_id})


def fail_run(warehouse: Warehouse, run_id: str, error: BaseException | str) -> None:
    """Mark a run failed with a redacted, bounded error text; never raises."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    try:
        update_run(warehouse, run_id, status="failed", finished_at=now_utc(),
                   error=redact(text)[:MAX_ERROR_CHARS])
    except Exception:  # the warehouse itself may be what failed
        log.exception("Could not record the failure of run %s in icr_sync_runs", run_id)


def get_run(warehouse: Warehouse, run_id: str) -> dict[str, Any] | None:
    with warehouse.read() as conn:
        row = conn.execute(sa.text("SELECT * FROM icr_sync_runs WHERE run_id = :r"), {"r": run_id}).mappings().first()
    return dict(row) if row else None


def find_reusable_snapshot(warehouse: Warehouse, *, max_age: timedelta, exclude_run: str) -> dict[str, Any] | None:
    """The newest successful, complete API snapshot taken within ``max_age``, if any."""
    cutoff = now_utc() - max_age
    with warehouse.read() as conn:
        row = conn.execute(
            sa.text("SELECT run_id, snapshot_at, active_after FROM icr_sync_runs "
                    "WHERE status = 'success' AND snapshot_complete AND snapshot_source = 'api' "
                    "AND snapshot_at >= :c AND run_id <> :me ORDER BY snapshot_at DESC LIMIT 1"),
            {"c": warehouse.ts(cutoff), "me": exclude_run},
        ).mappings().first()
    return dict(row) if row else None
