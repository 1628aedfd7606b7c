"""Apply the versioned SQL migrations in ``sql/migrations/{common,<dialect>}/NNNN_name.sql``, in order, once.

A tiny runner rather than Alembic: the migrations are plain, readable SQL per dialect, and the
only things a runner must add are ordering, a record of what ran, and safety when two runs
start at once (the advisory lock / ``BEGIN IMMEDIATE`` of ``Warehouse.write``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

import sqlalchemy as sa

from icr.warehouse import statements
from icr.warehouse.engine import LOCK_MIGRATE, Warehouse

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str


def split_statements(sql: str) -> list[str]:
    """Split a migration file into statements: ``;`` at the end of a line ends one.

    Our SQL files keep to that rule (no semicolons inside string literals at line ends), which
    keeps this splitter trivially correct and the files free of runner-specific markers.
    """
    lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
    statements, current = [], []
    for line in lines:
        current.append(line)
        if line.rstrip().endswith(";"):
            stmt = "\n".join(current).strip().rstrip(";").strip()
            if stmt:
                statements.append(stmt)
            current = []
    tail = "\n".join(current).strip()
    if tail:
        statements.append(tail)
    return statements


def available(dialect: str) -> list[Migration]:
    """The migrations for a dialect: its own folder plus ``common/`` (SQL both dialects share)."""
    found: dict[str, Migration] = {}
    for folder_name in ("common", dialect):
        folder = resources.files("icr.sql").joinpath("migrations", folder_name)
        for entry in folder.iterdir():
            m = _NAME.match(entry.name)
            if not m:
                continue
            if m.group(1) in found:
                raise RuntimeError(f"two warehouse migrations numbered {m.group(1)}: {entry.name} and "
                                   f"{found[m.group(1)].version}_{found[m.group(1)].name}.sql")
            found[m.group(1)] = Migration(m.group(1), m.group(2), entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def apply_migrations(warehouse: Warehouse) -> list[str]:
    """Apply pending migrations; returns the versions applied by this call (empty if none)."""
    applied_now: list[str] = []
    with warehouse.write(lock=LOCK_MIGRATE) as conn:
        conn.execute(sa.text(
            "CREATE TABLE IF NOT EXISTS icr_schema_migrations ("
            " version TEXT PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"))
        done = {row[0] for row in conn.execute(sa.text("SELECT version FROM icr_schema_migrations"))}
        for mig in available(warehouse.dialect.name):
            if mig.version in done:
                continue
            log.info("Applying warehouse migration %s_%s (%s)", mig.version, mig.name, warehouse.dialect.name)
            for stmt in split_statements(mig.sql):
                conn.exec_driver_sql(stmt)
            conn.execute(
                sa.text("INSERT INTO icr_schema_migrations (version, name, applied_at) "
                        "VALUES (:v, :n, CURRENT_TIMESTAMP)"),
                {"v": mig.version, "n": mig.name},
            )
            applied_now.append(mig.version)
        if applied_now and _counts_per_history(conn):
            # A migration may rewrite rows without a history version: no date's per-day counts
            # are a base for the next date's any more (icr.warehouse.daily.count_current).
            conn.exec_driver_sql(statements.queries("daily_common")["totals_forget_counted"])
    if not applied_now:
        log.info("Warehouse schema is up to date (%s)", warehouse.description)
    return applied_now


def _counts_per_history(conn: sa.Connection) -> bool:
    """The warehouse has ``icr_daily_totals.counted_history_id`` (migration 0013)."""
    return any(c["name"] == "counted_history_id" for c in sa.inspect(conn).get_columns("icr_daily_totals"))
