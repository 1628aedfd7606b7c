"""The reporting side of the warehouse: what the ``icr_report_*`` views hold.

Every ``icr_report_*`` object is a plain view (migrations 0002, 0006). The per-day ones read
aggregate tables (``icr_daily_totals``, ``icr_daily_org_counts``, ``icr_daily_permission_counts``)
that the load writes for its snapshot date in its own transaction, so they answer right after
the first successful sync, with no refresh step, and stay fast over a year of history.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from icr.warehouse.engine import Warehouse

log = logging.getLogger(__name__)

SUMMARY = "icr_report_dashboard_summary"


def refresh_reporting(warehouse: Warehouse) -> int:
    """Check that the dashboard summary answers; returns its number of snapshot dates.

    Nothing needs rebuilding any more (the load keeps the aggregates current): the DAG
    ``icr_reporting_refresh`` that calls this stays as the place for BI tools' refresh calls.
    """
    with warehouse.read() as conn:
        rows = int(conn.execute(sa.text(f"SELECT count(*) FROM {SUMMARY}")).scalar_one())
    log.info("%s holds %d snapshot dates (kept current by each load)", SUMMARY, rows)
    return rows
