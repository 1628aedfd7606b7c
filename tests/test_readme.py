"""The README's connection commands, run as written: what they store is the connection the hook
reads (the two README commands themselves are run by CI; the deployment guide by tests/e2e)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW = Path(sys.executable).with_name("airflow")
APP_ID = "d23967cc-dd16-452b-8af4-869965745978"


def _bash_block(starting_with: str) -> str:
    blocks = re.findall(r"^```bash\n(.*?)^```", (ROOT / "README.md").read_text(), flags=re.S | re.M)
    found = [b for b in blocks if b.startswith(starting_with)]
    assert len(found) == 1, f"README has {len(found)} bash blocks starting with {starting_with!r}"
    return found[0]


def _settings(conn):
    from icr.hooks import ICRConnectionSettings

    return ICRConnectionSettings.from_connection(conn)


def _check(settings) -> None:
    assert settings.base_url == "https://api.carbonregistry.com" and settings.app_id == APP_ID
    assert settings.key_source == "file"
    assert settings.private_key_path == "/opt/airflow/secrets/icr_private_key.pem"


@pytest.mark.slow
def test_readme_cli_command_stores_the_connection_the_hook_reads(airflow_home):
    from airflow.models.connection import Connection

    env = {**os.environ, "AIRFLOW_HOME": str(airflow_home), "ICR_APP_ID": APP_ID,  # a migrated metadata DB
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    env.pop("AIRFLOW_CONN_ICR_DEFAULT", None)
    block = _bash_block("airflow connections add icr_default")
    bin_dir = str(AIRFLOW.parent)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block], env={**env, "PATH": f"{bin_dir}:{env['PATH']}"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    got = subprocess.run([str(AIRFLOW), "connections", "get", "icr_default", "-o", "json"], env=env,
                         capture_output=True, text=True, check=True, timeout=300)
    (row,) = json.loads(got.stdout)
    conn = Connection(conn_id="icr_default", uri=row["get_uri"])
    assert (conn.host, conn.login) == (row["host"], row["login"])
    assert conn.conn_type == "icr"
    _check(_settings(conn))


def test_readme_environment_variable_is_the_connection_the_hook_reads():
    from airflow.models.connection import Connection

    block = _bash_block("export AIRFLOW_CONN_ICR_DEFAULT=")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block + '\nprintf %s "$AIRFLOW_CONN_ICR_DEFAULT"'],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    conn = Connection.from_json(done.stdout, conn_id="icr_default")
    assert conn.conn_type == "icr"
    _check(_settings(conn))
