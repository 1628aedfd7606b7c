"""5. Warehouse faults on PostgreSQL: the backend is terminated in the middle of the merge, a
statement timeout fires, a constraint is violated. Each time: rollback (the warehouse is exactly
as before), a clear error, and a successful retry whose result equals the truth."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.faults.conftest import compare_with_truth, fingerprint, new_run, run_rows, staging_tables

FAULT_CLASS = "warehouse"
pytestmark = pytest.mark.faults


def _loaded(make_simulator, hook_for, wh, seed):
    from icr.sync import SyncSettings, run_sync

    sim = make_simulator(installations=600, seed=seed)
    hook = hook_for(sim)
    run_sync(wh, hook, new_run("wh-seed"), SyncSettings(page_size=200))
    changes = sim.apply_changes({"add": 30, "remove": 20, "update": 40})
    return sim, hook, changes


def _retry_ok(wh, hook, sim, ledger, injected=1):
    from icr.sync import SyncSettings, run_sync

    run_sync(wh, hook, new_run("wh-retry"), SyncSettings(page_size=200))
    diff = compare_with_truth(wh, sim.truth())
    ledger.record(FAULT_CLASS, injected=injected, runs=2, survived=1 + int(diff.lost == 0), rows_lost=diff.lost)
    assert diff.lost == 0, str(diff)


def test_backend_terminated_mid_merge(make_simulator, hook_for, faults_pg, pg_admin_url, ledger, leaks,
                                      monkeypatch):
    import psycopg

    import icr.warehouse.merge as merge
    from icr.sync import SyncSettings, run_sync

    sim, hook, _ = _loaded(make_simulator, hook_for, faults_pg, 61)
    before = fingerprint(faults_pg)
    orig = merge._Steps.run
    killed = []

    def run(self, name, **extra):
        if name == "history_insert_changed" and not killed:
            pid = self.conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            with psycopg.connect(pg_admin_url.replace("postgresql+psycopg://", "postgresql://"),
                                 autocommit=True) as admin:
                assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
            killed.append(pid)
        return orig(self, name, **extra)

    monkeypatch.setattr(merge._Steps, "run", run)
    run = new_run("wh-terminated")
    with pytest.raises(Exception) as info:
        run_sync(faults_pg, hook, run, SyncSettings(page_size=200))
    leaks.feed_exception(info.value)
    monkeypatch.undo()
    assert killed
    assert "terminat" in str(info.value).lower() or "closed" in str(info.value).lower(), str(info.value)[:300]
    assert fingerprint(faults_pg) == before
    row = {r["run_id"]: r for r in run_rows(faults_pg)}[run.run_id]
    assert row["status"] == "failed", row
    assert staging_tables(faults_pg) == []
    _retry_ok(faults_pg, hook, sim, ledger)


def test_statement_timeout_then_task_retry_of_the_same_run(make_simulator, hook_for, faults_pg, pg_database,
                                                           ledger, leaks):
    """A statement_timeout (engine option) fires in the merge because another session holds a lock;
    the load task is retried for the same run once the lock is gone — as Airflow would."""
    from icr.sync import SyncSettings, cleanup, extract, load, verify
    from icr.warehouse.engine import Warehouse

    sim, hook, _ = _loaded(make_simulator, hook_for, faults_pg, 62)
    before = fingerprint(faults_pg)
    timed = Warehouse.from_url(pg_database, connect_args={"options": "-c statement_timeout=400"})
    settings = SyncSettings(page_size=200)
    run = new_run("wh-timeout")
    try:
        extract(timed, hook, run, settings)
        blocker = faults_pg.engine.connect()
        tx = blocker.begin()
        blocker.exec_driver_sql("LOCK TABLE icr_installation_state IN ACCESS EXCLUSIVE MODE")
        try:
            with pytest.raises(Exception) as info:
                load(timed, run, settings)
        finally:
            tx.rollback()
            blocker.close()
        leaks.feed_exception(info.value)
        assert "statement timeout" in str(info.value).lower(), str(info.value)[:300]
        assert fingerprint(faults_pg) == before
        # the task retry: same run id, same staging tables
        load(timed, run, settings)
        verify(timed, run)
        cleanup(timed, run)
    finally:
        timed.dispose()
    diff = compare_with_truth(faults_pg, sim.truth())
    ledger.record(FAULT_CLASS, injected=1, runs=2, survived=1 + int(diff.lost == 0), rows_lost=diff.lost)
    assert diff.lost == 0, str(diff)
    assert staging_tables(faults_pg) == []


def test_constraint_violation_rolls_back(make_simulator, hook_for, faults_pg, ledger, leaks):
    from icr.sync import SyncSettings, run_sync

    sim, hook, changes = _loaded(make_simulator, hook_for, faults_pg, 63)
    new_id = changes["added"][0]
    assert len(new_id) == 36 and "'" not in new_id
    with faults_pg.engine.begin() as conn:  # a constraint a new row of this run violates
        conn.exec_driver_sql(f"ALTER TABLE icr_installation_state ADD CONSTRAINT faults_planted_check "
                             f"CHECK (installation_id <> '{new_id}'::uuid)")
    before = fingerprint(faults_pg)
    run = new_run("wh-constraint")
    with pytest.raises(Exception) as info:
        run_sync(faults_pg, hook, run, SyncSettings(page_size=200))
    leaks.feed_exception(info.value)
    assert "faults_planted_check" in str(info.value), str(info.value)[:300]
    assert fingerprint(faults_pg) == before
    row = {r["run_id"]: r for r in run_rows(faults_pg)}[run.run_id]
    assert row["status"] == "failed" and "faults_planted_check" in row["error"]
    assert staging_tables(faults_pg) == []
    with faults_pg.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE icr_installation_state DROP CONSTRAINT faults_planted_check")
    _retry_ok(faults_pg, hook, sim, ledger)
