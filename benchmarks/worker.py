"""One measured task in a fresh process (so each gets its own peak resident memory).

``python -m benchmarks.worker '<json>'`` prints one JSON line (the result) as its last line.
Tasks: ``sync`` (the real DAG steps: icr.sync.migrate/extract/load/verify/cleanup), ``fetch``
(the same ICRHook pager, every page, nothing else), ``stock`` (pandas.json_normalize +
PostgresHook.insert_rows(replace=True) on a sample, twice: first load, then a no-change rerun).
The ICR connection comes in ``AIRFLOW_CONN_ICR_DEFAULT`` (set by benchmarks.run).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
import time
from datetime import datetime, timezone
from typing import Any


def _peak_mb() -> float:
    """This process's own peak resident memory, in MB.

    Linux's ``ru_maxrss`` is not it: a child started by ``subprocess`` (vfork + exec) inherits the
    parent's high-water mark, so every worker started after the orchestrator held the bare COPY's
    rows in memory reported that peak. ``VmHWM`` belongs to the process's own address space.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:  # not Linux: ru_maxrss is the best there is (KiB on Linux, bytes on macOS)
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def task_sync(args: dict[str, Any]) -> dict[str, Any]:
    from benchmarks import cpu
    from icr.hooks import ICRHook
    from icr.sync import NORMALIZE, STAGE, SyncSettings, cleanup, extract, load, migrate, verify
    from icr.timings import Timings
    from icr.warehouse.engine import Warehouse
    from icr.warehouse.runlog import RunContext

    timings = Timings()  # each merge statement's seconds, and the staged rows' keying
    warehouse = Warehouse.from_url(args["warehouse_url"])
    hook = ICRHook(icr_conn_id="icr_default")
    settings = SyncSettings(page_size=args.get("page_size"), concurrency=args.get("concurrency"))
    run = RunContext(run_id=args["run_id"], logical_date=datetime.now(timezone.utc), dag_id="icr_benchmark")
    pids = args.get("cpu_pids")
    t0 = time.monotonic()
    c0 = cpu.sample(pids)
    migrate(warehouse)
    t1 = time.monotonic()
    c1 = cpu.sample(pids)
    extracted = extract(warehouse, hook, run, settings, timings)
    t2 = time.monotonic()
    c2 = cpu.sample(pids)
    loaded = load(warehouse, run, settings, timings)
    t3 = time.monotonic()
    c3 = cpu.sample(pids)
    verified = verify(warehouse, run)
    cleanup(warehouse, run)
    t4 = time.monotonic()
    with warehouse.read() as conn:
        import sqlalchemy as sa

        api_requests = conn.execute(sa.text("SELECT api_requests FROM icr_sync_runs WHERE run_id = :r"),
                                    {"r": run.run_id}).scalar_one()
    stats = hook.get_conn().stats.as_dict()
    warehouse.dispose()
    return {
        "migrate_seconds": t1 - t0,
        "extract_wall": t2 - t1,
        "load_wall": t3 - t2,
        "verify_cleanup_seconds": t4 - t3,
        "end_to_end_seconds": t4 - t0,
        "extract": extracted,
        "load": {k: v for k, v in loaded.items() if isinstance(v, (int, float, str, bool)) or v is None},
        "verify": verified,
        "api_requests": int(api_requests),
        "client_stats": stats,
        "breakdown_seconds": {k: round(v, 3) for k, v in timings.as_dict().items()
                              if k not in (NORMALIZE, STAGE)},  # those two are the extract's own lines
        "cpu_seconds": {"migrate": cpu.delta(c0, c1), "extract": cpu.delta(c1, c2), "load": cpu.delta(c2, c3)},
        "peak_rss_mb": _peak_mb(),
    }


def task_fetch(args: dict[str, Any]) -> dict[str, Any]:
    from benchmarks import cpu
    from icr.hooks import ICRHook

    hook = ICRHook(icr_conn_id="icr_default")
    pager = hook.installations(page_size=args.get("page_size"), concurrency=args.get("concurrency"))
    pids = args.get("cpu_pids")
    t0 = time.monotonic()
    c0 = cpu.sample(pids)
    pages = records = 0
    for page in pager:
        pages += 1
        records += len(page.records)
    seconds = time.monotonic() - t0
    cpu_seconds = cpu.delta(c0, cpu.sample(pids))
    return {
        "seconds": seconds,
        "pages": pages,
        "records": records,
        "complete": bool(pager.report.complete),
        "concurrency": pager.concurrency,
        "page_size": pager.page_size,
        "client_stats": hook.get_conn().stats.as_dict(),
        "cpu_seconds": cpu_seconds,
        "peak_rss_mb": _peak_mb(),
    }


