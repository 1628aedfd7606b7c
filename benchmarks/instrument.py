"""Timing of the merge statements and of the staging steps, without touching the plugin code.

``icr.warehouse.merge._execute`` is the documented seam (tests patch it to inject failures): the
benchmark wraps it to time each named statement of ``sql/merge/<dialect>.sql``; ``Staging.finish``
(primary key + ANALYZE of the staged rows) is wrapped the same way.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

TIMES: dict[str, float] = defaultdict(float)


def install() -> dict[str, float]:
    from icr.warehouse import merge, staging

    prefixes: list[tuple[str, str]] = []  # (text before the first {table}, statement name)
    for dialect in ("common", "postgresql", "daily_common", "daily_postgresql"):
        for name, sql in merge.queries(dialect).items():
            prefixes.append((sql.split("{", 1)[0], name))
    prefixes.sort(key=lambda item: -len(item[0]))

    def name_of(sql: str) -> str:
        for prefix, name in prefixes:
            if sql.startswith(prefix):
                return name
        return "other: " + " ".join(sql.split())[:60]

    original = merge._execute

    def timed(conn: Any, sql: str, params: dict[str, Any]) -> Any:
        t0 = time.monotonic()
        try:
            return original(conn, sql, params)
        finally:
            TIMES["merge:" + name_of(sql)] += time.monotonic() - t0

    merge._execute = timed

    finish = staging.Staging.finish

    def timed_finish(self: Any) -> None:
        t0 = time.monotonic()
        try:
            finish(self)
        finally:
            TIMES["extract:staging_finish (pk + analyze)"] += time.monotonic() - t0

    staging.Staging.finish = timed_finish
    return TIMES
