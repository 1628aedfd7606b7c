"""The reporting views over time at scale, on the local PostgreSQL (issue 22's target: ≤ 1 s per
view for a 365-day range at 1,000,000 installations).

    .venv/bin/python -m benchmarks.reporting                          # 1,000,000 installations, 365 days
    .venv/bin/python -m benchmarks.reporting --installations 2000 --days 30   # smoke

1. The load's per-day aggregate step (the statements ``merge._write_daily_aggregates`` runs, the
   same SQL) for one date whose ``icr_installation_daily`` holds N rows, next to a previous date of
   N rows, with N installations' permission rows: what the reporting adds to every load.
2. Each per-day ``icr_report_*`` view over the whole range, after ``--days`` dates of aggregates:
   the first date's aggregates are the ones step 1 wrote; the other dates copy them with drift
   (the views read only the aggregate tables, so a 365-day history of them is all they need,
   not 365 x N daily rows). Median of 5 runs, and the plan (EXPLAIN ANALYZE) of each.

Prints a table and writes ``benchmarks/results/<timestamp>-reporting.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa

from benchmarks.pg import PG_ADMIN_URL, Database
from benchmarks.processes import log
from benchmarks.run import RESULTS
from icr.warehouse import merge
from icr.warehouse.engine import Warehouse
from icr.warehouse.migrations import apply_migrations
from icr.warehouse.staging import Staging

TARGET_SECONDS = 1.0
VIEWS = ["icr_report_daily_counts", "icr_report_dashboard_summary", "icr_report_new_removed_daily",
         "icr_report_active_by_org_type_daily", "icr_report_active_by_country_daily",
         "icr_report_permission_adoption_daily"]
TYPES = ["projectDeveloper", "validationBody", "registry", "buyer", "other"]
PERMISSIONS = ["organization_info", "organization_projects", "organization_users", "credits_read",
               "credits_transfer", "retirements", "documents", "webhooks"]


def fill_base(conn: sa.Connection, n: int, day: date) -> None:
    """Two snapshot dates of n installations (1% replaced between them) and their permissions.

    About 200 countries with a skewed spread, 5 organization types, 8 permissions with one of
    three access levels, 1-4 permissions per installation.
    """
    codes = "ARRAY[" + ",".join(f"'{chr(65 + a)}{chr(65 + b)}'" for a in range(20) for b in range(10)) + "]"
    for d, lo in ((day - timedelta(days=1), 1), (day, 1 + n // 100)):
        conn.execute(sa.text(f"""
            INSERT INTO icr_installation_daily (snapshot_date, installation_id, organization_id, organization_type,
                                                organization_country_code, sync_run_id)
            SELECT :d, md5(i::text)::uuid, 'org-' || i, (ARRAY{TYPES!r})[1 + i % 5],
                   ({codes})[1 + floor(200 * power(((i * 7919) % 1000) / 1000.0, 2))::int], 'bench'
            FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS i ORDER BY 2"""), {"d": d, "lo": lo, "hi": lo + n - 1})
    conn.execute(sa.text(f"""
        INSERT INTO icr_installation_permissions (installation_id, permission, access)
        SELECT md5(i::text)::uuid, (ARRAY{PERMISSIONS!r})[1 + (i + k) % 8], (ARRAY['VIEW','WRITE','ADMIN'])[1 + (i * k) % 3]
        FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS i, generate_series(0, 3) AS k
        WHERE k <= i % 4"""), {"lo": 1 + n // 100, "hi": n + n // 100})
    conn.exec_driver_sql("ANALYZE icr_installation_daily")
    conn.exec_driver_sql("ANALYZE icr_installation_permissions")


def time_aggregate_step(warehouse: Warehouse, n: int, day: date) -> float:
    """The load's aggregate statements for ``day`` (current-day path), in one transaction."""
    with warehouse.write() as conn:
        # The load's own memory setting for its transaction (merge_run sets it the same way).
        conn.execute(sa.text("SELECT set_config('work_mem', :v, true)"), {"v": merge.LoadOptions().work_mem})
        steps = merge._Steps(warehouse, conn, Staging(warehouse, "bench_reporting"),
                             {"snapshot_date": day, "run_id": "bench", "cutoff": None})
        t0 = time.perf_counter()
        merge._write_daily_aggregates(steps, current=True, active=n)
        return time.perf_counter() - t0


