"""Child process of test_killed.py: one icr.sync.run_sync against the simulator (over HTTP) and a
warehouse (PostgreSQL or a SQLite file), announcing each phase on stdout and, at the requested one,
pausing forever so that the parent can SIGKILL it exactly there. Test code, not product code: it
only wraps product functions (no behaviour change besides the pause).

    python -m tests.faults.kill_child '{"warehouse_url": ..., "base_url": ..., "app_id": ..., "run_id": ...,
                                        "pause_at": "fetch" | "copy" | "stage" | "merge:<step>" |
                                                    "commit" | "after_commit" | null}'
"copy" pauses inside PostgreSQL's staging COPY; "stage" after SQLite's second staging chunk
(each chunk is its own transaction there).
The private key comes in the environment (ICR_KILL_CHILD_PEM), never on the command line.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from datetime import datetime, timezone


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def pause(where: str) -> None:
    say(f"PAUSED {where}")
    threading.Event().wait()  # until SIGKILL


class LightHook:
    """What icr.sync needs from ICRHook, without importing Airflow (keeps the child fast)."""

    def __init__(self, base_url: str, app_id: str, pem: str, page_size: int) -> None:
        from icr.auth import AppJWT, load_private_key
        from icr.client import ICRClient

        self.client = ICRClient(base_url, AppJWT(app_id, load_private_key(pem)), timeout=10, max_retries=3)
        self.page_size = page_size

    def installations(self, page_size=None, concurrency=None, wire=None):
        from icr.paging import InstallationPager

        return InstallationPager(self.client, page_size=page_size or self.page_size, concurrency=concurrency or 1,
                                 wire=wire)

    def get_conn(self):
        return self.client


def main() -> int:
    cfg = json.loads(sys.argv[1])
    pause_at = cfg.get("pause_at")
    import sqlalchemy as sa

    import icr.sync as sync
    import icr.warehouse.merge as merge
    from icr.paging import InstallationPager
    from icr.warehouse.engine import Warehouse
    from icr.warehouse.runlog import RunContext

    state = {"merging": False, "copies": 0, "writes": 0}

    orig_fetch = InstallationPager._fetch

    def fetch(self, number):
        say(f"PHASE fetch {number}")
        if pause_at == "fetch" and number == 2:
            pause("fetch")
        return orig_fetch(self, number)

    InstallationPager._fetch = fetch

    # Mid-COPY: whatever way Staging writes its COPY (rows or one text block), pause after the
    # second data write (a later chunk of the pass), before the COPY is ended.
    import psycopg

    orig_enter = psycopg.Copy.__enter__

    def enter(self):
        state["copies"] += 1
        self._icr_copy_no = state["copies"]
        say(f"PHASE copy {state['copies']}")
        return orig_enter(self)

    def wrap_write(orig):
        def write(self, *args, **kwargs):
            result = orig(self, *args, **kwargs)
            state["writes"] += 1
            if pause_at == "copy" and state["writes"] == 2:
                pause("copy")
            return result
        return write

    psycopg.Copy.__enter__ = enter
    psycopg.Copy.write = wrap_write(psycopg.Copy.write)
    psycopg.Copy.write_row = wrap_write(psycopg.Copy.write_row)

    from icr.warehouse.stage_writer import StageWriter

    orig_insert = StageWriter._insert_rows

    def insert_sqlite(self, frame):
        orig_insert(self, frame)
        state["writes"] += 1
        say(f"PHASE stage {state['writes']}")
        if pause_at == "stage" and state["writes"] == 2:
            pause("stage")

    StageWriter._insert_rows = insert_sqlite

    if cfg["warehouse_url"].startswith("sqlite"):
        # The unchanged records' ids and the decoded ones' wire hashes are staging writes too
        # (a night with few changes may stage a single chunk of rows).
        from icr.warehouse.staging import Staging

        def staged_sqlite(orig):
            def write(self, *args, **kwargs):
                orig(self, *args, **kwargs)
                state["writes"] += 1
                say(f"PHASE stage {state['writes']}")
                if pause_at == "stage" and state["writes"] == 2:
                    pause("stage")
            return write

        Staging.write_kept = staged_sqlite(Staging.write_kept)
        Staging.write_wire = staged_sqlite(Staging.write_wire)

    orig_run = merge._Steps.run

    def step(self, name, **extra):
        state["merging"] = True
        say(f"PHASE merge {name}")
        result = orig_run(self, name, **extra)
        if pause_at == f"merge:{name}":
            pause(f"merge:{name}")
        return result

    merge._Steps.run = step

    orig_load = sync.load

    def load(*args, **kwargs):
        out = orig_load(*args, **kwargs)
        say("PHASE committed")
        if pause_at == "after_commit":
            pause("after_commit")
        return out

    sync.load = load

    warehouse = Warehouse.from_url(cfg["warehouse_url"])

    @sa.event.listens_for(warehouse.engine, "commit")
    def before_commit(conn):
        if state["merging"]:
            say("PHASE commit")
            if pause_at == "commit":
                pause("commit")

    hook = LightHook(cfg["base_url"], cfg["app_id"], os.environ["ICR_KILL_CHILD_PEM"], cfg.get("page_size", 200))
    when = datetime.fromisoformat(cfg["when"]) if cfg.get("when") else datetime.now(timezone.utc)
    run = RunContext(cfg["run_id"], when, "icr_installations_sync")
    say("PHASE start")
    result = sync.run_sync(warehouse, hook, run, sync.SyncSettings(page_size=cfg.get("page_size", 200),
                                                                  chunk_records=cfg.get("chunk_records", 500)))
    say("DONE " + json.dumps({k: result[k] for k in ("inserted", "updated", "removed")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
