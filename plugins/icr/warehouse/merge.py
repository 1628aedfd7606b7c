"""Load one run: merge its staging tables into the warehouse in ONE transaction.

Merge, removals, history, rejected records, the date's reporting rows (:mod:`icr.warehouse.daily`),
the quality checks and the final run row commit together or not at all; any failure rolls
everything back and leaves the warehouse exactly as it was. The SQL lives in ``sql/merge/``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from icr.defaults import DEFAULT_MAX_REJECT_SHARE, DEFAULT_MAX_REMOVAL_SHARE
from icr.errors import QualityCheckError, RejectThresholdError, WarehouseError
from icr.timings import Timings
from icr.warehouse import statements
from icr.warehouse.daily import cutoff_of, write_day
from icr.warehouse.engine import Warehouse
from icr.warehouse.removal_plan import plan_removals
from icr.warehouse.runlog import RunContext, get_run, now_utc, update_run
from icr.warehouse.staging import Staging
from icr.warehouse.statements import Steps
from icr.webhooks.reconcile import reconcile_snapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadOptions:
    full_resync: bool = False  # rewrite every row, even when its record_hash is unchanged
    accept_mass_removal: bool = False  # the operator confirms a large removal is real
    max_removal_share: float = DEFAULT_MAX_REMOVAL_SHARE  # of active installations, per run
    max_reject_share: float = DEFAULT_MAX_REJECT_SHARE  # of fetched records
    # PostgreSQL memory per sort/hash of the load transaction: the merge's joins over a million
    # staged rows stay in memory (linear) instead of spilling to disk in batches.
    work_mem: str = "256MB"


# A first load into empty tables at least this large rebuilds the tables' indexes once
# (where the dialect does: PostgreSQL) instead of maintaining them row by row; see _suspend_indexes.
BULK_LOAD_MIN_ROWS = 50_000
_BULK_TABLES = ("icr_installation_state", "icr_installation_permissions", "icr_installation_history")


class _Steps(Steps):
    """The load's steps: the merge's and the daily snapshot's statements over the run's staging."""

    def __init__(self, warehouse: Warehouse, conn: Connection, staging: Staging, params: dict[str, Any],
                 timings: Timings | None = None) -> None:
        super().__init__(warehouse, conn, params, staging=staging, timings=timings, daily=True)


def day_cutoff(run: RunContext) -> datetime:
    """The end of the snapshot date: the next midnight, UTC."""
    return cutoff_of(run.snapshot_date)


def merge_run(warehouse: Warehouse, run: RunContext, options: LoadOptions,
              timings: Timings | None = None) -> dict[str, Any]:
    """Apply the run's staged snapshot (or reuse a recent one) and write its date's reporting rows.

    ``timings`` collects the seconds of each statement (``merge:<name>``)."""
    timings = timings or Timings()
    row = get_run(warehouse, run.run_id)
    if row is None:
        raise WarehouseError(f"run {run.run_id!r} has no row in icr_sync_runs: the extract step did not run")
    staging = Staging(warehouse, run.run_id)
    source = row["snapshot_source"]
    if source not in ("api", "reused"):
        raise WarehouseError(f"run {run.run_id!r} has no snapshot to load (extract did not finish)")
    finished = now_utc()
    with warehouse.write() as conn:
        warehouse.dialect.set_work_mem(conn, options.work_mem)
        params = {
            "run_id": run.run_id,
            "now": warehouse.ts(_as_dt(row["snapshot_at"]) or finished),
            "full_resync": bool(options.full_resync),
            "snapshot_date": warehouse.day(run.snapshot_date),
            "cutoff": warehouse.ts(day_cutoff(run)),
        }
        steps = _Steps(warehouse, conn, staging, params, timings)
        restore_indexes: list[str] = []
        if (source == "api" and warehouse.dialect.rebuilds_indexes_on_first_load
                and int(row["records_fetched"] or 0) >= BULK_LOAD_MIN_ROWS):
            with timings.measure("merge:suspend_indexes"):
                restore_indexes = _suspend_indexes(conn)
        if source == "api":
            counts = _merge_snapshot(warehouse, steps, row, options)
        else:
            counts = dict(inserted=0, updated=0, unchanged=0, removed=0, restored=0)
            counts["active_after"] = steps.scalar(
                "SELECT count(*) FROM icr_installation_state WHERE deleted_at IS NULL")
        with timings.measure("merge:restore_indexes"):
            _restore_indexes(conn, restore_indexes)
        counts["daily_rows"] = write_day(steps, run.snapshot_date, finished=finished)
        final = {**counts, "status": "success", "finished_at": finished, "error": None,
                 "step_seconds": {**_json_dict(row.get("step_seconds")), **timings.rounded()}}
        with timings.measure("merge:check_run"):
            check_run(conn, warehouse, run, {**row, **final}, in_load=True)
        update_run(warehouse, run.run_id, conn=conn, **final)
        # Dropped in the same transaction: a process killed after COMMIT leaves no staging behind,
        # and a rollback keeps the staged snapshot for a retry of the load.
        for statement in staging.drop_sql():
            conn.exec_driver_sql(statement)
    log.info("Run %s loaded: %s", run.run_id, {k: v for k, v in counts.items()})
    return {**{k: row[k] for k in ("records_fetched", "rejected", "snapshot_complete", "snapshot_source")}, **counts}


def _merge_snapshot(warehouse: Warehouse, steps: _Steps, row: dict[str, Any], options: LoadOptions) -> dict[str, Any]:
    staged, kept, staged_rejects = _check_staging(steps, row, options)
    steps.run("create_changes")
    steps.run("plan_changes")
    steps.run_optional("analyze_changes")
    with steps.timings.measure("merge:counts"):
        actions = dict(statements.execute(
            steps.conn, "SELECT action, count(*) FROM icr_tmp_changes GROUP BY action", {}).all())
    inserted = int(actions.get("insert", 0))
    restored = int(actions.get("restore", 0))
    removals = plan_removals(steps, row, options, listed_active=staged + kept - inserted - restored,
                             with_rejects=bool(staged_rejects))

    drift = reconcile_snapshot(steps)  # webhook events vs this list (issue 23)
    for name in (*warehouse.dialect.write_state_steps, "permissions_delete", "permissions_insert",
                 "history_close_changed", "history_insert_changed", "history_close_removed",
                 "history_insert_removed", "mark_removed", "rejects_clear", "rejects_insert"):
        steps.run(name)
    if staged > inserted and steps.count("count_unplanned_wire_hashes"):
        steps.run("wire_hashes_refresh")  # unchanged rows that came with other bytes than stored
    active_rejected = steps.count("count_active_rejected") if staged_rejects else 0
    steps.drop_temp("icr_tmp_changes", "icr_tmp_removals")

    updated = int(actions.get("update", 0)) + restored  # a return is an update of an existing row
    counts = {
        "inserted": inserted,
        "updated": updated,
        "restored": restored,
        "unchanged": staged + kept - inserted - updated,
        "removed": removals.removing,
        "removals_skipped": removals.skipped,
        **drift,
        "active_after": _active_after(steps, removals.active_before, wrote=bool(inserted or updated or removals.removing)),
    }
    expected = staged + kept + active_rejected + removals.newer - removals.removed_since
    if row["snapshot_complete"] and counts["active_after"] != expected:
        raise QualityCheckError(
            f"after a complete snapshot {counts['active_after']} installations are active, but the snapshot "
            f"had {staged + kept} valid distinct ids (+{active_rejected} rejected but still active, "
            f"+{removals.newer} applied and -{removals.removed_since} removed by webhook events after it was read)")
    return counts


def _active_after(steps: _Steps, active_before: int, *, wrote: bool) -> int:
    """Active installations after the merge: counted again when it wrote state rows; else the
    count taken before (same transaction, and every writer waits for the merge lock)."""
    if not wrote:
        return active_before
    return steps.scalar("SELECT count(*) FROM icr_installation_state WHERE deleted_at IS NULL")


def _check_staging(steps: _Steps, row: dict[str, Any], options: LoadOptions) -> tuple[int, int, int]:
    """The staged rows, unchanged ids and rejects, checked against the extract's run row and the
    reject threshold."""
    staged = steps.scalar("SELECT count(*) FROM {stage}")
    staged_rejects = steps.scalar("SELECT count(*) FROM {rejects}")
    # Records the extract found unchanged (icr.unchanged): present and counted, nothing to write.
    kept = steps.scalar("SELECT count(*) FROM {kept}")
    fetched, rejected = int(row["records_fetched"]), int(row["rejected"])
    if staged + kept + staged_rejects != fetched or staged_rejects != rejected:
        raise WarehouseError(
            f"staging for run {row['run_id']!r} holds {staged} rows, {kept} unchanged ids and "
            f"{staged_rejects} rejects, but the "
            f"extract step recorded {fetched} fetched and {rejected} rejected; rerun the whole DAG run")
    if fetched and rejected / fetched > options.max_reject_share:
        raise RejectThresholdError(
            f"{rejected} of {fetched} records ({rejected / fetched:.1%}) failed validation, above "
            f"max_reject_share={options.max_reject_share:.1%}; see icr_stage rejects of this run or raise the "
            "threshold with the max_reject_share param")
    return staged, kept, staged_rejects


def _suspend_indexes(conn: Connection) -> list[str]:
    """First bulk load (PostgreSQL): drop the tables' indexes; return the DDL restoring them.

    Only when the warehouse is empty: building each index once, from sorted rows, after the
    load costs a fraction of inserting a million random keys one by one (measured here at
    1,000,000 installations, rebuilds included: permissions + history + daily 26 s -> 14 s,
    installations 16.4 s -> 10.3 s). The definitions are read from the catalog, so what is
    rebuilt is exactly what the migrations made, and a failed rebuild (say, a duplicate key)
    rolls the whole load back. An index that a foreign key relies on (a user's own table
    referencing installations) is left in place. The tables are locked until the load commits;
    on a first load there is nothing to read in them yet (a dashboard query waits for the load
    instead of seeing an empty warehouse).
    """
    empty = statements.execute(conn, "SELECT " + " AND ".join(
        f"NOT EXISTS (SELECT 1 FROM {t})" for t in _BULK_TABLES), {}).scalar_one()
    if not empty:
        return []
    found = statements.execute(conn, """
        SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid),
               c.conname, pg_get_constraintdef(c.oid), i.indrelid::regclass::text
        FROM pg_index i
        LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid
        WHERE i.indrelid IN (""" + ", ".join(f"to_regclass('{t}')" for t in _BULK_TABLES) + """)
          AND NOT EXISTS (SELECT 1 FROM pg_constraint f WHERE f.contype = 'f' AND f.conindid = i.indexrelid)
        ORDER BY i.indrelid::regclass::text, i.indexrelid::regclass::text""", {}).all()
    restore = []
    for index, indexdef, constraint, condef, table in found:
        if constraint:
            statements.execute(conn, f"ALTER TABLE {table} DROP CONSTRAINT {_quote(constraint)}", {})
            restore.append(f"ALTER TABLE {table} ADD CONSTRAINT {_quote(constraint)} {condef}")
        else:
            statements.execute(conn, f"DROP INDEX {index}", {})
            restore.append(indexdef)
    log.info("First bulk load: %d indexes of %s are rebuilt after the load", len(restore), ", ".join(_BULK_TABLES))
    return restore


def _restore_indexes(conn: Connection, ddl: list[str]) -> None:
    if not ddl:
        return
    statements.execute(conn, "SELECT set_config('maintenance_work_mem', '512MB', true)", {})
    for statement in ddl:
        statements.execute(conn, statement, {})


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def check_run(conn: Connection, warehouse: Warehouse, run: RunContext, row: dict[str, Any], *,
              in_load: bool = False) -> None:
    """Quality checks that fail the run: in the load's transaction (``in_load``: a failure rolls
    the load back) and again by the verify task, on the committed result.

    The date's counts are checked against rows counted another way. In the load of a date in
    progress (the nightly), against the current rows: ``active_after`` (the merge's own count of
    the active rows) less those created after the date's end (an index range), which the counts
    made from the previous date and the night's changes (:func:`icr.warehouse.daily.count_current`)
    must match: cheap, and a count built on a wrong base never commits. Everywhere else (verify;
    the load of a past date, whose counts come from the view anyway), against the view
    ``icr_installation_daily``, which derives the date's rows from the history, a pass over it:
    that the rows dashboards read agree with the counts is checked once per run, in verify, which
    reads a snapshot outside the merge lock instead of holding it.
    """
    problems = []
    fetched = int(row["records_fetched"] or 0)
    parts = sum(int(row[k] or 0) for k in ("inserted", "updated", "unchanged", "rejected"))
    if fetched != parts:
        problems.append(f"records_fetched={fetched} but inserted+updated+unchanged+rejected={parts}")
    null_keys = statements.execute(
        conn, "SELECT count(*) FROM icr_installation_state WHERE installation_id IS NULL OR organization_id IS NULL "
        "OR record_hash IS NULL", {}).scalar_one()
    if null_keys:
        problems.append(f"{null_keys} installations with a null key (installation_id, organization_id, record_hash)")
    if in_load and day_cutoff(run) > _as_dt(row["finished_at"]):
        problems += _current_rows_problems(conn, warehouse, run, row)
    else:
        problems += _view_problems(conn, warehouse, run, row)
    if problems:
        raise QualityCheckError(f"run {run.run_id}: quality checks failed: " + "; ".join(problems))


def _current_rows_problems(conn: Connection, warehouse: Warehouse, run: RunContext, row: dict[str, Any]) -> list[str]:
    later = int(statements.execute(
        conn, "SELECT count(*) FROM icr_installation_state WHERE deleted_at IS NULL AND created_at >= :cutoff",
        {"cutoff": warehouse.ts(day_cutoff(run))}).scalar_one())
    counted = int(row["active_after"]) - later
    if row.get("daily_rows") is None or int(row["daily_rows"]) != counted:
        return [f"the counts for {run.snapshot_date} hold {row.get('daily_rows')} installations, the current rows "
                f"{counted} ({row['active_after']} active, {later} of them created after the date)"]
    return []


def _view_problems(conn: Connection, warehouse: Warehouse, run: RunContext, row: dict[str, Any]) -> list[str]:
    problems = []
    daily = statements.execute(
        conn, "SELECT count(*), count(installation_id) FROM icr_installation_daily WHERE snapshot_date = :d",
        {"d": warehouse.day(run.snapshot_date)}).one()
    if row.get("daily_rows") is None or int(daily[0]) != int(row["daily_rows"]):
        problems.append(f"daily snapshot for {run.snapshot_date} has {daily[0]} rows, run recorded {row.get('daily_rows')}")
    if daily[0] != daily[1]:
        problems.append(f"daily snapshot for {run.snapshot_date} has null installation ids")
    totals = statements.execute(conn, "SELECT active FROM icr_daily_totals WHERE snapshot_date = :d",
                      {"d": warehouse.day(run.snapshot_date)}).scalar_one_or_none()
    if totals is None or int(totals) != int(daily[0]):
        problems.append(f"reporting totals for {run.snapshot_date} say {totals} active, the daily snapshot "
                        f"has {daily[0]} rows")
    active_after = row.get("active_after")
    if active_after and not daily[0]:
        problems.append(f"daily snapshot for {run.snapshot_date} is missing although {active_after} are active")
    return problems


def verify_run(warehouse: Warehouse, run: RunContext) -> dict[str, Any]:
    """Re-check the committed result of a run (the DAG's verify task)."""
    row = get_run(warehouse, run.run_id)
    if row is None or row["status"] != "success":
        raise QualityCheckError(f"run {run.run_id}: no successful load recorded in icr_sync_runs")
    with warehouse.read() as conn:
        check_run(conn, warehouse, run, row)
    return row


def _json_dict(value: Any) -> dict[str, Any]:
    """A JSON column as a dict (PostgreSQL may hand back the parsed value, SQLite the text)."""
    if not value:
        return {}
    return value if isinstance(value, dict) else json.loads(value)


def _as_dt(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))
