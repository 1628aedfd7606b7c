"""A task process killed by the machine (the OOM killer), or a whole worker lost (a preempted
node), on a real Airflow 3 deployment (CeleryExecutor): Airflow retries the task and the
warehouse ends up exactly right.

Each test stops a task at a known point without touching product code, finds the task process
(the Celery worker's process holding that task's PostgreSQL session or its connection to the
simulator), SIGKILLs it, and lets Airflow retry (``ICR_SYNC_RETRY_DELAY_SECONDS`` is 5 s in the
e2e deployment):
* in the load: the test holds an ``ACCESS EXCLUSIVE`` lock on ``icr_daily_totals``, so the
  load's one transaction waits there after merging the installations, history and permissions;
  nothing of it may be visible after the kill, and the retry must finish from the staged
  snapshot without fetching again;
* the same, but the whole Celery worker dies with it (worker, supervisor, task process): nothing
  reports the failure, the scheduler must find the task by its missing heartbeats (timeout 60 s
  in the e2e deployment) and a replacement worker runs the retry;
* in the extract: the simulator answers slowly (latency) and the page size is small, so the task
  is killed while paging (found by its connection to the simulator); the retry must read the API
  again from the start, with nothing of the killed try left over.

Run alone: ``pytest -m e2e -s tests/e2e/test_task_killed.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.e2e.deployment import DAG_ID, TASK_FAILURE_STATES, Deployment, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# Past days of their own, apart from the other e2e tests' days.
TODAY = datetime.now(timezone.utc).date()
LOAD_DAY, EXTRACT_DAY, LOST_DAY = (TODAY - timedelta(days=n) for n in (20, 21, 22))
HELD_TABLE = "icr_daily_totals"  # the load's per-day rows, written after the merge
TASKS = ("migrate_warehouse", "extract_installations", "load_warehouse", "verify_load", "publish")


# -- helpers ------------------------------------------------------------------------------------


def _published(conn: Any) -> dict[str, Any]:
    """The published tables in brief: what must not change while a killed load's transaction is open."""
    one = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
    return {
        "state": one("SELECT md5(coalesce(string_agg(installation_id::text || ':' || record_hash || ':' || "
                     "(deleted_at IS NULL)::text || ':' || coalesce(last_sync_run_id, ''), ',' "
                     "ORDER BY installation_id), '')) FROM icr_installation_state"),
        "history": one("SELECT count(*) FROM icr_installation_history"),
        "permissions": one("SELECT count(*) FROM icr_installation_permissions"),
        "daily": one("SELECT count(*) FROM icr_installation_daily"),
        "successful_runs": one("SELECT count(*) FROM icr_sync_runs WHERE status = 'success'"),
    }


def _quiet_dag(dep: Deployment) -> None:
    """Unpause, then wait until no other run is active.

    Unpausing creates the latest tick's scheduled run (catchup is off: that one only); it and other
    tests' runs must be done before a test stops "the" load or extract.
    """
    dep.unpause()

    def others_done() -> bool:
        runs = dep.api_json("GET", f"dags/{DAG_ID}/dagRuns", params={"limit": 100})["dag_runs"]
        return any(r["run_type"] == "scheduled" for r in runs) and all(
            r["state"] in ("success", "failed") for r in runs)

    wait_for("the DAG's scheduled run and other tests' runs to finish", others_done, 300, dep.procs, interval_s=2)


def _trigger(dep: Deployment, day: date, tag: str, conf: dict[str, Any]) -> str:
    run_id = f"manual__e2e_kill_{tag}_{day.isoformat()}"
    dep.api_json("POST", f"dags/{DAG_ID}/dagRuns",
                 json={"dag_run_id": run_id, "logical_date": f"{day.isoformat()}T06:00:00Z", "conf": conf})
    return run_id


