"""Apply the pending webhook events of the inbox to the warehouse (issue 23).

Events are read in arrival order (``seq``) and applied per installation, idempotently:

- ``installed``, ``unsuspended``, ``newPermissionsAccepted``, ``uninstalled``, ``suspended``: the
  installation's *current* state is confirmed with ``GET /app/installations/{id}`` (app JWT), once
  per installation and batch. 200 → upsert the installation, its permissions and history (the
  nightly merge's own statements, so a record loaded here is "unchanged" for the nightly run);
  404 → mark it removed, with the reason of its removal events (``uninstalled`` wins over
  ``suspended``; none: the reason already recorded, else NULL = unknown). Confirming instead of
  trusting the event makes late, duplicated or reordered deliveries harmless: a late
  ``suspended`` after ``unsuspended`` finds the installation listed and leaves it active; a late
  ``installed`` after ``uninstalled`` finds a 404 and leaves it removed.
- ``warehouseTransaction``, ``organizationTransaction``: kept in the inbox (status ``stored``).
- An event that cannot be applied (unknown event, no installation id, the confirm call failed,
  the record failed validation) is marked ``failed`` with the reason; the others go on.

Effects commit in one transaction per batch; the events are marked afterwards, so a crash in
between only means the batch is applied again, with no effect the second time.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from icr.errors import ICRAPIError
from icr.normalize import normalize_records
from icr.warehouse.engine import Warehouse
from icr.warehouse.runlog import now_utc
from icr.warehouse.staging import Staging
from icr.warehouse.statements import Steps
from icr.webhooks import inbox

log = logging.getLogger(__name__)

#: Events whose installation is confirmed with GET /app/installations/{id}, and the removal
#: reason each one stands for (None: not a removal).
INSTALLATION_EVENTS: dict[str, str | None] = {
    "installed": None, "unsuspended": None, "newPermissionsAccepted": None,
    "uninstalled": "uninstalled", "suspended": "suspended",
}
#: Events kept in the inbox for later use (status 'stored').
STORED_EVENTS = frozenset({"warehouseTransaction", "organizationTransaction"})
BATCH = 500
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
#: The event run keeps applying while events keep arriving: it ends after this many seconds
#: without a new pending event (notifications published while the watcher re-subscribes after
#: firing are lost by Redis pub/sub; the run that the previous one started catches their events),
QUIET_SECONDS = float(os.environ.get("ICR_EVENTS_QUIET_SECONDS", "20"))
#: ... or after this many seconds in all (the next notification starts the next run).
MAX_RUN_SECONDS = float(os.environ.get("ICR_EVENTS_MAX_RUN_SECONDS", "600"))

#: installation id -> the record (a dict, or a normalize.BadRecord), or None when ICR answers 404
Confirm = Callable[[str], Any]


@dataclass
class ApplyResult:
    applied: int = 0
    stored: int = 0
    failed: int = 0
    upserted: int = 0  # installations confirmed present
    removed: int = 0  # installations confirmed absent
    errors: list[str] = field(default_factory=list)  # the first few, for the task log
    deferred: set[int] = field(default_factory=set)  # seqs left pending (ICR could not confirm now)
    deferred_reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"applied": self.applied, "stored": self.stored, "failed": self.failed,
                "upserted": self.upserted, "removed": self.removed}


def confirm_with(client: Any) -> Confirm:
    """A :data:`Confirm` over an :class:`icr.client.ICRClient` (404 → None)."""
    from icr.paging import fetch_installation

    def confirm(installation_id: str) -> Any:
        try:
            return fetch_installation(client, installation_id)
        except ICRAPIError as exc:
            if exc.status == 404:
                return None
            raise

    return confirm


def apply_pending(warehouse: Warehouse, confirm: Confirm, run_id: str, *, batch: int = BATCH) -> ApplyResult:
    """Apply every pending inbox event (also those that arrived while this ran).

    Events whose confirm call failed in a way a retry can fix (ICR unreachable, 5xx, 429, the
    app key refused) stay pending; the run then ends with :class:`EventsLeftPending` so that
    Airflow retries it (the nightly sync catches what is still pending after that).
    """
    result = ApplyResult()
    while True:
        events = [e for e in inbox.pending(warehouse, batch + len(result.deferred)) if e.seq not in result.deferred]
        if not events:
            break
        _apply_batch(warehouse, confirm, run_id, events, result)
    log.info("Inbox events applied by %s: %s", run_id, result.as_dict())
    for error in result.errors:
        log.warning("Event not applied: %s", error)
    if result.deferred:
        raise EventsLeftPending(
            f"{len(result.deferred)} inbox event(s) left pending because ICR could not confirm their "
            f"installation now ({result.deferred_reason}); a retry or the next run applies them")
    return result


def apply_until_quiet(warehouse: Warehouse, confirm: Confirm, run_id: str, *, quiet_s: float = QUIET_SECONDS,
                      max_s: float = MAX_RUN_SECONDS, poll_s: float = 1.0) -> ApplyResult:
    """:func:`apply_pending`, again whenever new events arrive, until none came for ``quiet_s``."""
    started = last = time.monotonic()
    total = ApplyResult()
    while True:
        result = apply_pending(warehouse, confirm, run_id)
        for name in ("applied", "stored", "failed", "upserted", "removed"):
            setattr(total, name, getattr(total, name) + getattr(result, name))
        now = time.monotonic()
        if result.applied or result.stored or result.failed:
            last = now
        if now - last >= quiet_s or now - started >= max_s:
            return total
        time.sleep(poll_s)


class EventsLeftPending(Exception):
    """Some events could not be confirmed now and stay pending (a retry can fix it)."""


def apply_events_before_sync(warehouse: Warehouse, icr_conn_id: str, run_id: str) -> dict[str, Any]:
    """The nightly sync's first step: apply what is pending; on any failure log it and go on
    (the events stay pending or failed, and the full list that follows is the truth anyway)."""
    from icr.hooks import ICRHook

    try:
        if not inbox.pending(warehouse, 1):
            return ApplyResult().as_dict()
        confirm = confirm_with(ICRHook(icr_conn_id=icr_conn_id).get_conn())
        # Its own run id: rows the sync's merge writes must not look written by events (drift).
        return apply_pending(warehouse, confirm, f"{run_id}:webhook_events").as_dict()
    except Exception as exc:  # noqa: BLE001 - the nightly sync must not depend on the events
        log.warning("Pending webhook events were not all applied before the sync (%s: %s); the sync "
                    "reconciles the state, the next event run applies what is still pending",
                    type(exc).__name__, exc)
        return {"error": f"{type(exc).__name__}: {exc}"}


def _retry_later(exc: Exception) -> bool:
    return bool(getattr(exc, "transient", False)) or getattr(exc, "status", None) in (401, 403)


def _apply_batch(warehouse: Warehouse, confirm: Confirm, run_id: str, events: list[Any], result: ApplyResult) -> None:
    by_installation: dict[str, list[Any]] = {}
    stored, failed = [], []
    for ev in events:
        problem = _problem(ev)
        if ev.event in STORED_EVENTS and not problem:
            stored.append(ev.seq)
        elif problem:
            failed.append((ev.seq, problem))
        else:
            by_installation.setdefault(str(ev.installation_id).lower(), []).append(ev)
    present: dict[str, Any] = {}
    absent: dict[str, str | None] = {}
    for iid, evs in by_installation.items():
        try:
            record = confirm(iid)
        except Exception as exc:  # one installation's failure never stops the others
            if _retry_later(exc):
                result.deferred.update(ev.seq for ev in evs)
                result.deferred_reason = str(exc)
                continue
            failed += [(ev.seq, f"{ev.event} of installation {iid}: confirming it failed: {exc}") for ev in evs]
            continue
        if record is None:
            absent[iid] = _removal_reason(evs)
        else:
            present[iid] = record
    rejected = _reject_invalid(present)
    applied = []
    for iid, evs in by_installation.items():
        if iid in rejected:
            failed += [(ev.seq, f"{ev.event} of installation {iid}: {rejected[iid]}") for ev in evs]
            del present[iid]
        elif iid in present or iid in absent:
            applied += [ev.seq for ev in evs]
    _write(warehouse, run_id, present, absent, lambda conn: _mark(warehouse, conn, run_id, applied, stored, failed))
    result.applied += len(applied)
    result.stored += len(stored)
    result.failed += len(failed)
    result.upserted += len(present)
    result.removed += len(absent)
    result.errors += [error for _, error in failed][: max(0, 20 - len(result.errors))]


def _problem(ev: Any) -> str | None:
    if ev.event not in INSTALLATION_EVENTS and ev.event not in STORED_EVENTS:
        return f"event {ev.event!r} (inbox seq {ev.seq}) is not a known ICR event"
    if ev.event in INSTALLATION_EVENTS and not ev.installation_id:
        return f"{ev.event} event (inbox seq {ev.seq}) has no installation.id"
    if ev.installation_id and not _UUID.fullmatch(str(ev.installation_id)):
        # never put an unchecked id into the URL of the confirm call
        return f"{ev.event} event (inbox seq {ev.seq}): installation.id {str(ev.installation_id)[:60]!r} is not a UUID"
    return None


def _removal_reason(events: Iterable[Any]) -> str | None:
    """The reason a removal is recorded with: uninstalled is final, so it wins over suspended."""
    reasons = {INSTALLATION_EVENTS[ev.event] for ev in events} - {None}
    return "uninstalled" if "uninstalled" in reasons else ("suspended" if reasons else None)


def _mark(warehouse: Warehouse, conn: Connection, run_id: str, applied: list[int], stored: list[int],
          failed: list[tuple[int, str]]) -> None:
    inbox.mark(warehouse, applied, "applied", run_id, conn=conn)
    inbox.mark(warehouse, stored, "stored", run_id, conn=conn)
    for seq, error in failed:
        inbox.mark(warehouse, [seq], "failed", run_id, error=error, conn=conn)


# -- the warehouse side ---------------------------------------------------------------------------


def _reject_invalid(present: dict[str, Any]) -> dict[str, str]:
    """Installations whose confirmed record fails validation (id -> reason); not written."""
    rejected: dict[str, str] = {}
    for iid, record in present.items():
        rejects = normalize_records([record]).rejects
        if rejects:
            rejected[iid] = f"the record of GET /app/installations/{iid} failed validation: {rejects[0].reason}"
        elif str(record.get("id", "")).lower() != iid:
            rejected[iid] = f"GET /app/installations/{iid} answered installation {record.get('id')!r}"
    return rejected


def _write(warehouse: Warehouse, run_id: str, present: dict[str, Any], absent: dict[str, str | None],
           mark: Callable[[Connection], None]) -> None:
    """Upsert the present installations, remove the absent ones and mark the events: one transaction."""
    staging = None
    if present:
        staging = Staging(warehouse, f"icr_installation_events:{run_id}")
        staging.create()
        staging.write(normalize_records(list(present.values())).frame)
        staging.finish()
    try:
        with warehouse.write() as conn:
            params = {"run_id": run_id, "now": warehouse.ts(now_utc()), "full_resync": False}
            steps = Steps(warehouse, conn, params, staging=staging)
            if staging is not None:
                _upsert(steps)
            if absent:
                _remove(steps, absent)
            mark(conn)
    finally:
        if staging is not None:
            staging.drop()


def _upsert(steps: Steps) -> None:
    """The nightly merge's statements for new, changed and returning installations."""
    for name in ("create_changes", "plan_changes", "clear_returning_reasons", *steps.dialect.write_state_steps,
                 "permissions_delete", "permissions_insert", "history_close_changed", "history_insert_changed"):
        steps.run(name)
    steps.drop_temp("icr_tmp_changes")


