"""The hook for BI refreshes, whenever the sync publishes new data.

Scheduled on the ``icr_installations`` Asset. The ``icr_report_*`` views need no refresh: the
sync's load keeps what they read current, so they answer right after its first successful run
with this DAG paused. Unpause it when you add your own tasks here (e.g. ping a BI tool's refresh
API) after ``refresh_reporting``, which only checks that the dashboard summary answers.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import dag, task

from icr.assets import ICR_INSTALLATIONS_ASSET
from icr.warehouse.engine import DEFAULT_CONN_ID, Warehouse
from icr.warehouse.reporting import refresh_reporting


@dag(
    dag_id="icr_reporting_refresh",
    description="BI refresh hook after each ICR sync (the reporting views need none)",
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
        """Check that icr_report_dashboard_summary answers; returns its number of snapshot dates."""
        return refresh_reporting(Warehouse.from_airflow(DEFAULT_CONN_ID))

    refresh()


icr_reporting_refresh()
