"""The webhook inbox: the table ``icr_webhook_inbox`` (migration 0008) and its three operations.

The receiver calls :func:`insert_events` (several deliveries that arrived together, one
commit) and answers 202 only after it returned (the rows are committed). The event run and the nightly sync read :func:`pending` in arrival order (``seq``)
and :func:`mark` what they did. Inserts do not take the warehouse's merge lock: a long merge
must not make ICR's deliveries time out.

Status values: ``pending`` (not yet applied), ``applied``, ``stored`` (kept for later use, e.g.
transaction events), ``failed`` (``error`` says why).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from icr.warehouse.engine import Warehouse
from icr.webhooks.delivery import Delivery

TABLE = "icr_webhook_inbox"
STATUSES = ("pending", "applied", "stored", "failed")

_COLUMNS = "delivery_id, event, installation_id, received_at, payload, status"
# SQLite < 3.32 allowed 999 bound variables a statement: 5 a row, so at most 199 rows at once.
MAX_ROWS_PER_INSERT = 190
_PENDING = sa.text(
    f"SELECT seq, delivery_id, event, installation_id, received_at, payload FROM {TABLE} "
    "WHERE status = 'pending' ORDER BY seq LIMIT :limit")


@dataclass(frozen=True)
class InboxEvent:
    seq: int
    delivery_id: str
    event: str
    installation_id: str | None
    received_at: datetime
    payload: str  # the JSON body as received

    @property
    def body(self) -> dict[str, Any]:
        """The payload parsed (``event``, ``installation``, ``sender``, ``transaction``, ``signedData``)."""
        return json.loads(self.payload)


def insert_event(warehouse: Warehouse, delivery: Delivery, received_at: datetime | None = None) -> bool:
    """Write one accepted delivery and commit; False when it was already there (a replay)."""
    return bool(insert_events(warehouse, [delivery], received_at))


def insert_events(warehouse: Warehouse, deliveries: Sequence[Delivery],
                  received_at: datetime | None = None) -> set[str]:
    """Write deliveries in one transaction and commit; returns the delivery ids that were new.

    A delivery already in the inbox (or twice in ``deliveries``) is not written again. One
    commit for many deliveries is what lets the receiver keep up with a burst (group commit).
    """
    when = warehouse.ts(received_at or datetime.now(timezone.utc))
    unique: dict[str, Delivery] = {}
    for d in deliveries:
        unique.setdefault(d.delivery_id, d)  # the first copy of each, in arrival order
    rows_in = list(unique.values())
    mark = "?" if warehouse.engine.dialect.paramstyle == "qmark" else "%s"
    row = f"({mark}, {mark}, {mark}, {mark}, {mark}, 'pending')"
    new: set[str] = set()
    with warehouse.engine.begin() as conn:
        for start in range(0, len(rows_in), MAX_ROWS_PER_INSERT):
            chunk = rows_in[start:start + MAX_ROWS_PER_INSERT]
            params: list[Any] = []
            for d in chunk:
                params += [d.delivery_id, d.event, d.installation_id, when, d.payload]
            # The driver's own placeholders (exec_driver_sql): this statement runs for every
            # burst, and SQLAlchemy's compiling of a text() with hundreds of binds cost more than
            # the insert itself.
            rows = conn.exec_driver_sql(
                f"INSERT INTO {TABLE} ({_COLUMNS}) VALUES {', '.join([row] * len(chunk))} "
                "ON CONFLICT (delivery_id) DO NOTHING RETURNING delivery_id", tuple(params))
            new.update(r[0] for r in rows)
    return new


def pending(warehouse: Warehouse, limit: int = 1000, conn: Connection | None = None) -> list[InboxEvent]:
    """Up to ``limit`` pending events in arrival order (lowest ``seq`` first).

    Pass ``conn`` to read inside a transaction the caller already holds (e.g. the one that
    applies the events and marks them).
    """
    if conn is not None:
        return _pending(warehouse, conn, limit)
    with warehouse.read() as own:
        return _pending(warehouse, own, limit)


def _pending(warehouse: Warehouse, conn: Connection, limit: int) -> list[InboxEvent]:
    rows = conn.execute(_PENDING, {"limit": int(limit)}).all()
    return [InboxEvent(seq=int(r[0]), delivery_id=r[1], event=r[2],
                       installation_id=str(r[3]) if r[3] is not None else None,
                       received_at=_as_datetime(r[4]), payload=r[5]) for r in rows]


def mark(warehouse: Warehouse, seqs: Iterable[int], status: str, run_id: str,
         error: str | None = None, conn: Connection | None = None) -> int:
    """Set ``status`` (and ``applied_at`` = now, ``applied_by`` = ``run_id``, ``error``) on rows.

    Returns the number of rows changed. Pass ``conn`` to mark inside the caller's transaction,
    so that applying an event and marking it commit together.
    """
    if status not in STATUSES:
        raise ValueError(f"inbox status must be one of {', '.join(STATUSES)}, got {status!r}")
    seq_list = [int(s) for s in seqs]
    if not seq_list:
        return 0
    stmt = sa.text(f"UPDATE {TABLE} SET status = :status, applied_at = :now, applied_by = :run, "
                   "error = :error WHERE seq IN :seqs").bindparams(sa.bindparam("seqs", expanding=True))
    params = {"status": status, "now": warehouse.ts(datetime.now(timezone.utc)), "run": run_id,
              "error": error, "seqs": seq_list}
    if conn is not None:
        return conn.execute(stmt, params).rowcount
    with warehouse.engine.begin() as own:
        return own.execute(stmt, params).rowcount


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
