"""Refresh the materialized reporting objects that BI tools read (run after each sync)."""

from __future__ import annotations

import logging

import sqlalchemy as sa

from icr.warehouse.engine import Warehouse

log = logging.getLogger(__name__)

SUMMARY = "icr_report_dashboard_summary"


def refresh_reporting(warehouse: Warehouse) -> int:
    """Rebuild ``icr_report_dashboard_summary``; returns its row count.

    PostgreSQL: a materialized view, refreshed CONCURRENTLY once populated so dashboards keep
    reading during the refresh. SQLite: a table rebuilt in one transaction.
    """
    with warehouse.write() as conn:
        if warehouse.dialect == "postgresql":
            populated = conn.execute(sa.text(
                "SELECT ispopulated FROM pg_matviews WHERE matviewname = :n"), {"n": SUMMARY}).scalar_one()
            conn.exec_driver_sql(f"REFRESH MATERIALIZED VIEW {'CONCURRENTLY ' if populated else ''}{SUMMARY}")
        else:
            conn.exec_driver_sql(f"DELETE FROM {SUMMARY}")
            conn.exec_driver_sql(
                f"INSERT INTO {SUMMARY} (snapshot_date, compared_to, active, new, removed) "
                "SELECT snapshot_date, compared_to, active, new, removed FROM icr_report_daily_counts")
        rows = int(conn.exec_driver_sql(f"SELECT count(*) FROM {SUMMARY}").scalar_one())
    log.info("Refreshed %s: %d snapshot dates", SUMMARY, rows)
    return rows
