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

import functools
import logging
import os
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

from airflow.sdk import Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException
from airflow.timetables.trigger import CronTriggerTimetable

from icr.assets import ICR_INSTALLATIONS_ASSET
from icr.errors import ICRConfigError, is_permanent
from icr.defaults import (
    DEFAULT_MAX_PAGE_SIZE,
    DEFAULT_MAX_REJECT_SHARE,
    DEFAULT_MAX_REMOVAL_SHARE,
    DEFAULT_REUSE_SNAPSHOT_MAX_AGE_HOURS,
    DEFAULT_RUN_TIMEOUT_HOURS,
)
from icr.hooks import ICRHook
from icr.sync import SyncSettings, cleanup, extract, fail, load, migrate, verify
from icr.warehouse.engine import DEFAULT_CONN_ID as WAREHOUSE_CONN_ID
from icr.warehouse.engine import Warehouse
from icr.warehouse.runlog import RunContext
from icr.webhooks.apply import apply_events_before_sync

log = logging.getLogger(__name__)

DAG_ID = "icr_installations_sync"
ICR_CONN_ID = "icr_default"
# The nightly time is a setting: a cron expression in UTC.
SCHEDULE_CRON = os.environ.get("ICR_SYNC_SCHEDULE", "0 2 * * *")
RUN_TIMEOUT = timedelta(hours=float(os.environ.get("ICR_SYNC_TIMEOUT_HOURS", DEFAULT_RUN_TIMEOUT_HOURS)))
RETRIES = int(os.environ.get("ICR_SYNC_RETRIES", "2"))
# The first retry waits 1-2x this, each further one twice as long (at most 20 minutes).
RETRY_DELAY = timedelta(seconds=float(os.environ.get("ICR_SYNC_RETRY_DELAY_SECONDS", "120")))

#: The largest page size a triggered run may ask for: the connection's ``max_page_size`` default
#: (a connection may allow more through its own page_size, up to its own max_page_size).
MAX_PAGE_SIZE = DEFAULT_MAX_PAGE_SIZE
#: The allowed range of each numeric param, (minimum, maximum); None: no bound.
PARAM_RANGES: dict[str, tuple[float | None, float | None]] = {
    "page_size": (1, MAX_PAGE_SIZE),
    "concurrency": (1, 16),
    "max_removal_share": (0, 1),
    "max_reject_share": (0, 1),
    "reuse_snapshot_max_age_hours": (0, None),
}

_F = TypeVar("_F", bound=Callable[..., Any])


def _range_text(name: str) -> str:
    low, high = PARAM_RANGES[name]
    return f"from {low:g} to {high:g}" if high is not None else f"at least {low:g}"


def _range_schema(name: str) -> dict[str, Any]:
    """The param's range as JSON schema, nested in ``allOf`` on purpose.

    Airflow's trigger form hands a top-level ``minimum``/``maximum`` to its number widget, which
    silently clamps what the user typed when the field loses focus (0 became 1, 5000 became the
    maximum). Nested one level down the widget leaves the value alone, and Airflow still checks
    it when the run is created: the form, ``POST /api/v2/dags/{id}/dagRuns`` and
    ``airflow dags trigger/test`` refuse it with "Invalid input for param page_size: 5000 is
    greater than the maximum of 100".
    """
    low, high = PARAM_RANGES[name]
    return {"allOf": [{k: v for k, v in (("minimum", low), ("maximum", high)) if v is not None}]}


def check_param_ranges(params: Mapping[str, Any]) -> None:
    """Refuse an out-of-range param of a run that started anyway (e.g. triggered before the
    range was narrowed): the message names the param and its range."""
    for name, (low, high) in PARAM_RANGES.items():
        value = params.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ICRConfigError(f"DAG param {name}", f"{value!r} is not a number; allowed: {_range_text(name)}")
        if (low is not None and value < low) or (high is not None and value > high):
            raise ICRConfigError(f"DAG param {name}", f"{value!r} is outside the allowed range: {_range_text(name)}")


def fail_fast(func: _F) -> _F:
    """Fail the task at once, skipping its retries, when a retry cannot fix the error
    (:func:`icr.errors.is_permanent`: bad configuration, a final API answer, the guards).

    The task log gets the error's own message on one line; Airflow's traceback that follows is
    the short one of the AirflowFailException. Transient errors are re-raised untouched and
    retried as configured. ``_on_task_failure`` still records the run and drops its staging.
    """
    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            if not is_permanent(exc):
                raise
            message = f"{type(exc).__name__}: {exc}"
            log.error("%s (not retried: a retry cannot fix this)", message)
            raise AirflowFailException(message) from None

    return run  # type: ignore[return-value]


