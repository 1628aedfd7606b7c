"""Static checks of the Docker deployment (docker-compose.yaml, Dockerfile, .env.example).

No Docker engine is needed: these tests read the files. They are fast and not marked ``e2e``.
The compose file is validated against the compose-spec JSON schema that check-jsonschema
vendors (``--builtin-schema vendor.compose-spec``); the other tests check what a schema cannot:
versions, mounts, images, variables and connections agree with the repo.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERIGNORE = ROOT / ".dockerignore"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"

AIRFLOW_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-worker",
    "airflow-triggerer",
    "airflow-init",
)
REQUIRED_SERVICES = AIRFLOW_SERVICES + ("postgres", "redis", "warehouse", "icr-simulator")
# Host paths the user creates (documented in docs/deploy.md, gitignored): not in the repo.
USER_CREATED_PATHS = {"secrets"}
KEY_FILE = "icr_private_key.pem"

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err}, $VAR; "$$" is a literal "$".
_VAR_RE = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?[^}]*\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    with COMPOSE.open() as f:
        data = yaml.safe_load(f)
    assert isinstance(data, dict), "docker-compose.yaml is not a mapping"
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return parse_dotenv(ENV_EXAMPLE.read_text())


def parse_dotenv(text: str) -> dict[str, str]:
    """The subset of compose's .env syntax that .env.example uses: KEY=value, KEY='literal'."""
    values: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f".env.example line {lineno} is not KEY=VALUE: {raw!r}"
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key), f"bad name on line {lineno}: {key!r}"
        if value and value[0] in "'\"":
            assert value.endswith(value[0]) and len(value) > 1, f"unclosed quote on line {lineno}"
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].strip()
        values[key] = value
    return values


def compose_variables(text: str) -> dict[str, bool]:
    """Each interpolated variable -> whether every use of it has a default."""
    text = text.replace("$$", "")
    found: dict[str, bool] = {}
    for m in _VAR_RE.finditer(text):
        name = m.group("braced") or m.group("bare")
        has_default = m.group("op") in (":-", "-")
        found[name] = found.get(name, True) and has_default
    return found


