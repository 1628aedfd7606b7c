"""docs/deploy-existing-airflow.md, run as written: the guide cannot rot.

The guide's marked ``bash`` blocks (see :mod:`tests.e2e.guide`) run in order in a fresh temporary
``AIRFLOW_HOME`` with a fresh virtualenv made by the guide itself (Airflow from constraints.txt,
then the wheel built from a clean copy of the build files). Only the settings of the guide's step 0
are replaced: fresh PostgreSQL databases for the metadata and the warehouse, a free Redis db
(1-15), free ports, and the ICR simulator as ICR. The test then starts the five processes the guide
starts, unpauses and triggers as the guide says, waits for the run, and checks the warehouse
against the simulator, the run row, the Celery worker's log and the systemd units.

Everything it started is stopped and everything it created is dropped at the end, also when it
fails. The output of each block and process is in ``artifacts/e2e-guide/``.

Run alone: ``ICR_REQUIRE_E2E=1 ICR_REQUIRE_POSTGRES=1 bash scripts/test -m e2e tests/e2e/test_guide.py -x``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from tests.e2e import guide
from tests.e2e.deployment import (
    PG_ADMIN_DSN,
    REDIS_URL,
    ROOT,
    TASK_FAILURE_STATES,
    DeploymentError,
    ProcessSet,
    free_port,
    tail,
    unavailable_services,
    wait_for,
)
from tests.test_packaging import copy_build_context

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(2700)]

LOGS = ROOT / "artifacts" / "e2e-guide"
DAG_ID = "icr_installations_sync"
# What the guide must start: the deployment of the issue (and of tests/e2e/deployment.py).
PROCESSES = ["api-server", "scheduler", "dag-processor", "triggerer", "celery-worker"]
INSTALLATIONS = 300
BLOCK_TIMEOUT_S = 1200  # a block of the guide (the pip installs are the long ones)
RUN_TIMEOUT_S = 600  # the DAG run, from the trigger


def _require_e2e() -> bool:
    return os.environ.get("ICR_REQUIRE_E2E", "") not in ("", "0", "false", "False")


def _missing_tools(env: dict[str, str]) -> list[str]:
    problems = list(unavailable_services())
    for tool in ("bash", "curl", "systemd-analyze"):
        if shutil.which(tool, path=env["PATH"]) is None:
            problems.append(f"{tool} is not on PATH")
    probe = subprocess.run(["python3", "-c", "import sys; sys.exit(sys.version_info < (3, 11))"], env=env,
                           capture_output=True, timeout=60)
    if probe.returncode != 0:
        problems.append("the guide needs python3 >= 3.11 on PATH (outside the project's venv)")
    return problems


def _clean_env() -> dict[str, str]:
    """The environment of a new terminal: nothing of the project's venv, Airflow or the test."""
    venv_bin = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "_AIRFLOW", "ICR_SYNC_", "PYTEST"))
           and k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env["PYTHONUNBUFFERED"] = "1"
    return env


# --- one terminal ------------------------------------------------------------------------------


