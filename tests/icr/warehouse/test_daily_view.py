"""icr_installation_daily as a view over the history (migration 0011, issue 21), both dialects:
a no-change night writes a few rows, not one per installation; the dates loaded before the
migration keep exactly the rows they had; the changes of a day follow from the history."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import sqlalchemy as sa

from icr.warehouse import migrations
from icr.warehouse.migrations import apply_migrations
from tests.icr.warehouse.helpers import scalar
from tests.icr.warehouse.test_load import sync
from tests.support.records import make_record

DAILY_COLUMNS = ["snapshot_date", "installation_id", "organization_id", "organization_type",
                 "organization_country_code", "sync_run_id"]


def row_counts(warehouse) -> dict[str, int]:
    with warehouse.read() as conn:
        tables = [t for t in sa.inspect(conn).get_table_names() if t.startswith("icr_")]
        return {t: int(conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()) for t in tables}


def daily_rows(warehouse, day: date) -> list[tuple[str, ...]]:
    with warehouse.read() as conn:
        result = conn.execute(sa.text("SELECT * FROM icr_installation_daily WHERE snapshot_date = :d "
                                      "ORDER BY installation_id"), {"d": warehouse.day(day)})
        assert list(result.keys()) == DAILY_COLUMNS
        return [tuple(str(v)[:10] if i == 0 else str(v) for i, v in enumerate(r)) for r in result]


def totals(warehouse, day: date) -> dict:
    with warehouse.read() as conn:
        return dict(conn.execute(sa.text("SELECT * FROM icr_daily_totals WHERE snapshot_date = :d"),
                                 {"d": warehouse.day(day)}).mappings().one())


def test_a_no_change_night_writes_a_few_rows_not_one_per_installation(warehouse):
    now = datetime.now(timezone.utc)
    records = [make_record(i, created=now - timedelta(days=30)) for i in range(300)]
    sync(warehouse, records, when=now - timedelta(days=1))  # yesterday's date, then tonight's
    before = row_counts(warehouse)
    run, result = sync(warehouse, records, when=now)
    assert result["unchanged"] == 300 and result["daily_rows"] == 300
    after = row_counts(warehouse)
    growth = {t: after[t] - before.get(t, 0) for t in after}
    # the run row, the date's totals and its counts: 3 types x 3 countries (paired), 2 permissions
    assert max(growth.values()) <= 3, growth
    assert sum(growth.values()) <= 13, growth
    # and the date's rows are still there to read, as the view derives them
    assert len(daily_rows(warehouse, now.date())) == 300
    assert totals(warehouse, now.date())["active"] == 300


def test_the_view_has_the_contract_columns_and_a_date_per_totals_row(warehouse):
    now = datetime.now(timezone.utc)
    records = [make_record(i, created=now - timedelta(days=30)) for i in range(20)]
    run, _ = sync(warehouse, records)
    assert "icr_installation_daily" in sa.inspect(warehouse.engine).get_view_names()
    rows = daily_rows(warehouse, now.date())
    assert len(rows) == 20 and {r[5] for r in rows} == {run.run_id}
    assert rows[0][1] == records[0]["id"] and rows[0][3] == "projectDeveloper" and rows[0][4] == "CR"
    assert scalar(warehouse, "SELECT count(*) FROM icr_installation_daily") == 20  # one date loaded


def _migrate_to_0010(warehouse, monkeypatch) -> None:
    real = migrations.available
    monkeypatch.setattr(migrations, "available", lambda dialect: [m for m in real(dialect) if m.version < "0011"])
    apply_migrations(warehouse)
    monkeypatch.setattr(migrations, "available", real)


def test_a_date_loaded_before_the_migration_keeps_exactly_its_rows(warehouse, monkeypatch):
    _migrate_to_0010(warehouse, monkeypatch)
    now = datetime.now(timezone.utc)
    old_day = (now - timedelta(days=3)).date()
    records = [make_record(i, created=now - timedelta(days=30)) for i in range(5)]
    # What a load before 0011 stored for old_day: rows the history of today could not give back
    # (an organization type that has changed since, an installation it never saw).
    stored = [(records[i]["id"], f"org-{i}", "oldType" if i == 0 else "other", "NO", "old_run") for i in range(4)]
    stored.append(("00000000-0000-0000-0000-0000000000ff", "org-x", "buyer", "SE", "old_run"))
    with warehouse.write() as conn:
        conn.execute(sa.text(
            "INSERT INTO icr_installation_daily (snapshot_date, installation_id, organization_id, organization_type, "
            "organization_country_code, sync_run_id) VALUES (:d, :i, :o, :t, :c, :r)"),
            [dict(d=warehouse.day(old_day), i=i, o=o, t=t, c=c, r=r) for i, o, t, c, r in stored])
        conn.execute(sa.text("INSERT INTO icr_daily_totals (snapshot_date, active, sync_run_id) VALUES (:d, 5, 'old_run')"),
                     {"d": warehouse.day(old_day)})
    apply_migrations(warehouse)  # 0011
    expected = sorted((old_day.isoformat(), *row) for row in stored)
    assert daily_rows(warehouse, old_day) == expected
    # Tonight's run compares with the archived date: 4 of its 5 still there, record 4 is new.
    run, _ = sync(warehouse, records)
    assert daily_rows(warehouse, old_day) == expected
    today = totals(warehouse, now.date())
    assert (str(today["compared_to"])[:10], today["active"], today["new"], today["removed"]) == (
        old_day.isoformat(), 5, 1, 1)
    # A rerun of the archived date derives it from history like any other past date.
    sync(warehouse, records, when=now - timedelta(days=3))
    assert [r[1] for r in daily_rows(warehouse, old_day)] == sorted(r["id"] for r in records)
    assert scalar(warehouse, "SELECT count(*) FROM icr_installation_daily_archive") == 0


def test_changes_between_nights_come_from_the_history(warehouse):
    now = datetime.now(timezone.utc)
    records = [make_record(i, created=now - timedelta(days=30)) for i in range(30)]
    sync(warehouse, records, when=now - timedelta(days=1))
    tonight = records[3:] + [make_record(100 + i, created=now - timedelta(hours=1)) for i in range(4)]
    tonight[0] = {**tonight[0], "appNameId": "renamed"}  # an update is neither new nor removed
    sync(warehouse, tonight)
    today = totals(warehouse, now.date())
    assert (today["active"], today["new"], today["removed"]) == (31, 4, 3)
    assert today["as_of"] is not None
    # The two dates' rows agree with those counts.
    yesterday = {r[1] for r in daily_rows(warehouse, (now - timedelta(days=1)).date())}
    current = {r[1] for r in daily_rows(warehouse, now.date())}
    assert (len(current - yesterday), len(yesterday - current)) == (4, 3)


def test_a_past_date_keeps_its_rows_when_a_later_run_finds_an_older_installation(warehouse):
    """The view reads a date's history only as far as the load that wrote it knew it: an
    installation created before the date but first listed by a later run does not join it."""
    now = datetime.now(timezone.utc)
    records = [make_record(i, created=now - timedelta(days=30)) for i in range(10)]
    day = (now - timedelta(days=1)).date()
    sync(warehouse, records, when=now - timedelta(days=1))
    before = daily_rows(warehouse, day)
    late = make_record(50, created=now - timedelta(days=10))  # the API listed it only today
    sync(warehouse, records + [late])
    assert daily_rows(warehouse, day) == before and len(before) == totals(warehouse, day)["active"] == 10
    assert (totals(warehouse, now.date())["new"], totals(warehouse, now.date())["removed"]) == (1, 0)
