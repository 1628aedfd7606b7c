"""Errors a retry cannot fix fail the task at once; transient ones are ridden out (issue 18 item 4).

The real DAG runs with ``airflow dags test`` and retries switched ON (2 retries, 1 s apart), so an
error that is retried shows up as a second try in the metadata DB. Each case must end with its
task failed on its first try, no earlier try in ``task_instance_history``, its clear message in
the task log and in ``icr_sync_runs.error``, and the warehouse's staging dropped by the failure
callback. A run whose API answers 503 a few times still succeeds on the first try.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from icr.warehouse.engine import Warehouse
from tests.conftest import icr_conn_json
from tests.dags.conftest import run_steps
from tests.support.airflow_home import airflow_env

pytestmark = pytest.mark.slow

RETRY_ENV = {"ICR_SYNC_RETRIES": "2", "ICR_SYNC_RETRY_DELAY_SECONDS": "1"}


@pytest.fixture
def forbidding_api() -> Iterator[str]:
    """A loopback HTTP server that answers every request 403 as ICR (NestJS) would."""

    class Handler(BaseHTTPRequestHandler):
        def _forbid(self) -> None:
            body = json.dumps({"statusCode": 403, "message": "Forbidden resource", "error": "Forbidden"}).encode()
            self.send_response(403)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _forbid

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _other_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _with(conn_json: str, **fields: str) -> str:
    return json.dumps({**json.loads(conn_json), **fields})


def _task_logs(output: str) -> list[str]:
    """The runner's stdout cut at its result lines: segment i holds the logs of step i."""
    return output.split("DAGS_TEST_RESULT ")


def test_permanent_errors_fail_at_once_and_blips_are_ridden_out(make_simulator, airflow_home, tmp_path,
                                                                  forbidding_api):
    sim = make_simulator(installations=300, seed=23, max_page_size=50, default_page_size=50)
    good = icr_conn_json(sim, page_size=50)
    wh_path = tmp_path / "warehouse.sqlite"
    env = airflow_env(airflow_home, AIRFLOW_CONN_ICR_DEFAULT=good, ICR_SIM_URL=sim.base_url,
                      AIRFLOW_CONN_ICR_WAREHOUSE=json.dumps({"conn_type": "sqlite", "host": str(wh_path)}),
                      **RETRY_ENV)
    today = datetime.now(timezone.utc).date().isoformat()
    bad_record = {"id": 12345, "name": "not a valid installation"}
    steps = [
        {"sim_faults": {"fail_next": {"kind": "503", "n": 3}}},
        {"label": "503 blips", "date": today},
        {"label": "wrong key", "date": today, "env": {"AIRFLOW_CONN_ICR_DEFAULT": _with(good, password=_other_key())}},
        {"label": "bad config", "date": today,
         "env": {"AIRFLOW_CONN_ICR_DEFAULT": _with(good, password="this is not a key at all")}},
        # (a 400 "limit must not be greater than N" is retried once with N by the pager: see
        # tests/faults/test_hostile_api.py; an unsupported API version is a 400 no retry can fix)
        {"label": "API 400", "date": today,
         "env": {"AIRFLOW_CONN_ICR_DEFAULT": _with(good, extra={**json.loads(good)["extra"],
                                                                "api_version": "1999-01-01"})}},
        {"label": "API 403", "date": today, "env": {"AIRFLOW_CONN_ICR_DEFAULT": _with(good, host=forbidding_api)}},
        {"sim_faults": {"extra_records": {"0": [bad_record]}}},
        {"label": "reject guard", "date": today, "conf": {"max_reject_share": 0},
         "env": {"AIRFLOW_CONN_ICR_DEFAULT": good}},
        {"sim_faults": {"extra_records": None}},
        {"sim_changes": {"remove": 200}},
        {"label": "mass removal", "date": today},
    ]
    results, output = run_steps(airflow_home, steps, env)
    runs = {r["label"]: r for r in results if r.get("label")}
    logs = dict(zip([r.get("label") for r in results], _task_logs(output)))

    blips = runs["503 blips"]
    assert blips["state"] == "success", output[-5000:]
    assert {(ti["try_number"], ti["earlier_tries"]) for ti in blips["tis"]} == {(1, 0)}, blips
    assert sim.stats["by_status"][503] == 3

    expected = {
        # case: (failing task, words its message must contain)
        "wrong key": ("extract_installations", ["HTTP 401", "App ID"]),
        "bad config": ("extract_installations", ["password (private key PEM)"]),
        "API 400": ("extract_installations", ["HTTP 400", "API version '1999-01-01'"]),
        "API 403": ("extract_installations", ["HTTP 403", "Forbidden resource"]),
        "reject guard": ("load_warehouse", ["max_reject_share"]),
        "mass removal": ("load_warehouse", ["accept_mass_removal", "Nothing was written"]),
    }
    with Warehouse.from_url(f"sqlite:///{wh_path}").read() as conn:
        errors = [row[0] for row in conn.execute(sa.text(
            "SELECT error FROM icr_sync_runs WHERE status = 'failed' ORDER BY started_at"))]
        staging = [name for name in sa.inspect(conn).get_table_names() if name.startswith("icr_stage_")]
    assert len(errors) == len(expected), errors
    for (case, (task_id, words)), error in zip(expected.items(), errors):
        run = runs[case]
        failed = {ti["task_id"]: ti for ti in run["tis"] if ti["state"] == "failed"}
        assert run["state"] == "failed" and set(failed) == {task_id}, (case, run)
        assert (failed[task_id]["try_number"], failed[task_id]["earlier_tries"]) == (1, 0), \
            f"{case}: {task_id} was retried: {failed[task_id]}"
        log = logs[case]
        for word in words:
            assert word in log, f"{case}: the task log does not say {word!r}:\n{log[-3000:]}"
            assert word in error, f"{case}: icr_sync_runs.error does not say {word!r}: {error}"
        assert "not retried" in log, f"{case}: the log does not say that the task is not retried:\n{log[-3000:]}"
    assert staging == []
