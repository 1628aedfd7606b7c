"""The DAG on a real Airflow 3 deployment (CeleryExecutor), driven through the public REST API v2.

A backfill of three days against the ICR simulator and a PostgreSQL warehouse; then the
warehouse has each day's snapshot and run row, the task instances ran on the Celery worker, and
``POST /api/v2/connections/test`` reaches the simulator through the ICR hook.

Run alone: ``pytest -m e2e -s tests/e2e/test_real_airflow.py``.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timedelta, timezone

import pytest

from tests.e2e.deployment import DAG_ID, Deployment

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# Three past days, apart from the browser test's range and from today's scheduled run.
TODAY = datetime.now(timezone.utc).date()
DAYS = [TODAY - timedelta(days=n) for n in (14, 13, 12)]


def _warehouse_rows(deployment: Deployment, day: date) -> tuple[int, list[tuple[str, str]]]:
    import psycopg

    with psycopg.connect(deployment.warehouse_dsn, connect_timeout=10) as conn:
        count = conn.execute("SELECT count(*) FROM icr_installation_daily WHERE snapshot_date = %s",
                             (day,)).fetchone()[0]
        runs = conn.execute(
            "SELECT run_id, status FROM icr_sync_runs "
            "WHERE (logical_date AT TIME ZONE 'UTC')::date = %s ORDER BY run_id", (day,)).fetchall()
    return count, runs


def test_backfill_three_days_on_celery(airflow_deployment: Deployment, say):
    dep = airflow_deployment
    first, last = DAYS[0].isoformat(), DAYS[-1].isoformat()
    dep.unpause()
    backfill = dep.api_json("POST", "backfills", json={
        "dag_id": DAG_ID,
        "from_date": f"{first}T00:00:00Z",
        "to_date": f"{last}T23:59:59Z",
        "reprocess_behavior": "none",
        "max_active_runs": 1,
    })
    assert backfill["dag_id"] == DAG_ID

    runs = dep.wait_for_backfill(first, last, expected_runs=len(DAYS))
    failed = [r for r in runs if r["state"] != "success"]
    assert not failed, "backfill runs failed:\n" + dep.explain_failed_runs(runs)
    assert [r["logical_date"][:10] for r in runs] == [d.isoformat() for d in DAYS]

    worker_log = (dep.artifacts / "celery-worker.log").read_text(errors="replace")
    lines = []
    for run, day in zip(runs, DAYS, strict=True):
        # The warehouse: the day's snapshot and a successful run row for that logical date.
        count, run_rows = _warehouse_rows(dep, day)
        assert count == dep.installations, f"{day}: {count} snapshot rows, simulator has {dep.installations}"
        assert (run["dag_run_id"], "success") in run_rows, f"{day}: icr_sync_runs has {run_rows}"

        # The Celery worker ran every task: the hostname only it reports, and its own log.
        tis = dep.task_instances(run["dag_run_id"])
        assert tis, f"no task instances in {run['dag_run_id']}"
        hostnames = sorted({ti["hostname"] for ti in tis})
        for ti in tis:
            assert ti["state"] == "success", f"{ti['task_id']} in {run['dag_run_id']}: {ti['state']}"
            assert ti["hostname"] == dep.worker_hostname, f"{ti['task_id']} ran on {ti['hostname']!r}"
            executed = re.search(
                rf"Executing workload in Celery: .*ti=TaskInstanceDTO\(id=UUID\('{ti['id']}'\), "
                rf"task_id='{re.escape(ti['task_id'])}'", worker_log)
            assert executed, f"the worker's log does not show it executed {ti['task_id']} ({ti['id']})"
        lines.append(f"  {day}: {count} installations in icr_installation_daily, run {run['dag_run_id']} "
                     f"success, {len(tis)} tasks on {', '.join(hostnames)}")

    say(f"\ne2e backfill of {DAG_ID} on {first}..{last} (Celery worker {dep.worker_hostname}):")
    for line in lines:
        say(line)
    _no_secret_in_worker_logs(dep, worker_log, say)


def _no_secret_in_worker_logs(dep: Deployment, worker_log: str, say) -> None:
    """The worker logs at DEBUG (deployment.py): neither its log nor the task logs hold any piece
    of the app's private key, an app JWT (whole or cut) or an access token."""
    from pathlib import Path

    from tests.support.secrets import LeakScanner

    scanner = LeakScanner()
    scanner.add_secret(Path(dep.simulator["private_key_path"]).read_text(), "the app's private key")
    assert "[debug" in worker_log.lower() or " DEBUG " in worker_log, "the worker did not log at DEBUG"
    texts = {"celery-worker.log": worker_log}
    texts.update({str(p.relative_to(dep.home)): p.read_text(errors="replace")
                  for p in (dep.home / "logs").rglob("*") if p.is_file()})
    found = [f"{f.what} in {name}: …{f.excerpt}" for name, text in texts.items()
             for f in scanner.scan("e2e", name, text)]
    assert not found, "secrets at DEBUG on the Celery worker: " + "; ".join(found[:5])
    say(f"  DEBUG secret scan: {len(texts)} worker and task logs, "
        f"{sum(len(t) for t in texts.values()) / 1e6:.1f} MB, nothing found")


def test_connection_test_endpoint(airflow_deployment: Deployment, say):
    """POST /api/v2/connections/test runs ICRHook.test_connection() in the API server.

    First for the stored ``icr_default`` (the body names it; Airflow fills in the stored
    credentials), then for a connection given whole in the body, as the UI's form sends it.
    """
    dep = airflow_deployment
    stored = dep.api_json("POST", "connections/test", json={"connection_id": "icr_default", "conn_type": "icr"})
    conn = dep.icr_connection
    adhoc = dep.api_json("POST", "connections/test", json={
        "connection_id": "icr_e2e_adhoc", "conn_type": "icr", "host": conn["host"], "login": conn["login"],
        "extra": json.dumps(conn["extra"])})
    listed_now = len(dep.simulator_truth_ids())  # other e2e tests change the shared simulator
    for answer in (stored, adhoc):
        assert answer["status"] is True, answer
        assert dep.simulator["app_id"] in answer["message"], answer
        assert f"{listed_now} installations" in answer["message"], answer
    listed = dep.api_json("GET", "connections")["connections"]
    assert [c["conn_type"] for c in listed if c["connection_id"] == "icr_default"] == ["icr"]
    say(f"\ne2e connection test of icr_default: {stored['message']}")
