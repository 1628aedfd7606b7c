"""Per-run staging tables: where fetched, normalized rows wait between the extract and load tasks.

Each run gets its own tables (rows, rejects, and the ids of records found unchanged), named from a hash of its run id, so tasks on different
Celery workers find them, concurrent runs never see each other's rows, and cleaning up is a
``DROP``. This module is their lifecycle: create, empty for another pass, key once filled, drop.
Filling them is :mod:`icr.warehouse.stage_writer`; the DDL that differs by dialect (UNLOGGED
tables and a primary key on PostgreSQL, a unique index on SQLite) comes from ``warehouse.dialect``.
Nothing here touches the published tables.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from icr.normalize import STAGE_COLUMNS, RejectedRecord
from icr.warehouse.engine import Warehouse
from icr.warehouse.stage_writer import StageWriter

#: The names :func:`run_tables` makes (and no other table's).
STAGE_NAME = re.compile(r"icr_stage_(?:rej_|kept_|wire_)?[0-9a-f]{16}")


def stage_names(run_id: str) -> tuple[str, str]:
    """The run's (rows, rejects) staging table names: stable per run id, safe as identifiers."""
    key = hashlib.sha1(run_id.encode("utf-8")).hexdigest()[:16]
    return f"icr_stage_{key}", f"icr_stage_rej_{key}"


def kept_name(run_id: str) -> str:
    """The run's table of kept ids: records the extract found unchanged (see icr.unchanged)."""
    return "icr_stage_kept_" + stage_names(run_id)[0].rsplit("_", 1)[1]


def wire_name(run_id: str) -> str:
    """The run's table of wire hashes: of the records it decoded and staged (see icr.unchanged)."""
    return "icr_stage_wire_" + stage_names(run_id)[0].rsplit("_", 1)[1]


def run_tables(run_id: str) -> tuple[str, ...]:
    """Every staging table of a run."""
    return (*stage_names(run_id), kept_name(run_id), wire_name(run_id))


class Staging:
    """The staging tables of one run."""

    def __init__(self, warehouse: Warehouse, run_id: str) -> None:
        self.warehouse = warehouse
        self.run_id = run_id
        self.table, self.rejects_table = stage_names(run_id)
        self.kept_table = kept_name(run_id)
        self.wire_table = wire_name(run_id)

    def _execute(self, statements: Sequence[str]) -> None:
        if not statements:
            return
        with self.warehouse.engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)

    def create(self) -> None:
        """(Re)create empty staging tables; a retried task starts from scratch."""
        dialect = self.warehouse.dialect
        self._execute([*dialect.create_stage_sql(self.table, self.rejects_table, STAGE_COLUMNS),
                       *dialect.create_ids_sql(self.kept_table), *dialect.create_wire_sql(self.wire_table)])

    def truncate(self) -> None:
        dialect = self.warehouse.dialect
        self._execute([*dialect.unkey_stage_sql(self.table), *dialect.unkey_stage_sql(self.kept_table),
                       *dialect.unkey_stage_sql(self.wire_table),
                       *[f"DELETE FROM {t}" for t in self.tables]])

    def finish(self) -> None:
        """Index and analyze the staged rows once, in bulk (cheaper than per-row index upkeep).

        The key also proves there is exactly one row per installation.
        """
        dialect = self.warehouse.dialect
        self._execute([*dialect.key_stage_sql(self.table, self.rejects_table), *dialect.key_ids_sql(self.kept_table),
                       *dialect.key_ids_sql(self.wire_table)])

    def key_for_lookups(self) -> None:
        """Before :meth:`finish`: whatever a read looking staged ids up by key needs (SQLite's key)."""
        dialect = self.warehouse.dialect
        self._execute([*dialect.lookup_key_sql(self.table), *dialect.lookup_key_sql(self.kept_table)])

    @property
    def tables(self) -> tuple[str, ...]:
        """Every staging table of the run."""
        return run_tables(self.run_id)

    def drop_sql(self) -> list[str]:
        return [f"DROP TABLE IF EXISTS {t}" for t in self.tables]

    def drop(self) -> None:
        self._execute(self.drop_sql())

    def exists(self) -> bool:
        return sa.inspect(self.warehouse.engine).has_table(self.table)

    def write_kept(self, ids: bytes) -> None:
        """Append the ids of records found unchanged (16-byte UUIDs, concatenated)."""
        if ids:
            self._append(self.kept_table, ("installation_id",), lambda: binary_uuid_rows(ids),
                         lambda: [(str(uuid.UUID(bytes=ids[i:i + 16])),) for i in range(0, len(ids), 16)])

    def write_wire(self, rows: Sequence[tuple[str, bytes]]) -> None:
        """Append (installation id, wire hash) of staged rows."""
        if rows:
            self._append(self.wire_table, ("installation_id", "wire_hash"), lambda: binary_wire_rows(rows),
                         lambda: rows)

    def _append(self, table: str, columns: tuple[str, ...], binary: Callable[[], bytes],
                rows: Callable[[], Sequence[tuple[Any, ...]]]) -> None:
        """Append to a staging table on a connection of its own (the rows' COPY may be open on
        another): one binary COPY (``binary()``), or one batched insert of ``rows()``."""
        names = ", ".join(columns)
        with self.warehouse.engine.begin() as conn:
            driver = conn.connection.driver_connection
            if self.warehouse.dialect.stages_with_copy:
                with driver.cursor() as cursor, cursor.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT binary)") as copy:
                    copy.write(binary())
            else:
                driver.executemany(f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})", rows())

    def write(self, frame: pd.DataFrame, rejects: Sequence[RejectedRecord] = ()) -> None:
        """Append one normalized chunk (and its rejects) in one round of bulk I/O."""
        with self.writer() as writer:
            writer.write(frame, rejects)

    def writer(self) -> StageWriter:
        """A writer for many chunks: on PostgreSQL one ``COPY`` stays open for all of them."""
        return StageWriter(self.warehouse, self.table, self.rejects_table)


_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8  # signature, flags, no header extension
_UUID_ROW = np.dtype([("fields", ">i2"), ("length", ">i4"), ("value", "V16")])


def binary_uuid_rows(ids: bytes) -> bytes:
    """A binary COPY stream of one uuid column from 16-byte UUIDs, built in one go."""
    rows = np.empty(len(ids) // 16, dtype=_UUID_ROW)
    rows["fields"], rows["length"] = 1, 16
    rows["value"] = np.frombuffer(ids, dtype="V16")
    return _COPY_HEADER + rows.tobytes() + b"\xff\xff"


_WIRE_ROW = np.dtype([("fields", ">i2"), ("id_length", ">i4"), ("id", "V16"), ("hash_length", ">i4"), ("hash", "V16")])


def binary_wire_rows(rows: Sequence[tuple[str, bytes]]) -> bytes:
    """A binary COPY stream of (uuid, 16-byte bytea) rows from (canonical UUID text, digest)."""
    out = np.empty(len(rows), dtype=_WIRE_ROW)
    out["fields"], out["id_length"], out["hash_length"] = 2, 16, 16
    out["id"] = np.frombuffer(bytes.fromhex("".join([i for i, _ in rows]).replace("-", "")), dtype="V16")
    out["hash"] = np.frombuffer(b"".join([d for _, d in rows]), dtype="V16")
    return _COPY_HEADER + out.tobytes() + b"\xff\xff"