def _wait_for_task(dep: Deployment, run_id: str, task_id: str, what: str, probe) -> Any:
    """Wait until ``task_id`` is running and ``probe()`` finds what the test waits for; stop early
    (with the task logs) if a task of the run fails a try before that."""

    def check() -> Any:
        tis = {ti["task_id"]: ti for ti in dep.task_instances(run_id)}
        if any(ti["state"] in TASK_FAILURE_STATES for ti in tis.values()):
            return "a task failed"
        return probe() if (tis.get(task_id) or {}).get("state") == "running" else None

    found = wait_for(what, check, 300, dep.procs, interval_s=0.5)
    assert found != "a task failed", f"before the kill, {run_id}:\n" + dep.explain_failed_runs(
        [dep.api_json("GET", f"dags/{DAG_ID}/dagRuns/{run_id}")])
    return found


def _task_process(dep: Deployment, *, local_port: int | None = None, remote_port: int | None = None) -> int:
    """The pid of the Celery worker's process with a TCP socket from ``local_port`` (its PostgreSQL
    session's client port) or to ``remote_port`` (the simulator's): the task process."""
    import psutil

    worker = dep.procs.pid("celery-worker")
    pids = set()
    for c in psutil.net_connections(kind="tcp"):
        if c.pid and c.laddr and c.raddr and (c.laddr.port == local_port or c.raddr.port == remote_port):
            try:
                if worker in {p.pid for p in psutil.Process(c.pid).parents()}:
                    pids.add(c.pid)
            except psutil.NoSuchProcess:
                pass
    assert len(pids) == 1, f"expected one task process of the Celery worker {worker} on that socket, found {pids}"
    return pids.pop()


def _kill_task_process(dep: Deployment, **port: int) -> int:
    """SIGKILL the task process (as the OOM killer would); the worker and its supervisor live on."""
    import psutil

    pid = _task_process(dep, **port)
    proc = psutil.Process(pid)
    proc.kill()
    proc.wait(timeout=30)
    return pid


def _wait_for_retry(dep: Deployment, run_id: str, task_id: str, timeout_s: float = 120) -> dict[str, Any]:
    def pending() -> dict[str, Any] | None:
        ti = dep.api_json("GET", f"dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}")
        # Up for retry, or already past it: the second try scheduled, queued, running or done.
        retried = ti["state"] == "up_for_retry" or (
            ti["try_number"] == 2 and ti["state"] in ("scheduled", "queued", "running", "success"))
        return ti if retried else None

    return wait_for(f"Airflow to retry the killed {task_id}", pending, timeout_s, dep.procs)


