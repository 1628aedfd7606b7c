"""The benchmark's PostgreSQL side: a throw-away database per size, table counters, WAL, and the
bare-COPY floor."""

from __future__ import annotations

import os
import time
from typing import Any

from benchmarks import cpu

PG_ADMIN_URL = os.environ.get("ICR_BENCH_PG_URL", os.environ.get("ICR_TEST_PG_URL",
                                                                 "postgresql://postgres@127.0.0.1:5432/postgres"))
STATE = "icr_installation_state"


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


class Database:
    def __init__(self, admin_url: str, name: str) -> None:
        import psycopg

        self.admin_url = _libpq(admin_url)
        self.name = name
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        self.url = self.admin_url.rsplit("/", 1)[0] + "/" + name
        with self.connect() as conn:  # for CPU accounting, when the server runs on this machine
            self.postmaster = cpu.postmaster_pid(int(conn.execute("SELECT pg_backend_pid()").fetchone()[0]))

    def url_via(self, port: int) -> str:
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(self.url)
        netloc = parts.netloc.rsplit("@", 1)
        host = f"127.0.0.1:{port}"
        return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))

    def connect(self):
        import psycopg

        return psycopg.connect(self.url, autocommit=True)

    def table_stats(self, table: str) -> dict[str, int]:
        """pg_stat_user_tables counters of ``table`` once they have settled (stats flush async)."""
        last = None
        for _ in range(100):
            with self.connect() as conn:
                conn.execute("SELECT pg_stat_clear_snapshot()")
                row = conn.execute(
                    "SELECT n_tup_ins, n_tup_upd, n_tup_del, n_tup_hot_upd, pg_total_relation_size(relid) "
                    "FROM pg_stat_user_tables WHERE relname = %s", (table,)).fetchone()
            now = dict(zip(("ins", "upd", "del", "hot_upd", "bytes"), row or (0, 0, 0, 0, 0)))
            if now == last:
                return now
            last = now
            time.sleep(0.3)
        return last or {}

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def server_io(db: Database) -> dict[str, Any]:
    """WAL position and checkpoint count of the server (to explain time that grows faster than rows)."""
    with db.connect() as conn:
        lsn = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
        try:  # PostgreSQL 17+
            ckpt = conn.execute("SELECT num_timed + num_requested FROM pg_stat_checkpointer").fetchone()[0]
        except Exception:  # before 17 (the connection is in autocommit: nothing to roll back)
            ckpt = conn.execute("SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter").fetchone()[0]
    return {"lsn": lsn, "checkpoints": int(ckpt)}


def io_delta(db: Database, before: dict[str, Any]) -> dict[str, Any]:
    after = server_io(db)
    with db.connect() as conn:
        wal = conn.execute("SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)", (after["lsn"], before["lsn"])).fetchone()[0]
    return {"wal_mb": round(float(wal) / 1e6, 1), "checkpoints": after["checkpoints"] - before["checkpoints"]}


def table_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    d = {k: int(after.get(k, 0)) - int(before.get(k, 0)) for k in ("ins", "upd", "del", "hot_upd")}
    d["rewritten"] = d["ins"] + d["upd"] + d["del"]
    d["size_before"] = int(before.get("bytes", 0))
    d["size_after"] = int(after.get("bytes", 0))
    d["size_growth_bytes"] = d["size_after"] - d["size_before"]
    return d


def bare_copy(db: Database, table: str = STATE) -> dict[str, Any]:
    """COPY the final rows out to a buffer, then time COPY FROM into an empty clone table."""
    with db.connect() as conn:
        buf = bytearray()
        with conn.cursor() as cur:
            with cur.copy(f"COPY (SELECT * FROM {table}) TO STDOUT") as copy:
                for block in copy:
                    buf += block
        conn.execute("DROP TABLE IF EXISTS icr_bench_copy_floor")
        conn.execute(f"CREATE TABLE icr_bench_copy_floor (LIKE {table})")
        t0 = time.monotonic()
        with conn.cursor() as cur:
            with cur.copy("COPY icr_bench_copy_floor FROM STDIN") as copy:
                view = memoryview(buf)
                for start in range(0, len(view), 1 << 20):
                    copy.write(view[start:start + (1 << 20)])
        seconds = time.monotonic() - t0
        rows = conn.execute("SELECT count(*) FROM icr_bench_copy_floor").fetchone()[0]
        conn.execute("DROP TABLE icr_bench_copy_floor")
    return {"seconds": seconds, "rows": rows, "bytes": len(buf)}


def written_tables(db: Database) -> list[str]:
    """The base tables (not views) of the warehouse that hold rows: after a first load, every table
    it wrote (installations, history, permissions, the per-day tables, the run log)."""
    with db.connect() as conn:
        names = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
            "AND table_type = 'BASE TABLE' AND table_name LIKE 'icr\\_%' ORDER BY 1")]
        return [t for t in names if conn.execute(f'SELECT EXISTS (SELECT 1 FROM "{t}")').fetchone()[0]]


def bare_copy_all(db: Database, tables: list[str]) -> dict[str, Any]:
    """The same bare COPY for every table the first load wrote, one after another."""
    parts = {table: bare_copy(db, table) for table in tables}
    return {"tables": parts, "seconds": sum(p["seconds"] for p in parts.values()),
            "rows": sum(p["rows"] for p in parts.values())}


def warehouse_totals(db: Database) -> dict[str, Any]:
    """Rows written (n_tup_ins + n_tup_upd + n_tup_del) and bytes of every icr_* table (staging and
    the stock baseline's table left out), per table and in total, once the counters settle."""
    last = None
    for _ in range(100):
        with db.connect() as conn:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            rows = conn.execute(
                "SELECT relname, n_tup_ins + n_tup_upd + n_tup_del, pg_total_relation_size(relid) "
                "FROM pg_stat_user_tables WHERE relname LIKE 'icr\\_%' AND relname NOT LIKE 'icr\\_stage%' "
                "AND relname NOT LIKE 'icr\\_stock%'").fetchall()
        now = {name: (int(written), int(size)) for name, written, size in rows}
        if now == last:
            break
        last = now
        time.sleep(0.3)
    per_table = last or {}
    return {"rows_written": sum(w for w, _ in per_table.values()), "bytes": sum(b for _, b in per_table.values()),
            "per_table": {name: {"rows_written": w, "bytes": b} for name, (w, b) in per_table.items()}}


def totals_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What a run wrote: rows and bytes in total, and the rows of each table that wrote any."""
    old = before.get("per_table", {})
    tables = {name: v["rows_written"] - old.get(name, {}).get("rows_written", 0)
              for name, v in after.get("per_table", {}).items()}
    return {"rows_written": after["rows_written"] - before["rows_written"],
            "size_growth_bytes": after["bytes"] - before["bytes"],
            "rows_written_by_table": {k: v for k, v in sorted(tables.items()) if v}}


def pg_version(url: str) -> str:
    import psycopg

    with psycopg.connect(_libpq(url)) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        settings = dict(conn.execute(
            "SELECT name, current_setting(name) FROM pg_settings "
            "WHERE name IN ('shared_buffers', 'max_wal_size')").fetchall())
    return f"{version} (shared_buffers {settings.get('shared_buffers')}, max_wal_size {settings.get('max_wal_size')})"