def fill_history(conn: sa.Connection, first: date, days: int) -> None:
    """Dates first-days+1 .. first-1 of aggregates: copies of ``first``'s with a few % drift."""
    conn.execute(sa.text("""
        INSERT INTO icr_daily_org_counts (snapshot_date, organization_type, organization_country_code, installations)
        SELECT c.snapshot_date - g, c.organization_type, c.organization_country_code,
               greatest(0, c.installations - (g * (1 + length(c.organization_country_code || c.organization_type)) % 7))
        FROM icr_daily_org_counts c, generate_series(1, CAST(:back AS integer)) AS g WHERE c.snapshot_date = :first"""),
                 {"first": first, "back": days - 1})
    for table, column in (("icr_daily_type_counts", "organization_type"),
                          ("icr_daily_country_counts", "organization_country_code")):
        conn.execute(sa.text(f"""
            INSERT INTO {table} (snapshot_date, {column}, installations)
            SELECT c.snapshot_date - g, c.{column}, greatest(0, c.installations - (g * length(c.{column})) % 7)
            FROM {table} c, generate_series(1, CAST(:back AS integer)) AS g WHERE c.snapshot_date = :first"""),
                     {"first": first, "back": days - 1})
    conn.execute(sa.text("""
        INSERT INTO icr_daily_permission_counts (snapshot_date, permission, access, installations)
        SELECT c.snapshot_date - g, c.permission, c.access, greatest(0, c.installations - g * 11)
        FROM icr_daily_permission_counts c, generate_series(1, CAST(:back AS integer)) AS g WHERE c.snapshot_date = :first"""),
                 {"first": first, "back": days - 1})
    conn.execute(sa.text("""
        INSERT INTO icr_daily_totals (snapshot_date, compared_to, active, new, removed, sync_run_id)
        SELECT t.snapshot_date - g, t.snapshot_date - g - 1, t.active - g * 40, 120 + g % 50, 80 + g % 30, 'bench'
        FROM icr_daily_totals t, generate_series(1, CAST(:back AS integer)) AS g WHERE t.snapshot_date = :first"""),
                 {"first": first, "back": days - 1})
    for table in ("icr_daily_totals", "icr_daily_org_counts", "icr_daily_type_counts", "icr_daily_country_counts",
                  "icr_daily_permission_counts"):
        conn.exec_driver_sql(f"ANALYZE {table}")


def time_views(warehouse: Warehouse, start: date, end: date, repeat: int = 5) -> list[dict[str, Any]]:
    out = []
    with warehouse.engine.connect() as conn:
        for view in VIEWS:
            sql = f"SELECT * FROM {view} WHERE snapshot_date BETWEEN :start AND :end"
            times, rows = [], 0
            for _ in range(repeat):
                t0 = time.perf_counter()
                rows = len(conn.execute(sa.text(sql), {"start": start, "end": end}).all())
                times.append(time.perf_counter() - t0)
            plan = [r[0] for r in conn.execute(sa.text(f"EXPLAIN (ANALYZE, BUFFERS) {sql}"),
                                               {"start": start, "end": end})]
            out.append({"view": view, "rows": rows, "median_seconds": statistics.median(times),
                        "max_seconds": max(times), "plan": plan})
            conn.rollback()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--installations", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--pg-url", default=PG_ADMIN_URL, help="PostgreSQL server (an admin database URL)")
    args = parser.parse_args(argv)
    n, days = args.installations, args.days
    today = date.today()
    db = Database(args.pg_url, f"icr_bench_reporting_{uuid.uuid4().hex[:8]}")
    result: dict[str, Any] = {"installations": n, "days": days, "target_seconds": TARGET_SECONDS}
    try:
        warehouse = Warehouse.from_url(db.url)
        apply_migrations(warehouse)
        log(f"filling 2 snapshot dates of {n:,} installations and their permissions")
        t0 = time.perf_counter()
        with warehouse.write() as conn:
            fill_base(conn, n, today)
        result["fill_seconds"] = time.perf_counter() - t0
        result["aggregate_step_seconds"] = time_aggregate_step(warehouse, n, today)
        with warehouse.read() as conn:
            result["aggregate_rows_per_day"] = {t: conn.execute(sa.text(
                f"SELECT count(*) FROM {t} WHERE snapshot_date = :d"), {"d": today}).scalar_one()
                for t in ("icr_daily_org_counts", "icr_daily_country_counts", "icr_daily_permission_counts")}
        log(f"the load's aggregate step: {result['aggregate_step_seconds']:.2f} s; adding {days} days of aggregates")
        with warehouse.write() as conn:
            fill_history(conn, today, days)
        start = today - timedelta(days=days - 1)
        result["views"] = time_views(warehouse, start, today)
        warehouse.dispose()
    finally:
        db.drop()
    print(render(result))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{time.strftime('%Y%m%d-%H%M%S')}-reporting-{n}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    log(f"wrote {path}")
    return 0 if all(v["median_seconds"] <= TARGET_SECONDS for v in result["views"]) else 1


def render(result: dict[str, Any]) -> str:
    n, days = result["installations"], result["days"]
    lines = [f"Reporting at {n:,} installations x {days} days (PostgreSQL)",
             f"  the load's per-day aggregate step: {result['aggregate_step_seconds']:.2f} s "
             f"({result['aggregate_rows_per_day']['icr_daily_org_counts']:,} type x country rows, "
             f"{result['aggregate_rows_per_day']['icr_daily_country_counts']:,} countries, "
             f"{result['aggregate_rows_per_day']['icr_daily_permission_counts']:,} permission rows a day)",
             f"  {'view (whole range)':<40} {'rows':>8} {'median':>8} {'max':>8}  target <= {TARGET_SECONDS:.0f} s"]
    for v in result["views"]:
        ok = "MET" if v["median_seconds"] <= TARGET_SECONDS else "MISS"
        lines.append(f"  {v['view']:<40} {v['rows']:>8,} {v['median_seconds']:>7.3f}s {v['max_seconds']:>7.3f}s  {ok}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