def _finish_and_check(dep: Deployment, run_id: str, day: date, retried: str) -> list[tuple[int, str]]:
    """The run succeeds after one retry of ``retried`` (every other task ran once), and the
    warehouse equals the simulator's truth: returns the retried task's tries."""
    import psycopg

    def finished() -> dict[str, Any] | None:
        run = dep.api_json("GET", f"dags/{DAG_ID}/dagRuns/{run_id}")
        return run if run["state"] in ("success", "failed") else None

    run = wait_for(f"{run_id} to finish after the retry", finished, 300, dep.procs, interval_s=2)
    assert run["state"] == "success", "the run did not recover:\n" + dep.explain_failed_runs([run])
    tries = dep.api_json("GET", f"dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{retried}/tries")
    states = [(t["try_number"], t["state"]) for t in sorted(tries["task_instances"], key=lambda t: t["try_number"])]
    assert states == [(1, "failed"), (2, "success")], states
    for task_id in TASKS:
        if task_id != retried:
            ti = dep.api_json("GET", f"dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}")
            assert (ti["state"], ti["try_number"]) == ("success", 1), f"{task_id}: {ti}"

    truth = set(dep.simulator_truth_ids())
    with psycopg.connect(dep.warehouse_dsn, connect_timeout=10) as conn:
        def rows(sql: str, *args: Any) -> list[tuple]:
            return conn.execute(sql, args).fetchall()

        active = rows("SELECT installation_id::text FROM icr_installation_state WHERE deleted_at IS NULL")
        daily = rows("SELECT installation_id::text FROM icr_installation_daily WHERE snapshot_date = %s", day)
        open_versions = rows("SELECT installation_id, count(*) FROM icr_installation_history "
                             "WHERE valid_to IS NULL GROUP BY 1 HAVING count(*) <> 1")
        permissions = rows(
            "SELECT (SELECT count(*) FROM icr_installation_permissions p JOIN icr_installation_state s "
            "USING (installation_id) WHERE s.deleted_at IS NULL), "
            "(SELECT coalesce(sum((SELECT count(*) FROM jsonb_object_keys(permissions))), 0) "
            "FROM icr_installation_state WHERE deleted_at IS NULL)")[0]
        run_row = rows("SELECT status, records_fetched, inserted + updated + unchanged + rejected, snapshot_source, "
                       "snapshot_complete FROM icr_sync_runs WHERE run_id = %s", run_id)
        staging = rows("SELECT tablename FROM pg_tables WHERE tablename LIKE 'icr\\_stage\\_%%'")

    assert {r[0].lower() for r in active} == truth and len(active) == len(truth)
    assert {r[0].lower() for r in daily} == truth and len(daily) == len(truth)
    assert open_versions == [], f"installations without exactly one current history version: {open_versions[:5]}"
    assert permissions[0] == permissions[1], f"permission rows {permissions[0]} != permissions in JSON {permissions[1]}"
    assert run_row == [("success", len(truth), len(truth), "api", True)], run_row
    assert staging == [], f"staging tables left behind: {staging}"
    return states


@pytest.fixture
def migrated(airflow_deployment: Deployment) -> Deployment:
    """The warehouse tables exist whichever test ran first (migrations are safe beside a running DAG)."""
    from icr.sync import migrate
    from icr.warehouse.engine import Warehouse

    warehouse = Warehouse.from_url(airflow_deployment.warehouse_dsn)
    try:
        migrate(warehouse)
    finally:
        warehouse.dispose()
    return airflow_deployment


@contextlib.contextmanager
def _load_held_at_daily(dep: Deployment, day: date, tag: str) -> Iterator[dict[str, Any]]:
    """Trigger a run and hold its load inside its transaction, on the lock of ``HELD_TABLE``.

    Yields ``run_id``, the waiting session's ``backend`` pid and client ``port``, and ``check()``,
    which asserts that nothing of the load is visible yet; lets go of the lock on exit (the dead
    session's statement then ends and rolls back)."""
    import psycopg

    _quiet_dag(dep)
    holder = psycopg.connect(dep.warehouse_dsn, connect_timeout=10)
    try:
        before = _published(holder)
        holder.execute(f"LOCK TABLE {HELD_TABLE} IN ACCESS EXCLUSIVE MODE")
        # A past day: read the API anyway, so the load has a whole snapshot to merge.
        run_id = _trigger(dep, day, tag, {"full_resync": True})

        def load_waits() -> tuple[int, int, str] | None:
            # Its own session: pg_stat_activity is read once per transaction, the holder's is long.
            with psycopg.connect(dep.warehouse_dsn, autocommit=True, connect_timeout=10) as conn:
                row = conn.execute(
                    "SELECT a.pid, a.client_port, a.query FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE NOT l.granted AND l.relation = %s::regclass", (HELD_TABLE,)).fetchone()
            return tuple(row) if row else None

        backend, port, query = _wait_for_task(
            dep, run_id, "load_warehouse", f"the load of {run_id} to wait for the lock on {HELD_TABLE}", load_waits)
        assert HELD_TABLE in query, f"the waiting statement is not the load's per-day step: {query!r}"

        def check() -> None:
            # The killed load's transaction is still open (its session waits for the lock): nothing
            # of it is visible, and the run is not recorded as done.
            assert _published(holder) == before
            status = holder.execute("SELECT status FROM icr_sync_runs WHERE run_id = %s", (run_id,)).fetchone()
            assert status == ("running",), status

        yield {"run_id": run_id, "backend": backend, "port": port, "check": check}
    finally:
        holder.rollback()
        holder.close()


