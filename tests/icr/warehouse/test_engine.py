"""Warehouse transactions on SQLite: writers serialize, readers take a snapshot and block no one."""

from __future__ import annotations

import sqlite3

import pytest
from icr.warehouse.engine import Warehouse


@pytest.fixture
def sqlite_file(tmp_path):
    path = tmp_path / "wh.sqlite"
    wh = Warehouse.from_url(f"sqlite:///{path}")
    with wh.write() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    yield wh, path
    wh.dispose()


def _other_process_writes(path, value: int, timeout: float = 1.0) -> None:
    """What another run's merge does: take the write lock (BEGIN IMMEDIATE), write, commit."""
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t VALUES (?)", (value,))
        conn.execute("COMMIT")
    finally:
        conn.close()


def test_an_open_read_does_not_block_a_writer_and_keeps_its_snapshot(sqlite_file):
    wh, path = sqlite_file
    with wh.read() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one() == 1
        _other_process_writes(path, 2)  # would wait out the 1 s timeout and fail if the read held the lock
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one() == 1  # same snapshot
    with wh.read() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one() == 2


@pytest.mark.parametrize("read_first", [False, True], ids=["fresh", "after-a-read"])
def test_writers_still_take_the_lock_up_front(sqlite_file, read_first):
    """Also on a pooled connection that just served a read: the read-only option belongs to one
    Connection, not to the DBAPI connection the pool hands out again."""
    wh, path = sqlite_file
    if read_first:
        with wh.read() as conn:
            conn.exec_driver_sql("SELECT 1").scalar_one()
    with wh.write() as conn:
        conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one()  # reads only: the lock comes from BEGIN
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            _other_process_writes(path, 3, timeout=0.2)
    _other_process_writes(path, 3)
    with wh.read() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one() == 2


# -- a full disk ------------------------------------------------------------------------------------
def _limit_file_to_its_size(wh: Warehouse) -> None:
    """Every new connection may not grow the file: SQLite's own SQLITE_FULL, as on a full disk."""
    import sqlalchemy as sa

    wh.engine.dispose()

    @sa.event.listens_for(wh.engine, "connect")
    def _limit(dbapi_conn, _record):
        pages = dbapi_conn.execute("PRAGMA page_count").fetchone()[0]
        dbapi_conn.execute(f"PRAGMA max_page_count = {pages}")


def test_a_full_sqlite_warehouse_is_explained_and_rolled_back(sqlite_file):
    from icr.errors import WarehouseFullError

    wh, path = sqlite_file
    _limit_file_to_its_size(wh)
    with pytest.raises(WarehouseFullError) as info:
        with wh.out_of_space_explained("loading run r1"), wh.write() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (2)")
            conn.exec_driver_sql("CREATE TABLE big AS WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL "
                                 "SELECT i + 1 FROM n WHERE i < 20000) SELECT i, printf('%.500c', 'x') AS pad FROM n")
    message = str(info.value)
    assert f"The SQLite warehouse {path} ran out of space while loading run r1: database or disk is full" in message
    assert "free on its disk" in message and "the database file is" in message
    assert "published tables are as they were" in message
    assert isinstance(info.value.__cause__, Exception)  # the driver's error stays attached
    with wh.read() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one() == 1  # rolled back


def test_other_warehouse_errors_pass_through_unchanged(sqlite_file):
    import sqlalchemy as sa

    wh, _ = sqlite_file
    with pytest.raises(sa.exc.OperationalError, match="no such table"):
        with wh.out_of_space_explained("loading run r1"), wh.write() as conn:
            conn.exec_driver_sql("INSERT INTO missing VALUES (1)")


def test_postgres_disk_full_is_recognised_by_its_sqlstate():
    """The real thing (a tablespace on a full filesystem) is in tests/faults; here the mapping."""
    import psycopg

    from icr.warehouse.engine import _disk_full

    assert _disk_full(psycopg.errors.DiskFull("could not extend file: No space left on device")) \
        == "could not extend file: No space left on device"
    assert _disk_full(psycopg.errors.UniqueViolation("duplicate key")) is None


def test_the_write_ahead_log_is_cut_back_after_a_large_load(tmp_path, monkeypatch):
    """While any connection stays open (a dashboard's), SQLite keeps the WAL at its largest size;
    the warehouse asks SQLite to cut it back to SQLITE_WAL_LIMIT_BYTES once it has been emptied."""
    import icr.warehouse.engine as engine
    from icr.warehouse.engine import SQLITE_PAGE_SIZE

    limit = 256 * 1024
    monkeypatch.setattr(engine, "SQLITE_WAL_LIMIT_BYTES", limit)
    path = tmp_path / "wal.sqlite"
    wh = Warehouse.from_url(f"sqlite:///{path}")
    reader = sqlite3.connect(path)  # stays open throughout, as a BI tool's connection would
    try:
        with wh.write() as conn:
            conn.exec_driver_sql("CREATE TABLE big (pad TEXT)")
            conn.exec_driver_sql("INSERT INTO big WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                                 "WHERE i < 40000) SELECT printf('%.1000c', 'x') FROM n")
        grown = (tmp_path / "wal.sqlite-wal").stat().st_size
        # the one large transaction went through the log, past SQLite's checkpoint threshold
        # (1,000 pages: 16 MB with the warehouse's 16 KB pages)
        assert grown > 4 * limit and grown > 1000 * SQLITE_PAGE_SIZE
        for value in range(3):  # the following small writes find the log checkpointed and reset it
            with wh.write() as conn:
                conn.exec_driver_sql(f"INSERT INTO big VALUES ('{value}')")
        assert (tmp_path / "wal.sqlite-wal").stat().st_size <= limit
    finally:
        reader.close()
        wh.dispose()


def test_a_new_sqlite_warehouse_gets_large_pages_and_an_existing_one_keeps_its_own(tmp_path):
    """A load's every page goes through the write-ahead log, which SQLite searches one hash table
    per 4,096 frames: larger pages mean fewer frames. Only a new file can take the size; a file
    that already exists (a warehouse from an earlier release) keeps its pages and still works."""
    from icr.warehouse.engine import SQLITE_PAGE_SIZE

    assert SQLITE_PAGE_SIZE > 4096
    fresh = Warehouse.from_url(f"sqlite:///{tmp_path / 'new.sqlite'}")
    old_path = tmp_path / "old.sqlite"
    old = sqlite3.connect(old_path)
    old.execute("PRAGMA page_size = 4096")  # SQLite's usual default, what earlier releases made
    old.execute("CREATE TABLE t (x INTEGER)")
    old.commit()
    old.close()
    existing = Warehouse.from_url(f"sqlite:///{old_path}")
    try:
        for wh in (fresh, existing):
            with wh.write() as conn:
                conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
                conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        with fresh.read() as conn:
            assert conn.exec_driver_sql("PRAGMA page_size").scalar_one() == SQLITE_PAGE_SIZE
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
        with existing.read() as conn:
            assert conn.exec_driver_sql("PRAGMA page_size").scalar_one() == 4096
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
            assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one() == 1
    finally:
        fresh.dispose()
        existing.dispose()
