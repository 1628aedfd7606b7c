"""The reporting objects (``icr_report_*``) on both warehouses: queryable right after the first
sync, and the per-day views' numbers after syncs and backfills with known changes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from icr.hooks import ICRHook
from icr.sync import SyncSettings, run_sync
from icr.warehouse.runlog import RunContext


def report_objects(warehouse) -> list[str]:
    """Every icr_report_* table, view or materialized view in the warehouse."""
    if warehouse.dialect_name == "postgresql":
        sql = ("SELECT relname FROM pg_class WHERE relname LIKE 'icr\\_report\\_%' "
               "AND relkind IN ('r', 'v', 'm') AND relnamespace = 'public'::regnamespace ORDER BY relname")
    else:
        sql = ("SELECT name FROM sqlite_master WHERE name LIKE 'icr\\_report\\_%' ESCAPE '\\' "
               "AND type IN ('table', 'view') ORDER BY name")
    with warehouse.read() as conn:
        return [r[0] for r in conn.execute(sa.text(sql))]


def test_every_report_object_answers_right_after_the_first_sync(warehouse, simulator, icr_connection):
    """Issue 18 item 3: no refresh DAG, no other step: one sync, then every object answers."""
    icr_connection(simulator)
    run = RunContext("first_sync", datetime.now(timezone.utc), "icr_installations_sync")
    run_sync(warehouse, ICRHook(), run, SyncSettings())
    objects = report_objects(warehouse)
    assert "icr_report_dashboard_summary" in objects and len(objects) >= 5, objects
    failures = {}
    for name in objects:
        try:
            with warehouse.read() as conn:
                conn.execute(sa.text(f"SELECT * FROM {name}")).all()
        except sa.exc.DBAPIError as exc:
            failures[name] = str(exc.orig).splitlines()[0]
    assert not failures, failures
    with warehouse.read() as conn:
        summary = conn.execute(sa.text(
            "SELECT snapshot_date, active, new, removed FROM icr_report_dashboard_summary")).all()
    assert [(str(d)[:10], a, n, r) for d, a, n, r in summary] == [
        (run.snapshot_date.isoformat(), simulator.count, None, None)]


# --- the per-day views' numbers after syncs and backfills with known changes ---------------------

TODAY = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
PER_DAY_VIEWS = {
    "icr_report_daily_counts": ("snapshot_date, compared_to, active, new, removed", "snapshot_date"),
    "icr_report_dashboard_summary": ("snapshot_date, compared_to, active, new, removed", "snapshot_date"),
    "icr_report_new_removed_daily": ("snapshot_date, compared_to, new, removed, removed_uninstalled, "
                                     "removed_suspended", "snapshot_date"),
    "icr_report_active_by_org_type_daily": ("snapshot_date, organization_type, installations",
                                            "snapshot_date, organization_type"),
    "icr_report_active_by_country_daily": ("snapshot_date, organization_country_code, installations",
                                           "snapshot_date, organization_country_code"),
    "icr_report_permission_adoption_daily": ("snapshot_date, permission, access, installations, active",
                                             "snapshot_date, permission, access"),
}


def _day(n: int) -> str:
    return (TODAY - timedelta(days=n)).date().isoformat()


def _records():
    """0-9 created long ago, 10 and 11 two days ago at noon, 12 yesterday at noon."""
    from tests.support.records import make_record

    recs = [make_record(i) for i in range(10)]
    recs += [make_record(i, created=TODAY - timedelta(days=2, hours=-12)) for i in (10, 11)]
    recs += [make_record(12, created=TODAY - timedelta(days=1, hours=-12))]
    return recs


def _sync(warehouse, records, day: int) -> None:
    from tests.icr.warehouse.helpers import StaticHook

    when = datetime.now(timezone.utc) - timedelta(days=day)
    run_sync(warehouse, StaticHook(records), RunContext(f"run_{day}_{datetime.now().timestamp()}", when, "t"))


def load_four_days(warehouse, removed: int) -> None:
    """Today's run, a backfill of the three days before (oldest last), then today's run again
    after ICR dropped record ``removed``."""
    recs = _records()
    _sync(warehouse, recs, 0)
    for day in (3, 2, 1):
        _sync(warehouse, recs, day)
    _sync(warehouse, [r for r in recs if r is not recs[removed]], 0)


def view_rows(warehouse, view: str) -> list[tuple]:
    columns, order = PER_DAY_VIEWS[view]
    with warehouse.read() as conn:
        result = conn.execute(sa.text(f"SELECT {columns} FROM {view} ORDER BY {order}"))
        dates = [i for i, name in enumerate(result.keys()) if name in ("snapshot_date", "compared_to")]
        # Dates as 'YYYY-MM-DD' on both dialects (PostgreSQL returns date objects).
        return [tuple(str(v) if i in dates and v is not None else v for i, v in enumerate(row)) for row in result]


def expected_rows(view: str, days: dict[str, list[dict]]) -> list[tuple]:
    """What each view must hold for snapshots {date: records active that day}, computed in Python."""
    out = []
    dates = sorted(days)
    for i, d in enumerate(dates):
        recs = days[d]
        prev = dates[i - 1] if i else None
        ids, before = {r["id"] for r in recs}, {r["id"] for r in days[prev]} if prev else set()
        new, removed = (len(ids - before), len(before - ids)) if prev else (None, None)
        if view in ("icr_report_daily_counts", "icr_report_dashboard_summary"):
            out.append((d, prev, len(recs), new, removed))
        elif view == "icr_report_new_removed_daily":
            out.append((d, prev, new, removed, None, None))
        elif view == "icr_report_active_by_org_type_daily":
            out += [(d, t, sum(1 for r in recs if r["organization"]["type"] == t))
                    for t in sorted({r["organization"]["type"] for r in recs})]
        elif view == "icr_report_active_by_country_daily":
            out += [(d, c, sum(1 for r in recs if r["organization"]["countryCode"] == c))
                    for c in sorted({r["organization"]["countryCode"] for r in recs})]
        else:
            grants = sorted({(p, a) for r in recs for p, a in r["permissions"].items()})
            out += [(d, p, a, sum(1 for r in recs if r["permissions"].get(p) == a), len(recs)) for p, a in grants]
    return out


def test_views_over_time_after_syncs_and_a_backfill_with_known_changes(warehouse):
    recs = _records()
    _sync(warehouse, recs, 0)  # the nightly run: reads the API
    for day in (1, 3, 2):  # a backfill, out of order: each date also becomes the next one's comparison
        _sync(warehouse, recs, day)
    # ICR drops 3 and 4, and 0 now grants organization_projects: the next nightly run.
    changed = [dict(r, permissions={**r["permissions"], "organization_projects": "READ"})
               if r["id"] == recs[0]["id"] else r for r in recs if r not in (recs[3], recs[4])]
    _sync(warehouse, changed, 0)
    _sync(warehouse, changed, 1)  # rerunning a past day gives that day's result again

    days = {_day(3): recs[:10], _day(2): recs[:12], _day(1): recs, _day(0): changed}
    for view in PER_DAY_VIEWS:
        assert view_rows(warehouse, view) == expected_rows(view, days), view
    # The numbers the test relies on, spelled out once.
    assert view_rows(warehouse, "icr_report_new_removed_daily") == [
        (_day(3), None, None, None, None, None), (_day(2), _day(3), 2, 0, None, None),
        (_day(1), _day(2), 1, 0, None, None), (_day(0), _day(1), 0, 2, None, None)]


def test_a_backfill_of_a_date_before_the_first_one_becomes_its_comparison(warehouse):
    recs = _records()
    _sync(warehouse, recs, 0)
    assert view_rows(warehouse, "icr_report_daily_counts") == [(_day(0), None, 13, None, None)]
    _sync(warehouse, recs, 2)
    assert view_rows(warehouse, "icr_report_daily_counts") == [
        (_day(2), None, 12, None, None), (_day(0), _day(2), 13, 1, 0)]


def test_migration_0005_fills_the_aggregates_of_dates_loaded_before_it(warehouse):
    """A warehouse of the previous release: its dates get the same numbers the load writes."""
    from icr.warehouse.migrations import apply_migrations, available, split_statements

    load_four_days(warehouse, removed=5)
    written_by_the_load = {view: view_rows(warehouse, view) for view in PER_DAY_VIEWS}

    # Back to the schema before 0005: icr_installation_daily a table again (holding what the view
    # shows: before 0011), drop what 0005/0006 made, restore 0002's view and 0003's summary.
    old = {m.version: m for m in available(warehouse.dialect_name)}
    with warehouse.write() as conn:
        conn.exec_driver_sql("CREATE TABLE icr_daily_stored AS SELECT * FROM icr_installation_daily")
        conn.exec_driver_sql("DROP VIEW icr_installation_daily")
        conn.exec_driver_sql("DROP TABLE icr_installation_daily_archive")
        conn.exec_driver_sql("ALTER TABLE icr_daily_stored RENAME TO icr_installation_daily")
        conn.exec_driver_sql("DROP INDEX icr_installation_history_valid_from_idx")
        for view in PER_DAY_VIEWS:
            conn.exec_driver_sql(f"DROP VIEW {view}")
        for table in ("icr_daily_totals", "icr_daily_org_counts", "icr_daily_type_counts",
                      "icr_daily_country_counts", "icr_daily_permission_counts"):
            conn.exec_driver_sql(f"DROP TABLE {table}")
        statements = split_statements(old["0002"].sql)
        conn.exec_driver_sql(next(s for s in statements if "icr_report_daily_counts AS" in s))
        for statement in split_statements(old["0003"].sql):
            conn.exec_driver_sql(statement)
        conn.exec_driver_sql("DELETE FROM icr_schema_migrations WHERE version IN ('0005', '0006', '0011')")

    assert apply_migrations(warehouse) == ["0005", "0006", "0011"]
    assert {view: view_rows(warehouse, view) for view in PER_DAY_VIEWS} == written_by_the_load


def test_refresh_reporting_needs_nothing_and_counts_the_dates(warehouse):
    from icr.warehouse.reporting import refresh_reporting

    recs = _records()
    _sync(warehouse, recs, 0)
    _sync(warehouse, recs, 1)
    assert refresh_reporting(warehouse) == 2
