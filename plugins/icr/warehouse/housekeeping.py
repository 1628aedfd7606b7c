"""Cleaning up after runs that died: stale 'running' rows and staging tables nobody will drop.

A run that is killed leaves its 'running' row (:mod:`icr.warehouse.runlog`) and possibly its
staging tables (:mod:`icr.warehouse.staging`); a failed run drops its own tables unless the
warehouse refused even that (a full disk, a lost connection). Each run start clears both, so a
run's worth of rows never stays until someone notices.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import timedelta

import sqlalchemy as sa

from icr.warehouse.engine import Warehouse
from icr.warehouse.runlog import RunContext, fail_stale_runs, record_start, running_run_ids
from icr.warehouse.staging import STAGE_NAME, run_tables

log = logging.getLogger(__name__)


def start_run(warehouse: Warehouse, run: RunContext, *, stale_after: timedelta) -> None:
    """Record the run as 'running', then abandon stale runs and drop orphaned staging tables."""
    record_start(warehouse, run)
    abandon_stale_runs(warehouse, older_than=stale_after, except_run=run.run_id)


def abandon_stale_runs(warehouse: Warehouse, *, older_than: timedelta, except_run: str | None = None) -> list[str]:
    """Mark 'running' rows older than ``older_than`` as failed and drop their staging tables, and
    those of any run that is not running (a failed run that could not drop its own)."""
    stale = fail_stale_runs(warehouse, older_than=older_than, except_run=except_run)
    # the stale runs' tables go too: they are no longer 'running'
    drop_orphaned_staging(warehouse, lambda: running_run_ids(warehouse))
    return stale


def drop_orphaned_staging(warehouse: Warehouse, running: Callable[[], Iterable[str]]) -> list[str]:
    """Drop staging tables that belong to no running run; returns their names.

    The tables are listed *before* ``running()`` is asked, so a run that starts meanwhile (its
    'running' row commits before it creates its tables) is never mistaken for an orphan.
    """
    tables = [t for t in sa.inspect(warehouse.engine).get_table_names() if STAGE_NAME.fullmatch(t)]
    if not tables:
        return []
    keep = {name for run_id in running() for name in run_tables(run_id)}
    orphans = [t for t in tables if t not in keep]
    if orphans:
        with warehouse.engine.begin() as conn:
            for table in orphans:
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        log.warning("Dropped %d staging table(s) left behind by failed runs: %s", len(orphans), ", ".join(orphans))
    return orphans
