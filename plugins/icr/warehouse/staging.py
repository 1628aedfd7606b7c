"""Per-run staging tables: where fetched, normalized rows wait between the extract and load tasks.

Each run gets its own pair of tables, named from a hash of its run id, so tasks on different
Celery workers find them, concurrent runs never see each other's rows, and cleaning up is a
``DROP``. On PostgreSQL they are UNLOGGED and filled with ``COPY``; on SQLite with batched
``executemany``. Nothing here touches the published tables.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from icr.normalize import STAGE_COLUMNS, RejectedRecord
from icr.warehouse.engine import Warehouse, utc_text

log = logging.getLogger(__name__)

_PG_TYPES = {
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
_SQLITE_TYPES = {
    "installation_id": "TEXT NOT NULL",  # unique key built in bulk: see Staging._index_sqlite
    "organization_is_public": "BOOLEAN",
    "created_at": "TEXT NOT NULL",
    "updated_at": "TEXT NOT NULL",
    "permissions": "TEXT NOT NULL",
    "record_hash": "TEXT NOT NULL",
    "raw": "TEXT NOT NULL",
}
_TIME_COLUMNS = ("created_at", "updated_at")
SQLITE_BATCH = 2_000


_STAGE_NAME = re.compile(r"icr_stage_(?:rej_|kept_)?[0-9a-f]{16}")


def stage_names(run_id: str) -> tuple[str, str]:
    """The run's (rows, rejects) staging table names: stable per run id, safe as identifiers."""
    key = hashlib.sha1(run_id.encode("utf-8")).hexdigest()[:16]
    return f"icr_stage_{key}", f"icr_stage_rej_{key}"


def kept_name(run_id: str) -> str:
    """The run's table of kept ids: records the extract found unchanged (see icr.unchanged)."""
    return "icr_stage_kept_" + stage_names(run_id)[0].rsplit("_", 1)[1]


def drop_orphaned_staging(warehouse: Warehouse, running_run_ids: Callable[[], Iterable[str]]) -> list[str]:
    """Drop staging tables that belong to no running run; returns their names.

    A failed run drops its own, unless the warehouse refused even that (a full disk, a lost
    connection): then a run's worth of rows would stay until someone noticed. The tables are
    listed *before* ``running_run_ids()`` is asked, so a run that starts meanwhile (its
    'running' row commits before it creates its tables) is never mistaken for an orphan.
    """
    tables = [t for t in sa.inspect(warehouse.engine).get_table_names() if _STAGE_NAME.fullmatch(t)]
    if not tables:
        return []
    keep = {name for run_id in running_run_ids() for name in (*stage_names(run_id), kept_name(run_id))}
    orphans = [t for t in tables if t not in keep]
    if orphans:
        with warehouse.engine.begin() as conn:
            for table in orphans:
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        log.warning("Dropped %d staging table(s) left behind by failed runs: %s", len(orphans), ", ".join(orphans))
    return orphans


