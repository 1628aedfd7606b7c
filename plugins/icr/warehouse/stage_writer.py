"""Filling a run's staging tables: normalized chunks in bulk, and the records that were rejected.

On PostgreSQL the rows of every chunk go through ONE ``COPY ... FROM STDIN`` kept open until the
end: the server parses and stores rows while this process normalizes the next chunk, instead of
each chunk waiting for its own COPY to finish. On SQLite each chunk is one batched insert
transaction. Rejects are few and go through their own inserts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pandas as pd
import sqlalchemy as sa

from icr.normalize import STAGE_COLUMNS, RejectedRecord
from icr.warehouse.copy_format import copy_text, driver_rows
from icr.warehouse.engine import Warehouse

log = logging.getLogger(__name__)

SQLITE_BATCH = 2_000


class StageWriter:
    """Appends chunks to a run's staging tables; a context manager that commits on a clean exit.

    An exception inside the ``with`` aborts the COPY (nothing of it is kept).
    """

    def __init__(self, warehouse: Warehouse, table: str, rejects_table: str) -> None:
        self.warehouse = warehouse
        self.table = table
        self.rejects_table = rejects_table
        self._raw: Any = None  # pooled DBAPI connection holding the open COPY
        self._cursor: Any = None
        self._copy_cm: Any = None
        self._copy: Any = None

    def __enter__(self) -> StageWriter:
        return self

    def write(self, frame: pd.DataFrame, rejects: Sequence[RejectedRecord] = ()) -> None:
        if len(frame):
            if self.warehouse.dialect.stages_with_copy:
                self._copy_rows(frame)
            else:
                self._insert_rows(frame)
        if rejects:
            self._insert_rejects(rejects)

    def _open_copy(self) -> Any:
        raw = self.warehouse.engine.raw_connection()
        try:
            cursor = raw.driver_connection.cursor()
            columns = ", ".join(STAGE_COLUMNS)
            copy_cm = cursor.copy(f"COPY {self.table} ({columns}) FROM STDIN")
            copy = copy_cm.__enter__()
        except BaseException:
            raw.close()
            raise
        self._raw, self._cursor, self._copy_cm, self._copy = raw, cursor, copy_cm, copy
        return copy

    def _copy_rows(self, frame: pd.DataFrame) -> None:
        copy = self._copy or self._open_copy()
        data = copy_text(frame)
        if data is None:  # a timestamp COPY text cannot render: the driver's way
            for row in driver_rows(frame, sqlite=False):
                copy.write_row(row)
        else:
            copy.write(data)

    def _insert_rows(self, frame: pd.DataFrame) -> None:
        marks = ", ".join("?" for _ in STAGE_COLUMNS)
        sql = f"INSERT INTO {self.table} ({', '.join(STAGE_COLUMNS)}) VALUES ({marks})"
        rows = driver_rows(frame, sqlite=True)
        with self.warehouse.engine.begin() as conn:
            cur = conn.connection.driver_connection.cursor()
            for start in range(0, len(rows), SQLITE_BATCH):
                cur.executemany(sql, rows[start:start + SQLITE_BATCH])
            cur.close()

    def _insert_rejects(self, rejects: Sequence[RejectedRecord]) -> None:
        rows = [(_reject_key(r.installation_id), r.reason, r.raw) for r in rejects]
        with self.warehouse.engine.begin() as conn:
            conn.execute(
                sa.text(f"INSERT INTO {self.rejects_table} (installation_id, reason, raw) VALUES (:i, :r, :w)"),
                [{"i": i, "r": r, "w": w} for i, r, w in rows],
            )

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if self._raw is None:
            return
        try:
            if exc is None:
                self._copy_cm.__exit__(None, None, None)  # ends the COPY; raises what the server said
                self._raw.driver_connection.commit()
            else:
                try:
                    self._copy_cm.__exit__(exc_type, exc, tb)  # CopyFail: the server discards it all
                except Exception:
                    log.debug("Aborting the staging COPY failed too", exc_info=True)
        finally:
            self._cursor.close()
            self._raw.close()
            self._raw = self._cursor = self._copy_cm = self._copy = None


def _reject_key(installation_id: str | None) -> str | None:
    """Rejected ids are compared with stored UUIDs as text: use the canonical lower-case form."""
    return installation_id.strip().lower() if isinstance(installation_id, str) else installation_id
