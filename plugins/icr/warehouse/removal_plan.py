"""Which active installations a run's snapshot removes, and the guard against removing too many.

Run by the load (``icr.warehouse.merge``) inside its transaction, after it planned its changes
(``icr_tmp_changes``) and before it writes anything: it fills ``icr_tmp_removals`` with the
active installations a complete list lacks, and refuses a mass removal the operator did not
accept (:class:`~icr.errors.MassRemovalError`, nothing written).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from icr.errors import MassRemovalError
from icr.warehouse.statements import Steps

if TYPE_CHECKING:
    from icr.warehouse.merge import LoadOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemovalPlan:
    active_before: int  # active installations before the load
    removing: int  # planned in icr_tmp_removals
    newer: int  # active, absent from the list, but seen after it was read (kept, not removed)
    removed_since: int  # listed, but removed by a webhook event after the list was read (stays removed)
    skipped: str | None  # why nothing is removed (an incomplete snapshot), else None


def plan_removals(steps: Steps, row: dict[str, Any], options: LoadOptions, *, listed_active: int,
                  with_rejects: bool) -> RemovalPlan:
    """Plan the removals of the run ``row`` into ``icr_tmp_removals``.

    ``listed_active``: the distinct valid listed installations that are neither new nor
    returning (those a webhook event removed after the list was read are taken off here);
    ``with_rejects``: the run staged rejected records (they still count as listed).
    """
    removed_since = _removed_after_snapshot(steps, row)
    listed_active -= removed_since
    steps.run("create_removals")
    active_before = steps.scalar("SELECT count(*) FROM icr_installation_state WHERE deleted_at IS NULL")
    skipped = None
    newer = 0
    if not row["snapshot_complete"]:
        skipped = f"snapshot incomplete ({row['incomplete_reason']}): no installation marked removed"
        log.warning("Run %s: %s", row["run_id"], skipped)
    elif active_before > listed_active:
        # Staged ids are distinct, and every staged row that is not new or returning is an
        # active installation: only when there are more active ones can any be missing (the
        # usual nightly run, where nothing was removed, skips the anti-join over all rows).
        steps.run("plan_removals" if with_rejects else "plan_removals_no_rejects")
        newer = steps.count("count_seen_after_snapshot", now=steps.params["now"])
        if newer:
            log.info("Run %s: %d installation(s) not in the list were applied by webhook events after it "
                     "was read; they stay active", row["run_id"], newer)
    removing = steps.scalar("SELECT count(*) FROM icr_tmp_removals")
    _guard_mass_removal(row["run_id"], removing, active_before, options)
    return RemovalPlan(active_before=active_before, removing=removing, newer=newer,
                       removed_since=removed_since, skipped=skipped)


def _removed_after_snapshot(steps: Steps, row: dict[str, Any]) -> int:
    """Listed installations a webhook event removed after the list was read: plan_changes left
    them removed (the older list cannot undo the event), so they are not active after the run."""
    removed = steps.count("count_removed_after_snapshot", now=steps.params["now"])
    if removed:
        log.info("Run %s: %d listed installation(s) were removed by webhook events after the list was read; "
                 "they stay removed", row["run_id"], removed)
    return removed


def _guard_mass_removal(run_id: str, removing: int, active_before: int, options: LoadOptions) -> None:
    if not (removing and active_before and removing / active_before > options.max_removal_share):
        return
    if not options.accept_mass_removal:
        raise MassRemovalError(
            f"this snapshot would mark {removing} of {active_before} active installations "
            f"({removing / active_before:.1%}) as removed, above max_removal_share="
            f"{options.max_removal_share:.0%}. Nothing was written. If the removal is real, trigger "
            "the DAG with the param accept_mass_removal=true (or raise max_removal_share).")
    log.warning("Run %s: accepting a mass removal of %d of %d installations (accept_mass_removal)",
                run_id, removing, active_before)
