"""The warehouse load on both dialects: first load, updates, no-change reruns, removals and
returns, incomplete snapshots, the mass-removal guard, rejects, schema drift, time zones,
daily snapshots for past dates, and a failure injected mid-load."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from itertools import count

import pandas as pd
import pytest
import sqlalchemy as sa

from icr.errors import MassRemovalError, RejectThresholdError
from icr.sync import SyncSettings, extract, fail, load, run_sync
from icr.warehouse import merge as merge_module
from icr.warehouse import removals
from icr.warehouse import statements as statements_module
from icr.warehouse.migrations import apply_migrations, available
from icr.warehouse.runlog import RunContext, get_run
from icr.warehouse.staging import Staging
from tests.icr.warehouse.helpers import StaticHook, permission_mismatches, scalar
from tests.support.records import make_record
from tests.support.warehouse import run_rows, table_fingerprint

_runs = count(1)


def ctx(when: datetime | None = None) -> RunContext:
    return RunContext(run_id=f"test_run_{next(_runs)}", logical_date=when or datetime.now(timezone.utc),
                      dag_id="test")


def sync(warehouse, records, settings: SyncSettings | None = None, when=None, **hook_kw):
    run = ctx(when)
    result = run_sync(warehouse, StaticHook(records, **hook_kw), run, settings or SyncSettings())
    return run, result


def active_ids(warehouse) -> set[str]:
    with warehouse.read() as conn:
        return {str(r[0]) for r in conn.execute(sa.text(
            "SELECT installation_id FROM icr_installations WHERE deleted_at IS NULL"))}


def test_migrations_apply_once_in_order(warehouse):
    expected = ["0001", "0002", "0003"] + (["0004"] if warehouse.dialect_name == "postgresql" else []) + ["0005", "0006", "0008", "0009", "0010", "0011", "0012", "0013"]
    assert apply_migrations(warehouse) == expected
    assert apply_migrations(warehouse) == []
    names = set(sa.inspect(warehouse.engine).get_table_names())
    assert {"icr_installation_state", "icr_installation_permissions", "icr_installation_history",
            "icr_sync_runs", "icr_rejected_records"} <= names
    views = set(sa.inspect(warehouse.engine).get_view_names())
    assert {"icr_installations", "icr_installation_daily", "icr_report_active_installations", "icr_report_daily_counts",
            "icr_report_by_org_type_country", "icr_report_permissions_summary"} <= views


def test_first_load_fills_every_table(warehouse):
    records = [make_record(i) for i in range(120)]
    run, result = sync(warehouse, records)
    assert (result["inserted"], result["updated"], result["unchanged"], result["removed"]) == (120, 0, 0, 0)
    row = get_run(warehouse, run.run_id)
    assert row["status"] == "success" and row["records_fetched"] == 120 and row["snapshot_complete"]
    assert row["api_total"] == 120 and row["daily_rows"] == 120 and row["active_after"] == 120
    assert active_ids(warehouse) == {r["id"] for r in records}
    # The contract view has exactly the contract's columns (removal_reason: migration 0009, added last).
    with warehouse.read() as conn:
        cols = list(conn.execute(sa.text("SELECT * FROM icr_installations LIMIT 1")).keys())
    assert cols == ["installation_id", "app_id", "app_name_id", "organization_id", "organization_name",
                    "organization_type", "organization_country_code", "organization_is_public", "permissions",
                    "created_at", "updated_at", "first_seen_at", "last_seen_at", "deleted_at", "record_hash",
                    "raw", "last_sync_run_id", "removal_reason"]
    # One permission row per permission; projects granted by the 60 odd records.
    assert scalar(warehouse, "SELECT count(*) FROM icr_installation_permissions") == 120 + 60
    assert scalar(warehouse, "SELECT count(*) FROM icr_installation_history") == 120
    assert scalar(warehouse, "SELECT count(*) FROM icr_installation_daily WHERE snapshot_date = :d",
                  d=warehouse.day(run.snapshot_date)) == 120
    # The raw record is kept as received (same JSON).
    raw = scalar(warehouse, "SELECT raw FROM icr_installations WHERE organization_name = 'Organization 7'")
    assert (raw if isinstance(raw, dict) else json.loads(raw)) == records[7]


def test_update_writes_only_changed_rows_and_history(warehouse):
    records = [make_record(i) for i in range(40)]
    sync(warehouse, records)
    records[3]["permissions"]["organization_members"] = "REQUEST"
    records[5]["organization"]["fullName"] = "Renamed Org"
    run, result = sync(warehouse, records)
    assert (result["inserted"], result["updated"], result["unchanged"]) == (0, 2, 38)
    assert scalar(warehouse, "SELECT count(*) FROM icr_installation_history WHERE installation_id = :i",
                  i=records[5]["id"]) == 2
    assert scalar(warehouse, "SELECT organization_name FROM icr_installations WHERE installation_id = :i",
                  i=records[5]["id"]) == "Renamed Org"
    assert scalar(warehouse, "SELECT access FROM icr_installation_permissions WHERE installation_id = :i "
                             "AND permission = 'organization_members'", i=records[3]["id"]) == "REQUEST"
    assert scalar(warehouse, "SELECT count(*) FROM icr_installation_history WHERE valid_to IS NULL") == 40


def test_no_change_rerun_changes_only_run_log_and_last_seen(warehouse):
    records = [make_record(i) for i in range(60)]
    sync(warehouse, records)
    before = table_fingerprint(warehouse)
    seen_before = scalar(warehouse, "SELECT max(last_seen_at) FROM icr_installations")
    writes_before = _tuple_writes(warehouse) if warehouse.dialect_name == "postgresql" else None
    run, result = sync(warehouse, records)
    assert (result["inserted"], result["updated"], result["unchanged"], result["removed"]) == (0, 0, 60, 0)
    after = table_fingerprint(warehouse)
    assert after["icr_installation_state"] == before["icr_installation_state"]
    assert after["icr_installation_history"] == before["icr_installation_history"]
    assert scalar(warehouse, "SELECT max(last_seen_at) FROM icr_installations") > seen_before
    if warehouse.dialect_name == "postgresql":
        assert _tuple_writes(warehouse) == writes_before  # not one row rewritten


def test_removal_and_return(warehouse):
    records = [make_record(i) for i in range(30)]
    sync(warehouse, records)
    gone = records.pop(4)
    run, result = sync(warehouse, records)
    assert result["removed"] == 1 and result["active_after"] == 29
    assert scalar(warehouse, "SELECT deleted_at FROM icr_installations WHERE installation_id = :i",
                  i=gone["id"]) is not None
    assert scalar(warehouse, "SELECT count(*) FROM icr_installation_history WHERE is_deleted AND installation_id = :i",
                  i=gone["id"]) == 1
    records.append(gone)
    run, result = sync(warehouse, records)
    assert (result["restored"], result["updated"], result["inserted"]) == (1, 1, 0)
    assert scalar(warehouse, "SELECT deleted_at FROM icr_installations WHERE installation_id = :i",
                  i=gone["id"]) is None
    assert scalar(warehouse, "SELECT count(*) FROM icr_installation_history WHERE installation_id = :i",
                  i=gone["id"]) == 3  # seen, removed, back
    assert get_run(warehouse, run.run_id)["restored"] == 1


def test_incomplete_snapshot_marks_nothing_removed(warehouse):
    records = [make_record(i) for i in range(30)]
    sync(warehouse, records)
    run, result = sync(warehouse, records[:20], complete=False, reason="total changed from 30 to 20")
    row = get_run(warehouse, run.run_id)
    assert result["removed"] == 0 and len(active_ids(warehouse)) == 30
    assert row["snapshot_complete"] in (False, 0)
    assert "total changed from 30 to 20" in row["incomplete_reason"]
    assert "no installation marked removed" in row["removals_skipped"]


def test_mass_removal_fails_before_writing_unless_accepted(warehouse):
    records = [make_record(i) for i in range(50)]
    sync(warehouse, records)
    before = table_fingerprint(warehouse)
    with pytest.raises(MassRemovalError, match=r"30 of 50 active installations .*accept_mass_removal=true"):
        sync(warehouse, records[:20])
    assert table_fingerprint(warehouse) == before
    failed = [r for r in run_rows(warehouse) if r["status"] == "failed"]
    assert len(failed) == 1 and "accept_mass_removal" in failed[0]["error"]
    run, result = sync(warehouse, records[:20], SyncSettings(accept_mass_removal=True))
    assert result["removed"] == 30 and len(active_ids(warehouse)) == 20


def test_rejected_records_are_kept_with_reasons_and_not_removed(warehouse):
    records = [make_record(i) for i in range(100)]
    sync(warehouse, records)
    bad = list(records)
    bad[0] = {**records[0], "createdAt": "yesterday"}  # known installation, bad this time
    bad.append({"id": "not-a-uuid", "createdAt": "2024-01-01T00:00:00Z"})
    run, result = sync(warehouse, bad)
    row = get_run(warehouse, run.run_id)
    assert row["rejected"] == 2 and row["records_fetched"] == 101
    assert row["records_fetched"] == row["inserted"] + row["updated"] + row["unchanged"] + row["rejected"]
    with warehouse.read() as conn:
        reasons = dict(conn.execute(sa.text(
            "SELECT installation_id, reason FROM icr_rejected_records WHERE sync_run_id = :r"), {"r": run.run_id}).all())
    assert "createdAt" in reasons[records[0]["id"]] and "yesterday" in reasons[records[0]["id"]]
    assert "not a UUID" in reasons["not-a-uuid"]
    # A record that was received but rejected is not a removal.
    assert records[0]["id"] in active_ids(warehouse) and result["removed"] == 0


def test_reject_threshold_fails_the_run(warehouse):
    records = [make_record(i) for i in range(20)] + [{"id": None}] * 3
    with pytest.raises(RejectThresholdError, match=r"3 of 23 records"):
        sync(warehouse, records, SyncSettings(max_reject_share=0.1))
    assert scalar(warehouse, "SELECT count(*) FROM icr_installation_state") == 0


def test_schema_drift_is_kept_in_raw(warehouse):
    records = [make_record(i) for i in range(10)]
    sync(warehouse, records)
    drifted = [{**r, "suspended": False, "organization": {**r["organization"], "tier": "gold"}} for r in records]
    run, result = sync(warehouse, drifted)
    assert result["updated"] == 10  # the record as received changed: raw is kept current
    raw = scalar(warehouse, "SELECT raw FROM icr_installations WHERE installation_id = :i",
                 i=records[0]["id"])
    raw = raw if isinstance(raw, dict) else json.loads(raw)
    assert raw["suspended"] is False and raw["organization"]["tier"] == "gold"


def test_timestamps_are_utc(warehouse):
    rec = make_record(1, createdAt="2024-03-26T10:47:15.356+02:00", updatedAt="2024-03-26T08:47:15Z")
    sync(warehouse, [rec])
    frame = pd.read_sql(sa.text("SELECT created_at, updated_at, first_seen_at FROM icr_installations"),
                        warehouse.engine)
    created = pd.to_datetime(frame["created_at"], utc=True, format="ISO8601")[0]
    assert created == pd.Timestamp("2024-03-26T08:47:15.356Z")
    assert pd.to_datetime(frame["updated_at"], utc=True, format="ISO8601")[0] == pd.Timestamp("2024-03-26T08:47:15Z")
    if warehouse.dialect_name == "postgresql":
        with warehouse.read() as conn:
            value = conn.execute(sa.text("SELECT created_at FROM icr_installations")).scalar_one()
        assert value.utcoffset() == timedelta(0)
    else:
        raw = scalar(warehouse, "SELECT created_at FROM icr_installations")
        assert raw == "2024-03-26T08:47:15.356000+00:00"


def test_daily_snapshots_for_past_dates_reuse_one_snapshot(warehouse):
    today = datetime.now(timezone.utc).replace(hour=2, minute=0, second=0, microsecond=0)
    # Installations created one per day over the last 10 days.
    records = [make_record(i, created=today - timedelta(days=10 - i, hours=1)) for i in range(10)]
    hook = StaticHook(records)
    for days_back in (3, 2, 1):  # a 3-day backfill: only the first run reads the API
        run_sync(warehouse, hook, ctx(today - timedelta(days=days_back)))
    assert hook.pagers == 1
    with warehouse.read() as conn:
        daily = dict(conn.execute(sa.text(
            "SELECT snapshot_date, count(*) FROM icr_installation_daily GROUP BY snapshot_date")).all())
    by_day = {str(k)[:10]: v for k, v in daily.items()}
    # Created on or before the day (created at 01:00 of day 10-i)
    for days_back in (3, 2, 1):
        day = (today - timedelta(days=days_back)).date()
        expected = sum(1 for r in records if pd.Timestamp(r["createdAt"]).date() <= day)
        assert by_day[day.isoformat()] == expected
    sources = sorted(r["snapshot_source"] for r in run_rows(warehouse))
    assert sources == ["api", "reused", "reused"]
    # Rerunning a day gives the same result (same installations; only the writing run differs).
    def daily_rows() -> list[tuple]:
        with warehouse.read() as conn:
            return [tuple(map(str, r)) for r in conn.execute(sa.text(
                "SELECT snapshot_date, installation_id, organization_id, organization_type, "
                "organization_country_code FROM icr_installation_daily ORDER BY 1, 2"))]

    before = daily_rows()
    run_sync(warehouse, hook, ctx(today - timedelta(days=2)))
    assert daily_rows() == before
    assert hook.pagers == 1


def test_daily_snapshot_of_a_past_date_excludes_later_removals_only_after_they_happen(warehouse):
    now = datetime.now(timezone.utc)
    records = [make_record(i, created=now - timedelta(days=30)) for i in range(10)]
    sync(warehouse, records)
    sync(warehouse, records[:8])  # two removed now
    run_sync(warehouse, StaticHook(records[:8]), ctx(now - timedelta(days=2)))
    counts = {str(k)[:10]: v for k, v in _daily_counts(warehouse).items()}
    assert counts[(now - timedelta(days=2)).date().isoformat()] == 10  # not known removed back then
    assert counts[now.date().isoformat()] == 8


def test_failure_mid_load_leaves_warehouse_untouched(warehouse, monkeypatch):
    records = [make_record(i) for i in range(40)]
    sync(warehouse, records)
    before = table_fingerprint(warehouse)
    changed = [dict(r) for r in records[:35]]
    changed[0] = {**changed[0], "appNameId": "renamed"}
    real = statements_module.execute

    def explode(conn, sql, params):
        if "deleted_at = :now" in sql:  # mark_removed: after upsert, history and permissions ran
            raise RuntimeError("injected failure in the middle of the merge")
        return real(conn, sql, params)

    monkeypatch.setattr(statements_module, "execute", explode)
    run = ctx()
    with pytest.raises(RuntimeError, match="injected failure"):
        run_sync(warehouse, StaticHook(changed), run)
    assert table_fingerprint(warehouse) == before
    row = get_run(warehouse, run.run_id)
    assert row["status"] == "failed" and "injected failure" in row["error"]
    assert not Staging(warehouse, run.run_id).exists()
    monkeypatch.setattr(statements_module, "execute", real)
    run, result = sync(warehouse, changed)
    assert (result["updated"], result["removed"]) == (1, 5)


def test_load_after_lost_staging_fails_clearly(warehouse):
    apply_migrations(warehouse)
    run = ctx()
    extract(warehouse, StaticHook([make_record(i) for i in range(5)]), run, SyncSettings())
    Staging(warehouse, run.run_id).truncate()
    with pytest.raises(Exception, match="staging for run .* holds 0 rows"):
        load(warehouse, run, SyncSettings())
    fail(warehouse, run, "x")
    assert get_run(warehouse, run.run_id)["status"] == "failed"


def _daily_counts(warehouse) -> dict:
    with warehouse.read() as conn:
        return dict(conn.execute(sa.text(
            "SELECT snapshot_date, count(*) FROM icr_installation_daily GROUP BY snapshot_date")).all())


def _tuple_writes(warehouse) -> tuple[int, int, int]:
    with warehouse.engine.connect() as conn:
        conn.exec_driver_sql("SELECT pg_stat_force_next_flush()")
        conn.commit()
    with warehouse.engine.connect() as conn:
        conn.exec_driver_sql("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(sa.text(
            "SELECT n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables WHERE relname = 'icr_installation_state'")).one()
    return tuple(row)


def test_concurrent_runs_on_a_fresh_warehouse_both_succeed(warehouse):
    """A backfill and the nightly run starting together: migrations and merges take turns."""
    import threading

    records = [make_record(i) for i in range(200)]
    errors: list[BaseException] = []
    results: list[dict] = []

    def one() -> None:
        try:
            results.append(run_sync(warehouse, StaticHook(records), ctx()))
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert sorted(r["inserted"] for r in results) == [0, 0, 200]
    assert scalar(warehouse, "SELECT count(*) FROM icr_schema_migrations") == len(available(warehouse.dialect_name))
    assert scalar(warehouse, "SELECT count(*) FROM icr_installation_history") == 200


def test_installation_skipped_by_paging_is_confirmed_by_id_not_removed(warehouse, monkeypatch):
    """Offset paging can skip a still-listed record while the totals add up: ask ICR by id.

    The active installations (the mass-removal guard's denominator) are counted only when some
    are missing: not on a night when every one is listed."""
    counted: list[int] = []
    real_count = removals.active_count
    monkeypatch.setattr(removals, "active_count", lambda staging: counted.append(real_count(staging)) or counted[-1])
    records = [make_record(i) for i in range(30)]
    sync(warehouse, records)
    sync(warehouse, records)
    assert counted == []
    hook = StaticHook(records[:29])  # the listing skipped record 29 ...
    # ... but ICR still answers for it by id:
    full = StaticHook(records)
    hook.get_conn = full.get_conn
    run = ctx()
    result = run_sync(warehouse, hook, run)
    assert result["removed"] == 0 and result["recovered"] == 1
    assert counted and set(counted) == {30}  # once per pass that had a candidate
    assert records[29]["id"] in active_ids(warehouse)
    row = get_run(warehouse, run.run_id)
    assert row["records_fetched"] == 30 == row["unchanged"]
    # A real removal is confirmed by a 404 and applied.
    run, result = sync(warehouse, records[:29])
    assert result["removed"] == 1 and result["recovered"] == 0


def test_current_day_daily_snapshot_equals_the_history_derivation(warehouse):
    """The nightly run counts today's rows from state (the view reads them as of the load); the
    history read as of the end of the day must give the same rows."""
    from icr.warehouse.merge import day_cutoff

    records = [make_record(i) for i in range(40)]
    sync(warehouse, records)
    records[2]["organization"]["countryCode"] = "NO"
    gone = records.pop(7)
    sync(warehouse, records)  # an update and a removal
    records.append(gone)
    records.pop(9)
    run, _ = sync(warehouse, records)  # a return and another removal
    day = warehouse.day(run.snapshot_date)
    outputs = []
    with warehouse.write() as conn:
        for as_of in (None, warehouse.ts(day_cutoff(run))):  # as the load recorded it, then the day's end
            if as_of is not None:
                conn.execute(sa.text("UPDATE icr_daily_totals SET as_of = :a, loaded_at = :a WHERE snapshot_date = :d"),
                             {"a": as_of, "d": day})
            outputs.append(sorted(tuple(map(str, r)) for r in conn.execute(sa.text(
                "SELECT installation_id, organization_id, organization_type, organization_country_code "
                "FROM icr_installation_daily WHERE snapshot_date = :d"), {"d": day})))
    assert len(outputs[0]) == 39
    assert outputs[0] == outputs[1]
    assert {r[0] for r in outputs[0]} == active_ids(warehouse)


def test_permission_rows_always_mirror_the_installations(warehouse):
    """Nothing enforces it but the merge (no foreign key on PostgreSQL): check it through every
    kind of run: first load, permission changes, a removal hidden by an addition, a return."""
    records = [make_record(i) for i in range(30)]
    sync(warehouse, records)
    assert permission_mismatches(warehouse) == 0
    changed = [dict(r) for r in records]
    changed[3] = {**changed[3], "permissions": {"organization_info": "VIEW"}}
    changed[4] = {**changed[4], "permissions": {**changed[4]["permissions"], "organization_inventory": "REQUEST"}}
    gone = changed.pop(7)
    changed.append(make_record(30))  # as many listed as before: the removal must still be found
    run, result = sync(warehouse, changed)
    assert (result["inserted"], result["updated"], result["removed"]) == (1, 2, 1)
    assert scalar(warehouse, "SELECT deleted_at FROM icr_installations WHERE installation_id = :i",
                  i=gone["id"]) is not None
    assert permission_mismatches(warehouse) == 0
    changed.append({**gone, "permissions": {"organization_members": "MANAGE"}})
    run, result = sync(warehouse, changed)
    assert result["restored"] == 1
    assert permission_mismatches(warehouse) == 0
    assert scalar(warehouse, "SELECT count(*) FROM icr_installation_permissions") == scalar(
        warehouse, "SELECT count(*) FROM icr_installation_state s, "
        + ("jsonb_each(s.permissions)" if warehouse.dialect_name == "postgresql" else "json_each(s.permissions)"))


def _index_catalog(warehouse) -> list[tuple]:
    with warehouse.read() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE tablename LIKE 'icr_installation%' "
            "ORDER BY 1, 2"))]


@pytest.fixture
def bulk_pg(pg_warehouse, monkeypatch):
    """A migrated, empty PostgreSQL warehouse where a 10-record first load counts as bulk;
    with the index catalog before any load."""
    monkeypatch.setattr(merge_module, "BULK_LOAD_MIN_ROWS", 10)
    apply_migrations(pg_warehouse)
    return pg_warehouse, _index_catalog(pg_warehouse)


@pytest.fixture
def merge_statements(monkeypatch) -> list[str]:
    """Every statement the merge runs from now on, in order."""
    statements: list[str] = []
    real = statements_module.execute

    def spy(conn, sql, params):
        statements.append(sql)
        return real(conn, sql, params)

    monkeypatch.setattr(statements_module, "execute", spy)
    return statements


@pytest.mark.postgres
def test_first_bulk_load_rebuilds_indexes_once_and_restores_them_exactly(bulk_pg, merge_statements):
    warehouse, catalog = bulk_pg
    assert any(name == "icr_installation_permissions_pkey" for _, name, _ in catalog)
    statements = merge_statements
    records = [make_record(i) for i in range(40)]
    run, result = sync(warehouse, records)
    dropped = [s for s in statements if s.startswith("DROP INDEX") or "DROP CONSTRAINT" in s]
    rebuilt = [s for s in statements if "ADD CONSTRAINT" in s or s.startswith(("CREATE INDEX", "CREATE UNIQUE INDEX"))]
    # state pkey + active, created_at, deleted_at and (id, created_at) indexes, permissions pkey, history pkey + 3
    assert len(dropped) == len(rebuilt) == 10
    assert _index_catalog(warehouse) == catalog
    assert result["inserted"] == 40 and permission_mismatches(warehouse) == 0
    assert scalar(warehouse, "SELECT count(*) FROM icr_installation_history WHERE valid_to IS NULL") == 40
    assert scalar(warehouse, "SELECT count(*) FROM icr_installation_daily") == 40
    # Not empty any more: the next (large) load maintains the indexes as usual.
    statements.clear()
    changed = [{**r, "appNameId": "renamed"} for r in records]
    run, result = sync(warehouse, changed)
    assert result["updated"] == 40
    assert not [s for s in statements if s.startswith("DROP INDEX") or "DROP CONSTRAINT" in s]
    assert _index_catalog(warehouse) == catalog and permission_mismatches(warehouse) == 0


@pytest.mark.postgres
def test_first_bulk_load_keeps_an_index_a_users_foreign_key_relies_on(bulk_pg, merge_statements):
    """A dashboard team's own table referencing installations must not break (or lose) its key."""
    warehouse, catalog = bulk_pg
    with warehouse.write() as conn:
        conn.exec_driver_sql("CREATE TABLE team_notes (installation_id uuid REFERENCES icr_installation_state, "
                             "note text)")
    statements = merge_statements
    run, result = sync(warehouse, [make_record(i) for i in range(40)])
    assert result["inserted"] == 40
    dropped = [s for s in statements if s.startswith("DROP INDEX") or "DROP CONSTRAINT" in s]
    assert not [s for s in dropped if "icr_installation_state_pkey" in s]
    assert [s for s in dropped if "icr_installation_state_active_idx" in s]  # no key relies on that one
    assert _index_catalog(warehouse) == catalog
    with warehouse.write() as conn:  # the key still works
        conn.execute(sa.text("INSERT INTO team_notes VALUES (CAST(:i AS uuid), 'vip')"),
                     {"i": make_record(0)["id"]})


@pytest.mark.postgres
def test_failed_first_bulk_load_keeps_every_index(bulk_pg, monkeypatch):
    warehouse, catalog = bulk_pg
    before = table_fingerprint(warehouse)
    real = statements_module.execute

    def explode(conn, sql, params):
        if sql.startswith("ALTER TABLE") and "ADD CONSTRAINT" in sql:  # while rebuilding
            raise RuntimeError("injected failure while rebuilding an index")
        return real(conn, sql, params)

    monkeypatch.setattr(statements_module, "execute", explode)
    run = ctx()
    with pytest.raises(RuntimeError, match="injected failure"):
        run_sync(warehouse, StaticHook([make_record(i) for i in range(40)]), run)
    assert _index_catalog(warehouse) == catalog
    assert table_fingerprint(warehouse) == before


@pytest.mark.postgres
def test_load_runs_with_its_own_work_mem(pg_warehouse, monkeypatch):
    warehouse = pg_warehouse
    seen: list[str] = []
    real = statements_module.execute

    def spy(conn, sql, params):
        if "icr_tmp_changes" in sql and not seen:
            seen.append(conn.exec_driver_sql("SHOW work_mem").scalar_one())
        return real(conn, sql, params)

    monkeypatch.setattr(statements_module, "execute", spy)
    sync(warehouse, [make_record(i) for i in range(5)])
    assert seen == [merge_module.LoadOptions().work_mem]
    with warehouse.engine.connect() as conn:  # SET LOCAL: pooled connections keep the default
        assert conn.exec_driver_sql("SHOW work_mem").scalar_one() != seen[0]


@pytest.mark.postgres
def test_staging_written_by_an_older_release_still_loads(pg_warehouse):
    """Extract staged text columns before this release; a load after an upgrade must cope."""
    warehouse = pg_warehouse
    sync(warehouse, [make_record(i) for i in range(10)])
    run = ctx()
    changed = [{**make_record(i), "appNameId": "renamed"} for i in range(12)]
    extract(warehouse, StaticHook(changed), run, SyncSettings())
    table = Staging(warehouse, run.run_id).table
    with warehouse.engine.begin() as conn:
        conn.exec_driver_sql(f"ALTER TABLE {table} ALTER COLUMN raw TYPE text, ALTER COLUMN permissions TYPE text")
    result = load(warehouse, run, SyncSettings())
    assert (result["inserted"], result["updated"]) == (2, 10)
    assert permission_mismatches(warehouse) == 0
    assert scalar(warehouse, "SELECT count(*) FROM icr_installations WHERE raw->>'appNameId' = 'renamed'") == 12


def _vacuums(warehouse) -> int:
    """How often PostgreSQL vacuumed the state table by hand (0 on SQLite, which has no VACUUM here)."""
    if warehouse.dialect_name != "postgresql":
        return 0
    for _ in range(50):  # the statistics arrive asynchronously
        with warehouse.engine.connect() as conn:
            conn.exec_driver_sql("SELECT pg_stat_clear_snapshot()")
            count = conn.exec_driver_sql("SELECT vacuum_count FROM pg_stat_user_tables "
                                         "WHERE relname = 'icr_installation_state'").scalar_one()
        if count:
            return int(count)
        time.sleep(0.1)
    return 0


def test_a_load_that_rewrote_most_rows_tidies_the_tables_and_a_quiet_one_does_not(warehouse, monkeypatch):
    from icr.warehouse import housekeeping

    monkeypatch.setattr(housekeeping, "TIDY_MIN_ROWS", 30)
    records = [make_record(i) for i in range(40)]
    sync(warehouse, records)
    vacuumed = _vacuums(warehouse)
    assert vacuumed == (1 if warehouse.dialect_name == "postgresql" else 0)
    sync(warehouse, records)  # nothing written: nothing to tidy
    records[0] = make_record(0, permissions={})
    sync(warehouse, records)  # 1 of 40 rewritten: below the share
    assert _vacuums(warehouse) == vacuumed