def _remove(steps: Steps, absent: dict[str, str | None]) -> None:
    """Mark confirmed-absent installations removed (history too), then record the reasons."""
    conn = steps.conn
    steps.run("create_removals")
    ids = list(absent)
    # Only active installations get a removal (and a history version); removed ones keep theirs.
    active = [r[0] for r in conn.execute(
        sa.text("SELECT installation_id FROM icr_installation_state WHERE deleted_at IS NULL "
                "AND installation_id IN :ids").bindparams(sa.bindparam("ids", expanding=True)),
        {"ids": ids})]
    if active:
        conn.execute(sa.text("INSERT INTO icr_tmp_removals (installation_id) VALUES (:i)"),
                     [{"i": i} for i in active])
        for name in ("history_close_removed", "history_insert_removed", "mark_removed"):
            steps.run(name)
    for reason in ("suspended", "uninstalled"):
        chosen = [i for i, r in absent.items() if r == reason]
        if chosen:
            _set_reason(conn, chosen, reason)
    steps.drop_temp("icr_tmp_removals")


def _set_reason(conn: Connection, ids: list[str], reason: str) -> None:
    """Record the reason on removed rows and their current history version. 'suspended' never
    overwrites 'uninstalled' (a late suspension of an uninstalled installation)."""
    keep = "" if reason == "uninstalled" else " AND (removal_reason IS NULL OR removal_reason <> 'uninstalled')"
    for table, where in (("icr_installation_state", "deleted_at IS NOT NULL"),
                         ("icr_installation_history", "valid_to IS NULL AND is_deleted")):
        conn.execute(sa.text(
            f"UPDATE {table} SET removal_reason = :reason WHERE {where}{keep} AND installation_id IN :ids"
        ).bindparams(sa.bindparam("ids", expanding=True)), {"reason": reason, "ids": ids})