class Staging:
    """The staging tables of one run."""

    def __init__(self, warehouse: Warehouse, run_id: str) -> None:
        self.warehouse = warehouse
        self.run_id = run_id
        self.table, self.rejects_table = stage_names(run_id)
        self.kept_table = kept_name(run_id)

    # -- lifecycle -----------------------------------------------------------------------------
    def create(self) -> None:
        """(Re)create empty staging tables; a retried task starts from scratch."""
        dialect = self.warehouse.dialect
        types = _PG_TYPES if dialect == "postgresql" else _SQLITE_TYPES
        default = "text" if dialect == "postgresql" else "TEXT"
        cols = ",\n  ".join(f"{c} {types.get(c, default)}" for c in STAGE_COLUMNS)
        unlogged = "UNLOGGED " if dialect == "postgresql" else ""
        with self.warehouse.engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {self.table}")
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {self.rejects_table}")
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {self.kept_table}")
            conn.exec_driver_sql(f"CREATE {unlogged}TABLE {self.table} (\n  {cols}\n)")
            conn.exec_driver_sql(f"CREATE {unlogged}TABLE {self.kept_table} "
                                 f"(installation_id {types['installation_id']})")
            conn.exec_driver_sql(
                f"CREATE {unlogged}TABLE {self.rejects_table} "
                f"(installation_id {default}, reason {default} NOT NULL, raw {default} NOT NULL)")

    def truncate(self) -> None:
        with self.warehouse.engine.begin() as conn:
            if self.warehouse.dialect == "sqlite":  # the next pass inserts without the key again
                conn.exec_driver_sql(f"DROP INDEX IF EXISTS {self.table}_key")
                conn.exec_driver_sql(f"DROP INDEX IF EXISTS {self.kept_table}_key")
            conn.exec_driver_sql(f"DELETE FROM {self.table}")
            conn.exec_driver_sql(f"DELETE FROM {self.kept_table}")
            conn.exec_driver_sql(f"DELETE FROM {self.rejects_table}")

    def finish(self) -> None:
        """Index and analyze the staged rows once, in bulk (cheaper than per-row index upkeep).

        The primary key also proves there is exactly one row per installation.
        """
        if self.warehouse.dialect == "postgresql":
            with self.warehouse.engine.begin() as conn:
                conn.exec_driver_sql(f"ALTER TABLE {self.table} ADD PRIMARY KEY (installation_id)")
                conn.exec_driver_sql(f"ALTER TABLE {self.kept_table} ADD PRIMARY KEY (installation_id)")
                conn.exec_driver_sql(f"CREATE INDEX ON {self.rejects_table} (installation_id)")
                conn.exec_driver_sql(f"ANALYZE {self.table}")
                conn.exec_driver_sql(f"ANALYZE {self.rejects_table}")
                conn.exec_driver_sql(f"ANALYZE {self.kept_table}")
        else:
            self._index_sqlite()
            with self.warehouse.engine.begin() as conn:
                conn.exec_driver_sql(
                    f"CREATE INDEX IF NOT EXISTS {self.rejects_table}_id ON {self.rejects_table} (installation_id)")

    def _index_sqlite(self) -> None:
        """SQLite: the staged rows' unique key on installation_id, built once after the inserts.

        Kept up to date while rows arrive in API order, it cost a random B-tree page per row,
        beyond SQLite's 2 MB page cache once staging outgrows it (the extract of 1,000,000
        installations grew 18x slower than that of 100,000). Built in bulk it is a sort.
        """
        with self.warehouse.engine.begin() as conn:
            conn.exec_driver_sql(
                f"CREATE UNIQUE INDEX IF NOT EXISTS {self.table}_key ON {self.table} (installation_id)")
            conn.exec_driver_sql(
                f"CREATE UNIQUE INDEX IF NOT EXISTS {self.kept_table}_key ON {self.kept_table} (installation_id)")

    def drop(self) -> None:
        with self.warehouse.engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {self.table}")
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {self.rejects_table}")
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {self.kept_table}")

    def exists(self) -> bool:
        return sa.inspect(self.warehouse.engine).has_table(self.table)

    def removal_candidates(self, batch: int = 1_000) -> Iterator[list[str]]:
        """Active installations missing from the staged snapshot, in batches of ids (as text).

        The caller stages what it recovers between batches. PostgreSQL: one anti-join streamed
        through a server-side cursor (memory stays flat, one pass over both tables; re-running
        the anti-join per batch cost seconds a batch at a million installations). SQLite: a
        short read per batch, keyset-paged (each batch sees what the caller staged before it).
        """
        missing = (
            "SELECT CAST(t.installation_id AS TEXT) AS id FROM icr_installation_state t "
            "WHERE t.deleted_at IS NULL "
            f"AND NOT EXISTS (SELECT 1 FROM {self.table} s WHERE s.installation_id = t.installation_id) "
            f"AND NOT EXISTS (SELECT 1 FROM {self.kept_table} k WHERE k.installation_id = t.installation_id) "
            f"AND NOT EXISTS (SELECT 1 FROM {self.rejects_table} r "
            "WHERE r.installation_id = CAST(t.installation_id AS TEXT))")
        if self.warehouse.dialect == "postgresql":
            with self.warehouse.read() as conn:
                result = conn.execution_options(stream_results=True, yield_per=batch).exec_driver_sql(missing)
                for part in result.partitions(batch):
                    yield [row[0] for row in part]
            return
        self._index_sqlite()  # each batch's anti-join looks staged ids up by key
        sql = sa.text(missing + " AND t.installation_id > :after ORDER BY t.installation_id LIMIT :n")
        after = ""
        while True:
            with self.warehouse.read() as conn:
                ids = [row[0] for row in conn.execute(sql, {"after": after, "n": batch})]
            if not ids:
                return
            yield ids
            after = ids[-1]

    def active_count(self) -> int:
        with self.warehouse.read() as conn:
            return int(conn.exec_driver_sql(
                "SELECT count(*) FROM icr_installation_state WHERE deleted_at IS NULL").scalar_one())

    # -- writing -------------------------------------------------------------------------------
    def write_kept(self, ids: Sequence[str]) -> None:
        """Append the ids of records found unchanged (canonical lower-case UUIDs), on a connection
        of their own (the rows' COPY may be open on another): one small COPY or batched insert."""
        if not ids:
            return
        with self.warehouse.engine.begin() as conn:
            if self.warehouse.dialect == "postgresql":
                cursor = conn.connection.driver_connection.cursor()
                with cursor.copy(f"COPY {self.kept_table} (installation_id) FROM STDIN") as copy:
                    copy.write(("\n".join(ids) + "\n").encode("ascii"))
                cursor.close()
            else:
                conn.connection.driver_connection.executemany(
                    f"INSERT INTO {self.kept_table} (installation_id) VALUES (?)", [(i,) for i in ids])

    def write(self, frame: pd.DataFrame, rejects: Sequence[RejectedRecord] = ()) -> None:
        """Append one normalized chunk (and its rejects) in one round of bulk I/O."""
        with self.writer() as writer:
            writer.write(frame, rejects)

    def writer(self) -> StageWriter:
        """A writer for many chunks: on PostgreSQL one ``COPY`` stays open for all of them."""
        return StageWriter(self)

    def _insert_sqlite(self, frame: pd.DataFrame) -> None:
        marks = ", ".join("?" for _ in STAGE_COLUMNS)
        sql = f"INSERT INTO {self.table} ({', '.join(STAGE_COLUMNS)}) VALUES ({marks})"
        rows = _rows(frame, sqlite=True)
        with self.warehouse.engine.begin() as conn:
            cur = conn.connection.driver_connection.cursor()
            for start in range(0, len(rows), SQLITE_BATCH):
                cur.executemany(sql, rows[start:start + SQLITE_BATCH])
            cur.close()

    def _write_rejects(self, rejects: Sequence[RejectedRecord]) -> None:
        rows = [(_reject_key(r.installation_id), r.reason, r.raw) for r in rejects]
        with self.warehouse.engine.begin() as conn:
            conn.execute(
                sa.text(f"INSERT INTO {self.rejects_table} (installation_id, reason, raw) VALUES (:i, :r, :w)"),
                [{"i": i, "r": r, "w": w} for i, r, w in rows],
            )


