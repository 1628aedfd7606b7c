"""The reporting views over time at scale, on the local PostgreSQL (issue 22's target: ≤ 1 s per
view for a 365-day range at 1,000,000 installations).

    .venv/bin/python -m benchmarks.reporting                          # 1,000,000 installations, 365 days
    .venv/bin/python -m benchmarks.reporting --installations 2000 --days 30   # smoke

1. The load's per-day step (``icr.warehouse.daily.write_day``, the same code) for a nightly run
   over N active installations with their permission rows and history, next to a previous date of
   N (1% replaced since): what the reporting adds to every load. It writes no row per
   installation (``icr_installation_daily`` is a view over the history, migration 0011); also
   timed: counting one date's rows of that view (what a dashboard reading it directly costs).
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
import tempfile
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from benchmarks.pg import PG_ADMIN_URL, Database
from benchmarks.processes import log
from benchmarks.run import RESULTS
from icr.warehouse import daily, merge
from icr.warehouse.engine import Warehouse
from icr.warehouse.migrations import apply_migrations
from icr.warehouse.staging import Staging

TARGET_SECONDS = 1.0
SQLITE_TARGET_SECONDS = 3.0  # issue 21: the same questions on SQLite
# Issue 21's two dashboard questions, on a 365-day history: (label, SQL; :day = the last day).
QUESTIONS = [
    ("active installations by organization type on day D",
     "SELECT organization_type, installations FROM icr_report_active_by_org_type_daily WHERE snapshot_date = :day"),
    ("active per day over the last 365 days",
     "SELECT snapshot_date, active FROM icr_report_daily_counts WHERE snapshot_date BETWEEN :start AND :day "
     "ORDER BY snapshot_date"),
]
# What the reporting views read (the aggregates the load writes), copied into SQLite as they are.
AGGREGATES = ("icr_daily_totals", "icr_daily_org_counts", "icr_daily_type_counts", "icr_daily_country_counts",
              "icr_daily_permission_counts")
VIEWS = ["icr_report_daily_counts", "icr_report_dashboard_summary", "icr_report_new_removed_daily",
         "icr_report_active_by_org_type_daily", "icr_report_active_by_country_daily",
         "icr_report_permission_adoption_daily"]
TYPES = ["projectDeveloper", "validationBody", "registry", "buyer", "other"]
PERMISSIONS = ["organization_info", "organization_projects", "organization_users", "credits_read",
               "credits_transfer", "retirements", "documents", "webhooks"]


def fill_base(conn: sa.Connection, n: int, day: date) -> None:
    """N active installations on ``day`` (1% replaced since the previous date, whose totals say
    N), with history and permissions, as the loads would have left them.

    About 200 countries with a skewed spread, 5 organization types, 8 permissions with one of
    three access levels, 1-4 permissions per installation.
    """
    codes = "ARRAY[" + ",".join(f"'{chr(65 + a)}{chr(65 + b)}'" for a in range(20) for b in range(10)) + "]"
    now = datetime.now(timezone.utc)
    k = n // 100  # ids 1..k removed since the previous date, n+1..n+k new
    times = {"n": n, "k": k, "created": now - timedelta(days=400), "t0": now - timedelta(days=1),
             "t1": now - timedelta(hours=1)}
    conn.execute(sa.text(f"""
        INSERT INTO icr_installation_state (installation_id, app_id, app_name_id, organization_id, organization_name,
            organization_type, organization_country_code, organization_is_public, permissions, created_at, updated_at,
            first_seen_at, last_seen_at, deleted_at, record_hash, raw, last_sync_run_id)
        SELECT md5(i::text)::uuid, 'app', 'app', 'org-' || i, 'Organization ' || i, (ARRAY{TYPES!r})[1 + i % 5],
               ({codes})[1 + floor(200 * power(((i * 7919) % 1000) / 1000.0, 2))::int], true, '{{}}'::jsonb,
               :created, :created, CASE WHEN i > :n THEN :t1 ELSE :t0 END, :t1,
               CASE WHEN i <= :k THEN :t1 END, 'h', '{{}}'::jsonb, 'bench'
        FROM generate_series(1, CAST(:n AS bigint) + :k) AS i ORDER BY 1"""), times)
    conn.execute(sa.text("""
        INSERT INTO icr_installation_history (installation_id, valid_from, valid_to, is_deleted, record_hash,
            organization_id, organization_name, organization_type, organization_country_code, permissions, sync_run_id)
        SELECT s.installation_id, CASE WHEN s.first_seen_at = :t1 THEN :t1 ELSE :t0 END, s.deleted_at, false, 'h',
               s.organization_id, s.organization_name, s.organization_type, s.organization_country_code,
               '{}'::jsonb, 'bench'
        FROM icr_installation_state s
        UNION ALL
        SELECT s.installation_id, s.deleted_at, NULL, true, 'h', s.organization_id, s.organization_name,
               s.organization_type, s.organization_country_code, '{}'::jsonb, 'bench'
        FROM icr_installation_state s WHERE s.deleted_at IS NOT NULL"""), times)
    conn.execute(sa.text(f"""
        INSERT INTO icr_installation_permissions (installation_id, permission, access)
        SELECT md5(i::text)::uuid, (ARRAY{PERMISSIONS!r})[1 + (i + k) % 8], (ARRAY['VIEW','WRITE','ADMIN'])[1 + (i * k) % 3]
        FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS i, generate_series(0, 3) AS k
        WHERE k <= i % 4"""), {"lo": 1 + k, "hi": n + k})
    conn.execute(sa.text("INSERT INTO icr_daily_totals (snapshot_date, active, sync_run_id, as_of, loaded_at) "
                         "VALUES (:d, :n, 'bench', :t, :t)"),
                 {"d": day - timedelta(days=1), "n": n, "t": times["t0"] + timedelta(seconds=1)})
    for table in ("icr_installation_state", "icr_installation_history", "icr_installation_permissions"):
        conn.exec_driver_sql(f"ANALYZE {table}")


def time_aggregate_step(warehouse: Warehouse, day: date) -> tuple[float, dict[str, Any]]:
    """The load's per-day step for ``day`` (a nightly run), in one transaction; with the totals it wrote."""
    with warehouse.write() as conn:
        # The load's own memory setting for its transaction (merge_run sets it the same way).
        conn.execute(sa.text("SELECT set_config('work_mem', :v, true)"), {"v": merge.LoadOptions().work_mem})
        steps = merge._Steps(warehouse, conn, Staging(warehouse, "bench_reporting"),
                             {"snapshot_date": day, "run_id": "bench", "cutoff": daily.cutoff_of(day)})
        t0 = time.perf_counter()
        daily.write_day(steps, day, finished=datetime.now(timezone.utc))
        seconds = time.perf_counter() - t0
        row = conn.execute(sa.text("SELECT active, new, removed FROM icr_daily_totals WHERE snapshot_date = :d"),
                           {"d": day}).mappings().one()
    return seconds, dict(row)


