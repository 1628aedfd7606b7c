"""``run_steps``: drive ``airflow dags test`` (tests.dags.dags_test_runner) in a test's AIRFLOW_HOME
(the ``airflow_home`` fixture of tests/conftest.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.airflow_home import REPO


def run_steps(home: Path, steps: list[dict[str, Any]], env: dict[str, str], timeout: int = 900) -> tuple[list[dict], str]:
    """Run tests.dags.dags_test_runner; returns its result lines and its whole output."""
    proc = subprocess.run([sys.executable, "-m", "tests.dags.dags_test_runner", json.dumps(steps)],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    results = [json.loads(line.split(" ", 1)[1]) for line in proc.stdout.splitlines()
               if line.startswith("DAGS_TEST_RESULT ")]
    assert proc.returncode == 0, output[-5000:]
    return results, output