@dataclass
class Terminal:
    """Runs guide blocks with bash as one terminal would: exported variables carry from block to block."""

    workdir: Path
    env: dict[str, str]
    log_dir: Path
    timings: dict[str, float] = field(default_factory=dict)
    count: int = 0

    def __post_init__(self) -> None:
        self.state = self.workdir / "terminal.state"
        self.state.write_text("")

    def script(self, body: str) -> str:
        return f'set -euo pipefail\n. "{self.state}"\ncd "{self.workdir}"\n{body}'

    def run(self, block: guide.Block, body: str | None = None, timeout_s: float = BLOCK_TIMEOUT_S,
            quiet: bool = False) -> str:
        """Run the block (or ``body`` in its place); return its output, fail with its tail."""
        self.count += 1
        log = self.log_dir / f"block-{self.count:02d}-line{block.line}.log"
        script = self.script((body or block.text) + f'\nexport -p > "{self.state}.next"\n')
        t0 = time.monotonic()
        code = _run_bash(script, self.env, self.workdir, log, timeout_s)
        self.timings[f"line {block.line}"] = time.monotonic() - t0
        output = log.read_text(errors="replace")
        if code != 0:
            if quiet:
                raise _BlockFailed(output)
            raise AssertionError(f"the guide's block at {block.where()} failed (exit {code}):\n"
                                 f"{block.text}\n--- output (tail) ---\n{tail(log, 60)}")
        os.replace(f"{self.state}.next", self.state)
        return output

    def get(self, *names: str) -> list[str]:
        """The values of exported variables, as the next block would see them."""
        proc = subprocess.run(["bash", "-c", self.script('printf "%s\\0" ' + " ".join(f'"${{{n}:-}}"' for n in names))],
                              env=self.env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.split("\0")[:-1]


class _BlockFailed(Exception):
    pass


def _run_bash(script: str, env: dict[str, str], cwd: Path, log: Path, timeout_s: float) -> int:
    with log.open("wb") as out:
        out.write(f"$ bash <<'BLOCK'\n{script}\nBLOCK\n".encode())
        out.flush()
        proc = subprocess.Popen(["bash", "-c", script], env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the block and whatever it started
            proc.wait()
            out.write(f"\n(killed after {timeout_s:.0f}s)\n".encode())
            return -9


# --- what the test creates and removes -----------------------------------------------------------


@dataclass
class Resources:
    work: Path
    procs: ProcessSet
    suffix: str = field(default_factory=lambda: secrets.token_hex(4))
    databases: list[str] = field(default_factory=list)
    redis_db: int | None = None

    @property
    def pg(self):
        return urlsplit(PG_ADMIN_DSN)

    def database_url(self, name: str, driver: str = "postgresql") -> str:
        return f"{driver}://{self.pg.netloc}/{name}"

    def create_database(self, kind: str) -> str:
        import psycopg

        name = f"icr_guide_{kind}_{self.suffix}"
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.databases.append(name)
        return name

    def claim_redis_db(self) -> int:
        """A Redis db (1-15) without keys, marked at once so that a concurrent run picks another."""
        import random

        import redis

        for db in random.sample(range(1, 16), 15):
            client = redis.Redis.from_url(f"{REDIS_URL}/{db}")
            if client.dbsize() == 0 and client.set("icr_guide_e2e", self.suffix, nx=True):
                self.redis_db = db
                return db
        raise DeploymentError("every Redis db 1-15 has keys: none is free for the Celery broker")

    def cleanup(self) -> None:
        self.procs.stop()
        import psycopg

        for name in self.databases:
            try:
                with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except Exception as exc:  # noqa: BLE001 - keep cleaning up
                print(f"e2e guide: could not drop database {name}: {exc}", file=sys.stderr)
        if self.redis_db is not None:
            try:
                import redis

                redis.Redis.from_url(f"{REDIS_URL}/{self.redis_db}").flushdb()
            except Exception as exc:  # noqa: BLE001
                print(f"e2e guide: could not flush redis db {self.redis_db}: {exc}", file=sys.stderr)
        shutil.rmtree(self.work, ignore_errors=True)  # the virtualenv alone is ~600 MB


@pytest.fixture
def resources() -> Iterator[Resources]:
    if LOGS.exists():
        shutil.rmtree(LOGS)
    LOGS.mkdir(parents=True)
    res = Resources(work=Path(tempfile.mkdtemp(prefix="icr-guide-")), procs=ProcessSet(LOGS))
    try:
        yield res
    finally:
        res.cleanup()


# --- the test ----------------------------------------------------------------------------------


def test_the_guide_as_written(resources: Resources, say):
    env = _clean_env()
    problems = _missing_tools(env)
    if problems:
        reason = "the guide's e2e test cannot run: " + "; ".join(problems)
        if _require_e2e():
            pytest.fail(reason + " (ICR_REQUIRE_E2E=1)", pytrace=False)
        pytest.skip(reason)

    blocks = guide.blocks()
    assert not guide.problems(blocks), "\n".join(guide.problems(blocks))
    [settings] = [b for b in blocks if b.kind == "settings"]
    started = [b.arg for b in blocks if b.kind == "start"]
    assert started == PROCESSES, f"the guide starts {started}, the deployment needs {PROCESSES}"
    assert [b.kind for b in blocks].count("after-run") == 1, "the guide must wait for one run (e2e: after-run)"

    res = resources
    work = res.work
    (work / "terminal").mkdir()
    simulator = _start_simulator(res)
    values = {
        "AIRFLOW_HOME": str(work / "airflow_home"),
        "AIRFLOW_VENV": str(work / "venv"),
        "ICR_SOURCE": str(copy_build_context(work / "source")),
        "AIRFLOW_DB_URL": res.database_url(res.create_database("airflow"), "postgresql+psycopg2"),
        "AIRFLOW_BROKER_URL": f"{REDIS_URL}/{res.claim_redis_db()}",
        "AIRFLOW_API_PORT": str(free_port()),
        "AIRFLOW_WORKER_LOG_PORT": str(free_port()),
        "AIRFLOW_TRIGGER_LOG_PORT": str(free_port()),
        "ICR_WAREHOUSE_URL": res.database_url(res.create_database("warehouse")),
        "ICR_BASE_URL": simulator["base_url"],
        "ICR_APP_ID": simulator["app_id"],
        "ICR_PRIVATE_KEY_FILE": simulator["private_key_path"],
    }
    term = Terminal(work / "terminal", env, LOGS)
    run: dict[str, Any] = {}
    t0 = time.monotonic()
    for block in blocks:
        if block.kind == "settings":
            term.run(block, guide.substitute_settings(block, values))
        elif block.kind == "run":
            term.run(block)
        elif block.kind == "start":
            res.procs.start(block.arg, ["bash", "-c", term.script(block.text)], env)
        elif block.kind == "retry":
            _retry(term, block, res.procs, float(block.arg))
        elif block.kind == "after-run":
            run = _wait_for_run(term, res.procs)
            state = term.run(block).strip().splitlines()[-1]
            assert state == "success", f"the guide's {block.where()} printed {state!r}"
    total = time.monotonic() - t0

    run_id = term.get("RUN_ID")[0]
    _check_warehouse(values["ICR_WAREHOUSE_URL"], run_id, simulator)
    _check_celery_ran(run, run_id, term)
    _check_systemd_units(blocks, guide.settings(settings), values)

    slowest = sorted(term.timings.items(), key=lambda kv: -kv[1])[:4]
    say(f"\ne2e guide: docs/deploy-existing-airflow.md ran as written in {total:.0f}s "
        f"({term.count} blocks, {len(PROCESSES)} processes); run {run_id} loaded {INSTALLATIONS} installations; "
        "slowest blocks: " + ", ".join(f"{k} {v:.0f}s" for k, v in slowest))


def _start_simulator(res: Resources) -> dict[str, Any]:
    folder = res.work / "icr"
    folder.mkdir()
    key, info = folder / "icr_private_key.pem", folder / "icr_simulator.json"
    res.procs.start("icr-simulator", [
        sys.executable, "-m", "tests.simulator", "--host", "127.0.0.1", "--port", "0",
        "--installations", str(INSTALLATIONS), "--seed", "20261201",
        "--key-out", str(key), "--info-out", str(info),
    ], {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})
    wait_for("the ICR simulator", info.exists, 60, res.procs, interval_s=0.2)
    return json.loads(info.read_text())


def _retry(term: Terminal, block: guide.Block, procs: ProcessSet, timeout_s: float) -> None:
    last = ""

    def attempt() -> bool:
        nonlocal last
        try:
            term.run(block, timeout_s=120, quiet=True)
            return True
        except _BlockFailed as failed:
            last = str(failed)[-3000:]
            return False

    try:
        wait_for(f"the guide's {block.where()} to succeed", attempt, timeout_s, procs, interval_s=5)
    except DeploymentError as exc:
        raise AssertionError(f"{exc}\n--- the block's last output ---\n{last}") from None


def _wait_for_run(term: Terminal, procs: ProcessSet) -> dict[str, Any]:
    """The run $RUN_ID once finished; fails early, with the task logs, at a task's first failed try."""
    api_url, token, run_id = term.get("AIRFLOW_API_URL", "TOKEN", "RUN_ID")
    assert run_id, "the guide's trigger block did not export RUN_ID"
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    base = f"{api_url}/api/v2/dags/{DAG_ID}/dagRuns/{run_id}"

    failed: list[dict[str, Any]] = []

    def finished() -> dict[str, Any] | None:
        run = session.get(base, timeout=30).json()
        tis = session.get(f"{base}/taskInstances", timeout=30).json()["task_instances"]
        # A failed try would wait out the DAG's retry delays (minutes): stop at the first one.
        failed.extend(ti for ti in tis if ti["state"] in TASK_FAILURE_STATES)
        run["task_instances"] = tis
        return run if failed or run["state"] in ("success", "failed") else None

    run = wait_for(f"run {run_id} of {DAG_ID} to finish", finished, RUN_TIMEOUT_S, procs, interval_s=3)
    if failed or run["state"] != "success":
        raise AssertionError(f"run {run_id} is {run['state']}:\n{_explain(session, base, failed)}\n"
                             f"{procs.tails(lines=30)}")
    return run


def _explain(session: requests.Session, base: str, failed: list[dict[str, Any]]) -> str:
    out = []
    for ti in failed:
        out.append(f"{ti['task_id']}: {ti['state']} (try {ti['try_number']})")
        resp = session.get(f"{base}/taskInstances/{ti['task_id']}/logs/{ti['try_number']}", timeout=30)
        for entry in (resp.json().get("content", []) if resp.ok else [])[-30:]:
            out.append(f"  | {entry.get('event', '') if isinstance(entry, dict) else entry}")
    return "\n".join(out)


def _check_warehouse(url: str, run_id: str, simulator: dict[str, Any]) -> None:
    import psycopg

    truth = requests.get(f"{simulator['base_url']}/_sim/truth_ids", timeout=30).json()["ids"]
    with psycopg.connect(url, connect_timeout=10) as conn:
        status = conn.execute("SELECT status FROM icr_sync_runs WHERE run_id = %s", (run_id,)).fetchall()
        active = {r[0] for r in conn.execute(
            "SELECT lower(installation_id::text) FROM icr_installations WHERE deleted_at IS NULL")}
    assert status == [("success",)], f"icr_sync_runs has {status} for {run_id}"
    assert len(truth) == INSTALLATIONS
    assert active == {i.lower() for i in truth}, (
        f"the warehouse has {len(active)} active installations, the simulator {len(truth)}: "
        f"{len(active - set(truth))} extra, {len({i.lower() for i in truth} - active)} missing")


def _check_celery_ran(run: dict[str, Any], run_id: str, term: Terminal) -> None:
    """The Celery worker the guide started executed every task of the run."""
    log = (LOGS / "celery-worker.log").read_text(errors="replace")
    executed = [line for line in log.splitlines() if "Executing workload in Celery" in line and run_id in line]
    for ti in run["task_instances"]:
        assert ti["state"] == "success", f"{ti['task_id']}: {ti['state']}"
        assert any(f"task_id='{ti['task_id']}'" in line for line in executed), (
            f"the Celery worker's log does not show it executed {ti['task_id']} of {run_id}")


def _check_systemd_units(blocks: list[guide.Block], documented: dict[str, str], values: dict[str, str]) -> None:
    """The appendix's units, with the paths of step 0 replaced, pass systemd-analyze verify."""
    units = [b for b in blocks if b.kind == "systemd-unit"]
    assert {b.arg for b in units} == {"airflow@.service", "airflow-celery-worker.service"}, [b.arg for b in units]
    folder = Path(values["AIRFLOW_HOME"]) / "systemd"
    folder.mkdir()
    for block in units:
        text = block.text
        for name in sorted(("AIRFLOW_VENV", "AIRFLOW_HOME"), key=lambda n: -len(documented[n])):
            text = text.replace(documented[name], values[name])
        (folder / block.arg).write_text(text)
    names = [f"airflow@{p}.service" for p in PROCESSES if p != "celery-worker"] + ["airflow-celery-worker.service"]
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", *(str(folder / n) for n in names)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and not proc.stderr.strip(), (
        f"systemd-analyze verify of the appendix's units:\n{proc.stdout}{proc.stderr}")
