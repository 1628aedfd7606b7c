"""The warehouse connection: PostgreSQL (production) or an embedded SQLite file (the default).

How to connect lives here: the engine from an Airflow connection or a URL (SQLite with
``BEGIN IMMEDIATE``, a busy timeout and WAL), write transactions that are safe under concurrent
runs, read-only snapshots, and recognising a full disk. What differs between the dialects beyond
connecting (the advisory lock, value rendering, staging DDL, the merge's statements, the
out-of-space advice) is asked of ``Warehouse.dialect`` (:mod:`icr.warehouse.dialect`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url

from icr.errors import ICRConfigError, WarehouseFullError
from icr.warehouse.dialect import Dialect, dialect_named, utc_text

log = logging.getLogger(__name__)

DEFAULT_CONN_ID = "icr_warehouse"
DEFAULT_SQLITE_NAME = "icr_warehouse.sqlite"
SQLITE_BUSY_TIMEOUT_S = 120
# SQLite keeps its write-ahead log at the largest size it ever reached (a first load of a million
# installations grows it to several GB) while any connection stays open, e.g. a dashboard's.
# Above this size it is cut back once a checkpoint has emptied it.
SQLITE_WAL_LIMIT_BYTES = 64 * 1024 * 1024
# Page size of a new SQLite warehouse (SQLite's default is 4096). A load is one transaction whose
# every written page goes through the write-ahead log, and SQLite finds a page there by searching
# one hash table per 4,096 frames: with 4 KB pages a first load of a million installations makes
# about 1.2 million frames, and every page read searches hundreds of tables. Larger pages mean
# fewer frames and fewer B-tree levels. An existing file keeps its size (changing it needs a
# VACUUM outside WAL mode; README, "The icr_warehouse connection").
SQLITE_PAGE_SIZE = 16384

# Advisory lock keys (PostgreSQL): one for schema migrations, one for merges into the tables.
LOCK_MIGRATE = 7_426_001
LOCK_MERGE = 7_426_002


__all__ = ["Warehouse", "utc_text"]  # utc_text: icr.warehouse.dialect, where SQLite's text is made


class Warehouse:
    """A SQLAlchemy engine plus the dialect-specific knowledge the loader needs."""

    def __init__(self, engine: Engine, description: str | None = None) -> None:
        self.engine = engine
        dialect = dialect_named(engine.dialect.name)
        if dialect is None:
            raise ICRConfigError("conn_type", f"warehouse dialect {engine.dialect.name!r} is not supported "
                                 "(use a postgres or sqlite connection)", DEFAULT_CONN_ID)
        self.dialect: Dialect = dialect
        self.description = description or engine.url.render_as_string(hide_password=True)

    @property
    def dialect_name(self) -> str:
        """"postgresql" or "sqlite" (Airflow's ``DbApiHook.dialect_name``)."""
        return self.dialect.name

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_url(cls, url: str | URL, description: str | None = None, **engine_kwargs: Any) -> Warehouse:
        url = make_url(url)
        if url.get_backend_name() == "postgresql":
            if url.get_driver_name() in ("", "psycopg2"):
                # COPY streaming and the loader use psycopg 3.
                url = url.set(drivername="postgresql+psycopg")
            engine = sa.create_engine(url, pool_pre_ping=True, **engine_kwargs)
        elif url.get_backend_name() == "sqlite":
            engine = _sqlite_engine(url, **engine_kwargs)
        else:
            raise ICRConfigError("conn_type", f"unsupported warehouse URL scheme {url.get_backend_name()!r}")
        return cls(engine, description)

    @classmethod
    def from_airflow(cls, conn_id: str = DEFAULT_CONN_ID) -> Warehouse:
        """Build from the Airflow connection, or fall back to a SQLite file under AIRFLOW_HOME."""
        from airflow.sdk import BaseHook

        try:
            from airflow.sdk.exceptions import AirflowNotFoundException
        except ImportError:  # pragma: no cover - older task SDKs
            from airflow.exceptions import AirflowNotFoundException
        try:
            conn = BaseHook.get_connection(conn_id)
        except AirflowNotFoundException:
            path = default_sqlite_path()
            log.info("No Airflow connection %r: using the embedded SQLite warehouse at %s", conn_id, path)
            return cls.from_url(f"sqlite:///{path}", description=f"sqlite file {path} (default)")
        return cls.from_connection(conn, conn_id)

    @classmethod
    def from_connection(cls, conn: Any, conn_id: str = DEFAULT_CONN_ID) -> Warehouse:
        conn_type = (conn.conn_type or "").lower()
        extra = conn.extra_dejson or {}
        if conn_type in ("postgres", "postgresql"):
            if not conn.host:
                raise ICRConfigError("host", "the PostgreSQL host is empty", conn_id)
            query = {k: str(v) for k, v in extra.items() if k in ("sslmode", "sslrootcert", "sslcert",
                                                                   "sslkey", "options", "application_name",
                                                                   "connect_timeout")}
            url = URL.create(
                "postgresql+psycopg",
                username=conn.login or None,
                password=conn.password or None,
                host=conn.host,
                port=conn.port or None,
                database=conn.schema or None,
                query=query,
            )
            return cls.from_url(url, description=f"postgresql {conn.host}:{conn.port or 5432}/{conn.schema or ''}")
        if conn_type == "sqlite":
            path = conn.host or extra.get("path") or ""
            if not path:
                raise ICRConfigError("host", "the SQLite connection needs the database file path in host", conn_id)
            path = os.path.expanduser(path)
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            return cls.from_url(f"sqlite:///{path}", description=f"sqlite file {path}")
        raise ICRConfigError("conn_type", f"{conn.conn_type!r} is not supported; use postgres or sqlite", conn_id)

    # -- transactions --------------------------------------------------------------------------
    @contextlib.contextmanager
    def write(self, lock: int = LOCK_MERGE) -> Iterator[Connection]:
        """One write transaction, serialized with every other writer of the warehouse.

        Concurrent runs (a backfill beside the nightly run) take turns here, so merges and
        migrations never race; the loser waits instead of failing.
        """
        with self.engine.begin() as conn:
            self.dialect.lock(conn, lock)
            yield conn

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction: a consistent snapshot that neither waits for nor blocks writers.

        On SQLite (WAL mode) it starts with a deferred ``BEGIN`` instead of the writers'
        ``BEGIN IMMEDIATE``, so a verify task or a report does not queue behind another run's
        merge. Statements here must not write (SQLite could not upgrade the snapshot).
        """
        with self.engine.connect() as conn:
            conn.execution_options(icr_read_only=True)
            yield conn

    # -- value rendering -----------------------------------------------------------------------
    def ts(self, value: datetime | None) -> Any:
        """A timestamp parameter as this dialect stores it."""
        return self.dialect.ts(value)

    def day(self, value: date) -> Any:
        return self.dialect.day(value)

    # -- errors --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def out_of_space_explained(self, doing: str) -> Iterator[None]:
        """Re-raise "disk full" from the warehouse as a :class:`WarehouseFullError` that says which
        warehouse, while doing what, how much room there is, and that nothing was published.

        A full disk is the failure a default (SQLite) warehouse meets first: a first load holds
        everything it writes in the write-ahead log until it commits. The driver's own error
        ("database or disk is full") names neither the file nor the way out.
        """
        try:
            yield
        except Exception as exc:
            said = _disk_full(exc)
            if said is None:
                raise
            raise WarehouseFullError(self.dialect.out_of_space_message(
                self.description, self.engine.url.database, doing, said)) from exc

    def dispose(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Warehouse({self.description})"


def _disk_full(exc: BaseException) -> str | None:
    """The driver's words if ``exc`` says the warehouse ran out of space, else None.

    SQLite: SQLITE_FULL (a full disk, or the file's ``max_page_count``). PostgreSQL: SQLSTATE
    53100 ``disk_full``. Errors come wrapped by SQLAlchemy or, from the staging COPY, straight
    from psycopg.
    """
    orig = getattr(exc, "orig", None) or exc
    if isinstance(orig, sqlite3.Error):
        if getattr(orig, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return str(orig)
        return None
    if getattr(orig, "sqlstate", None) == "53100":
        diag = getattr(orig, "diag", None)
        return str(getattr(diag, "message_primary", None) or orig).strip()
    return None


def default_sqlite_path() -> Path:
    home = Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow")
    home.mkdir(parents=True, exist_ok=True)
    return home / DEFAULT_SQLITE_NAME


def _sqlite_engine(url: URL, **engine_kwargs: Any) -> Engine:
    """SQLite with real transactions: BEGIN IMMEDIATE takes the write lock up front.

    pysqlite's own transaction handling starts transactions lazily and commits before DDL;
    we turn it off and issue BEGIN ourselves (SQLAlchemy's documented recipe). Connections of
    :meth:`Warehouse.read` begin DEFERRED: in WAL mode a reader has its own snapshot and needs
    no lock that a writer waits for.
    """
    connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}
    engine = sa.create_engine(url, connect_args=connect_args, **engine_kwargs)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_S * 1000}")
        cur.execute(f"PRAGMA page_size = {SQLITE_PAGE_SIZE}")  # before WAL: only a new file takes it
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute(f"PRAGMA journal_size_limit = {SQLITE_WAL_LIMIT_BYTES}")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("icr_read_only") else "BEGIN IMMEDIATE")

    return engine
