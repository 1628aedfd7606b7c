"""Refresh the reporting objects BI dashboards read, whenever the sync publishes new data.

Scheduled on the ``icr_installations`` Asset: the hook for BI refreshes. Add your own tasks
here (e.g. ping a BI tool's refresh API) after ``refresh_reporting``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import dag, task

from icr.assets import ICR_INSTALLATIONS_ASSET
from icr.warehouse.engine import DEFAULT_CONN_ID, Warehouse
from icr.warehouse.reporting import refresh_reporting


@dag(
    dag_id="icr_reporting_refresh",
    description="Refresh the ICR reporting views after each sync",
    schedule=[ICR_INSTALLATIONS_ASSET],
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    tags=["icr", "reporting"],
    doc_md=__doc__,
    default_args={"owner": "data-platform", "retries": 2, "retry_delay": timedelta(minutes=1)},
)
def icr_reporting_refresh() -> None:
    @task
    def refresh() -> int:
        """Refresh icr_report_dashboard_summary (materialized view on PostgreSQL)."""
        return refresh_reporting(Warehouse.from_airflow(DEFAULT_CONN_ID))

    refresh()


icr_reporting_refresh()
