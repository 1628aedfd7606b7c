"""Run ``airflow dags test`` several times in ONE process (Airflow's start-up is paid once).

Usage: python -m tests.dags.dags_test_runner '<json list of steps>'
Steps:
  {"date": "2026-11-27", "conf": {...}}   ``airflow dags test icr_installations_sync DATE -c CONF``,
                                          through Airflow's own CLI parser and command; optional
                                          "env": {...} is set first (e.g. another AIRFLOW_CONN_ICR_DEFAULT).
                                          Its result lists the run's task instances (state, try_number,
                                          earlier tries kept in task_instance_history).
  {"sim_changes": {"remove": 10}}          POST to the simulator's admin API (ICR_SIM_URL)
  {"sim_faults": {...}}                    POST /_sim/faults (e.g. {"fail_next": {"kind": "503", "n": 3}})
  {"cli": ["dags", "reserialize"]}         any other ``airflow`` command, through the same parser
  {"api": {"method": "POST", "path": "/api/v2/...", "json": {...}}}
                                          a request to Airflow's own REST API app (in process;
                                          set AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True)
  {"inbox": {"event": "uninstalled", "installation": {"id": "..."}}}
                                          a webhook delivery written into the warehouse's inbox
                                          (as the receiver stores it; no notification)
  {"fingerprint": "label", "ignore_run_ids": false}
                                          a hash of every warehouse table the sync writes
Prints one ``DAGS_TEST_RESULT {json}`` line per step.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys


def _emit(payload: dict) -> None:
    print("DAGS_TEST_RESULT " + json.dumps(payload, sort_keys=True), flush=True)


def _fingerprint(ignore_run_ids: bool) -> str:
    from icr.warehouse.engine import Warehouse
    from tests.support.warehouse import table_fingerprint

    warehouse = Warehouse.from_airflow()
    try:
        data = json.dumps(table_fingerprint(warehouse, ignore_run_ids=ignore_run_ids), sort_keys=True)
    finally:
        warehouse.dispose()
    return hashlib.sha256(data.encode()).hexdigest()


def _deliver(step: dict) -> bool:
    from icr.warehouse.engine import Warehouse
    from tests.icr.webhooks.test_apply import deliver

    warehouse = Warehouse.from_airflow()
    try:
        return deliver(warehouse, step["event"], step["installation"])
    finally:
        warehouse.dispose()


def _task_instances(dag_id: str) -> list[dict]:
    """The task instances of the DAG's latest run: how often each ran and how it ended."""
    from sqlalchemy import func, select

    from airflow.models import DagRun, TaskInstance
    from airflow.models.taskinstancehistory import TaskInstanceHistory
    from airflow.utils.session import create_session

    with create_session() as session:
        run_id = session.scalar(select(DagRun.run_id).where(DagRun.dag_id == dag_id).order_by(DagRun.id.desc()).limit(1))
        earlier = dict(session.execute(
            select(TaskInstanceHistory.task_id, func.count()).where(
                TaskInstanceHistory.dag_id == dag_id, TaskInstanceHistory.run_id == run_id)
            .group_by(TaskInstanceHistory.task_id)).all())
        return [{"task_id": ti.task_id, "state": str(ti.state) if ti.state else None, "try_number": ti.try_number,
                 "earlier_tries": int(earlier.get(ti.task_id, 0))}
                for ti in session.scalars(select(TaskInstance).where(
                    TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id))]


def _api(request: dict) -> dict:
    from fastapi.testclient import TestClient

    from airflow.api_fastapi.app import create_app

    with TestClient(create_app("core")) as client:
        resp = client.request(request.get("method", "GET"), request["path"], json=request.get("json"))
    try:
        body = resp.json()
    except ValueError:
        body = resp.text
    return {"api": request["path"], "status": resp.status_code, "body": body}


def main() -> int:
    import requests
    from airflow.cli import cli_parser

    parser = cli_parser.get_parser()
    for step in json.loads(sys.argv[1]):
        if "sim_changes" in step:
            resp = requests.post(f"{os.environ['ICR_SIM_URL']}/_sim/changes", json=step["sim_changes"], timeout=30)
            resp.raise_for_status()
            _emit({"sim_changes": step["sim_changes"], "status": resp.status_code})
            continue
        if "sim_faults" in step:
            resp = requests.post(f"{os.environ['ICR_SIM_URL']}/_sim/faults", json=step["sim_faults"], timeout=30)
            resp.raise_for_status()
            _emit({"sim_faults": step["sim_faults"], "status": resp.status_code})
            continue
        if "inbox" in step:
            _emit({"inbox": step["inbox"]["event"], "inserted": _deliver(step["inbox"])})
            continue
        if "fingerprint" in step:
            _emit({"fingerprint": step["fingerprint"], "hash": _fingerprint(bool(step.get("ignore_run_ids")))})
            continue
        if "cli" in step:
            args = parser.parse_args(step["cli"])
            args.func(args)
            _emit({"cli": step["cli"]})
            continue
        if "api" in step:
            _emit(_api(step["api"]))
            continue
        os.environ.update(step.get("env") or {})
        dag_id = step.get("dag_id", "icr_installations_sync")
        argv = ["dags", "test", dag_id, step["date"]]
        if step.get("conf"):
            argv += ["-c", json.dumps(step["conf"])]
        args = parser.parse_args(argv)
        try:
            args.func(args)
            state = "success"
        except SystemExit as exc:
            state = "failed" if str(exc) == "DagRun failed" else f"error: {exc}"
        except Exception as exc:  # e.g. ParamValidationError: Airflow refused to create the run
            state = f"error: {type(exc).__name__}: {exc}"
        tis = [] if state.startswith("error") else _task_instances(dag_id)
        _emit({"date": step["date"], "state": state, "label": step.get("label"), "tis": tis})
    return 0


if __name__ == "__main__":
    sys.exit(main())