class StageWriter:
    """Appends chunks to a run's staging tables; a context manager that commits on a clean exit.

    On PostgreSQL the rows of every chunk go through ONE ``COPY ... FROM STDIN`` kept open until
    the end: the server parses and stores rows while this process normalizes the next chunk,
    instead of each chunk waiting for its own COPY to finish. An exception inside the ``with``
    aborts the COPY (nothing of it is kept). Rejects are few and go through their own inserts.
    On SQLite each chunk is one batched insert transaction.
    """

    def __init__(self, staging: Staging) -> None:
        self.staging = staging
        self._raw: Any = None  # pooled DBAPI connection holding the open COPY
        self._cursor: Any = None
        self._copy_cm: Any = None
        self._copy: Any = None

    def __enter__(self) -> StageWriter:
        return self

    def _open_copy(self) -> Any:
        raw = self.staging.warehouse.engine.raw_connection()
        try:
            cursor = raw.driver_connection.cursor()
            columns = ", ".join(STAGE_COLUMNS)
            copy_cm = cursor.copy(f"COPY {self.staging.table} ({columns}) FROM STDIN")
            copy = copy_cm.__enter__()
        except BaseException:
            raw.close()
            raise
        self._raw, self._cursor, self._copy_cm, self._copy = raw, cursor, copy_cm, copy
        return copy

    def write(self, frame: pd.DataFrame, rejects: Sequence[RejectedRecord] = ()) -> None:
        if len(frame):
            if self.staging.warehouse.dialect == "postgresql":
                copy = self._copy or self._open_copy()
                data = _copy_text(frame)
                if data is None:  # a timestamp COPY text cannot render: the driver's way
                    for row in _rows(frame, sqlite=False):
                        copy.write_row(row)
                else:
                    copy.write(data)
            else:
                self.staging._insert_sqlite(frame)
        if rejects:
            self.staging._write_rejects(rejects)

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


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_COPY_NULL = "\\N"


