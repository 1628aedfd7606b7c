"""The measured sections of one run: each size (floor, syncs, stock, dlt, SQLite, proxy) and the
API-latency / concurrency section."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import sqlite3
import uuid
from contextlib import closing
from pathlib import Path
from typing import Any

from benchmarks import dlt_env
from benchmarks.pg import (STATE, Database, bare_copy, bare_copy_all, io_delta, server_io, table_delta,
                          totals_delta, warehouse_totals, written_tables)
from benchmarks.processes import ROOT, Proxy, Simulator, log, worker



# The three syncs of each size: (label in the table, key in the result).
RUNS = (("sync #1 (empty warehouse)", "sync"), ("sync #2 no change", "rerun_no_change"),
        ("sync #3 1% upd, 0.5% removed", "rerun_changes"))


def _changes(n: int) -> tuple[int, int]:
    """Installations the simulator updates (1%) and removes (0.5%) before sync #3."""
    return max(1, n // 100), max(1, n // 200)


def _sync(db: Database, conn: str, measured: dict[str, Any]) -> dict[str, Any]:
    """One sync into ``db`` in a fresh worker, with what it wrote: the state table's counters and
    every icr_* table's rows written and bytes grown."""
    before, totals = db.table_stats(STATE), warehouse_totals(db)
    result = worker("sync", conn, warehouse_url=db.url, run_id=f"bench-{uuid.uuid4().hex[:8]}", **measured)
    result["state"] = table_delta(before, db.table_stats(STATE))
    result["warehouse"] = totals_delta(totals, warehouse_totals(db))
    return result


def measure_size(n: int, opts: argparse.Namespace, workdir: Path, with_proxy: bool,
                 with_dlt: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"installations": n}
    log(f"size {n:,}: starting the simulator (pre-generating {n:,} records)")
    sim = Simulator(n, opts.seed, workdir)
    out["simulator_start_seconds"] = round(sim.start_seconds, 2)
    tag = f"icr_bench_{os.getpid()}_{n}"
    dbs = [Database(opts.pg_url, tag)]
    db = dbs[0]
    proxy = None
    try:
        conn = sim.conn_json(page_size=opts.page_size, concurrency=opts.concurrency)
        common = {"page_size": opts.page_size, "concurrency": opts.concurrency}
        measured = {**common, "cpu_pids": {"postgresql": db.postmaster, "simulator": sim.proc.pid}}

        log("fetch-only floor")
        out["fetch_only"] = worker("fetch", conn, **measured)
        log("sync #1 (empty warehouse)")
        io = server_io(db)
        out["sync"] = _sync(db, conn, measured)
        out["sync"]["server_io"] = io_delta(db, io)
        out.update(measure_floor(db))
        out["stock"] = measure_stock(db, conn, min(n, opts.stock_sample), opts.page_size)
        log("fetch-only floor again, next to sync #2")
        fetch_again = worker("fetch", conn, **measured)
        log("sync #2 (no changes)")
        out["rerun_no_change"] = _sync(db, conn, measured)
        out["rerun_no_change"]["fetch_only_next_to_it"] = fetch_again
        if with_dlt:
            dbs.append(Database(opts.pg_url, tag + "_dlt"))
            out["dlt"] = measure_dlt(sim, dbs[-1], opts, workdir)

        upd, rem = _changes(n)
        log(f"sync #3 ({upd:,} updated, {rem:,} removed)")
        sim.admin("POST", "/_sim/changes", {"update": upd, "remove": rem})
        log("fetch-only floor again, next to sync #3")
        fetch_again = worker("fetch", conn, **measured)
        out["rerun_changes"] = _sync(db, conn, measured)
        out["rerun_changes"]["fetch_only_next_to_it"] = fetch_again
        out["rerun_changes"]["changes"] = {"updated": upd, "removed": rem}

        if opts.sqlite:
            out["sqlite"] = measure_sqlite(sim, conn, common, n, workdir, opts.sqlite_page_size)
        if with_proxy:
            proxy = Proxy("127.0.0.1:5432", opts.proxy_delay_ms)
            dbs.append(Database(opts.pg_url, tag + "_proxy"))
            out["proxy"] = measure_proxy(sim, conn, dbs[-1].url_via(proxy.port), opts, n)
        out["simulator_state"] = sim.admin("GET", "/_sim/state")["stats"]
    finally:
        if proxy:
            proxy.stop()
        sim.stop()
        for d in dbs:
            if not opts.keep_db:
                d.drop()
    return out


def measure_floor(db: Database) -> dict[str, Any]:
    """The first load's floor, after sync #1: a bare COPY of exactly the rows it wrote into each of
    its tables (the target's), and of the state table alone (the first round's, reported)."""
    log("bare COPY floor")
    io = server_io(db)
    one = bare_copy(db)
    one["server_io"] = io_delta(db, io)
    return {"bare_copy": one, "bare_copy_all_tables": bare_copy_all(db, written_tables(db))}


def measure_stock(db: Database, conn: str, sample: int, page_size: int) -> dict[str, Any]:
    log(f"stock baseline on {sample:,} records (json_normalize + PostgresHook.insert_rows)")
    stock = worker("stock", conn, sample=sample, table="icr_stock_installations", libpq_url=db.url,
                   warehouse_url=db.url, pg_conn_id="icr_bench_pg", page_size=page_size)
    st = db.table_stats("icr_stock_installations")
    stock["pg_stat_after_both_runs"] = st
    # the first run inserts every row, the rerun updates every row (pg counters of both)
    stock["rerun_rewritten"] = int(st["upd"])
    stock["first_inserted"] = int(st["ins"])
    with db.connect() as c:
        c.execute("DROP TABLE IF EXISTS icr_stock_installations")
    return stock


def measure_dlt(sim: Simulator, db: Database, opts: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """dlt's rest_api source into its own database on the same server: a first load, then a rerun
    with nothing changed, each in a fresh process of the dlt environment (benchmarks.dlt_env)."""
    python = Path(opts.dlt_python) if opts.dlt_python else dlt_env.python()
    args = {"base_url": sim.base_url, "app_id": sim.info["app_id"], "pem_path": str(sim.dir / "key.pem"),
            "page_size": opts.page_size, "pg_url": db.url, "dataset": "icr_dlt", "pipeline_name": "icr_dlt",
            "pipelines_dir": tempfile.mkdtemp(prefix="dlt-", dir=workdir)}
    out: dict[str, Any] = {}
    for key in ("first", "rerun"):
        log(f"dlt rest_api {'first load' if key == 'first' else 'no-change rerun'}")
        proc = subprocess.run([str(python), "-m", "benchmarks.dlt_peer", json.dumps(args)], cwd=ROOT,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"dlt peer failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        out[key] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def measure_proxy(sim: Simulator, conn: str, via: str, opts: argparse.Namespace, n: int) -> dict[str, Any]:
    common = {"page_size": opts.page_size, "concurrency": opts.concurrency}
    log(f"through a {opts.proxy_delay_ms} ms-each-way proxy: sync of {sim.admin('GET', '/_sim/state')['count']:,}")
    psync = worker("sync", conn, warehouse_url=via, run_id=f"bench-{uuid.uuid4().hex[:8]}", **common)
    psample = min(n, opts.proxy_stock_sample)
    log(f"through the proxy: stock baseline on {psample:,} records")
    pstock = worker("stock", conn, sample=psample, table="icr_stock_installations", libpq_url=via,
                    warehouse_url=via, pg_conn_id="icr_bench_pg_proxy", page_size=opts.page_size)
    return {"delay_ms_each_way": opts.proxy_delay_ms, "sync": psync, "stock": pstock}


def new_sqlite_file(path: Path, page_size: int) -> None:
    """An empty warehouse file with the given page size, as an earlier release would have made it.

    The warehouse sets its own page size only on a file that does not exist yet; WAL mode writes
    the file's first page, which fixes the size.
    """
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA page_size = {int(page_size)}")
        conn.execute("PRAGMA journal_mode = WAL")


def sqlite_page_size(path: Path) -> int:
    with closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("PRAGMA page_size").fetchone()[0])


def measure_sqlite(sim: Simulator, conn: str, common: dict[str, Any], n: int, workdir: Path,
                   page_size: int | None = None) -> dict[str, Any]:
    """The same three syncs into an SQLite file, the warehouse a new user gets by default.

    SQLite has no tuple counters: the rows each run wrote are the load's own counts (the test
    suite checks them against the tables). File growth is the database file after the worker
    exited (its last connection checkpoints the WAL into the file). With ``page_size`` the file
    is made beforehand with that page size (to compare with the warehouse's own choice).
    """
    path = workdir / f"sqlite-{n}.db"
    out: dict[str, Any] = {"file": "sqlite (default warehouse)"}
    upd, rem = _changes(n)
    try:
        if page_size:
            new_sqlite_file(path, page_size)
        for label, key in RUNS:
            if key == "rerun_changes":
                sim.admin("POST", "/_sim/changes", {"update": upd, "remove": rem})
            log(f"SQLite {label}")
            before = path.stat().st_size if path.exists() else 0
            r = worker("sync", conn, warehouse_url=f"sqlite:///{path}", run_id=f"bench-{uuid.uuid4().hex[:8]}",
                       cpu_pids={"simulator": sim.proc.pid}, **common)
            load = r["load"]
            r["written"] = {"ins": int(load.get("inserted") or 0),
                            "upd": int(load.get("updated") or 0) + int(load.get("restored") or 0),
                            "del": int(load.get("removed") or 0)}
            r["written"]["rewritten"] = r["written"]["upd"] + r["written"]["del"]
            r["file_growth_bytes"] = path.stat().st_size - before
            out[key] = r
        out["page_size"] = sqlite_page_size(path)
        out["rerun_changes"]["changes"] = {"updated": upd, "removed": rem}
    finally:
        for leftover in workdir.glob(f"sqlite-{n}.db*"):
            leftover.unlink(missing_ok=True)
    return out


def measure_concurrency(opts: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    n = opts.concurrency_installations
    log(f"concurrency: {n:,} installations, {opts.latency_ms} ms API latency")
    sim = Simulator(n, opts.seed, workdir, latency_ms=opts.latency_ms, warm_workers=1)
    try:
        conn1 = sim.conn_json(page_size=opts.page_size, concurrency=1)
        connc = sim.conn_json(page_size=opts.page_size, concurrency=opts.fetch_concurrency)
        serial = worker("fetch", conn1, page_size=opts.page_size, concurrency=1)
        conc = worker("fetch", connc, page_size=opts.page_size, concurrency=opts.fetch_concurrency)
        # 429s at random requests (seeded) while 8 are in flight, so the shared gate must hold the others
        pages = max(1, n // opts.page_size)
        faults = {"error_rate": min(0.5, max(0.02, 4 * opts.inject_429 / pages)),
                  "fault_kinds": ["429_seconds"], "max_faults": opts.inject_429, "seed": opts.seed}
        sim.admin("POST", "/_sim/reset_stats")
        sim.admin("POST", "/_sim/faults", faults)
        limited = worker("fetch", connc, page_size=opts.page_size, concurrency=opts.fetch_concurrency)
        state = sim.admin("GET", "/_sim/state")
        injected = int(state["stats"].get("faults_total", 0))
        return {
            "installations": n,
            "latency_ms": opts.latency_ms,
            "serial": serial,
            "concurrent": conc,
            "speedup": serial["seconds"] / conc["seconds"] if conc["seconds"] else None,
            "with_429": {"injected": injected, "faults": faults, "result": limited,
                         "simulator_by_status": state["stats"].get("by_status", {})},
        }
    finally:
        sim.stop()

