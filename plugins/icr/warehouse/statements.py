"""The named SQL statements of ``sql/merge/`` and :class:`Steps`, which runs them.

The nightly load (``icr.warehouse.merge``) and the webhook events (``icr.webhooks.apply``)
write the warehouse with the same statements, run the same way: by name, with a run's tables
and parameters, each timed.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from icr.timings import Timings

if TYPE_CHECKING:
    from icr.warehouse.engine import Warehouse
    from icr.warehouse.staging import Staging

_PARAM = re.compile(r"(?<!:):([a-z_]+)")


@lru_cache(maxsize=None)
def queries(name: str) -> dict[str, str]:
    """Named statements of ``sql/merge/<name>.sql`` (blocks introduced by ``-- name: x``)."""
    text = resources.files("icr.sql").joinpath("merge", f"{name}.sql").read_text(encoding="utf-8")
    out: dict[str, str] = {}
    for block in re.split(r"^-- name: ", text, flags=re.M)[1:]:
        key, _, body = block.partition("\n")
        lines = [ln for ln in body.splitlines() if not ln.strip().startswith("--")]
        out[key.strip()] = "\n".join(lines).strip().rstrip(";")
    return out


def execute(conn: Connection, sql: str, params: dict[str, Any]) -> sa.CursorResult[Any]:
    """Run one statement of the merge. (Tests patch this to inject a failure mid-load.)"""
    return conn.execute(sa.text(sql), params)


class Steps:
    """Runs the named statements of one dialect (``common.sql`` and ``<dialect>.sql``; with
    ``daily``, the daily snapshot's too) with a run's staging tables (``{stage}``, ``{rejects}``,
    ``{kept}``, ``{wire}``) and parameters (each statement gets those it names), timing each in
    ``timings`` as ``merge:<name>`` (unnamed counts as ``merge:counts``)."""

    def __init__(self, warehouse: Warehouse, conn: Connection, params: dict[str, Any], *,
                 staging: Staging | None = None, timings: Timings | None = None, daily: bool = False) -> None:
        self.warehouse = warehouse
        self.conn = conn
        self.params = params
        self.timings = timings or Timings()
        self.dialect = warehouse.dialect
        files = ("common", self.dialect.name, *(("daily_common", f"daily_{self.dialect.name}") if daily else ()))
        self.sql = {name: sql for file in files for name, sql in queries(file).items()}
        self.tables = ({} if staging is None else
                       {"stage": staging.table, "rejects": staging.rejects_table, "kept": staging.kept_table,
                        "wire": staging.wire_table})

    def run(self, name: str, **extra: Any) -> sa.CursorResult[Any]:
        sql = self.sql[name].format(**self.tables)
        needed = set(_PARAM.findall(sql))
        params = {k: v for k, v in {**self.params, **extra}.items() if k in needed}
        with self.timings.measure(f"merge:{name}"):
            return execute(self.conn, sql, params)

    def run_optional(self, name: str) -> None:
        """A step only some dialects have."""
        if name in self.sql:
            self.run(name)

    def scalar(self, sql: str, *, timed_as: str = "merge:counts", **params: Any) -> int:
        with self.timings.measure(timed_as):
            return int(execute(self.conn, sql.format(**self.tables), params).scalar_one() or 0)

    def count(self, name: str, **extra: Any) -> int:
        """A named statement that counts, timed under its name."""
        return self.scalar(self.sql[name], timed_as=f"merge:{name}", **extra)

    def drop_temp(self, *tables: str) -> None:
        """End these temporary tables of the transaction now, where the dialect does not at commit."""
        for statement in self.dialect.drop_temp_sql(*tables):
            execute(self.conn, statement, {})