def fill_history(conn: sa.Connection, first: date, days: int) -> None:
    """Dates first-days+1 .. first-1 of aggregates: copies of ``first``'s with a few % drift (the
    previous date fill_base made for the per-day step is replaced by one of them)."""
    conn.execute(sa.text("DELETE FROM icr_daily_totals WHERE snapshot_date < :first"), {"first": first})
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


def _timed(conn: sa.Connection, sql: str, params: dict[str, Any], repeat: int) -> dict[str, Any]:
    times, rows = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        rows = len(conn.execute(sa.text(sql), params).all())
        times.append(time.perf_counter() - t0)
    return {"rows": rows, "median_seconds": statistics.median(times), "max_seconds": max(times)}


def time_views(warehouse: Warehouse, start: date, end: date, repeat: int = 5) -> list[dict[str, Any]]:
    out = []
    explain = "EXPLAIN (ANALYZE, BUFFERS) " if warehouse.dialect.name == "postgresql" else "EXPLAIN QUERY PLAN "
    with warehouse.engine.connect() as conn:
        for view in VIEWS:
            sql = f"SELECT * FROM {view} WHERE snapshot_date BETWEEN :start AND :end"
            params = {"start": warehouse.day(start), "end": warehouse.day(end)}
            timed = _timed(conn, sql, params, repeat)
            plan = [" ".join(str(c) for c in r) for r in conn.execute(sa.text(explain + sql), params)]
            out.append({"view": view, **timed, "plan": plan})
            conn.rollback()
    return out


def time_questions(warehouse: Warehouse, start: date, day: date, repeat: int = 5) -> list[dict[str, Any]]:
    """Issue 21's two dashboard questions over the range."""
    params = {"start": warehouse.day(start), "day": warehouse.day(day)}
    with warehouse.engine.connect() as conn:
        return [{"question": label, **_timed(conn, sql, params, repeat)} for label, sql in QUESTIONS]


