"""4. Killed mid-run: a subprocess running icr.sync.run_sync (simulator over HTTP in this process)
gets SIGKILL while fetching, in the middle of staging (PostgreSQL: inside the COPY; SQLite: between
two staging chunks), after a merge statement, right before the merge COMMIT, right after it, and
at seeded random moments — into PostgreSQL, and into the default embedded SQLite file.

After each kill: the warehouse is exactly as before or exactly fully updated (never in between),
no lock outlives the killed process (PostgreSQL: its session and advisory lock are gone; SQLite:
another process can take the write lock at once), the killed run is recoverable as failed
(abandon_stale_runs) with no staging tables left, and the next run succeeds and equals the truth.
Also: a run queued behind the killed one's merge lock gets it at once and loads correctly."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import _libpq
from tests.faults.conftest import (
    ROOT, compare_with_truth, dump_warehouse, fingerprint, new_run, run_rows, staging_tables,
)

FAULT_CLASS = "killed"
pytestmark = pytest.mark.faults

N = 1000
PAGE = 200


def _admin(pg_admin_url, sql):
    import psycopg

    with psycopg.connect(_libpq(pg_admin_url), autocommit=True) as conn:
        return conn.execute(sql).fetchall() if sql.lstrip().upper().startswith("SELECT") else conn.execute(sql)


def _light_hook(sim):
    from tests.faults.kill_child import LightHook

    return LightHook(sim.base_url, sim.app_id, sim.private_key_pem, PAGE)


def _kill_env(sim, when: datetime, seed_url: str, clone) -> dict:
    """Load the template (before, A), change the API, and measure the full run on a clone (after, B)."""
    from icr.sync import SyncSettings, run_sync
    from icr.warehouse.engine import Warehouse

    wh = Warehouse.from_url(seed_url)
    run_sync(wh, _light_hook(sim), new_run("kill-seed", when), SyncSettings(page_size=PAGE))
    before = fingerprint(wh)
    wh.dispose()
    sim.apply_changes({"add": 80, "remove": 60, "update": 100})
    ref = Warehouse.from_url(clone())
    run_sync(ref, _light_hook(sim), new_run("kill-ref", when), SyncSettings(page_size=PAGE))
    assert compare_with_truth(ref, sim.truth()).lost == 0
    after = fingerprint(ref)
    ref.dispose()
    assert before != after
    return {"sim": sim, "before": before, "after": after, "clone": clone, "when": when.isoformat()}


def _when() -> datetime:
    # One logical date for every run of a module, a day ahead: the same snapshot date (and the
    # same daily-snapshot path) for the reference and the killed runs, even across midnight.
    return datetime.now(timezone.utc) + timedelta(days=1)


@pytest.fixture(scope="module")
def kill_env(pg_admin_url):
    """A simulator; a template database holding a first clean load ("before", A); then the API
    changes; B = the fingerprint a full run of the changed API produces."""
    from tests.simulator import ICRSimulator, SimulatorConfig

    sim = ICRSimulator(SimulatorConfig(installations=N, seed=51, max_page_size=PAGE)).start()
    base = pg_admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    template = f"icr_kill_tpl_{uuid.uuid4().hex[:8]}"
    _admin(pg_admin_url, f'CREATE DATABASE "{template}"')
    names = [template]
    try:
        def clone() -> str:
            name = f"icr_kill_{uuid.uuid4().hex[:8]}"
            _admin(pg_admin_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
            names.append(name)
            return f"{base}/{name}"

        yield _kill_env(sim, _when(), f"{base}/{template}", clone)
    finally:
        sim.stop()
        for name in names:
            _admin(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def kill_env_sqlite(tmp_path_factory):
    """The same on SQLite files: clones are online-backup copies of the template file."""
    from tests.simulator import ICRSimulator, SimulatorConfig

    folder = tmp_path_factory.mktemp("kill-sqlite")
    template = folder / "template.sqlite"
    sim = ICRSimulator(SimulatorConfig(installations=N, seed=52, max_page_size=PAGE)).start()
    try:
        def clone() -> str:
            target = folder / f"kill_{uuid.uuid4().hex[:8]}.sqlite"
            src, dst = sqlite3.connect(template), sqlite3.connect(target)
            try:
                src.backup(dst)
            finally:
                src.close()
                dst.close()
            return f"sqlite:///{target}"

        yield _kill_env(sim, _when(), f"sqlite:///{template}", clone)
    finally:
        sim.stop()


def _spawn(env_cfg: dict, sim, app_name: str):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "ICR_KILL_CHILD_PEM": sim.private_key_pem, "PYTHONUNBUFFERED": "1"}
    url = env_cfg["warehouse_url"]
    if url.startswith("postgresql"):
        url += f"?application_name={app_name}"  # to find the killed session afterwards
    cfg = {**env_cfg, "warehouse_url": url, "base_url": sim.base_url, "app_id": sim.app_id, "page_size": PAGE,
           "chunk_records": 500}
    proc = subprocess.Popen([sys.executable, "-m", "tests.faults.kill_child", json.dumps(cfg)], cwd=str(ROOT),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue = queue.Queue()
    out: list[str] = []
    err: list[str] = []

    def pump(stream, sink, q):
        for line in stream:
            sink.append(line)
            if q is not None:
                q.put(line.strip())
        if q is not None:
            q.put(None)

    threading.Thread(target=pump, args=(proc.stdout, out, lines), daemon=True).start()
    threading.Thread(target=pump, args=(proc.stderr, err, None), daemon=True).start()
    return proc, lines, out, err


def _wait_for(lines: queue.Queue, prefix: str, timeout: float, proc) -> str:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"child did not reach {prefix!r} within {timeout}s")
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            continue
        if line is None:
            raise AssertionError(f"child exited (rc={proc.wait()}) before {prefix!r}")
        if line.startswith(prefix):
            return line


def _backend_gone(pg_admin_url, app_name, timeout=30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = _admin(pg_admin_url, f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app_name}'")
        if rows[0][0] == 0:
            return True
        time.sleep(0.1)
    return False


def _cases(stage: str, merge_step: str, seed: int) -> list[tuple[str, str]]:
    """(where the child pauses to be killed, the state expected after the kill); "random:<seed>"
    kills at a seeded random moment instead of a pause. Only staging differs by dialect."""
    return [("fetch", "before"), (stage, "before"), (f"merge:{merge_step}", "before"), ("commit", "before"),
            ("after_commit", "after"), (f"random:{seed}", "either")]


CASES = _cases("copy", "mark_removed", 1)  # PostgreSQL: inside the staging COPY
SQLITE_CASES = _cases("stage", "permissions_insert", 2)  # SQLite: between two staging chunks


@pytest.mark.parametrize("pause_at,expect", CASES, ids=[c[0] for c in CASES])
def test_sigkill_leaves_before_or_after_never_between(kill_env, pg_admin_url, ledger, leaks, pause_at, expect):
    def no_lock_left(url: str, app_name: str) -> None:
        assert _backend_gone(pg_admin_url, app_name), "the killed sync's PostgreSQL session is still there"
        dbname = url.rsplit("/", 1)[1]
        locks = _admin(pg_admin_url, "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                                     f"WHERE l.locktype = 'advisory' AND d.datname = '{dbname}'")[0][0]
        assert locks == 0, "an advisory lock outlived the killed session"

    _kill_and_check(kill_env, ledger, leaks, pause_at, expect, no_lock_left)


@pytest.mark.parametrize("pause_at,expect", SQLITE_CASES, ids=[c[0] for c in SQLITE_CASES])
def test_sigkill_on_sqlite_leaves_before_or_after_never_between(kill_env_sqlite, ledger, leaks, pause_at, expect):
    def no_lock_left(url: str, app_name: str) -> None:
        # Another process (this one) can take the write lock at once: nothing of the killed
        # writer's transaction holds the file, and its half-written WAL frames are ignored.
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=2, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
        except sqlite3.OperationalError as exc:
            raise AssertionError(f"the SQLite file is still locked after the kill: {exc}") from None
        finally:
            conn.close()

    _kill_and_check(kill_env_sqlite, ledger, leaks, pause_at, expect, no_lock_left)


def _sync_in_thread(wh, env, prefix: str) -> tuple[threading.Thread, dict]:
    """A full run_sync of the changed API in a started thread; its result or error lands in the dict."""
    from icr.sync import SyncSettings, run_sync

    result: dict = {}

    def target():
        try:
            result["out"] = run_sync(wh, _light_hook(env["sim"]), new_run(prefix, datetime.fromisoformat(env["when"])),
                                     SyncSettings(page_size=PAGE))
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            result["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, result


def _succeeded_with_the_truth(t: threading.Thread, result: dict, wh, sim, hang_message: str):
    """The run of _sync_in_thread ended within 3 minutes, without error, and the warehouse equals
    the simulator's truth; returns the comparison (for the ledger)."""
    t.join(timeout=180)
    assert not t.is_alive(), hang_message
    assert "error" not in result, repr(result.get("error"))
    diff = compare_with_truth(wh, sim.truth())
    assert diff.lost == 0, str(diff)
    return diff


