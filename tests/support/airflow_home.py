"""AIRFLOW_HOMEs for tests that run the ``airflow`` CLI in a subprocess.

``airflow db migrate`` takes ~20 s here, so a session migrates one home (the ``airflow_home_template``
fixture of tests/conftest.py) and each test works on a copy (``airflow_home``). A migrated home's
``airflow.cfg`` names its own directory (metadata DB, logs), so ``copy_airflow_home`` points the copy's
``airflow.cfg`` at the copy: without that, every copy would write into the template's DB and logs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def airflow_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of an ``airflow`` subprocess on ``home``: no AIRFLOW__/AIRFLOW_CONN_ variable
    of this process, the repo's DAGs, no examples, and no task retries."""
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


def copy_airflow_home(template: Path, home: Path) -> Path:
    """A copy of the migrated ``template`` at ``home`` (which must not exist), on its own DB and logs."""
    shutil.copytree(template, home)
    cfg = home / "airflow.cfg"
    if cfg.exists():
        cfg.write_text(cfg.read_text().replace(str(template), str(home)))
    return home