def copy_to_sqlite(source: Warehouse, path: Any) -> Warehouse:
    """A migrated SQLite warehouse holding the PostgreSQL one's per-day aggregates (all the
    reporting views read), to answer the same questions on the default warehouse."""
    target = Warehouse.from_url(f"sqlite:///{path}")
    apply_migrations(target)
    with source.read() as src, target.write() as dst:
        for table in AGGREGATES:
            result = src.execute(sa.text(f"SELECT * FROM {table}"))
            columns = list(result.keys())
            rows = [dict(zip(columns, (str(v) if isinstance(v, date) else v for v in row))) for row in result]
            if rows:
                marks = ", ".join(f":{c}" for c in columns)
                dst.execute(sa.text(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"), rows)
        for table in AGGREGATES:
            dst.exec_driver_sql(f"ANALYZE {table}")
    return target


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
        log(f"filling {n:,} installations, their history and permissions")
        t0 = time.perf_counter()
        with warehouse.write() as conn:
            fill_base(conn, n, today)
        result["fill_seconds"] = time.perf_counter() - t0
        result["aggregate_step_seconds"], result["aggregate_step_totals"] = time_aggregate_step(warehouse, today)
        with warehouse.engine.connect() as conn:
            result["view_one_date"] = _timed(conn, "SELECT count(*) FROM icr_installation_daily WHERE snapshot_date = :d",
                                             {"d": today}, 3)
        with warehouse.read() as conn:
            result["aggregate_rows_per_day"] = {t: conn.execute(sa.text(
                f"SELECT count(*) FROM {t} WHERE snapshot_date = :d"), {"d": today}).scalar_one()
                for t in ("icr_daily_org_counts", "icr_daily_country_counts", "icr_daily_permission_counts")}
        log(f"the load's aggregate step: {result['aggregate_step_seconds']:.2f} s; adding {days} days of aggregates")
        with warehouse.write() as conn:
            fill_history(conn, today, days)
        start = today - timedelta(days=days - 1)
        result["views"] = time_views(warehouse, start, today)
        result["questions"] = time_questions(warehouse, start, today)
        with tempfile.TemporaryDirectory(prefix="icr-bench-reporting-") as tmp:
            log("the same views and questions on SQLite (the aggregates copied over)")
            lite = copy_to_sqlite(warehouse, f"{tmp}/reporting.db")
            result["sqlite"] = {"views": time_views(lite, start, today),
                                "questions": time_questions(lite, start, today)}
            lite.dispose()
        warehouse.dispose()
    finally:
        db.drop()
    print(render(result))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{time.strftime('%Y%m%d-%H%M%S')}-reporting-{n}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    log(f"wrote {path}")
    return 0 if all(ok for _, ok in _verdicts(result)) else 1


def _verdicts(result: dict[str, Any]) -> list[tuple[str, bool]]:
    """(what, met) for every view and question, on both dialects."""
    out = []
    for dialect, part, limit in (("PostgreSQL", result, TARGET_SECONDS),
                                 ("SQLite", result.get("sqlite") or {}, SQLITE_TARGET_SECONDS)):
        for item in part.get("views", []) + part.get("questions", []):
            out.append((f"{dialect}: {item.get('view') or item['question']}", item["median_seconds"] <= limit))
    return out


def render(result: dict[str, Any]) -> str:
    n, days = result["installations"], result["days"]
    lines = [f"Reporting at {n:,} installations x {days} days (PostgreSQL)",
             f"  the load's per-day aggregate step: {result['aggregate_step_seconds']:.2f} s "
             f"({result['aggregate_rows_per_day']['icr_daily_org_counts']:,} type x country rows, "
             f"{result['aggregate_rows_per_day']['icr_daily_country_counts']:,} countries, "
             f"{result['aggregate_rows_per_day']['icr_daily_permission_counts']:,} permission rows a day; "
             f"totals {result['aggregate_step_totals']})",
             f"  one date's rows of the view icr_installation_daily (count, derived from history): "
             f"{result['view_one_date']['median_seconds']:.2f} s (reported, no target)",
             f"  {'view (whole range)':<40} {'rows':>8} {'median':>8} {'max':>8}  target <= {TARGET_SECONDS:.0f} s"]
    for v in result["views"]:
        ok = "MET" if v["median_seconds"] <= TARGET_SECONDS else "MISS"
        lines.append(f"  {v['view']:<40} {v['rows']:>8,} {v['median_seconds']:>7.3f}s {v['max_seconds']:>7.3f}s  {ok}")
    for dialect, part, limit in (("PostgreSQL", result, TARGET_SECONDS),
                                 ("SQLite", result.get("sqlite") or {}, SQLITE_TARGET_SECONDS)):
        items = [(q["question"], q) for q in part.get("questions", [])]
        if dialect == "SQLite":
            items = [(v["view"], v) for v in part.get("views", [])] + items
        if items:
            lines.append(f"  {dialect} (target <= {limit:.0f} s)")
        for label, q in items:
            ok = "MET" if q["median_seconds"] <= limit else "MISS"
            lines.append(f"  {label:<52} {q['rows']:>8,} {q['median_seconds']:>7.3f}s  {ok}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
