"""The reporting side of the warehouse: what the ``icr_report_*`` views hold.

Every ``icr_report_*`` object is a plain view (migrations 0002, 0006). The per-day ones read
aggregate tables (``icr_daily_totals``, ``icr_daily_org_counts``, ``icr_daily_permission_counts``)
that the load writes for its snapshot date in its own transaction, so they answer right after
the first successful sync, with no refresh step, and stay fast over a year of history.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

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


# -- the dashboard's read side: one query per chart, over the icr_report_* views only ---------------

# name -> (SQL over a snapshot-date range :start..:end, what it shows)
CHARTS: dict[str, tuple[str, str]] = {
    "active": ("SELECT snapshot_date, active FROM icr_report_daily_counts "
               "WHERE snapshot_date BETWEEN :start AND :end ORDER BY snapshot_date",
               "active installations per snapshot date"),
    "changes": ("SELECT snapshot_date, compared_to, new, removed, removed_uninstalled, removed_suspended "
                "FROM icr_report_new_removed_daily WHERE snapshot_date BETWEEN :start AND :end "
                "ORDER BY snapshot_date",
                "new and removed installations per snapshot date"),
    "by_type": ("SELECT snapshot_date, organization_type, installations FROM icr_report_active_by_org_type_daily "
                "WHERE snapshot_date BETWEEN :start AND :end ORDER BY snapshot_date, organization_type",
                "active installations per snapshot date and organization type"),
    "by_country": ("SELECT snapshot_date, organization_country_code, installations "
                   "FROM icr_report_active_by_country_daily WHERE snapshot_date BETWEEN :start AND :end "
                   "ORDER BY snapshot_date, organization_country_code",
                   "active installations per snapshot date and country"),
    "permissions": ("SELECT snapshot_date, permission, access, installations, active "
                    "FROM icr_report_permission_adoption_daily WHERE snapshot_date BETWEEN :start AND :end "
                    "ORDER BY snapshot_date, permission, access",
                    "installations granting each permission per access level, per snapshot date"),
    "runs": ("SELECT run_id, snapshot_date, status, snapshot_source, started_at, finished_at, records_fetched, "
             "inserted, updated, removed, restored, rejected, active_after, error "
             "FROM icr_sync_runs ORDER BY started_at DESC LIMIT :limit",
             "the latest runs of the sync (icr_sync_runs)"),
}
RUNS_SHOWN = 20


@dataclass(frozen=True)
class Table:
    columns: list[str]
    rows: list[list[Any]]


def chart_table(warehouse: Warehouse, chart: str, start: date, end: date) -> Table:
    """The rows of one dashboard chart for snapshot dates ``start``..``end`` (JSON-ready values)."""
    sql, _ = CHARTS[chart]
    with warehouse.read() as conn:
        result = conn.execute(sa.text(sql), {"start": warehouse.day(start), "end": warehouse.day(end),
                                             "limit": RUNS_SHOWN})
        columns = list(result.keys())
        rows = [[_plain(v) for v in row] for row in result]
    if chart == "runs":
        columns.insert(columns.index("finished_at") + 1, "duration_seconds")
        at = columns.index("started_at")
        for row in rows:
            row.insert(at + 2, _seconds_between(row[at], row[at + 1]))
    return Table(columns, rows)


def snapshot_range(warehouse: Warehouse) -> tuple[date, date] | None:
    """The first and last snapshot dates the reporting views hold (None before the first sync)."""
    with warehouse.read() as conn:
        first, last = conn.execute(sa.text(
            "SELECT min(snapshot_date), max(snapshot_date) FROM icr_report_daily_counts")).one()
    if first is None:
        return None
    return as_date(first), as_date(last)


def _plain(value: Any) -> Any:
    """Dates and timestamps as ISO text (PostgreSQL gives objects, SQLite text already)."""
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def as_date(value: Any) -> date:
    """A date column's value as a date (PostgreSQL gives one, SQLite its ISO text)."""
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def _seconds_between(started: str | None, finished: str | None) -> float | None:
    if not started or not finished:
        return None
    return round((datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds(), 1)
