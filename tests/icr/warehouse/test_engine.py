"""Warehouse transactions on SQLite: writers serialize, readers take a snapshot and block no one."""

from __future__ import annotations

import sqlite3
import threading

import pytest
import sqlalchemy as sa

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


def test_writers_still_take_the_lock_up_front(sqlite_file):
    wh, path = sqlite_file
    with wh.write() as conn:
        conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            _other_process_writes(path, 3, timeout=0.2)
    _other_process_writes(path, 3)
    with wh.read() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one() == 2


def test_a_pooled_connection_used_for_reading_begins_immediate_again_for_writing(sqlite_file):
    """The read-only option belongs to one Connection, not to the pooled DBAPI connection."""
    wh, path = sqlite_file
    with wh.read() as conn:
        conn.exec_driver_sql("SELECT 1").scalar_one()
    done = threading.Event()
    with wh.write() as conn:
        conn.execute(sa.text("SELECT count(*) FROM t")).scalar_one()  # reads only: the lock must come from BEGIN

        def writer() -> None:
            try:
                _other_process_writes(path, 5, timeout=0.2)
            except sqlite3.OperationalError:
                done.set()

        t = threading.Thread(target=writer)
        t.start()
        t.join()
    assert done.is_set(), "a write transaction did not hold the write lock"