@contextlib.contextmanager
def _two_runs_in_the_ledger(ledger, wh, leaks):
    """The ledger of a kill test: one kill injected, two runs — both survived when the block
    passes (with the rows lost the block puts in the yielded dict under "lost"), none when one of
    its assertions fails. Afterwards the warehouse is searched for leaked secrets and disposed."""
    outcome: dict = {}
    try:
        yield outcome
        ledger.record(FAULT_CLASS, injected=1, runs=2, survived=2, rows_lost=outcome["lost"])
        dump_warehouse(wh, leaks)
    except AssertionError:
        ledger.record(FAULT_CLASS, injected=1, runs=2, survived=0)
        raise
    finally:
        wh.dispose()


def _kill_and_check(env, ledger, leaks, pause_at, expect, no_lock_left) -> None:
    from icr.warehouse.engine import Warehouse
    from icr.warehouse.housekeeping import abandon_stale_runs

    sim = env["sim"]
    leaks.secret(sim.private_key_pem, "simulator app private key")
    url = env["clone"]()
    app_name = f"icr-kill-{uuid.uuid4().hex[:8]}"
    run_id = f"killed__{pause_at.replace(':', '_')}"
    random_case = pause_at.startswith("random")
    proc, lines, out, err = _spawn({"warehouse_url": url, "run_id": run_id, "when": env["when"],
                                    "pause_at": None if random_case else pause_at}, sim, app_name)
    try:
        if random_case:
            _wait_for(lines, "PHASE start", 120, proc)
            delay = random.Random(pause_at).uniform(0.2, 4.0)
            time.sleep(delay)  # the kill moment is the fault being injected, not an assertion
        else:
            _wait_for(lines, f"PAUSED {pause_at}", 120, proc)
    finally:
        proc.kill()  # SIGKILL, this child only
        proc.wait(timeout=30)
    phases = [ln.strip() for ln in out if ln.startswith(("PHASE", "PAUSED", "DONE"))]
    leaks.feed("subprocess stdout", "".join(out))
    leaks.feed("subprocess stderr", "".join(err))

    wh = Warehouse.from_url(url)
    with _two_runs_in_the_ledger(ledger, wh, leaks) as outcome:
        no_lock_left(url, app_name)

        fp = fingerprint(wh)
        before = {**env["before"]}
        after = {**env["after"]}
        state = "before" if fp == before else "after" if fp == after else "BETWEEN"
        in_between = state == "BETWEEN"
        assert not in_between, f"warehouse half-written after kill at {pause_at} (last phase {phases[-1:]}): " \
                               f"{fp} vs before {before} / after {after}"
        if expect != "either":
            assert state == expect, (state, phases[-3:])

        killed = {r["run_id"]: r for r in run_rows(wh)}.get(run_id)
        if state == "before" and killed is not None:
            assert killed["status"] == "running"
            abandoned = abandon_stale_runs(wh, older_than=timedelta(0))
            assert abandoned == [run_id]
            killed = {r["run_id"]: r for r in run_rows(wh)}[run_id]
            assert killed["status"] == "failed" and "abandoned" in killed["error"]
        if state == "after":
            assert killed["status"] == "success"
        assert staging_tables(wh) == [], (
            f"staging tables of the killed run are left behind after recovery (state {state})")

        # the next run: must not hang on a lock, must succeed, must equal the truth
        t, result = _sync_in_thread(wh, env, "after-kill")
        diff = _succeeded_with_the_truth(t, result, wh, sim, "the run after the kill hangs")
        assert fingerprint(wh)["state_md5"] == after["state_md5"]
        outcome["lost"] = diff.lost


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_a_run_waiting_for_the_lock_goes_on_when_the_holder_is_killed(request, dialect, ledger, leaks):
    """A backfill and the nightly run overlap; the one inside its merge dies (OOM, node lost).

    The other, waiting for the warehouse's write lock, must get it as soon as the holder is gone,
    load, and leave the warehouse equal to the truth; the dead run stays recoverable."""
    from icr.warehouse.engine import Warehouse
    from icr.warehouse.housekeeping import abandon_stale_runs

    env = request.getfixturevalue("kill_env" if dialect == "postgresql" else "kill_env_sqlite")
    sim = env["sim"]
    leaks.secret(sim.private_key_pem, "simulator app private key")
    url = env["clone"]()
    holder = "killed__lock_holder"
    proc, lines, out, err = _spawn({"warehouse_url": url, "run_id": holder, "when": env["when"],
                                    "pause_at": "merge:mark_removed"}, sim, f"icr-kill-{uuid.uuid4().hex[:8]}")
    wh = Warehouse.from_url(url)
    try:
        _wait_for(lines, "PAUSED merge:mark_removed", 120, proc)
        t, result = _sync_in_thread(wh, env, "waiter")
        time.sleep(3)  # a whole run takes well under a second here: still alive means it waits
        assert t.is_alive() and not result, f"the second run did not wait for the merge lock: {result}"
        if dialect == "postgresql":
            admin = request.getfixturevalue("pg_admin_url")
            waiting = _admin(admin, "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                                    f"WHERE l.locktype = 'advisory' AND NOT l.granted "
                                    f"AND d.datname = '{url.rsplit('/', 1)[1]}'")[0][0]
            assert waiting == 1, f"expected the second run queued on the advisory lock, found {waiting}"
    finally:
        proc.kill()  # SIGKILL the lock holder
        proc.wait(timeout=30)
    leaks.feed("subprocess stdout", "".join(out))
    leaks.feed("subprocess stderr", "".join(err))
    with _two_runs_in_the_ledger(ledger, wh, leaks) as outcome:
        diff = _succeeded_with_the_truth(t, result, wh, sim,
                                         "the waiting run still hangs after the lock holder was killed")
        assert fingerprint(wh) == env["after"]
        rows = {r["run_id"]: r for r in run_rows(wh)}
        assert rows[holder]["status"] == "running"  # nothing of it was committed but its run row
        assert abandon_stale_runs(wh, older_than=timedelta(0)) == [holder]
        assert staging_tables(wh) == []
        outcome["lost"] = diff.lost
