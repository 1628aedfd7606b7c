"""Run ``airflow dags test`` several times in ONE process (Airflow's start-up is paid once).

Usage: python -m tests.dags.dags_test_runner '<json list of steps>'
Steps:
  {"date": "2026-11-27", "conf": {...}}   ``airflow dags test icr_installations_sync DATE -c CONF``,
                                          through Airflow's own CLI parser and command
  {"sim_changes": {"remove": 10}}          POST to the simulator's admin API (ICR_SIM_URL)
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
    from tests.icr.warehouse.helpers import table_fingerprint

    warehouse = Warehouse.from_airflow()
    try:
        data = json.dumps(table_fingerprint(warehouse, ignore_run_ids=ignore_run_ids), sort_keys=True)
    finally:
        warehouse.dispose()
    return hashlib.sha256(data.encode()).hexdigest()


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
        if "fingerprint" in step:
            _emit({"fingerprint": step["fingerprint"], "hash": _fingerprint(bool(step.get("ignore_run_ids")))})
            continue
        argv = ["dags", "test", step.get("dag_id", "icr_installations_sync"), step["date"]]
        if step.get("conf"):
            argv += ["-c", json.dumps(step["conf"])]
        args = parser.parse_args(argv)
        try:
            args.func(args)
            state = "success"
        except SystemExit as exc:
            state = "failed" if str(exc) == "DagRun failed" else f"error: {exc}"
        _emit({"date": step["date"], "state": state})
    return 0


if __name__ == "__main__":
    sys.exit(main())