def _run_context(context: Any) -> RunContext:
    logical = context.get("logical_date") or context["dag_run"].run_after or datetime.now(timezone.utc)
    return RunContext(run_id=context["run_id"], logical_date=logical, dag_id=context["dag"].dag_id)


def _settings(context: Any) -> SyncSettings:
    check_param_ranges(context["params"])
    return SyncSettings.from_params(context["params"], stale_run_after=RUN_TIMEOUT)


def _on_task_failure(context: Any) -> None:
    """Record the failed run (redacted error) in icr_sync_runs and drop its staging tables."""
    error = context.get("exception") or "task failed"
    if isinstance(error, AirflowFailException):
        error = str(error)  # fail_fast's "<ErrorClass>: <message>", recorded as the error itself
    try:
        warehouse = Warehouse.from_airflow(WAREHOUSE_CONN_ID)
        fail(warehouse, _run_context(context), error)
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
        "max_removal_share": Param(DEFAULT_MAX_REMOVAL_SHARE, type="number", title="Max removal share",
                                   description="Largest share of active installations one run may mark removed "
                                               f"({_range_text('max_removal_share')}).",
                                   **_range_schema("max_removal_share")),
        "max_reject_share": Param(DEFAULT_MAX_REJECT_SHARE, type="number", title="Max reject share",
                                  description="Largest share of records that may fail validation "
                                              f"({_range_text('max_reject_share')}).",
                                  **_range_schema("max_reject_share")),
        "page_size": Param(None, type=["null", "integer"], title="Page size",
                           description=f"Installations per API request, {_range_text('page_size')}; empty: the "
                                       "connection's page_size. A small page size means many requests.",
                           **_range_schema("page_size")),
        "concurrency": Param(None, type=["null", "integer"], title="Concurrency",
                             description="Concurrent page fetches, "
                                         f"{_range_text('concurrency')}; empty: the connection's concurrency.",
                             **_range_schema("concurrency")),
        "reuse_snapshot_max_age_hours": Param(DEFAULT_REUSE_SNAPSHOT_MAX_AGE_HOURS, type="number", title="Reuse snapshots up to (hours)",
                                              description="A run for a past date reuses a complete snapshot "
                                                          "this recent instead of reading the API again "
                                                          f"({_range_text('reuse_snapshot_max_age_hours')}).",
                                              **_range_schema("reuse_snapshot_max_age_hours")),
    },
)
def icr_installations_sync() -> None:
    @task
    @fail_fast
    def migrate_warehouse() -> list[str]:
        """Apply pending warehouse migrations (serialized across concurrent runs)."""
        return migrate(Warehouse.from_airflow(WAREHOUSE_CONN_ID))

    @task
    def apply_webhook_events() -> dict[str, Any]:
        """Apply pending webhook events first (missed notifications included); the full list read
        next then reconciles them and records any drift. Never fails the nightly run."""
        return apply_events_before_sync(Warehouse.from_airflow(WAREHOUSE_CONN_ID), ICR_CONN_ID,
                                        get_current_context()["run_id"])

    @task
    @fail_fast
    def extract_installations() -> dict[str, Any]:
        """Fetch every page, normalize in chunks, stream into this run's staging tables."""
        context = get_current_context()
        settings = _settings(context)
        hook = ICRHook(icr_conn_id=ICR_CONN_ID)  # extract passes the run's page_size and concurrency on
        return extract(Warehouse.from_airflow(WAREHOUSE_CONN_ID), hook, _run_context(context), settings)

    @task
    @fail_fast
    def load_warehouse() -> dict[str, Any]:
        """Merge, removals, history, rejects, daily snapshot and checks: one transaction."""
        context = get_current_context()
        warehouse = Warehouse.from_airflow(WAREHOUSE_CONN_ID)
        run = _run_context(context)
        counts = load(warehouse, run, _settings(context))
        cleanup(warehouse, run)
        return counts

    @task
    @fail_fast
    def verify_load() -> dict[str, Any]:
        """Re-check the committed result: counts add up, daily snapshot present, no null keys."""
        context = get_current_context()
        return verify(Warehouse.from_airflow(WAREHOUSE_CONN_ID), _run_context(context))

    @task(outlets=[ICR_INSTALLATIONS_ASSET])
    @fail_fast
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
    migrated >> apply_webhook_events() >> extracted >> loaded >> verified
    publish(verified)


icr_installations_sync()
