"""What differs between the two warehouse dialects, PostgreSQL and SQLite, in one object each.

A :class:`~icr.warehouse.engine.Warehouse` holds one (``warehouse.dialect``, as Airflow's
``DbApiHook`` exposes ``dialect``) and the engine, staging, merge and migrations ask it instead
of comparing dialect names: how writers take turns, how values are stored, how staging tables
are made, keyed and filled, which merge statements write the state, what a full disk means.
"""

from __future__ import annotations

import shutil
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection


def utc_text(value: datetime | None) -> str | None:
    """Render an aware datetime the way SQLite columns store it (sortable ISO-8601, UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: the warehouse stores UTC only")
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds")


ROLLED_BACK = ("The failed transaction was rolled back: the published tables are as they were "
               "before this run.")


class Dialect:
    """The common interface; see :class:`PostgreSQL` and :class:`SQLite`."""

    #: the SQLAlchemy dialect name, also the folder of its SQL (``sql/merge``, ``sql/migrations``)
    name: ClassVar[str]
    #: staging column types (by column; others get ``stage_text_type``)
    stage_types: ClassVar[dict[str, str]]
    stage_text_type: ClassVar[str]
    #: staging rows are streamed with ``COPY FROM STDIN`` (else batched inserts)
    stages_with_copy: ClassVar[bool]
    #: a long read streams through a server-side cursor (else it is paged by key)
    server_side_cursors: ClassVar[bool]
    #: the merge statements (``sql/merge/<name>.sql``) that write ``icr_installation_state``
    write_state_steps: ClassVar[tuple[str, ...]]
    #: a first bulk load into empty tables rebuilds their indexes once, after the load
    rebuilds_indexes_on_first_load: ClassVar[bool]
    #: the merge's temporary tables end with the transaction (PostgreSQL's ON COMMIT DROP)
    temp_tables_drop_on_commit: ClassVar[bool]

    def drop_temp_sql(self, *tables: str) -> list[str]:
        """What ends these temporary tables before the transaction does: nothing where they drop
        on commit, else a DROP each (SQLite keeps them in the connection's ``temp`` schema)."""
        return [] if self.temp_tables_drop_on_commit else [f"DROP TABLE temp.{table}" for table in tables]

    def lock(self, conn: Connection, key: int) -> None:
        """Serialize this write transaction with every other writer (already begun)."""

    def ts(self, value: datetime | None) -> Any:
        """A timestamp parameter as this dialect stores it."""
        return value

    def day(self, value: date) -> Any:
        """A date parameter as this dialect stores it."""
        return value

    def set_work_mem(self, conn: Connection, value: str) -> None:
        """Memory per sort/hash for the rest of this transaction, where the dialect has the knob."""

    def create_stage_sql(self, table: str, rejects_table: str, columns: tuple[str, ...] | list[str]) -> list[str]:
        """(Re)create a run's empty staging tables."""
        cols = ",\n  ".join(f"{c} {self.stage_types.get(c, self.stage_text_type)}" for c in columns)
        text, kind = self.stage_text_type, self._stage_table_kind
        return [f"DROP TABLE IF EXISTS {table}", f"DROP TABLE IF EXISTS {rejects_table}",
                f"CREATE {kind}TABLE {table} (\n  {cols}\n)",
                f"CREATE {kind}TABLE {rejects_table} (installation_id {text}, reason {text} NOT NULL, raw {text} NOT NULL)"]

    _stage_table_kind: ClassVar[str] = ""

    def create_ids_sql(self, table: str) -> list[str]:
        """(Re)create a run's empty table of ids (the records found unchanged, icr.unchanged)."""
        return [f"DROP TABLE IF EXISTS {table}",
                f"CREATE {self._stage_table_kind}TABLE {table} (installation_id {self.stage_types['installation_id']})"]

    def create_wire_sql(self, table: str) -> list[str]:
        """(Re)create a run's empty table of wire hashes (of the records it decoded, icr.unchanged)."""
        return [f"DROP TABLE IF EXISTS {table}",
                f"CREATE {self._stage_table_kind}TABLE {table} (installation_id {self.stage_types['installation_id']}, "
                f"wire_hash {self.bytes_type} NOT NULL)"]

    def tidy_sql(self, tables: tuple[str, ...]) -> list[str]:
        """After a load that rewrote a large share of ``tables`` (outside a transaction): what
        keeps the next night's reads cheap, where the dialect has something to do."""
        return []

    def key_ids_sql(self, table: str) -> list[str]:
        """Key a table of ids once it is filled (the key proves each id is there once)."""
        return self.lookup_key_sql(table)

    def unkey_stage_sql(self, table: str) -> list[str]:
        """Before staging is emptied for another pass: what the next pass must insert without."""
        return []

    def key_stage_sql(self, table: str, rejects_table: str) -> list[str]:
        """Index (and analyze) the staged rows once, in bulk, after the inserts."""
        raise NotImplementedError

    def lookup_key_sql(self, table: str) -> list[str]:
        """What a read that looks staged ids up by key needs before the staging is finished."""
        return []

    def out_of_space_message(self, description: str, database: str | None, doing: str, said: str) -> str:
        raise NotImplementedError


class PostgreSQL(Dialect):
    name = "postgresql"
    stage_types = {
        "installation_id": "uuid NOT NULL",
        "organization_is_public": "boolean",
        "created_at": "timestamptz NOT NULL",
        "updated_at": "timestamptz NOT NULL",
        # jsonb: the server parses each record once, during the COPY, on its own core while this
        # process keeps fetching, instead of twice (state, history) inside the serial merge.
        "permissions": "jsonb NOT NULL",
        "record_hash": "text NOT NULL",
        "raw": "jsonb NOT NULL",
    }
    stage_text_type = "text"
    bytes_type = "bytea"
    _stage_table_kind = "UNLOGGED "
    stages_with_copy = True
    server_side_cursors = True
    # A plain INSERT of new installations and an UPDATE of changed ones (no per-row speculative
    # insertion).
    write_state_steps = ("insert_new", "update_changed")
    rebuilds_indexes_on_first_load = True
    temp_tables_drop_on_commit = True

    def lock(self, conn: Connection, key: int) -> None:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})

    def set_work_mem(self, conn: Connection, value: str) -> None:
        conn.execute(sa.text("SELECT set_config('work_mem', :v, true)"), {"v": value})

    def tidy_sql(self, tables: tuple[str, ...]) -> list[str]:
        # The visibility map (the nightly's index-only read of ids and wire hashes) and the
        # planner's statistics, now rather than whenever autovacuum gets to it (if it is on).
        return [f"VACUUM (ANALYZE) {table}" for table in tables]

    def key_ids_sql(self, table: str) -> list[str]:
        return [f"ALTER TABLE {table} ADD PRIMARY KEY (installation_id)", f"ANALYZE {table}"]

    def key_stage_sql(self, table: str, rejects_table: str) -> list[str]:
        # The primary key also proves there is exactly one row per installation.
        return [f"ALTER TABLE {table} ADD PRIMARY KEY (installation_id)",
                f"CREATE INDEX ON {rejects_table} (installation_id)",
                f"ANALYZE {table}", f"ANALYZE {rejects_table}"]

    def out_of_space_message(self, description: str, database: str | None, doing: str, said: str) -> str:
        return (f"The PostgreSQL warehouse {description} ran out of disk space while {doing}: "
                f"{said}. {ROLLED_BACK} Free space on the database server (its data directory or "
                "tablespace) and rerun.")


