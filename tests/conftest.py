"""Fixtures shared by the whole suite: warehouses on both dialects and ICR connections.

PostgreSQL tests need a server (127.0.0.1:5432 by default, ``ICR_TEST_PG_URL`` to change).
Without one they skip on a laptop; with ``ICR_REQUIRE_POSTGRES=1`` (set by .ci/run) they fail.
Each test that asks for a PostgreSQL warehouse gets a fresh database, dropped afterwards.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Airflow writes airflow.cfg into AIRFLOW_HOME on import: keep it out of the user's home.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="icr-tests-airflow-"))

pytest_plugins = ["tests.simulator.fixtures"]

PG_ADMIN_URL = os.environ.get("ICR_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REQUIRE_PG = os.environ.get("ICR_REQUIRE_POSTGRES", "").lower() in ("1", "true", "yes")


def _pg_problem() -> str | None:
    try:
        import psycopg

        with psycopg.connect(_libpq(PG_ADMIN_URL), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure means "no server here"
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}"
    return None


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    problem = _pg_problem()
    if problem:
        if REQUIRE_PG:
            pytest.fail(f"{problem} (ICR_REQUIRE_POSTGRES=1: PostgreSQL tests must run)")
        pytest.skip(problem)
    return PG_ADMIN_URL


@pytest.fixture
def pg_database(pg_admin_url: str) -> Iterator[str]:
    """A fresh, empty database; yields its SQLAlchemy URL."""
    import psycopg

    name = f"icr_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_libpq(pg_admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = pg_admin_url.rsplit("/", 1)[0]
    yield f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://")
    with psycopg.connect(_libpq(pg_admin_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_warehouse(pg_database: str):
    from icr.warehouse.engine import Warehouse

    wh = Warehouse.from_url(pg_database)
    yield wh
    wh.dispose()


@pytest.fixture
def sqlite_warehouse(tmp_path):
    from icr.warehouse.engine import Warehouse

    wh = Warehouse.from_url(f"sqlite:///{tmp_path / 'warehouse.sqlite'}")
    yield wh
    wh.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def warehouse(request):
    """The same test on both warehouses."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_warehouse")
    return request.getfixturevalue("pg_warehouse")


@pytest.fixture(scope="session")
def airflow_home_template(tmp_path_factory) -> Path:
    """An AIRFLOW_HOME whose SQLite metadata DB is migrated, once per session: copy it, don't use it
    (the ``airflow_home`` fixture of tests/dags, or ``tests.support.airflow_home.copy_airflow_home``)."""
    from tests.support.airflow_home import migrated_airflow_home

    return migrated_airflow_home(tmp_path_factory.mktemp("airflow-template"))


@pytest.fixture
def airflow_home(airflow_home_template: Path, tmp_path: Path) -> Path:
    """A copy of the session's migrated AIRFLOW_HOME, for this test alone (its own DB and logs)."""
    from tests.support.airflow_home import copy_airflow_home

    return copy_airflow_home(airflow_home_template, tmp_path / "airflow")


def icr_conn_json(sim: Any, **extra: Any) -> str:
    """The JSON form of AIRFLOW_CONN_ICR_DEFAULT for a running simulator."""
    return json.dumps({
        "conn_type": "icr",
        "host": sim.base_url,
        "login": sim.app_id,
        "password": sim.private_key_pem,
        "extra": {"max_retry_wait": 30, **extra},
    })


@pytest.fixture
def icr_connection(monkeypatch):
    """Point ``icr_default`` at a simulator: ``icr_connection(sim, page_size=50)``."""

    def point(sim: Any, **extra: Any) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_ICR_DEFAULT", icr_conn_json(sim, **extra))

    return point
