"""A real Airflow 3 deployment on this machine, started and stopped by the e2e tests.

No Docker: the venv's ``airflow`` runs ``api-server``, ``scheduler``, ``dag-processor``,
``triggerer`` and a ``celery worker`` (CeleryExecutor) against

* a fresh metadata database ``icr_e2e_airflow_<random>`` in the local PostgreSQL,
* a random Redis database (1-15) as the Celery broker,
* the ICR simulator (``python -m tests.simulator``, a subprocess) as ICR, and
* a fresh warehouse database ``icr_e2e_warehouse_<random>`` (connection ``icr_warehouse``).

Every process runs in its own process group with its output in ``<artifacts>/<name>.log``;
:meth:`Deployment.stop` sends SIGTERM to every group, then SIGKILL, drops the databases and
flushes the Redis db. It is safe to call after a partial :meth:`Deployment.start`.

Login is real: SimpleAuthManager with user ``admin`` and a random password written to its
passwords file; the REST client gets a JWT from ``POST /auth/token``.

Run it by hand to poke at a live deployment (Ctrl-C stops everything)::

    .venv/bin/python -m tests.e2e.deployment [--dags-folder DIR]
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "e2e"
DAG_ID = "icr_installations_sync"
# The venv's airflow, next to the interpreter that runs the tests.
AIRFLOW_BIN = Path(sys.executable).with_name("airflow")

PG_ADMIN_DSN = os.environ.get("ICR_E2E_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("ICR_E2E_REDIS_URL", "redis://127.0.0.1:6379")

ADMIN_USER = "admin"
TASK_FAILURE_STATES = ("failed", "up_for_retry", "upstream_failed")
WORKER_HOSTNAME_ENV = "ICR_E2E_WORKER_HOSTNAME"


class DeploymentError(RuntimeError):
    """The deployment did not come up (the message carries the processes' log tails)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reachable(host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def unavailable_services() -> list[str]:
    """What the deployment needs and this machine lacks (empty when everything is there)."""
    problems = []
    pg = urlsplit(PG_ADMIN_DSN)
    if not _reachable(pg.hostname or "127.0.0.1", pg.port or 5432):
        problems.append(f"PostgreSQL is not reachable at {pg.hostname}:{pg.port or 5432} (ICR_E2E_PG_DSN)")
    else:
        try:
            import psycopg

            with psycopg.connect(PG_ADMIN_DSN, connect_timeout=5) as conn:
                conn.execute("SELECT 1")
        except Exception as exc:  # noqa: BLE001 - reported as the skip reason
            problems.append(f"PostgreSQL at {PG_ADMIN_DSN} refused us: {exc}")
    rd = urlsplit(REDIS_URL)
    if not _reachable(rd.hostname or "127.0.0.1", rd.port or 6379):
        problems.append(f"Redis is not reachable at {rd.hostname}:{rd.port or 6379} (ICR_E2E_REDIS_URL)")
    if not AIRFLOW_BIN.exists():
        problems.append(f"no airflow executable next to {sys.executable}")
    return problems


def tail(path: Path, lines: int = 40) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 200 * lines))
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


# --- processes ---------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log_path: Path

    @property
    def running(self) -> bool:
        return self.popen.poll() is None


