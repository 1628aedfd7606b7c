"""Print what the warehouse holds: counts per table, the latest runs and a few report rows.

    python -m icr.report [--url SQLALCHEMY_URL]     (default: the icr_warehouse connection,
                                                     else the SQLite file under AIRFLOW_HOME)
Used by the demo; handy after any run to see what a dashboard will see.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd
import sqlalchemy as sa

from icr.warehouse.engine import Warehouse

# icr_installation_daily is a view deriving each date from the history (migration 0011): counting
# all of it would derive every date; its dates are the rows of icr_report_dashboard_summary.
TABLES = ["icr_installations", "icr_installation_permissions", "icr_installation_history",
          "icr_installation_daily_archive", "icr_sync_runs", "icr_rejected_records", "icr_report_dashboard_summary"]
VIEWS = {
    "icr_report_daily_counts": "SELECT * FROM icr_report_daily_counts ORDER BY snapshot_date DESC",
    "icr_report_by_org_type_country": "SELECT * FROM icr_report_by_org_type_country "
                                      "ORDER BY installations DESC, organization_type, organization_country_code",
    "icr_report_permissions_summary": "SELECT * FROM icr_report_permissions_summary "
                                      "ORDER BY permission, access",
    "icr_report_active_installations": "SELECT installation_id, organization_name, organization_type, "
                                       "organization_country_code, created_at, last_seen_at "
                                       "FROM icr_report_active_installations ORDER BY created_at DESC",
}
RUN_COLUMNS = ("run_id, snapshot_date, status, snapshot_source, records_fetched, inserted, updated, "
               "unchanged, removed, restored, rejected, api_total, snapshot_complete, daily_rows")


def report(warehouse: Warehouse, rows: int = 5) -> str:
    out = [f"Warehouse: {warehouse.description}", ""]
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_colwidth", 40):
        with warehouse.read() as conn:
            counts = {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES}
            active = conn.execute(sa.text(
                "SELECT count(*) FROM icr_installations WHERE deleted_at IS NULL")).scalar_one()
        out.append("Rows per table:")
        out += [f"  {t:<32} {n:>10,}" for t, n in counts.items()]
        out.append(f"  {'(active installations)':<32} {active:>10,}")
        runs = pd.read_sql(sa.text(f"SELECT {RUN_COLUMNS} FROM icr_sync_runs ORDER BY started_at DESC"),
                           warehouse.engine).head(rows)
        out += ["", "Latest runs (icr_sync_runs):", runs.to_string(index=False)]
        for view, sql in VIEWS.items():
            frame = pd.read_sql(sa.text(sql), warehouse.engine).head(rows)
            out += ["", f"{view} (first {rows} rows):", frame.to_string(index=False)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="SQLAlchemy URL of the warehouse")
    parser.add_argument("--rows", type=int, default=5)
    args = parser.parse_args(argv)
    warehouse = Warehouse.from_url(args.url) if args.url else Warehouse.from_airflow()
    try:
        print(report(warehouse, args.rows))
    finally:
        warehouse.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
