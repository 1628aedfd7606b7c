"""The ICR sync benchmark: the real sync (ICRHook → normalize → staging → merge) against the
simulator (its own process, loopback HTTP) into the local PostgreSQL, with its floor and a
stock-Airflow baseline measured in the same run.

    .venv/bin/python -m benchmarks.run                      # 1,000,000 installations
    .venv/bin/python -m benchmarks.run --quick              # 100,000
    .venv/bin/python -m benchmarks.run --sizes 100000,1000000
    .venv/bin/python -m benchmarks.run --smoke              # 2,000, every section (CI)

Prints a table and writes ``benchmarks/results/<timestamp>-<size>.json``. See README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks import cpu

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
PG_ADMIN_URL = os.environ.get("ICR_BENCH_PG_URL", os.environ.get("ICR_TEST_PG_URL",
                                                                 "postgresql://postgres@127.0.0.1:5432/postgres"))
STATE = "icr_installation_state"

TARGETS = {
    "e2e_over_floor_max": 1.3,
    "speedup_vs_stock_min": 2.5,
    "peak_rss_mb_max_at_1m": 300.0,
    "peak_rss_growth_max": 1.20,
    "time_growth_per_10x_max": 11.0,
    "concurrency_speedup_min": 4.0,
}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- processes


class Simulator:
    """``python -m tests.simulator`` in its own process (warm: every record pre-generated)."""

    def __init__(self, installations: int, seed: int, workdir: Path, latency_ms: float = 0.0,
                 warm_workers: int = 2) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sim-", dir=workdir))
        info = self.dir / "info.json"
        cmd = [sys.executable, "-m", "tests.simulator", "--port", "0", "--installations", str(installations),
               "--seed", str(seed), "--key-out", str(self.dir / "key.pem"), "--info-out", str(info),
               "--latency-ms", str(latency_ms), "--warm", "--warm-workers", str(warm_workers),
               "--retry-after-seconds", "1"]
        t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while not info.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"simulator exited: {self.proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)
        time.sleep(0.05)
        self.info = json.loads(info.read_text())
        self.base_url = self.info["base_url"]
        self.pem = (self.dir / "key.pem").read_text()
        self.start_seconds = time.monotonic() - t0

    def admin(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as resp:
            return json.loads(resp.read())

    def conn_json(self, **extra: Any) -> str:
        return json.dumps({"conn_type": "icr", "host": self.base_url, "login": self.info["app_id"],
                           "password": self.pem, "extra": {"max_retry_wait": 30, **extra}})

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class Proxy:
    def __init__(self, target: str, delay_ms: float) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.proxy", "--target", target,
                                      "--delay-ms", str(delay_ms)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"proxy did not start: {line!r}")
        self.port = int(line.split()[1])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def worker(task: str, env_conn: str, **args: Any) -> dict[str, Any]:
    """Run one task of benchmarks.worker in a fresh process; its JSON result."""
    env = dict(os.environ)
    env["AIRFLOW_CONN_ICR_DEFAULT"] = env_conn
    env.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="icr-bench-airflow-"))
    if "pg_conn_id" in args:
        env[f"AIRFLOW_CONN_{args['pg_conn_id'].upper()}"] = args["libpq_url"]
    proc = subprocess.run([sys.executable, "-m", "benchmarks.worker", json.dumps({"task": task, **args})],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {task} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- PostgreSQL


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


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
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


# The tables a first load writes (the floor copies only the first one).
WRITTEN_TABLES = (STATE, "icr_installation_permissions", "icr_installation_history", "icr_installation_daily")


def bare_copy_all(db: Database) -> dict[str, Any]:
    """The same bare COPY for every table the sync writes, one after another."""
    parts = {table: bare_copy(db, table) for table in WRITTEN_TABLES}
    return {"tables": parts, "seconds": sum(p["seconds"] for p in parts.values()),
            "rows": sum(p["rows"] for p in parts.values())}


# --------------------------------------------------------------------------- sections


# The three syncs of each size: (label in the table, key in the result).
RUNS = (("sync #1 (empty warehouse)", "sync"), ("sync #2 no change", "rerun_no_change"),
        ("sync #3 1% upd, 0.5% removed", "rerun_changes"))


def _changes(n: int) -> tuple[int, int]:
    """Installations the simulator updates (1%) and removes (0.5%) before sync #3."""
    return max(1, n // 100), max(1, n // 200)


def measure_size(n: int, opts: argparse.Namespace, workdir: Path, with_proxy: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"installations": n}
    log(f"size {n:,}: starting the simulator (pre-generating {n:,} records)")
    sim = Simulator(n, opts.seed, workdir)
    out["simulator_start_seconds"] = round(sim.start_seconds, 2)
    tag = f"icr_bench_{os.getpid()}_{n}"
    db = Database(opts.pg_url, tag)
    dbs = [db]
    proxy = None
    try:
        conn = sim.conn_json(page_size=opts.page_size, concurrency=opts.concurrency)
        common = {"page_size": opts.page_size, "concurrency": opts.concurrency}
        measured = {**common, "cpu_pids": {"postgresql": db.postmaster, "simulator": sim.proc.pid}}

        log("fetch-only floor")
        out["fetch_only"] = worker("fetch", conn, **measured)

        log("sync #1 (empty warehouse)")
        before: dict[str, int] = {}  # the table does not exist yet
        io = server_io(db)
        first = worker("sync", conn, warehouse_url=db.url, run_id=f"bench-{uuid.uuid4().hex[:8]}", **measured)
        first["server_io"] = io_delta(db, io)
        first["state"] = _delta(before, db.table_stats(STATE))
        out["sync"] = first

        log("bare COPY floor")
        io = server_io(db)
        out["bare_copy"] = bare_copy(db)
        out["bare_copy"]["server_io"] = io_delta(db, io)
        out["bare_copy_all_tables"] = bare_copy_all(db)

        sample = min(n, opts.stock_sample)
        log(f"stock baseline on {sample:,} records (json_normalize + PostgresHook.insert_rows)")
        stock = worker("stock", conn, sample=sample, table="icr_stock_installations", libpq_url=db.url,
                       warehouse_url=db.url,
                       pg_conn_id="icr_bench_pg", page_size=opts.page_size)
        st = db.table_stats("icr_stock_installations")
        stock["pg_stat_after_both_runs"] = st
        # the first run inserts every row, the rerun updates every row (pg counters of both)
        stock["rerun_rewritten"] = int(st["upd"])
        stock["first_inserted"] = int(st["ins"])
        out["stock"] = stock
        with db.connect() as c:
            c.execute("DROP TABLE IF EXISTS icr_stock_installations")

        log("sync #2 (no changes)")
        before = db.table_stats(STATE)
        second = worker("sync", conn, warehouse_url=db.url, run_id=f"bench-{uuid.uuid4().hex[:8]}", **measured)
        second["state"] = _delta(before, db.table_stats(STATE))
        out["rerun_no_change"] = second

        upd, rem = _changes(n)
        log(f"sync #3 ({upd:,} updated, {rem:,} removed)")
        sim.admin("POST", "/_sim/changes", {"update": upd, "remove": rem})
        before = db.table_stats(STATE)
        third = worker("sync", conn, warehouse_url=db.url, run_id=f"bench-{uuid.uuid4().hex[:8]}", **measured)
        third["state"] = _delta(before, db.table_stats(STATE))
        third["changes"] = {"updated": upd, "removed": rem}
        out["rerun_changes"] = third

        if opts.sqlite:
            out["sqlite"] = measure_sqlite(sim, conn, common, n, workdir, opts.sqlite_page_size)

        if with_proxy:
            proxy = Proxy("127.0.0.1:5432", opts.proxy_delay_ms)
            pdb = Database(opts.pg_url, tag + "_proxy")
            dbs.append(pdb)
            via = pdb.url_via(proxy.port)
            log(f"through a {opts.proxy_delay_ms} ms-each-way proxy: sync of {sim.admin('GET', '/_sim/state')['count']:,}")
            psync = worker("sync", conn, warehouse_url=via, run_id=f"bench-{uuid.uuid4().hex[:8]}", **common)
            psample = min(n, opts.proxy_stock_sample)
            log(f"through the proxy: stock baseline on {psample:,} records")
            pstock = worker("stock", conn, sample=psample, table="icr_stock_installations", libpq_url=via,
                            warehouse_url=via,
                            pg_conn_id="icr_bench_pg_proxy", page_size=opts.page_size)
            out["proxy"] = {"delay_ms_each_way": opts.proxy_delay_ms, "sync": psync, "stock": pstock}
        out["simulator_state"] = sim.admin("GET", "/_sim/state")["stats"]
    finally:
        if proxy:
            proxy.stop()
        sim.stop()
        for d in dbs:
            if not opts.keep_db:
                d.drop()
    return out


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


# --------------------------------------------------------------------------- derived numbers


def _stock_seconds(stock: dict[str, Any], run: str, n: int) -> float:
    """The stock sample's ``run`` (its first load or its no-change rerun), extrapolated linearly to ``n``."""
    return (stock[run]["normalize_seconds"] + stock[run]["load_seconds"]) * n / stock["sample"]


def _against_stock(ours: float, theirs: float, stock: dict[str, Any]) -> dict[str, Any]:
    return {"ours_normalize_load_seconds": ours, "stock_normalize_load_seconds_extrapolated": theirs,
            "stock_sample": stock["sample"], "speedup_vs_stock": theirs / ours if ours else None}


def _vs_stock(sync: dict[str, Any], stock: dict[str, Any], run: str, n: int) -> dict[str, Any]:
    """Our normalize + stage + merge of one sync against the stock sample's ``run``."""
    ex = sync["extract"]
    ours = ex["normalize_seconds"] + ex["stage_seconds"] + sync["load_wall"]
    return _against_stock(ours, _stock_seconds(stock, run, n), stock)


def _same_records(sync: dict[str, Any], stock: dict[str, Any], n: int) -> dict[str, Any] | None:
    """Ours against the stock path measured the same way: both normalize and stage the sample's
    records from memory (no fetching beside them), extrapolated linearly to ``n``; ours adds the
    merge, measured at full size in ``sync``. None if the stock worker did not measure ours."""
    o = stock.get("ours_same_records")
    if not o:
        return None
    ours_stage = (o["normalize_seconds"] + o["stage_seconds"]) * n / stock["sample"]
    return {"ours_normalize_stage_seconds_extrapolated": ours_stage, "merge_seconds": sync["load_wall"],
            **_against_stock(ours_stage + sync["load_wall"], _stock_seconds(stock, "first", n), stock)}


def _cpu_rows(size: dict[str, Any]) -> list[dict[str, Any]]:
    """CPU seconds per process over the floor's fetch and sync #1's two steps (and SQLite's):
    which process a step waited on, and how much of the machine it left idle."""
    # (label, the worker's result, its cpu_seconds entry — None: the whole of it —, its wall time)
    steps = [("floor: fetch only", size["fetch_only"], None, "seconds"),
             ("sync #1 extract", size["sync"], "extract", "extract_wall"),
             ("sync #1 merge", size["sync"], "load", "load_wall")]
    lite = (size.get("sqlite") or {}).get("sync")
    if lite:
        steps += [("SQLite sync #1 extract", lite, "extract", "extract_wall"),
                  ("SQLite sync #1 load", lite, "load", "load_wall")]
    rows = []
    for label, run, key, wall_key in steps:
        seconds = run.get("cpu_seconds") or {}
        seconds = seconds if key is None else seconds.get(key)
        if not seconds:  # a result file from before the benchmark measured CPU
            continue
        wall = run[wall_key]
        rows.append({"step": label, "wall_seconds": wall, **seconds, "cpus_busy": cpu.busy(seconds, wall)})
    return rows


def _cpu_bound(size: dict[str, Any], rows: list[dict[str, Any]], floor: float) -> dict[str, Any] | None:
    """The least end-to-end time today's work allows on this machine: the extract's CPU seconds
    (worker, PostgreSQL, simulator) spread perfectly over every CPU, plus the merge and the
    other steps as measured (the merge is one transaction after the extract, one backend)."""
    extract = next((r for r in rows if r["step"] == "sync #1 extract"), None)
    cpus = os.cpu_count() or 1
    if not extract or any(extract[k] is None for k in ("process", "postgresql", "simulator")):
        return None
    s = size["sync"]
    total = extract["process"] + extract["postgresql"] + extract["simulator"]
    rest = s["end_to_end_seconds"] - s["extract_wall"]
    bound = total / cpus + rest
    return {"extract_cpu_seconds": total, "cpus": cpus, "extract_spread_seconds": total / cpus,
            "rest_seconds": rest, "seconds": bound, "over_floor": bound / floor if floor else None}


def derive(size: dict[str, Any]) -> dict[str, Any]:
    n = size["installations"]
    s = size["sync"]
    ex = s["extract"]
    rate = lambda secs: (n / secs) if secs else None  # noqa: E731
    floor = size["fetch_only"]["seconds"] + size["bare_copy"]["seconds"]
    all_tables = size.get("bare_copy_all_tables")
    floor_all = size["fetch_only"]["seconds"] + all_tables["seconds"] if all_tables else None
    d: dict[str, Any] = {
        "stages": {
            "fetch": {"seconds": s["extract_wall"], "records_per_s": rate(s["extract_wall"])},
            "normalize": {"seconds": ex["normalize_seconds"], "records_per_s": rate(ex["normalize_seconds"])},
            "stage": {"seconds": ex["stage_seconds"], "records_per_s": rate(ex["stage_seconds"])},
            "merge": {"seconds": s["load_wall"], "records_per_s": rate(s["load_wall"])},
        },
        "end_to_end": {"seconds": s["end_to_end_seconds"], "records_per_s": rate(s["end_to_end_seconds"]),
                       "api_requests": s["api_requests"], "peak_rss_mb": s["peak_rss_mb"]},
        "floor": {"fetch_only_seconds": size["fetch_only"]["seconds"],
                  "bare_copy_seconds": size["bare_copy"]["seconds"], "seconds": floor,
                  "fetch_only_peak_rss_mb": size["fetch_only"]["peak_rss_mb"]},
        "e2e_over_floor": s["end_to_end_seconds"] / floor if floor else None,
        "floor_all_tables": ({
            "seconds": floor_all,
            "bare_copy_seconds": all_tables["seconds"],
            "rows": all_tables["rows"],
            "e2e_over_floor": s["end_to_end_seconds"] / floor_all,
        } if all_tables else None),
        **_vs_stock(s, size["stock"], "first", n),
        "same_records": _same_records(s, size["stock"], n),
    }
    d["cpu"] = _cpu_rows(size)
    d["cpu_bound"] = _cpu_bound(size, d["cpu"], floor)
    # The nightly case: nothing changed. Ours reads, compares and writes the daily snapshot;
    # the stock path upserts (rewrites) every row again.
    if size.get("rerun_no_change") and "rerun" in size["stock"]:
        d["rerun_no_change"] = _vs_stock(size["rerun_no_change"], size["stock"], "rerun", n)
    if "proxy" in size:
        p = size["proxy"]
        d["proxy"] = {**_vs_stock(p["sync"], p["stock"], "first", n),
                      "end_to_end_seconds": p["sync"]["end_to_end_seconds"],
                      "same_records": _same_records(p["sync"], p["stock"], n)}
    return d


def check_targets(sizes: list[dict[str, Any]], conc: dict[str, Any] | None) -> list[dict[str, Any]]:
    rows = []

    def add(name: str, value: Any, target: str, ok: bool | None) -> None:
        rows.append({"target": name, "value": value, "goal": target,
                     "met": ok if ok is None else bool(ok)})

    for size in sizes:
        n, d = size["installations"], size["derived"]
        add(f"end to end / floor @ {n:,}", round(d["e2e_over_floor"], 2), f"<= {TARGETS['e2e_over_floor_max']}",
            d["e2e_over_floor"] <= TARGETS["e2e_over_floor_max"])
        # The target compares like with like: both paths on records already in memory.
        same = d.get("same_records") or d
        add(f"normalize+load vs stock @ {n:,}", round(same["speedup_vs_stock"], 1),
            f">= {TARGETS['speedup_vs_stock_min']}x", same["speedup_vs_stock"] >= TARGETS["speedup_vs_stock_min"])
        if d.get("same_records"):
            add(f"normalize+load vs stock, in the extract @ {n:,}",
                round(d["speedup_vs_stock"], 1), "(reported)", None)
        if "rerun_no_change" in d:
            add(f"normalize+load vs stock, no-change rerun @ {n:,}",
                round(d["rerun_no_change"]["speedup_vs_stock"], 1), "(reported)", None)
        if "proxy" in d:
            proxied = d["proxy"].get("same_records") or d["proxy"]
            add(f"normalize+load vs stock via proxy @ {n:,}", round(proxied["speedup_vs_stock"], 1),
                "(reported)", None)
        add(f"no-change rerun rows rewritten @ {n:,}", size["rerun_no_change"]["state"]["rewritten"], "== 0",
            size["rerun_no_change"]["state"]["rewritten"] == 0)
        add(f"stock rerun rows rewritten @ {n:,}", size["stock"]["rerun_rewritten"],
            f"== sample ({size['stock']['sample']:,})", size["stock"]["rerun_rewritten"] >= size["stock"]["sample"])
        lite = size.get("sqlite")
        if lite:
            written = lite["rerun_no_change"]["written"]["rewritten"]
            add(f"SQLite no-change rerun rows rewritten @ {n:,}", written, "== 0", written == 0)
            add(f"SQLite end to end / PostgreSQL end to end @ {n:,}",
                round(lite["sync"]["end_to_end_seconds"] / size["sync"]["end_to_end_seconds"], 2), "(reported)", None)
        if n >= 1_000_000:
            peak = size["sync"]["peak_rss_mb"]
            add(f"peak memory @ {n:,} (MB)", round(peak, 1), f"< {TARGETS['peak_rss_mb_max_at_1m']:.0f}",
                peak < TARGETS["peak_rss_mb_max_at_1m"])
    by_n = {s["installations"]: s for s in sizes}
    for small in sorted(by_n):
        big = small * 10
        if big in by_n:
            t_small = by_n[small]["sync"]["end_to_end_seconds"]
            t_big = by_n[big]["sync"]["end_to_end_seconds"]
            add(f"time {big:,} / {small:,}", round(t_big / t_small, 2), f"<= {TARGETS['time_growth_per_10x_max']}",
                t_big / t_small <= TARGETS["time_growth_per_10x_max"])
            m_small, m_big = by_n[small]["sync"]["peak_rss_mb"], by_n[big]["sync"]["peak_rss_mb"]
            add(f"peak memory {big:,} / {small:,}", round(m_big / m_small, 2),
                f"< {TARGETS['peak_rss_growth_max']}", m_big / m_small < TARGETS["peak_rss_growth_max"])
            if by_n[small].get("sqlite") and by_n[big].get("sqlite"):
                lite_small, lite_big = by_n[small]["sqlite"]["sync"], by_n[big]["sqlite"]["sync"]
                add(f"SQLite time {big:,} / {small:,}",
                    round(lite_big["end_to_end_seconds"] / lite_small["end_to_end_seconds"], 2), "(reported)", None)
                add(f"SQLite peak memory {big:,} / {small:,}",
                    round(lite_big["peak_rss_mb"] / lite_small["peak_rss_mb"], 2), "(reported)", None)
    if conc:
        add(f"fetch concurrency {conc['concurrent']['concurrency']} vs 1 @ {conc['latency_ms']} ms latency",
            round(conc["speedup"], 2), f">= {TARGETS['concurrency_speedup_min']}x",
            conc["speedup"] >= TARGETS["concurrency_speedup_min"])
        r = conc["with_429"]["result"]
        cs = r["client_stats"]
        add("fetch completes with injected 429s, all threads back off",
            f"complete={r['complete']} retries={cs['retries']} gate_waits={cs['gate_waits']}",
            "complete, retries > 0, gate waits > 0",
            r["complete"] and cs["retries"] > 0 and cs["gate_waits"] > 0)
    return rows


# --------------------------------------------------------------------------- output


def _f(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _verdict(speedup: float) -> str:
    """Ours against stock in words that stay true when ours is the slower one."""
    if speedup >= 1:
        return f"ours {speedup:.1f}x faster"
    return f"ours {speedup:.2f}x as fast (stock {1 / speedup:.2f}x faster)"


def render(result: dict[str, Any]) -> str:
    lines: list[str] = []
    meta = result["meta"]
    lines.append(f"ICR sync benchmark — {meta['started_at']} — {meta['cpus']} CPUs, page size {meta['page_size']}, "
                 f"concurrency {meta['concurrency']}, PostgreSQL {meta['pg_version']}, "
                 f"load average before {meta['loadavg_before']}")
    for size in result["sizes"]:
        n, d = size["installations"], size["derived"]
        lines.append("")
        lines.append(f"== {n:,} installations ==")
        lines.append(f"{'stage':<34}{'seconds':>10}{'records/s':>12}")
        for name, st in d["stages"].items():
            lines.append(f"{name:<34}{_f(st['seconds'], 2):>10}{_f(st['records_per_s'], 0):>12}")
        e = d["end_to_end"]
        lines.append(f"{'end to end (migrate..cleanup)':<34}{_f(e['seconds'], 2):>10}{_f(e['records_per_s'], 0):>12}")
        lines.append(f"  API requests {e['api_requests']:,}; peak RSS {e['peak_rss_mb']:.0f} MB "
                     f"(fetch-only process {d['floor']['fetch_only_peak_rss_mb']:.0f} MB)")
        bd = size["sync"].get("breakdown_seconds") or {}
        if bd:
            top = ", ".join(f"{k.split(':', 1)[1]} {v:.2f}" for k, v in list(bd.items())[:6])
            lines.append(f"  slowest load steps (s): {top}")
        fl = d["floor"]
        lines.append(f"{'floor: fetch only':<34}{_f(fl['fetch_only_seconds'], 2):>10}"
                     f"{_f(n / fl['fetch_only_seconds'], 0):>12}")
        lines.append(f"{'floor: bare COPY FROM final rows':<34}{_f(fl['bare_copy_seconds'], 2):>10}"
                     f"{_f(n / fl['bare_copy_seconds'], 0):>12}")
        sio, bio = size["sync"].get("server_io"), size["bare_copy"].get("server_io")
        if sio and bio:
            lines.append(f"  PostgreSQL wrote {sio['wal_mb']:,.0f} MB of WAL in sync #1 ({sio['checkpoints']} checkpoints "
                         f"during it), {bio['wal_mb']:,.0f} MB in the bare COPY ({bio['checkpoints']} checkpoints)")
        lines.append(f"{'floor total':<34}{_f(fl['seconds'], 2):>10}   end to end = {d['e2e_over_floor']:.2f} x floor")
        fa = d.get("floor_all_tables")
        if fa:
            lines.append(f"  (for comparison, not the target's floor: fetch only + bare COPY of all {len(WRITTEN_TABLES)} "
                         f"tables the sync writes, {fa['rows']:,} rows, = {fa['seconds']:.2f} s; "
                         f"end to end = {fa['e2e_over_floor']:.2f} x that)")
        if d.get("cpu"):
            lines.append(f"{'CPU seconds (user+sys)':<34}{'wall s':>8}{'worker':>9}{'PostgreSQL':>12}"
                         f"{'simulator':>11}{'CPUs busy':>11}")
            for c in d["cpu"]:
                lines.append(f"{c['step']:<34}{_f(c['wall_seconds'], 2):>8}{_f(c['process'], 2):>9}"
                             f"{_f(c['postgresql'], 2):>12}{_f(c['simulator'], 2):>11}{_f(c['cpus_busy'], 2):>11}")
            lines.append(f"  worker = the process running the fetch or the sync (all its threads); CPUs busy = "
                         f"the three together / wall, of {result['meta']['cpus']} CPUs")
        cb = d.get("cpu_bound")
        if cb:
            lines.append(f"  least end to end this work allows here: sync #1's extract, {cb['extract_cpu_seconds']:.2f} "
                         f"CPU-s, spread over all {cb['cpus']} CPUs = {cb['extract_spread_seconds']:.2f} s, + merge and "
                         f"other steps as measured {cb['rest_seconds']:.2f} s = {cb['seconds']:.2f} s = "
                         f"{cb['over_floor']:.2f} x floor")
        same = d.get("same_records")
        if same:
            lines.append(f"normalize+load, both on the same {same['stock_sample']:,} records in memory (extrapolated "
                         f"linearly): ours normalize+stage {same['ours_normalize_stage_seconds_extrapolated']:.2f} s "
                         f"+ merge {same['merge_seconds']:.2f} s (full size) = "
                         f"{same['ours_normalize_load_seconds']:.2f} s; stock json_normalize + "
                         f"PostgresHook.insert_rows(replace=True) {same['stock_normalize_load_seconds_extrapolated']:.2f} s "
                         f"-> {_verdict(same['speedup_vs_stock'])}")
        lines.append(f"normalize+stage+merge (ours, in the extract beside fetching) "
                     f"{d['ours_normalize_load_seconds']:.2f} s; stock json_normalize + "
                     f"PostgresHook.insert_rows(replace=True): {d['stock_normalize_load_seconds_extrapolated']:.2f} s "
                     f"(measured on {d['stock_sample']:,} rows, extrapolated linearly) -> "
                     f"{_verdict(d['speedup_vs_stock'])}")
        st = size["stock"]
        lines.append(f"  stock sample: first run normalize {st['first']['normalize_seconds']:.2f} s + insert_rows "
                     f"{st['first']['load_seconds']:.2f} s; no-change rerun {st['rerun']['normalize_seconds']:.2f} s + "
                     f"{st['rerun']['load_seconds']:.2f} s, rewrote {st['rerun_rewritten']:,} of {st['sample']:,} rows "
                     f"(n_tup_upd; hot {st['pg_stat_after_both_runs']['hot_upd']:,})")
        rr = d.get("rerun_no_change")
        if rr:
            lines.append(f"  no-change rerun (the nightly case): ours normalize+stage+merge "
                         f"{rr['ours_normalize_load_seconds']:.2f} s, stock "
                         f"{rr['stock_normalize_load_seconds_extrapolated']:.2f} s (extrapolated) -> "
                         f"{_verdict(rr['speedup_vs_stock'])}, and it rewrites no row")
        lines.append(f"{'run':<30}{'wall s':>9}{'rows rewritten':>16}{'ins/upd/del':>20}{'size growth':>14}")
        for label, key in RUNS:
            r = size[key]
            sd = r["state"]
            counts = f"{sd['ins']}/{sd['upd']}/{sd['del']}"
            lines.append(f"{label:<30}{_f(r['end_to_end_seconds'], 2):>9}{_f(sd['rewritten']):>16}"
                         f"{counts:>20}{_f(sd['size_growth_bytes'] / 1e6, 1) + ' MB':>14}")
        lite = size.get("sqlite")
        if lite:
            pages = f", {lite['page_size'] // 1024} KB pages" if lite.get("page_size") else ""
            lines.append(f"SQLite (the default warehouse{pages}), the same syncs into a file (rows: the load's counts):")
            lines.append(f"{'run':<30}{'wall s':>9}{'extract s':>11}{'load s':>9}{'peak RSS':>10}"
                         f"{'ins/upd/del':>20}{'file growth':>14}")
            for label, key in RUNS:
                r = lite[key]
                w = r["written"]
                counts = f"{w['ins']}/{w['upd']}/{w['del']}"
                lines.append(f"{label:<30}{_f(r['end_to_end_seconds'], 2):>9}{_f(r['extract_wall'], 2):>11}"
                             f"{_f(r['load_wall'], 2):>9}{_f(r['peak_rss_mb'], 0) + ' MB':>10}"
                             f"{counts:>20}{_f(r['file_growth_bytes'] / 1e6, 1) + ' MB':>14}")
        if "proxy" in d:
            p = d["proxy"]
            lines.append(f"via proxy (+{size['proxy']['delay_ms_each_way']} ms each way): ours normalize+load "
                         f"{p['ours_normalize_load_seconds']:.2f} s (end to end {p['end_to_end_seconds']:.2f} s), "
                         f"stock {p['stock_normalize_load_seconds_extrapolated']:.2f} s (measured on "
                         f"{p['stock_sample']:,} rows, extrapolated) -> {_verdict(p['speedup_vs_stock'])}")
            ps = p.get("same_records")
            if ps:
                lines.append(f"  via proxy, both on the same {ps['stock_sample']:,} records in memory: ours "
                             f"{ps['ours_normalize_load_seconds']:.2f} s, stock "
                             f"{ps['stock_normalize_load_seconds_extrapolated']:.2f} s -> "
                             f"{_verdict(ps['speedup_vs_stock'])}")
    conc = result.get("concurrency")
    if conc:
        lines.append("")
        lines.append(f"== fetch only, {conc['installations']:,} installations, {conc['latency_ms']} ms API latency ==")
        for label, key in (("concurrency 1", "serial"), (f"concurrency {conc['concurrent']['concurrency']}",
                                                          "concurrent")):
            r = conc[key]
            lines.append(f"{label:<34}{_f(r['seconds'], 2):>10}{_f(r['records'] / r['seconds'], 0):>12}")
        lines.append(f"speedup {conc['speedup']:.2f}x")
        w = conc["with_429"]
        r = w["result"]
        lines.append(f"with {w['injected']} injected 429s (random requests, Retry-After 1 s): {r['seconds']:.2f} s, complete="
                     f"{r['complete']}, {r['records']:,} records, client retries {r['client_stats']['retries']} "
                     f"{r['client_stats']['retries_by_reason']}, waited {r['client_stats']['wait_seconds']} s "
                     f"(other threads held by the shared gate {r['client_stats']['gate_waits']} times, "
                     f"{r['client_stats']['gate_wait_seconds']} s)")
    lines.append("")
    lines.append("== targets ==")
    for t in result["targets"]:
        mark = "n/a " if t["met"] is None else ("MET " if t["met"] else "MISS")
        lines.append(f"[{mark}] {t['target']:<58} {str(t['value']):>12}   goal {t['goal']}")
    return "\n".join(lines)


def _pg_version(url: str) -> str:
    import psycopg

    with psycopg.connect(_libpq(url)) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        settings = dict(conn.execute(
            "SELECT name, current_setting(name) FROM pg_settings "
            "WHERE name IN ('shared_buffers', 'max_wal_size')").fetchall())
    return f"{version} (shared_buffers {settings.get('shared_buffers')}, max_wal_size {settings.get('max_wal_size')})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Benchmark the ICR sync against the simulator and PostgreSQL.")
    p.add_argument("--installations", type=int, default=1_000_000)
    p.add_argument("--sizes", help="comma-separated sizes, e.g. 100000,1000000 (overrides --installations)")
    p.add_argument("--quick", action="store_true", help="100,000 installations")
    p.add_argument("--smoke", action="store_true", help="2,000 installations, every section (CI)")
    p.add_argument("--page-size", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=1, help="the connection's concurrency extra for the syncs")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--stock-sample", type=int, default=50_000)
    p.add_argument("--proxy-stock-sample", type=int, default=10_000)
    p.add_argument("--proxy-delay-ms", type=float, default=1.0)
    p.add_argument("--proxy-sizes", default="smallest", help="'smallest', 'all', 'none' or comma-separated sizes")
    p.add_argument("--concurrency-installations", type=int, default=20_000)
    p.add_argument("--latency-ms", type=float, default=20.0)
    p.add_argument("--fetch-concurrency", type=int, default=8)
    p.add_argument("--inject-429", type=int, default=5)
    p.add_argument("--no-concurrency", action="store_true", help="skip the API latency / concurrency section")
    p.add_argument("--only-concurrency", action="store_true", help="run only the API latency / concurrency section")
    p.add_argument("--pg-url", default=PG_ADMIN_URL, help="admin URL; databases icr_bench_* are created/dropped")
    p.add_argument("--results-dir", default=str(RESULTS))
    p.add_argument("--keep-db", action="store_true")
    p.add_argument("--no-sqlite", dest="sqlite", action="store_false",
                   help="skip the same syncs into an SQLite file (the default warehouse)")
    p.add_argument("--sqlite-page-size", type=int, metavar="BYTES",
                   help="make the SQLite file with this page size first (default: the warehouse's own, "
                        "icr.warehouse.engine.SQLITE_PAGE_SIZE; 4096 is what earlier releases made)")
    opts = p.parse_args(argv)

    if opts.smoke:
        sizes = [2_000]
        opts.stock_sample = min(opts.stock_sample, 2_000)
        opts.proxy_stock_sample = min(opts.proxy_stock_sample, 500)
        opts.concurrency_installations = min(opts.concurrency_installations, 2_000)
        opts.inject_429 = min(opts.inject_429, 2)
    elif opts.sizes:
        sizes = sorted(int(x) for x in opts.sizes.split(","))
    elif opts.quick:
        sizes = [100_000]
    else:
        sizes = [opts.installations]
    if opts.only_concurrency:
        sizes = []
    if opts.proxy_sizes == "smallest":
        proxy_sizes = set(sizes[:1])
    elif opts.proxy_sizes == "all":
        proxy_sizes = set(sizes)
    elif opts.proxy_sizes == "none":
        proxy_sizes = set()
    else:
        proxy_sizes = {int(x) for x in opts.proxy_sizes.split(",")}

    started = datetime.now(timezone.utc)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    result: dict[str, Any] = {
        "meta": {"started_at": started.isoformat(timespec="seconds"), "cpus": os.cpu_count(),
                 "page_size": opts.page_size, "concurrency": opts.concurrency, "seed": opts.seed,
                 "pg_version": _pg_version(opts.pg_url), "loadavg_before": [round(x, 2) for x in os.getloadavg()],
                 "argv": sys.argv[1:] if argv is None else argv, "python": sys.version.split()[0]},
        "sizes": [],
    }
    workdir = Path(tempfile.mkdtemp(prefix="icr-bench-"))
    try:
        for n in sizes:
            size = measure_size(n, opts, workdir, n in proxy_sizes)
            size["derived"] = derive(size)
            result["sizes"].append(size)
            if len(sizes) > 1:  # keep what is done if a later, larger size fails or is stopped
                partial = {**result, "partial": True, "targets": check_targets(result["sizes"], None)}
                Path(opts.results_dir).mkdir(parents=True, exist_ok=True)
                (Path(opts.results_dir) / f"{stamp}-{n}.partial.json").write_text(
                    json.dumps(partial, indent=2, default=str) + "\n")
                log("\n" + render(partial))
        result["concurrency"] = None if opts.no_concurrency else measure_concurrency(opts, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["meta"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    result["meta"]["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    result["targets"] = check_targets(result["sizes"], result["concurrency"])
    text = render(result)
    result["table"] = text
    out_dir = Path(opts.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    if not result["sizes"]:
        path = out_dir / f"{stamp}-concurrency.json"
        path.write_text(json.dumps(result, indent=2, default=str) + "\n")
        paths.append(path)
    for size in result["sizes"]:
        (out_dir / f"{stamp}-{size['installations']}.partial.json").unlink(missing_ok=True)
        path = out_dir / f"{stamp}-{size['installations']}.json"
        path.write_text(json.dumps(result, indent=2, default=str) + "\n")
        paths.append(path)
    print(text)
    print("\nresults: " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