def _strip_comments(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def _pinned(requirement_lines: str, name: str) -> str:
    m = re.search(rf"^{re.escape(name)}==([^\s;#]+)", requirement_lines, re.MULTILINE | re.IGNORECASE)
    assert m, f"{name} is not pinned with == in {requirement_lines[:40]!r}..."
    return m.group(1)


def _volumes(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(source, target, mode) of each short-syntax volume entry."""
    out = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            out.append((entry.get("source", ""), entry["target"], "ro" if entry.get("read_only") else "rw"))
            continue
        parts = entry.split(":")
        out.append((parts[0], parts[1], parts[2] if len(parts) > 2 else "rw"))
    return out


def _is_bind(source: str) -> bool:
    return source.startswith((".", "/", "~", "$"))


def _airflow_option_names() -> set[tuple[str, str]]:
    """(section, option) pairs Airflow knows: core's config.yml plus the Celery provider's."""
    import airflow.config_templates as templates

    sections = yaml.safe_load((Path(templates.__file__).parent / "config.yml").read_text())
    try:
        from airflow.providers.celery.get_provider_info import get_provider_info
    except ImportError:  # pragma: no cover - the [celery] extra is part of the deployment
        pytest.skip("apache-airflow-providers-celery is not installed")
    sections.update(get_provider_info()["config"])
    return {(s, o) for s, body in sections.items() for o in body.get("options", {})}


# --- the compose file -----------------------------------------------------------------------


def test_compose_parses(compose):
    assert set(compose) >= {"services", "volumes"}
    assert isinstance(compose["services"], dict) and compose["services"]


def test_compose_matches_compose_spec_schema():
    """check-jsonschema ships the compose-spec schema (vendor.compose-spec): validate against it."""
    try:
        import check_jsonschema  # noqa: F401
    except ImportError:
        pytest.skip("check-jsonschema (the [test] extra) is not installed: schema not checked")
    proc = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"compose-spec validation failed:\n{proc.stdout}\n{proc.stderr}"


def test_required_services_present(services):
    missing = [s for s in REQUIRED_SERVICES if s not in services]
    assert not missing, f"services missing from docker-compose.yaml: {missing}"
    commands = {name: services[name].get("command") for name in AIRFLOW_SERVICES}
    assert commands["airflow-apiserver"] == "api-server"
    assert commands["airflow-scheduler"] == "scheduler"
    assert commands["airflow-dag-processor"] == "dag-processor"
    assert commands["airflow-triggerer"] == "triggerer"
    assert commands["airflow-worker"] == "celery worker"
    assert services["flower"].get("profiles") == ["flower"]


def test_airflow_services_use_the_built_image(compose, services):
    common = compose["x-airflow-common"]
    assert common.get("build") in (".", {"context": "."}), "x-airflow-common must build ./Dockerfile"
    image = common["image"]
    for name in AIRFLOW_SERVICES + ("icr-simulator", "flower"):
        svc = services[name]
        assert svc.get("image") == image, f"{name} does not use the project image {image}"
        assert svc.get("build") in (".", {"context": "."}), f"{name} is not built from ./Dockerfile"


def test_worker_can_scale(services):
    worker = services["airflow-worker"]
    assert "container_name" not in worker, "container_name stops `--scale airflow-worker=N`"
    assert not worker.get("ports"), "a fixed host port stops `--scale airflow-worker=N`"
    env = worker["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")


def test_celery_executor_settings(services):
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert "@redis:6379" in env["AIRFLOW__CELERY__BROKER_URL"]
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql")
    assert "@postgres/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    api_port = services["airflow-apiserver"]["ports"][0].split(":")[-1]
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"http://airflow-apiserver:{api_port}/execution/"
    assert env["AIRFLOW__CORE__TEST_CONNECTION"] == "Enabled"


def test_airflow_env_vars_are_real_options(services):
    """A typo in AIRFLOW__SECTION__KEY is silently ignored by Airflow: catch it here."""
    known = _airflow_option_names()
    unknown = set()
    for name in AIRFLOW_SERVICES + ("flower", "airflow-cli"):
        for var in services[name].get("environment", {}):
            m = re.fullmatch(r"AIRFLOW__([A-Z0-9_]+?)__([A-Z0-9_]+)", var)
            if m and (m.group(1).lower(), m.group(2).lower()) not in known:
                unknown.add(var)
    assert not unknown, f"not Airflow config options: {sorted(unknown)}"


def test_connections_come_from_env(services):
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        for var in ("AIRFLOW_CONN_ICR_DEFAULT", "AIRFLOW_CONN_ICR_WAREHOUSE"):
            assert env.get(var) == f"${{{var}:?set {var} in .env}}", f"{name}: {var} not taken from .env"


def test_bind_mounted_host_paths_exist(services):
    for name, svc in services.items():
        for source, target, _mode in _volumes(svc):
            if not _is_bind(source):
                continue
            rel = Path(source).as_posix().removeprefix("./")
            if rel.split("/")[0] in USER_CREATED_PATHS:
                continue
            assert (ROOT / rel).exists(), f"{name}: bind mount {source} -> {target} is not in the repo"


def test_named_volumes_declared(compose, services):
    declared = set(compose.get("volumes") or {})
    for name, svc in services.items():
        for source, _target, _mode in _volumes(svc):
            if source and not _is_bind(source):
                assert source in declared, f"{name}: volume {source} not declared at top level"


def test_private_key_is_mounted_read_only_from_secrets(services):
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-worker", "airflow-triggerer",
                 "airflow-dag-processor"):
        mounts = {(src, tgt, mode) for src, tgt, mode in _volumes(services[name])}
        assert ("./secrets", "/opt/airflow/secrets", "ro") in mounts, f"{name}: ./secrets not mounted :ro"


def test_user_created_paths_are_documented_and_ignored():
    doc = DEPLOY_DOC.read_text()
    for path in USER_CREATED_PATHS:
        assert f"./{path}/{KEY_FILE}" in doc or f"{path}/{KEY_FILE}" in doc, f"docs/deploy.md: how to create {path}/"
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: cannot ask git whether secrets/ is ignored")
    for path in (f"secrets/{KEY_FILE}", ".env"):
        proc = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
        assert proc.returncode == 0, f"{path} is not gitignored"


def test_simulator_is_an_optional_profile(services):
    sim = services["icr-simulator"]
    assert sim.get("profiles") == ["simulator"]
    assert sim["entrypoint"][-2:] == ["-m", "tests.simulator"]
    args = " ".join(sim["command"])
    assert f"--key-out=/opt/airflow/secrets/{KEY_FILE}" in args
    assert "--info-out=" in args and "--host=0.0.0.0" in args
    # Every other service runs without the simulator.
    for name, svc in services.items():
        if name != "icr-simulator":
            assert "icr-simulator" not in (svc.get("depends_on") or {}), f"{name} needs the simulator"


def test_warehouse_is_its_own_database(services):
    env = services["warehouse"]["environment"]
    assert env["POSTGRES_DB"] != services["postgres"]["environment"]["POSTGRES_DB"]
    assert env["POSTGRES_USER"] != services["postgres"]["environment"]["POSTGRES_USER"]


def test_webhook_receiver_service(services, env_example):
    rx = services["icr-webhooks"]
    assert rx["entrypoint"][-2:] == ["-m", "icr.webhooks"] and "--host=0.0.0.0" in rx["command"]
    assert "profiles" not in rx, "the receiver runs with the default stack"
    conn = rx["environment"]["AIRFLOW_CONN_ICR_WEBHOOK"]
    assert "${ICR_WEBHOOK_SECRET:?" in conn
    assert json.loads(conn.replace("${ICR_WEBHOOK_SECRET:?set ICR_WEBHOOK_SECRET in .env}", "s"))["password"] == "s"
    assert not rx.get("volumes"), "the receiver needs no private key or DAGs"
    for name, svc in services.items():  # only the receiver (and the simulator, which signs) get the secret
        if name not in ("icr-webhooks", "icr-simulator"):
            assert "AIRFLOW_CONN_ICR_WEBHOOK" not in (svc.get("environment") or {}), name
    redis = json.loads(services["airflow-triggerer"]["environment"]["AIRFLOW_CONN_REDIS_DEFAULT"])
    assert (redis["host"], redis["port"]) == ("redis", 6379)
    assert env_example["ICR_WEBHOOK_SECRET"] == "CHANGE_ME"
    sim = services["icr-simulator"]
    assert "--webhook-url=http://icr-webhooks:8090/webhooks/icr" in sim["command"]


# --- .env.example ----------------------------------------------------------------------------


def test_env_example_defines_every_required_variable(env_example):
    required = sorted(v for v, defaulted in compose_variables(_strip_comments(COMPOSE.read_text())).items()
                      if not defaulted)
    assert required, "expected ${VAR} without default in docker-compose.yaml (the secrets)"
    missing = [v for v in required if v not in env_example]
    assert not missing, f".env.example does not define: {missing}"


def test_fernet_key_is_required(services, env_example):
    """Without a Fernet key Airflow stores connection passwords and extras (a PEM pasted into the
    form, a passphrase) in clear in its metadata database: compose must refuse to start."""
    for name in AIRFLOW_SERVICES:
        value = services[name]["environment"].get("AIRFLOW__CORE__FERNET_KEY")
        assert isinstance(value, str) and value.startswith("${AIRFLOW__CORE__FERNET_KEY:?"), (
            f"{name}: AIRFLOW__CORE__FERNET_KEY is {value!r}, not required with ${{VAR:?message}}")
        assert "AIRFLOW__CORE__FERNET_KEY" in value[len("${AIRFLOW__CORE__FERNET_KEY:?"):], (
            f"{name}: the error message should name the variable to set")
    assert compose_variables(_strip_comments(COMPOSE.read_text()))["AIRFLOW__CORE__FERNET_KEY"] is False
    assert env_example["AIRFLOW__CORE__FERNET_KEY"] == "CHANGE_ME"
    text = ENV_EXAMPLE.read_text()
    assert 'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"' in text


def test_required_secrets_are_not_empty_in_env_example(env_example):
    """A required variable left empty in .env.example would pass compose's ``:?`` check only to
    fail later (or, for the Fernet key, store secrets in clear): each has a value or CHANGE_ME."""
    required = [v for v, defaulted in compose_variables(_strip_comments(COMPOSE.read_text())).items()
                if not defaulted]
    empty = [v for v in required if not env_example.get(v)]
    assert not empty, f".env.example leaves required variables empty: {empty}"


def test_env_example_connections(env_example, services):
    icr = json.loads(env_example["AIRFLOW_CONN_ICR_DEFAULT"])
    assert icr["conn_type"] == "icr"
    assert icr["host"].startswith("https://")
    assert "password" not in icr, "the private key belongs in ./secrets, not in .env"
    key_path = icr["extra"]["private_key_path"]
    assert key_path == f"/opt/airflow/secrets/{KEY_FILE}"

    wh = json.loads(env_example["AIRFLOW_CONN_ICR_WAREHOUSE"])
    assert wh["conn_type"] == "postgres"
    assert wh["host"] in services, f"warehouse host {wh['host']!r} is not a compose service"
    assert wh["login"] == env_example["WAREHOUSE_DB_USER"]
    assert wh["schema"] == env_example["WAREHOUSE_DB_NAME"]
    assert wh["password"] == env_example["WAREHOUSE_DB_PASSWORD"]


def test_env_example_connection_json_loads_in_airflow(env_example):
    from airflow.models.connection import Connection

    conn = Connection.from_json(env_example["AIRFLOW_CONN_ICR_DEFAULT"], conn_id="icr_default")
    assert conn.conn_type == "icr"
    assert conn.extra_dejson["private_key_path"].endswith(KEY_FILE)


def test_compose_variable_parser():
    text = "a: ${A}\nb: ${B:-x}\nc: ${C:?err}\nd: $$NOTVAR\ne: ${B}\nf: $F"
    assert compose_variables(text) == {"A": False, "B": False, "C": False, "F": False}
    assert compose_variables("x: ${X:-1} ${X-2}") == {"X": True}


# --- Dockerfile ------------------------------------------------------------------------------


def test_dockerfile_airflow_version_matches_pins():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    deps = "\n".join(pyproject["project"]["dependencies"])
    # pyproject states a range for an Airflow one already runs; its floor is the tested version.
    floor = re.search(r"^apache-airflow>=([^\s,;#]+),<", deps, re.MULTILINE)
    assert floor, f"apache-airflow needs a >=tested,<next-minor range in pyproject.toml: {deps[:80]!r}"
    pinned = floor.group(1)
    constrained = _pinned((ROOT / "constraints.txt").read_text(), "apache-airflow")
    m = re.search(r"^FROM\s+apache/airflow:(\S+?)-python(\d+\.\d+)\s*$", DOCKERFILE.read_text(), re.MULTILINE)
    assert m, "Dockerfile must start FROM apache/airflow:<version>-python<X.Y>"
    assert m.group(1) == pinned == constrained, (
        f"Dockerfile {m.group(1)}, pyproject {pinned}, constraints.txt {constrained}"
    )
    requires = pyproject["project"]["requires-python"]
    assert requires.startswith(">="), requires
    assert tuple(map(int, m.group(2).split("."))) >= tuple(map(int, requires[2:].split(".")))


def test_dockerfile_installs_project_with_constraints():
    text = DOCKERFILE.read_text()
    assert re.search(r'pip install --no-cache-dir -c constraints\.txt "?\.\[celery\]"?', text), text
    assert "COPY --chown=airflow:0 tests/simulator/" in text, "the image must ship tests/simulator"
    m = re.search(r"AIRFLOW__CORE__DAGS_FOLDER=(\S+)", text)
    assert m, "Dockerfile sets AIRFLOW__CORE__DAGS_FOLDER"
    assert m.group(1) == "/opt/airflow/project/dags"


def test_no_secret_in_image():
    text = _strip_comments(DOCKERFILE.read_text())
    for forbidden in ("secrets", ".pem", ".env", "PRIVATE KEY"):
        assert forbidden not in text, f"Dockerfile mentions {forbidden!r}: keep secrets out of the image"
    assert not re.search(r"^\s*COPY\s+(--\S+\s+)*\.\s", text, re.MULTILINE), "COPY . copies everything"
    ignored = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()}
    for entry in ("secrets/", ".env", "**/*.pem", ".venv/", "artifacts/"):
        assert entry in ignored, f".dockerignore must exclude {entry}"


# --- docs ------------------------------------------------------------------------------------


def test_deploy_doc_has_the_commands():
    doc = DEPLOY_DOC.read_text()
    for needle in (
        "cp .env.example .env",
        f"secrets/{KEY_FILE}",
        "docker compose up -d",
        "docker compose --profile simulator up -d",
        "docker compose up -d --scale airflow-worker=3",
        "http://localhost:8080",
        "/api/v2/backfills",
    ):
        assert needle in doc, f"docs/deploy.md lacks {needle!r}"
