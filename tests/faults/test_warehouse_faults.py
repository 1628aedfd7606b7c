"""5. Warehouse faults: on PostgreSQL the backend is terminated in the middle of the merge, a
statement timeout fires, a constraint is violated; on both warehouses the disk fills up (a real
small filesystem) while staging or before the load. Each time: rollback (the warehouse is exactly
as before), a clear error, and a successful retry whose result equals the truth."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import _libpq
from tests.faults.conftest import compare_with_truth, dump_warehouse, fingerprint, new_run, run_rows, staging_tables

FAULT_CLASS = "warehouse"
pytestmark = pytest.mark.faults


def _loaded(make_simulator, hook_for, wh, seed):
    from icr.sync import SyncSettings, run_sync

    sim = make_simulator(installations=600, seed=seed, max_page_size=200)
    hook = hook_for(sim, max_page_size=200)
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


# --------------------------------------------------------------------------- a full disk


@contextlib.contextmanager
def _small_disk(size_mb: int) -> Iterator[Path]:
    """A real, small filesystem (tmpfs): filling it makes every write fail with ENOSPC, as a full
    disk does. Mounting needs root; without it the test skips (fails under ICR_REQUIRE_DISK_FULL=1,
    which .ci/run sets)."""
    mnt = Path(tempfile.mkdtemp(prefix="icr-small-disk-"))  # not under pytest's 0700 tmp: PostgreSQL enters it
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        reason = f"cannot mount a small tmpfs to fill (needs root): {done.stderr.strip() or done.returncode}"
        if os.environ.get("ICR_REQUIRE_DISK_FULL", "") not in ("", "0", "false"):
            pytest.fail(reason + " (ICR_REQUIRE_DISK_FULL=1)", pytrace=False)
        pytest.skip(reason)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        mnt.rmdir()


@contextlib.contextmanager
def _warehouse_on(disk: Path, dialect: str, pg_admin_url: str) -> Iterator[Any]:
    """A fresh warehouse whose files live on ``disk``: an SQLite file, or a PostgreSQL database
    created in a tablespace there (its tables and indexes; the server's WAL stays elsewhere)."""
    from icr.warehouse.engine import Warehouse

    if dialect == "sqlite":
        wh = Warehouse.from_url(f"sqlite:///{disk / 'warehouse.sqlite'}")
        try:
            yield wh
        finally:
            wh.dispose()
        return
    import psycopg

    admin = _libpq(pg_admin_url)
    name = f"icr_faults_full_{os.getpid()}"
    space = disk / "pg"
    space.mkdir()
    shutil.chown(space, "postgres", "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'DROP TABLESPACE IF EXISTS "{name}"')
        conn.execute(f"CREATE TABLESPACE \"{name}\" LOCATION '{space}'")
        conn.execute(f'CREATE DATABASE "{name}" TABLESPACE "{name}"')
    wh = Warehouse.from_url(f"{admin.rsplit('/', 1)[0]}/{name}")  # from_url picks psycopg 3
    try:
        yield wh
    finally:
        wh.dispose()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'DROP TABLESPACE IF EXISTS "{name}"')


def _fill(disk: Path, leave: int) -> Path:
    """Write a file that leaves ``leave`` bytes free on ``disk``."""
    filler = disk / "filler"
    free = shutil.disk_usage(disk).free
    with open(filler, "wb") as out:
        remaining = max(0, free - leave)
        while remaining:
            n = min(remaining, 1 << 20)
            out.write(b"\0" * n)
            remaining -= n
    return filler


def _empty_sqlite_wal(wh: Any) -> None:
    """Checkpoint and truncate the SQLite write-ahead log, as a quiet period leaves it: otherwise
    the next writes reuse its already allocated space and never touch the full disk."""
    conn = sqlite3.connect(wh.engine.url.database, isolation_level=None)
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0, "the write-ahead log could not be emptied"
    finally:
        conn.close()


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
@pytest.mark.parametrize("phase", ["staging", "load"])
def test_disk_full_rolls_back_says_where_and_the_rerun_recovers(request, make_simulator, hook_for,
                                                               ledger, leaks, dialect, phase):
    """The disk under the warehouse fills up while the run stages its snapshot, or between the
    extract and the load: the run fails with a WarehouseFullError that names the warehouse, the
    published tables are exactly as before, and once space is freed the next run gives the truth
    and leaves no staging table behind."""
    from icr.errors import WarehouseFullError
    from icr.sync import SyncSettings, extract, fail, load, run_sync
    from icr.warehouse.housekeeping import abandon_stale_runs

    pg_admin_url = request.getfixturevalue("pg_admin_url") if dialect == "postgresql" else ""
    settings = SyncSettings(page_size=200)
    with _small_disk(24) as disk, _warehouse_on(disk, dialect, pg_admin_url) as wh:
        sim, hook, _ = _loaded(make_simulator, hook_for, wh, 64)
        before = fingerprint(wh)
        run = new_run(f"wh-full-{phase}")
        if dialect == "sqlite":
            _empty_sqlite_wal(wh)
        if phase == "staging":
            filler = _fill(disk, leave=64 * 1024)
            with pytest.raises(WarehouseFullError) as info:
                run_sync(wh, hook, run, settings)
        else:
            extract(wh, hook, run, settings)
            if dialect == "sqlite":
                _empty_sqlite_wal(wh)
            filler = _fill(disk, leave=0)
            with pytest.raises(WarehouseFullError) as info:
                load(wh, run, settings)
            fail(wh, run, info.value)  # what the DAG's failure callback does
        leaks.feed_exception(info.value)
        message = str(info.value)
        where = str(disk / "warehouse.sqlite") if dialect == "sqlite" else "PostgreSQL warehouse"
        assert where in message and "ran out of" in message, message
        assert ("staging the snapshot" if phase == "staging" else "loading run") in message, message
        assert "published tables are as they were" in message, message
        assert fingerprint(wh) == before

        filler.unlink()  # space is freed; the next run (a new one, as the next night's) recovers
        _retry_ok(wh, hook, sim, ledger)
        left = staging_tables(wh)
        if left:  # the failed run could not even record its failure: it is still 'running' ...
            assert {r["run_id"]: r for r in run_rows(wh)}[run.run_id]["status"] == "running", left
            abandon_stale_runs(wh, older_than=timedelta(0))  # ... until it is abandoned as stale
        assert staging_tables(wh) == []
        dump_warehouse(wh, leaks)  # the error texts it stored included
        assert not leaks.found, [f.what for f in leaks.found]
