"""Nightly sync of ICR App installations into the reporting warehouse.

    migrate → extract (fetch · normalize · stage) → load (merge · removals · history · daily
    snapshot · checks, one transaction) → verify → publish (Asset event with the counts)

Connections: ``icr_default`` (the ICR App) and ``icr_warehouse`` (postgres or sqlite; without
it, a SQLite file under AIRFLOW_HOME). Data moves between tasks through the warehouse's
per-run staging tables, never local files, so tasks may run on different Celery workers.
Backfills: one run per day; a run for a past date reuses a complete snapshot taken within
``reuse_snapshot_max_age_hours`` instead of reading the whole API again.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task
from airflow.timetables.trigger import CronTriggerTimetable

from icr.assets import ICR_INSTALLATIONS_ASSET
from icr.hooks import ICRHook
from icr.sync import SyncSettings, cleanup, extract, fail, load, migrate, verify
from icr.warehouse.engine import DEFAULT_CONN_ID as WAREHOUSE_CONN_ID
from icr.warehouse.engine import Warehouse
from icr.warehouse.runlog import RunContext

log = logging.getLogger(__name__)

DAG_ID = "icr_installations_sync"
ICR_CONN_ID = "icr_default"
# The nightly time is a setting: a cron expression in UTC.
SCHEDULE_CRON = os.environ.get("ICR_SYNC_SCHEDULE", "0 2 * * *")
RUN_TIMEOUT = timedelta(hours=float(os.environ.get("ICR_SYNC_TIMEOUT_HOURS", "3")))
RETRIES = int(os.environ.get("ICR_SYNC_RETRIES", "2"))
# The first retry waits 1-2x this, each further one twice as long (at most 20 minutes).
RETRY_DELAY = timedelta(seconds=float(os.environ.get("ICR_SYNC_RETRY_DELAY_SECONDS", "120")))


def _run_context(context: Any) -> RunContext:
    logical = context.get("logical_date") or context["dag_run"].run_after or datetime.now(timezone.utc)
    return RunContext(run_id=context["run_id"], logical_date=logical, dag_id=context["dag"].dag_id)


def _settings(context: Any) -> SyncSettings:
    return SyncSettings.from_params(context["params"], stale_run_after=RUN_TIMEOUT)


def _on_task_failure(context: Any) -> None:
    """Record the failed run (redacted error) in icr_sync_runs and drop its staging tables."""
    try:
        warehouse = Warehouse.from_airflow(WAREHOUSE_CONN_ID)
        fail(warehouse, _run_context(context), context.get("exception") or "task failed")
    except Exception:
        log.exception("Could not record the failure in the warehouse")


@dag(
    dag_id=DAG_ID,
    description="Sync ICR App installations into the reporting warehouse",
    schedule=CronTriggerTimetable(SCHEDULE_CRON, timezone="UTC"),
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=RUN_TIMEOUT,
    tags=["icr", "warehouse", "sync"],
    doc_md=__doc__,
    default_args={
        "owner": "data-platform",
        "retries": RETRIES,
        "retry_delay": RETRY_DELAY,
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=20),
        "execution_timeout": RUN_TIMEOUT,  # a task stuck anywhere is killed, not left holding the run
        "on_failure_callback": _on_task_failure,
    },
    params={
        "full_resync": Param(False, type="boolean", title="Full resync",
                             description="Read the API even for a past date and rewrite every row, changed or not."),
        "accept_mass_removal": Param(False, type="boolean", title="Accept a mass removal",
                                     description="Confirm that a large drop in installations is real "
                                                 "(otherwise the run fails before writing)."),
        "max_removal_share": Param(0.5, type="number", minimum=0, maximum=1, title="Max removal share",
                                   description="Largest share of active installations one run may mark removed."),
        "max_reject_share": Param(0.05, type="number", minimum=0, maximum=1, title="Max reject share",
                                  description="Largest share of records that may fail validation."),
        "page_size": Param(None, type=["null", "integer"], minimum=1, maximum=1000, title="Page size",
                           description="Override the connection's page_size for this run."),
        "concurrency": Param(None, type=["null", "integer"], minimum=1, maximum=16, title="Concurrency",
                             description="Override the connection's concurrent page fetches for this run."),
        "reuse_snapshot_max_age_hours": Param(6, type="number", minimum=0, title="Reuse snapshots up to (hours)",
                                              description="A run for a past date reuses a complete snapshot "
                                                          "this recent instead of reading the API again."),
    },
)
def icr_installations_sync() -> None:
    @task
    def migrate_warehouse() -> list[str]:
        """Apply pending warehouse migrations (serialized across concurrent runs)."""
        return migrate(Warehouse.from_airflow(WAREHOUSE_CONN_ID))

    @task
    def extract_installations() -> dict[str, Any]:
        """Fetch every page, normalize in chunks, stream into this run's staging tables."""
        context = get_current_context()
        settings = _settings(context)
        hook = ICRHook(icr_conn_id=ICR_CONN_ID, page_size=settings.page_size, concurrency=settings.concurrency)
        return extract(Warehouse.from_airflow(WAREHOUSE_CONN_ID), hook, _run_context(context), settings)

    @task
    def load_warehouse() -> dict[str, Any]:
        """Merge, removals, history, rejects, daily snapshot and checks: one transaction."""
        context = get_current_context()
        warehouse = Warehouse.from_airflow(WAREHOUSE_CONN_ID)
        run = _run_context(context)
        counts = load(warehouse, run, _settings(context))
        cleanup(warehouse, run)
        return counts

    @task
    def verify_load() -> dict[str, Any]:
        """Re-check the committed result: counts add up, daily snapshot present, no null keys."""
        context = get_current_context()
        return verify(Warehouse.from_airflow(WAREHOUSE_CONN_ID), _run_context(context))

    @task(outlets=[ICR_INSTALLATIONS_ASSET])
    def publish(counts: dict[str, Any]) -> None:
        """Emit the Asset event that downstream BI refreshes are scheduled on."""
        context = get_current_context()
        extra = {k: (v if isinstance(v, (int, float, bool, str)) or v is None else str(v)) for k, v in counts.items()}
        extra["snapshot_date"] = _run_context(context).snapshot_date.isoformat()
        context["outlet_events"][ICR_INSTALLATIONS_ASSET].extra = extra
        log.info("Published %s: %s", ICR_INSTALLATIONS_ASSET.name, extra)

    migrated = migrate_warehouse()
    extracted = extract_installations()
    loaded = load_warehouse()
    verified = verify_load()
    migrated >> extracted >> loaded >> verified
    publish(verified)


icr_installations_sync()
