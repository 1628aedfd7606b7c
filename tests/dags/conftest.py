"""Airflow environments for DAG tests: a metadata DB migrated once per session, copied per test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def airflow_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__"))}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "ICR_SYNC_RETRIES": "0",  # a failing test run fails at once instead of waiting for retries
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
    })
    env.update(extra)
    return env


def migrated_airflow_home(home: Path) -> Path:
    """``home`` as an AIRFLOW_HOME whose SQLite metadata DB is migrated (~20 s)."""
    proc = subprocess.run([AIRFLOW, "db", "migrate"], env=airflow_env(home), cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return home


@pytest.fixture(scope="session")
def airflow_home_template(tmp_path_factory) -> Path:
    """An AIRFLOW_HOME whose SQLite metadata DB is migrated (once per session)."""
    return migrated_airflow_home(tmp_path_factory.mktemp("airflow-template"))


@pytest.fixture
def airflow_home(airflow_home_template: Path, tmp_path: Path) -> Path:
    home = tmp_path / "airflow"
    shutil.copytree(airflow_home_template, home)
    return home


def run_steps(home: Path, steps: list[dict[str, Any]], env: dict[str, str], timeout: int = 900) -> tuple[list[dict], str]:
    """Run tests.dags.dags_test_runner; returns its result lines and its whole output."""
    proc = subprocess.run([sys.executable, "-m", "tests.dags.dags_test_runner", json.dumps(steps)],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    results = [json.loads(line.split(" ", 1)[1]) for line in proc.stdout.splitlines()
               if line.startswith("DAGS_TEST_RESULT ")]
    assert proc.returncode == 0, output[-5000:]
    return results, output
