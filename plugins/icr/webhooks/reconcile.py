"""The nightly sync as the reconciler of webhook events (issue 23).

Called by the nightly merge (``icr.warehouse.merge``) inside its transaction, after it planned
its changes (``icr_tmp_changes``) and removals (``icr_tmp_removals``) and before it writes them.
The complete list is the truth; this step only measures and tidies what the events wrote:

- **drift**: installations whose current state was written by an event run (``applied_by`` of an
  applied inbox row) and that the list contradicts: removed by events but listed (the list
  restores them), or active by events but not listed (the list removes them);
- a returning installation's ``removal_reason`` is cleared (the nightly merge restores the row;
  a removal it makes itself leaves the reason NULL = disappeared from the list).

The merge records the counts in its run row (``drift``, ``drift_detail``; migration 0009).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import sqlalchemy as sa

from icr.warehouse.statements import Steps

log = logging.getLogger(__name__)

#: ids listed per kind in icr_sync_runs.drift_detail
DETAIL_IDS = 20

_BY_EVENTS = "EXISTS (SELECT 1 FROM icr_webhook_inbox i WHERE i.applied_by = t.last_sync_run_id)"
_DRIFT = {
    "removed_by_events_but_listed": (
        "SELECT t.installation_id FROM icr_installation_state t "
        "JOIN icr_tmp_changes c ON c.installation_id = t.installation_id "
        f"WHERE c.action = 'restore' AND {_BY_EVENTS} ORDER BY t.installation_id"),
    "active_by_events_but_not_listed": (
        "SELECT t.installation_id FROM icr_installation_state t "
        "JOIN icr_tmp_removals r ON r.installation_id = t.installation_id "
        f"WHERE {_BY_EVENTS} ORDER BY t.installation_id"),
}


def reconcile_snapshot(steps: Steps) -> dict[str, Any]:
    """Count the drift of the planned merge and clear the reasons of returning installations.

    Returns the run row's ``drift`` and ``drift_detail`` (JSON: ids per kind, the first
    :data:`DETAIL_IDS`).
    """
    found = {kind: [str(r[0]) for r in steps.conn.execute(sa.text(sql))] for kind, sql in _DRIFT.items()}
    steps.run("clear_returning_reasons")
    drift = sum(len(ids) for ids in found.values())
    if drift:
        log.warning("The list contradicts %d installation(s) as the webhook events left them: %s",
                    drift, {k: len(v) for k, v in found.items()})
    detail = {kind: ids[:DETAIL_IDS] for kind, ids in found.items() if ids}
    return {"drift": drift, "drift_detail": json.dumps(detail, sort_keys=True) if detail else None}