def _missing(value: Any) -> bool:
    """A text column's missing value as pandas may hold it: None, NA or a float NaN -> SQL NULL."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _copy_column_text(values: list[Any]) -> list[str]:
    """Object column -> COPY text fields: None (or NaN/NA) -> \\N, specials backslash-escaped."""
    nulls: list[int] = []
    if set(map(type, values)) != {str}:
        nulls = [i for i, v in enumerate(values) if _missing(v)]
        out = [v if type(v) is str else ("" if v is None or v is pd.NA else str(v)) for v in values]
        for i in nulls:
            out[i] = ""
    else:
        out = values
    probe = "".join(out)
    if "\\" in probe or "\t" in probe or "\n" in probe or "\r" in probe:
        out = [v.translate(_COPY_ESCAPES) if ("\\" in v or "\t" in v or "\n" in v or "\r" in v) else v
               for v in out]
    if nulls:
        for i in nulls:
            out[i] = _COPY_NULL
    return out


def _iso_timestamps(series: pd.Series) -> list[str] | None:
    """datetime64[us, UTC] -> '2024-03-26T08:47:15.356000' (UTC, "NaT" for missing), in one
    vectorised call; None if a year is outside 1..9999, which only the slow path can report."""
    values = series.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
    ok = ~np.isnat(values)
    if ok.any():
        years = values[ok].astype("datetime64[Y]").astype(np.int64) + 1970
        if years.min() < 1 or years.max() > 9999:
            return None
    return np.datetime_as_string(values, unit="us").tolist()


def _copy_timestamps(series: pd.Series) -> list[str] | None:
    """datetime64[us, UTC] -> COPY text ('2024-03-26T08:47:15.356000+00'); None if out of range."""
    text = _iso_timestamps(series)
    if text is None:
        return None
    return [_COPY_NULL if t == "NaT" else t + "+00" for t in text]


def _sqlite_timestamps(series: pd.Series) -> list[str | None]:
    """datetime64[us, UTC] -> the text :func:`utc_text` gives ('2024-03-26T08:47:15.356000+00:00'),
    vectorised (per-value ``to_pydatetime`` + ``isoformat`` was a third of SQLite staging)."""
    text = _iso_timestamps(series)
    if text is None:
        return [utc_text(ts.to_pydatetime()) if ts is not pd.NaT else None for ts in series]
    return [None if t == "NaT" else t + "+00:00" for t in text]


def _copy_text(frame: pd.DataFrame) -> bytes | None:
    """The chunk in PostgreSQL COPY text format (UTF-8), the same values :func:`_rows` sends."""
    cols: list[list[str]] = []
    for name in STAGE_COLUMNS:
        series = frame[name]
        if name in _TIME_COLUMNS:
            values = _copy_timestamps(series)
            if values is None:
                return None
        elif name == "organization_is_public":
            values = [_COPY_NULL if v is pd.NA or v is None else ("t" if v else "f")
                      for v in series.astype(object)]
        else:
            values = _copy_column_text(series.tolist())
        cols.append(values)
    if not cols or not cols[0]:
        return b""
    # One join and one encode per row: a single str for the whole chunk would be widened to
    # UCS-4 by one emoji (encoding that is several times slower), while a str per field costs
    # thirteen encodes per row.
    encode = str.encode
    return b"".join([encode("\t".join(row) + "\n") for row in zip(*cols)])


def _rows(frame: pd.DataFrame, *, sqlite: bool) -> list[tuple[Any, ...]]:
    """DataFrame chunk → driver tuples with None for missing values."""
    cols: list[list[Any]] = []
    for name in STAGE_COLUMNS:
        series = frame[name]
        if name in _TIME_COLUMNS:
            if sqlite:
                values = _sqlite_timestamps(series)
            else:
                values = [ts.to_pydatetime() if ts is not pd.NaT else None for ts in series]
        elif name == "organization_is_public":
            values = [None if v is pd.NA or v is None else bool(v) for v in series.astype(object)]
        else:
            values = series.tolist()
            if set(map(type, values)) != {str}:  # the common all-text column needs no pass
                values = [None if _missing(v) else v for v in values]
        cols.append(values)
    return list(zip(*cols))
