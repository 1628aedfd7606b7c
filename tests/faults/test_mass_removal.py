"""9. Mass removal: the API suddenly lists a fraction of the installations. The run fails before
writing (MassRemovalError, warehouse unchanged); an operator accepts it with the param — in
process (SyncSettings) and for real through ``airflow dags test ... -c '{"accept_mass_removal": true}'``,
whose task logs and XComs go through the secret scanner too."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.faults.conftest import (
    ROOT,
    compare_with_truth,
    deleted_ids,
    new_run,
    staging_tables,
)
from tests.support.warehouse import outcome_fingerprint, run_row, run_rows

FAULT_CLASS = "mass_removal"
pytestmark = pytest.mark.faults

N = 400


def test_mass_removal_guard_then_accepted_via_dag_param(make_simulator, hook_for, faults_pg, pg_database,
                                                        ledger, leaks, tmp_path, airflow_home):
    from icr.errors import MassRemovalError
    from icr.sync import SyncSettings, run_sync

    sim = make_simulator(installations=N, seed=101)
    hook = hook_for(sim)
    run_sync(faults_pg, hook, new_run("mass-seed"), SyncSettings(page_size=100))
    removed = set(sim.remove_installations(int(N * 0.7)))
    before = outcome_fingerprint(faults_pg)

    run = new_run("mass-guard")
    with pytest.raises(MassRemovalError) as info:
        run_sync(faults_pg, hook, run, SyncSettings(page_size=100))
    leaks.feed_exception(info.value)
    assert "accept_mass_removal" in str(info.value) and "Nothing was written" in str(info.value)
    assert outcome_fingerprint(faults_pg) == before
    assert run_row(faults_pg, run.run_id)["status"] == "failed"
    assert staging_tables(faults_pg) == []

    # The operator's answer, through the real DAG: airflow dags test with the param.
    home = airflow_home  # migrated once per session (tests/conftest.py)
    dbname = pg_database.rsplit("/", 1)[1]
    conn = json.loads(os.environ["AIRFLOW_CONN_ICR_DEFAULT"])
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "ICR_SYNC_RETRIES": "0",
        "AIRFLOW_CONN_ICR_DEFAULT": json.dumps({**conn, "extra": {**conn["extra"], "page_size": 100}}),
        "AIRFLOW_CONN_ICR_WAREHOUSE": json.dumps({"conn_type": "postgres", "host": "127.0.0.1", "port": 5432,
                                                  "login": "postgres", "schema": dbname}),
    }
    airflow = str(Path(sys.executable).with_name("airflow"))
    date = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    proc = subprocess.run([airflow, "dags", "test", "icr_installations_sync", date, "-c",
                           json.dumps({"accept_mass_removal": True})],
                          env=env, capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    leaks.feed("subprocess stdout", proc.stdout)
    leaks.feed("subprocess stderr", proc.stderr)
    logs = 0
    for path in (home / "logs").rglob("*"):
        if path.is_file():
            leaks.feed("airflow task log", path.read_text("utf-8", "replace"))
            logs += 1
    xcoms = 0
    metadata = home / "airflow.db"
    if metadata.exists():
        with sqlite3.connect(metadata) as db:
            for (value,) in db.execute("SELECT value FROM xcom"):
                leaks.feed("xcom", value if isinstance(value, (str, bytes)) else json.dumps(value))
                xcoms += 1
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])

    last = run_rows(faults_pg)[-1]
    diff = compare_with_truth(faults_pg, sim.truth())
    wrongly = deleted_ids(faults_pg) & sim.truth_ids()
    ledger.record(FAULT_CLASS, injected=2, runs=2,
                  survived=1 + int(last["status"] == "success" and diff.lost == 0 and not wrongly),
                  rows_lost=diff.lost + len(wrongly))
    assert last["status"] == "success" and last["removed"] == len(removed), last
    assert diff.lost == 0, str(diff)
    assert deleted_ids(faults_pg) == removed
    # `airflow dags test` runs the tasks in-process: their logs are in its output (scanned above),
    # plus any files under AIRFLOW_HOME/logs
    assert "accepting a mass removal" in proc.stdout + proc.stderr, "the task logs were not captured"
    assert xcoms > 0, "no XComs to scan"