# -- tests --------------------------------------------------------------------------------------


def test_task_process_killed_mid_load_is_retried_by_airflow(migrated: Deployment, say):
    dep = migrated
    with _load_held_at_daily(dep, LOAD_DAY, "load") as held:
        pid = _kill_task_process(dep, local_port=held["port"])
        _wait_for_retry(dep, held["run_id"], "load_warehouse")
        held["check"]()

    states = _finish_and_check(dep, held["run_id"], LOAD_DAY, "load_warehouse")
    say(f"\ne2e kill in the load: task process {pid} SIGKILLed while its session {held['backend']} waited on "
        f"{HELD_TABLE}; nothing published; load_warehouse tries {states}; {held['run_id']} equals the simulator")


def test_worker_lost_mid_load_is_retried_on_a_new_worker(migrated: Deployment, say):
    """The whole worker dies (a lost node: Celery, the supervisor and the task process at once).
    Nothing reports the failure: Airflow's scheduler finds the task by its missing heartbeats
    (60 s in the e2e deployment), and a replacement worker runs the retry."""
    import psutil

    dep = migrated
    with _load_held_at_daily(dep, LOST_DAY, "lost") as held:
        task_pid = _task_process(dep, local_port=held["port"])
        killed = dep.procs.kill("celery-worker")
        assert task_pid in killed and not psutil.pid_exists(task_pid), (task_pid, killed)
        held["check"]()
    dep.replace_worker()
    retry = _wait_for_retry(dep, held["run_id"], "load_warehouse", timeout_s=240)
    scheduler_log = (dep.artifacts / "scheduler.log").read_text(errors="replace")
    assert any("without a heartbeat" in line and f"'Run Id': '{held['run_id']}'" in line
               for line in scheduler_log.splitlines()), "the scheduler did not report the lost task's heartbeat"

    states = _finish_and_check(dep, held["run_id"], LOST_DAY, "load_warehouse")
    say(f"\ne2e lost worker: {len(killed)} processes of the Celery worker SIGKILLed (task process {task_pid}) "
        f"while the load waited on {HELD_TABLE}; the scheduler failed the try on missing heartbeats "
        f"(seen as {retry['state']}); a new worker ran the retry; load_warehouse tries {states}; "
        f"{held['run_id']} equals the simulator")


def test_task_process_killed_mid_fetch_is_retried_by_airflow(migrated: Deployment, say):
    dep = migrated
    _quiet_dag(dep)
    served_before = dep.simulator_state()["stats"]["pages_served"]
    dep.simulator_faults({"latency_ms": 400})  # 25 pages of 10: about 10 s of paging
    try:
        run_id = _trigger(dep, EXTRACT_DAY, "extract", {"full_resync": True, "page_size": 10})
        sim_port = urlsplit(dep.simulator["base_url"]).port

        def paging() -> bool:
            return dep.simulator_state()["stats"]["pages_served"] >= served_before + 3

        _wait_for_task(dep, run_id, "extract_installations", f"the extract of {run_id} to be paging", paging)
        pages = dep.simulator_state()["stats"]["pages_served"] - served_before
        pid = _kill_task_process(dep, remote_port=sim_port)
        _wait_for_retry(dep, run_id, "extract_installations")
    finally:
        dep.simulator_faults({"latency_ms": 0})

    states = _finish_and_check(dep, run_id, EXTRACT_DAY, "extract_installations")
    # The retry read every page again (the killed try's pages were not kept).
    served = dep.simulator_state()["stats"]["pages_served"] - served_before
    assert served >= pages + -(-len(dep.simulator_truth_ids()) // 10), (served, pages)
    say(f"\ne2e kill in the extract: task process {pid} SIGKILLed while paging (after {pages} pages); "
        f"extract_installations tries {states}; {run_id} equals the simulator")