@dataclass
class ProcessSet:
    """Processes each in its own process group; stopped together, TERM then KILL."""

    log_dir: Path
    procs: list[Proc] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        log_path = self.log_dir / f"{name}.log"
        log = log_path.open("ab")
        log.write(f"$ {' '.join(argv)}\n".encode())
        log.flush()
        popen = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killpg reaches its children too
            preexec_fn=_die_with_parent,
        )
        log.close()
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def pid(self, name: str) -> int:
        return next(p.popen.pid for p in self.procs if p.name == name)

    def kill(self, name: str) -> list[int]:
        """SIGKILL ``name`` and every process under it at once (a lost machine), and forget it.

        Returns the pids killed. Descendants are found by parentage as well as by process group,
        in case a child started its own group."""
        import psutil

        proc = next(p for p in self.procs if p.name == name)
        root = psutil.Process(proc.popen.pid)
        victims = [root, *root.children(recursive=True)]
        for victim in victims:
            try:
                victim.kill()
            except psutil.NoSuchProcess:
                pass
        _signal_group(proc.popen.pid, signal.SIGKILL)
        psutil.wait_procs(victims, timeout=30)
        proc.popen.wait(timeout=30)
        self.procs.remove(proc)
        return [v.pid for v in victims]

    def check_alive(self) -> None:
        dead = [p for p in self.procs if not p.running]
        if dead:
            raise DeploymentError(
                "process exited early: "
                + ", ".join(f"{p.name} (exit {p.popen.returncode})" for p in dead)
                + "\n"
                + self.tails(names=[p.name for p in dead])
            )

    def tails(self, lines: int = 40, names: list[str] | None = None) -> str:
        out = []
        for p in self.procs:
            if names is None or p.name in names:
                state = "running" if p.running else f"exited {p.popen.returncode}"
                out.append(f"----- {p.name} ({state}) {p.log_path} -----\n{tail(p.log_path, lines)}")
        return "\n".join(out)

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM every group (newest first), wait up to grace_s, then SIGKILL what is left."""
        for p in reversed(self.procs):
            _signal_group(p.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for p in reversed(self.procs):
            try:
                p.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        # Also sweeps children that outlived their group leader (pool workers, task runners).
        for p in reversed(self.procs):
            _signal_group(p.popen.pid, signal.SIGKILL)
            try:
                p.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def _die_with_parent() -> None:
    """In the child: SIGTERM when the test process dies without its finalizers (SIGKILL, OOM)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_for(what: str, check: Callable[[], Any], timeout_s: float, procs: ProcessSet | None = None,
             interval_s: float = 1.0) -> Any:
    """Call check() until it returns something truthy; fail with the logs after timeout_s."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while True:
        if procs is not None:
            procs.check_alive()
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last_error = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            logs = f"\n{procs.tails()}" if procs is not None else ""
            raise DeploymentError(f"timed out after {timeout_s:.0f}s waiting for {what}{detail}{logs}")
        time.sleep(interval_s)


# --- the deployment ----------------------------------------------------------------------------


@dataclass
class Deployment:
    dags_folder: Path
    artifacts: Path = ARTIFACTS
    installations: int = 250
    seed: int = 20240601
    token: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        suffix = secrets.token_hex(4)
        self.metadata_db = f"icr_e2e_airflow_{suffix}"
        self.warehouse_db = f"icr_e2e_warehouse_{suffix}"
        self.worker_hostname = f"icr-e2e-celery-worker-{suffix}"
        self.password = secrets.token_urlsafe(12)
        self.redis_db: int | None = None
        self.api_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.api_port}"
        self.home = self.artifacts / "airflow_home"
        self.procs = ProcessSet(self.artifacts)
        self.simulator: dict[str, Any] = {}
        self.session = requests.Session()
        self._created_dbs: list[str] = []
        self.timings: dict[str, float] = {}
        self._fernet_key = Fernet.generate_key().decode()
        self._jwt_secret = secrets.token_urlsafe(32)
        self._secret_key = secrets.token_urlsafe(32)
        self._log_port = free_port()
        self._trigger_log_port = free_port()
        self._worker_log_start = 0

    # -- public --------------------------------------------------------------------------------

    def start(self) -> None:
        t0 = time.monotonic()
        if self.artifacts.exists():
            shutil.rmtree(self.artifacts)
        (self.artifacts / "screenshots").mkdir(parents=True)
        self.home.mkdir(parents=True)

        self._create_database(self.metadata_db)
        self._create_database(self.warehouse_db)
        self.redis_db = self._pick_redis_db()
        self._start_simulator()
        env = self.env()
        (self.home / "simple_auth_manager_passwords.json").write_text(json.dumps({ADMIN_USER: self.password}))

        migrate = subprocess.run(
            [str(AIRFLOW_BIN), "db", "migrate"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
        )
        (self.artifacts / "db-migrate.log").write_text(migrate.stdout + migrate.stderr)
        if migrate.returncode != 0:
            raise DeploymentError(f"airflow db migrate failed:\n{tail(self.artifacts / 'db-migrate.log', 60)}")
        self.timings["migrate"] = time.monotonic() - t0

        airflow = str(AIRFLOW_BIN)
        self.procs.start("api-server", [airflow, "api-server", "--host", "127.0.0.1", "--port",
                                        str(self.api_port), "--workers", "1"], env)
        self.procs.start("scheduler", [airflow, "scheduler"], env)
        self.procs.start("dag-processor", [airflow, "dag-processor"], env)
        self.procs.start("triggerer", [airflow, "triggerer"], env)
        self._start_worker()

        wait_for("the API server", lambda: self.session.get(f"{self.base_url}/api/v2/monitor/health",
                                                            timeout=5).ok, 180, self.procs)
        self.login()
        wait_for("scheduler, dag-processor and triggerer to be healthy", self._components_healthy, 180,
                 self.procs)
        self._wait_for_worker()
        wait_for(f"DAG {DAG_ID} to be parsed", self._dag_parsed, 180, self.procs, interval_s=2)
        self._store_icr_connection()
        self.timings["ready"] = time.monotonic() - t0

    def replace_worker(self) -> None:
        """Start a new Celery worker (after the test killed the old one, a lost node), same name."""
        self._start_worker()
        self._wait_for_worker()

    def stop(self) -> None:
        self.procs.stop()
        self.session.close()
        for db in reversed(self._created_dbs):
            try:
                self._admin_sql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            except Exception as exc:  # noqa: BLE001 - keep cleaning up
                print(f"e2e: could not drop database {db}: {exc}", file=sys.stderr)
        if self.redis_db is not None:
            try:
                self._redis().flushdb()
            except Exception as exc:  # noqa: BLE001
                print(f"e2e: could not flush redis db {self.redis_db}: {exc}", file=sys.stderr)

    def env(self) -> dict[str, str]:
        """The environment every Airflow process gets (the same config, like a real deployment)."""
        pg = urlsplit(PG_ADMIN_DSN)
        pg_netloc = pg.netloc
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "_AIRFLOW"))}
        pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        return {
            **base,
            "PATH": f"{AIRFLOW_BIN.parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": pythonpath,
            "PYTHONUNBUFFERED": "1",
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__CORE__FERNET_KEY": self._fernet_key,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(
                self.home / "simple_auth_manager_passwords.json"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{pg_netloc}/{self.metadata_db}",
            "AIRFLOW__CELERY__BROKER_URL": f"{REDIS_URL}/{self.redis_db}",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{pg_netloc}/{self.metadata_db}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
            "AIRFLOW__API_AUTH__JWT_SECRET": self._jwt_secret,
            "AIRFLOW__API__SECRET_KEY": self._secret_key,
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            # The default 5 s fails tasks at start ("PATCH .../run" ReadTimeout) when other test
            # deployments share the machine's 2 cores; Airflow documents raising it under load.
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self._log_port),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self._trigger_log_port),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            # Airflow's default (30 s) rather than 10 s: each parse imports pandas and the provider,
            # CPU the tests beside it need. Not longer: the triggerer starts an AssetWatcher only
            # after a parse that sees its DAG unpaused (test_webhook_events unpauses, then waits).
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "2",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
            # A retried task (test_task_killed) waits seconds, not the default minutes, and a task
            # whose worker died is found in about a minute instead of five.
            "ICR_SYNC_RETRY_DELAY_SECONDS": "5",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            # icr_default lives in the metadata DB only (_store_icr_connection): an AIRFLOW_CONN_ICR_DEFAULT
            # would shadow the row the UI edits, for Test and for tasks alike.
            "AIRFLOW_CONN_ICR_WAREHOUSE": json.dumps(self.warehouse_connection),
        }

    @property
    def icr_connection(self) -> dict[str, Any]:
        return {
            "conn_type": "icr",
            "host": self.simulator["base_url"],
            "login": self.simulator["app_id"],
            "extra": {"private_key_path": self.simulator["private_key_path"]},
        }

    @property
    def warehouse_connection(self) -> dict[str, Any]:
        pg = urlsplit(PG_ADMIN_DSN)
        conn: dict[str, Any] = {
            "conn_type": "postgres",
            "host": pg.hostname or "127.0.0.1",
            "port": pg.port or 5432,
            "schema": self.warehouse_db,
            "login": pg.username or "postgres",
        }
        if pg.password:
            conn["password"] = pg.password
        return conn

    @property
    def warehouse_dsn(self) -> str:
        pg = urlsplit(PG_ADMIN_DSN)
        return f"postgresql://{pg.netloc}/{self.warehouse_db}"

    def login(self) -> str:
        resp = self.session.post(f"{self.base_url}/auth/token",
                                 json={"username": ADMIN_USER, "password": self.password}, timeout=30)
        resp.raise_for_status()
        self.token = resp.json()["access_token"]
        self.session.headers["Authorization"] = f"Bearer {self.token}"
        return self.token

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """A call to the public REST API v2 (path relative to /api/v2)."""
        kwargs.setdefault("timeout", 60)
        return self.session.request(method, f"{self.base_url}/api/v2/{path.lstrip('/')}", **kwargs)

    def api_json(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self.api(method, path, **kwargs)
        if not resp.ok:
            raise AssertionError(f"{method} /api/v2/{path} -> {resp.status_code}: {resp.text[:2000]}")
        return resp.json() if resp.content else None

    def unpause(self, dag_id: str = DAG_ID) -> None:
        self.api_json("PATCH", f"dags/{dag_id}", json={"is_paused": False})

    def backfill_runs(self, first_day: str, last_day: str, dag_id: str = DAG_ID) -> list[dict[str, Any]]:
        """The backfill runs of dag_id whose logical date falls on first_day..last_day (UTC)."""
        params = {"run_type": "backfill", "logical_date_gte": f"{first_day}T00:00:00Z",
                  "logical_date_lte": f"{last_day}T23:59:59Z", "order_by": "logical_date", "limit": 100}
        return self.api_json("GET", f"dags/{dag_id}/dagRuns", params=params)["dag_runs"]

    def wait_for_backfill(self, first_day: str, last_day: str, expected_runs: int, timeout_s: float = 480,
                          dag_id: str = DAG_ID) -> list[dict[str, Any]]:
        """Wait until expected_runs backfill runs in the range are finished and the backfill completed.

        Returns early (with unfinished runs) as soon as a task of the range failed a try.
        """

        def finished() -> list[dict[str, Any]] | None:
            runs = self.backfill_runs(first_day, last_day, dag_id)
            unfinished = [r for r in runs if r["state"] not in ("success", "failed")]
            # A failed try would wait out the DAG's retry delays (minutes): stop at the first one.
            for run in unfinished:
                if any(ti["state"] in TASK_FAILURE_STATES for ti in self.task_instances(run["dag_run_id"], dag_id)):
                    return runs
            if len(runs) < expected_runs or unfinished:
                return None
            # The scheduler marks the backfill complete a loop after its last run: until then a new
            # backfill of the same DAG is refused (409).
            backfills = self.api_json("GET", "backfills", params={"dag_id": dag_id})["backfills"]
            return runs if all(b["completed_at"] for b in backfills) else None

        return wait_for(f"{expected_runs} backfill runs of {dag_id} on {first_day}..{last_day}", finished,
                        timeout_s, self.procs, interval_s=3)

    def simulator_truth_ids(self) -> list[str]:
        """The installation ids the simulator's API lists now (its test-only ``/_sim/truth_ids``)."""
        return [i.lower() for i in self._simulator("GET", "truth_ids")["ids"]]

    def simulator_state(self) -> dict[str, Any]:
        return self._simulator("GET", "state")

    def simulator_faults(self, faults: dict[str, Any]) -> dict[str, Any]:
        """Change the simulator's faults (a partial update of its FaultConfig)."""
        return self._simulator("POST", "faults", json=faults)

    def simulator_add_key(self) -> dict[str, Any]:
        """Register one more app key with the simulator: ``{"private_key_pem", "fingerprint", ...}``."""
        return self._simulator("POST", "keys")

    def reset_icr_connection(self) -> None:
        """Put back the harness's icr_default row (after a test replaced it through the UI)."""
        self.api("DELETE", "connections/icr_default")
        self._store_icr_connection()

    def _simulator(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = requests.request(method, f"{self.simulator['base_url']}/_sim/{path}", timeout=30, **kwargs)
        resp.raise_for_status()
        return resp.json()

    def task_instances(self, run_id: str, dag_id: str = DAG_ID) -> list[dict[str, Any]]:
        return self.api_json("GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]

    def explain_failed_runs(self, runs: list[dict[str, Any]], dag_id: str = DAG_ID) -> str:
        """Task states of the runs that did not succeed, with the logs of their failed tasks."""
        out = []
        for run in runs:
            if run["state"] == "success":
                continue
            out.append(f"== run {run['dag_run_id']}: {run['state']}")
            for ti in self.task_instances(run["dag_run_id"], dag_id):
                out.append(f"   {ti['task_id']}: {ti['state']} (try {ti['try_number']}, host {ti['hostname']})")
                if ti["state"] not in ("success", "skipped") and ti["try_number"]:
                    resp = self.api("GET", f"dags/{dag_id}/dagRuns/{run['dag_run_id']}/taskInstances/"
                                           f"{ti['task_id']}/logs/{ti['try_number']}")
                    if not resp.ok:
                        out.append(f"   (log: HTTP {resp.status_code})")
                        continue
                    for entry in resp.json().get("content", [])[-40:]:
                        if isinstance(entry, dict):
                            extra = entry.get("error_detail") or ""
                            out.append(f"   | {entry.get('level', '')} {entry.get('event', '')} {extra}".rstrip())
                        else:
                            out.append(f"   | {entry}")
        return "\n".join(out)

    # -- internals ----------------------------------------------------------------------------

    def _admin_sql(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql)

    def _create_database(self, name: str) -> None:
        self._admin_sql(f'CREATE DATABASE "{name}"')
        self._created_dbs.append(name)

    def _redis(self):
        import redis

        return redis.Redis.from_url(f"{REDIS_URL}/{self.redis_db}")

    def _pick_redis_db(self) -> int:
        import random

        import redis

        for db in random.sample(range(1, 16), 15):
            if redis.Redis.from_url(f"{REDIS_URL}/{db}").dbsize() == 0:
                return db
        raise DeploymentError("every Redis db 1-15 has keys: none is free for the Celery broker")

    def _start_simulator(self) -> None:
        key = self.home / "icr_private_key.pem"
        info = self.home / "icr_simulator.json"
        self.procs.start("icr-simulator", [
            sys.executable, "-m", "tests.simulator", "--host", "127.0.0.1", "--port", "0",
            "--installations", str(self.installations), "--seed", str(self.seed),
            "--key-out", str(key), "--info-out", str(info),
        ], {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})
        wait_for("the ICR simulator", info.exists, 60, self.procs, interval_s=0.2)
        self.simulator = json.loads(info.read_text())

    def _start_worker(self) -> None:
        worker_env = self.env()
        # Task instances run by this worker report this name as their hostname (and only these:
        # no other process has the callable), so `hostname` proves where a task ran.
        worker_env[WORKER_HOSTNAME_ENV] = self.worker_hostname
        worker_env["AIRFLOW__CORE__HOSTNAME_CALLABLE"] = "tests.e2e.worker_identity.hostname"
        # The worker and its task processes log at DEBUG, so that the secret scan of
        # test_real_airflow covers DEBUG output too (issue 19, item 7).
        worker_env["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "DEBUG"
        log = self.artifacts / "celery-worker.log"
        self._worker_log_start = log.stat().st_size if log.exists() else 0  # a replacement appends
        self.procs.start("celery-worker", [str(AIRFLOW_BIN), "celery", "worker", "--concurrency", "2",
                                           "--celery-hostname", f"{self.worker_hostname}@%h"], worker_env)

    def _wait_for_worker(self) -> None:
        def ready() -> bool:
            with (self.artifacts / "celery-worker.log").open("rb") as f:
                f.seek(self._worker_log_start)
                return b" ready." in f.read()

        wait_for("the Celery worker to be ready", ready, 180, self.procs)

    def _components_healthy(self) -> bool:
        health = self.session.get(f"{self.base_url}/api/v2/monitor/health", timeout=10).json()
        return all((health.get(c) or {}).get("status") == "healthy"
                   for c in ("metadatabase", "scheduler", "dag_processor", "triggerer"))

    def _dag_parsed(self) -> bool:
        errors = self.api_json("GET", "importErrors").get("import_errors", [])
        if errors:
            raise DeploymentError("DAG import errors:\n" + "\n".join(
                f"{e.get('filename')}: {e.get('stack_trace')}" for e in errors))
        return self.api("GET", f"dags/{DAG_ID}").status_code == 200

    def _store_icr_connection(self) -> None:
        """icr_default also as a row in the metadata DB, so the UI lists and can test it."""
        conn = self.icr_connection
        body = {"connection_id": "icr_default", "conn_type": conn["conn_type"], "host": conn["host"],
                "login": conn["login"], "extra": json.dumps(conn["extra"]),
                "description": "ICR simulator of the e2e test"}
        self.api_json("POST", "connections", json=body)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dags-folder", type=Path, default=ROOT / "dags")
    args = p.parse_args(argv)
    problems = unavailable_services()
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    dep = Deployment(dags_folder=args.dags_folder.resolve())
    stop = False

    def on_signal(signum, frame):  # noqa: ARG001
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        dep.start()
        print(json.dumps({"base_url": dep.base_url, "user": ADMIN_USER, "password": dep.password,
                          "token": dep.token, "metadata_db": dep.metadata_db,
                          "warehouse_dsn": dep.warehouse_dsn, "redis_db": dep.redis_db,
                          "simulator": dep.simulator, "timings": dep.timings}, indent=2), flush=True)
        while not stop:
            time.sleep(0.5)
            dep.procs.check_alive()
    finally:
        dep.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