class SQLite(Dialect):
    name = "sqlite"
    stage_types = {
        "installation_id": "TEXT NOT NULL",  # unique key built in bulk: see lookup_key_sql
        "organization_is_public": "BOOLEAN",
        "created_at": "TEXT NOT NULL",
        "updated_at": "TEXT NOT NULL",
        "permissions": "TEXT NOT NULL",
        "record_hash": "TEXT NOT NULL",
        "raw": "TEXT NOT NULL",
    }
    stage_text_type = "TEXT"
    bytes_type = "BLOB"
    stages_with_copy = False
    server_side_cursors = False
    write_state_steps = ("upsert_changed",)  # SQLite's upsert is cheap and does both at once
    rebuilds_indexes_on_first_load = False
    temp_tables_drop_on_commit = False

    # Writers take turns through BEGIN IMMEDIATE (engine.py): lock() has nothing to add.

    def ts(self, value: datetime | None) -> Any:
        return utc_text(value)

    def day(self, value: date) -> Any:
        return value.isoformat()

    def unkey_stage_sql(self, table: str) -> list[str]:
        return [f"DROP INDEX IF EXISTS {table}_key"]  # the next pass inserts without the key again

    def lookup_key_sql(self, table: str) -> list[str]:
        """The staged rows' unique key on installation_id, built once after the inserts.

        Kept up to date while rows arrive in API order, it cost a random B-tree page per row,
        beyond SQLite's 2 MB page cache once staging outgrows it (the extract of 1,000,000
        installations grew 18x slower than that of 100,000). Built in bulk it is a sort.
        """
        return [f"CREATE UNIQUE INDEX IF NOT EXISTS {table}_key ON {table} (installation_id)"]

    def key_stage_sql(self, table: str, rejects_table: str) -> list[str]:
        return [*self.lookup_key_sql(table),
                f"CREATE INDEX IF NOT EXISTS {rejects_table}_id ON {rejects_table} (installation_id)"]

    def out_of_space_message(self, description: str, database: str | None, doing: str, said: str) -> str:
        path = Path(database or "")
        sizes = []
        try:
            sizes.append(f"{_size(shutil.disk_usage(path.parent).free)} free on its disk")
        except OSError:
            pass
        for label, file in (("the database file is", path), ("its write-ahead log", Path(f"{path}-wal"))):
            if file.exists():
                sizes.append(f"{label} {_size(file.stat().st_size)}")
        room = "".join(f"; {size}" for size in sizes)
        return (f"The SQLite warehouse {path} ran out of space while {doing}: {said}{room}. {ROLLED_BACK} "
                "Free disk space and rerun: a first load needs room for about twice the final file, as "
                "the write-ahead log holds everything it writes until it commits. For apps with more "
                "than a few hundred thousand installations, use a PostgreSQL warehouse.")


DIALECTS: dict[str, Dialect] = {d.name: d for d in (PostgreSQL(), SQLite())}


def dialect_named(name: str) -> Dialect | None:
    """The dialect object for a SQLAlchemy dialect name, or None if the warehouse does not support it."""
    return DIALECTS.get(name)


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} TB"
