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