def task_stock(args: dict[str, Any]) -> dict[str, Any]:
    """What a user writes with Airflow's stock tools, on a sample of ``sample`` records."""
    import pandas as pd
    import psycopg
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    from icr.hooks import ICRHook

    sample = int(args["sample"])
    table = args["table"]
    hook = ICRHook(icr_conn_id="icr_default")
    records: list[dict[str, Any]] = []
    for page in hook.installations(page_size=args.get("page_size")):
        records.extend(page.records)
        if len(records) >= sample:
            break
    records = records[:sample]

    def normalize(recs: list[dict[str, Any]]) -> tuple[list[str], list[tuple[Any, ...]]]:
        frame = pd.json_normalize(recs)
        frame = frame.astype(object).where(frame.notna(), None)
        fields = [str(c).replace(".", "_").lower() for c in frame.columns]  # SQL-friendly names
        rows = [tuple(v if v is None or isinstance(v, str)
                      else json.dumps(v) if isinstance(v, (dict, list)) else str(v) for v in row)
                for row in frame.itertuples(index=False, name=None)]
        return fields, rows

    fields, _ = normalize(records)  # the columns, to create the table a user would create
    cols = ", ".join(f"{c} text" + (" PRIMARY KEY" if c == "id" else "") for c in fields)
    with psycopg.connect(args["libpq_url"], autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"CREATE TABLE {table} ({cols})")
    pg = PostgresHook(postgres_conn_id=args["pg_conn_id"])
    out: dict[str, Any] = {"sample": len(records), "table": table}
    for label in ("first", "rerun"):
        t0 = time.monotonic()
        fields, rows = normalize(records)
        t1 = time.monotonic()
        # Airflow's stock upsert (common.sql DbApiHook.insert_rows, defaults otherwise).
        pg.insert_rows(table, rows, target_fields=fields, replace=True,
                       replace_index="id")
        t2 = time.monotonic()
        out[label] = {"normalize_seconds": t1 - t0, "load_seconds": t2 - t1, "rows": len(rows)}
    if args.get("warehouse_url"):
        out["ours_same_records"] = _ours_on_records(records, args["warehouse_url"])
    out["peak_rss_mb"] = _peak_mb()
    return out


def _ours_on_records(records: list[dict[str, Any]], warehouse_url: str) -> dict[str, Any]:
    """Our normalize + stage on the stock sample's records, in memory as the stock path gets them.

    The extract's own path (``icr.sync.stage_records``: ``normalize_records`` per chunk, one
    ``StageWriter`` COPY, ``Staging.finish``), minus the fetching thread that shares the interpreter lock with them in
    a real run: the stock path is timed on records already fetched, and so is this. The merge is
    not repeated here (the full-size sync measured it); the staging table is dropped afterwards.
    """
    import uuid

    from icr.sync import NORMALIZE, STAGE, SyncSettings, stage_records
    from icr.timings import Timings
    from icr.warehouse.engine import Warehouse
    from icr.warehouse.staging import Staging

    warehouse = Warehouse.from_url(warehouse_url)
    staging = Staging(warehouse, f"bench-same-records-{uuid.uuid4().hex[:8]}")
    staging.create()
    timings = Timings()
    try:
        rows = stage_records(staging, records, chunk_records=SyncSettings().chunk_records, timings=timings)
    finally:
        staging.drop()
        warehouse.dispose()
    return {"normalize_seconds": timings[NORMALIZE], "stage_seconds": timings[STAGE], "rows": rows}


TASKS = {"sync": task_sync, "fetch": task_fetch, "stock": task_stock}


def main() -> int:
    logging.basicConfig(level=os.environ.get("ICR_BENCH_LOG", "WARNING"), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = json.loads(sys.argv[1])
    result = TASKS[args["task"]](args)
    sys.stdout.write("\n" + json.dumps(result, default=str) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
