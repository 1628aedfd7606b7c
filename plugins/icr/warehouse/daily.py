"""One load's per-day reporting rows: the date's totals and counts, never a row per installation.

``icr_installation_daily`` is a view (migration 0011) that derives a date's installations from
the history as of ``icr_daily_totals.as_of``. What the load writes for its snapshot date, in its
own transaction (the statements are in ``sql/merge/daily_*.sql``):

* the date's ``icr_daily_totals`` row, with ``loaded_at`` (the moment of this load: history
  versions starting later are not part of the date) and ``as_of`` (the instant the date is read
  at: its end, the next midnight UTC, for a past date; ``loaded_at`` for a date still in
  progress, the nightly run), so the view shows what this load counted;
* the counts per organization type and country, and per permission and access level. A past date
  (a backfill) groups them from the view (history). A date in progress counts the current rows:
  from the counts of the date last counted that way (an earlier nightly, or this date's own on a
  rerun) and the installations whose history moved since (see :func:`count_current`), else
  grouped from all of them;
* ``active`` (the run's ``daily_rows``) and the changes against the previous date present in
  ``icr_daily_totals``, from the history versions that start between the two dates' ``as_of``
  and ``loaded_at`` (so they cost what the day's changes cost). A date loaded before migration 0011 is compared
  through the view instead (its rows are archived, not derived). A backfilled date also becomes
  the comparison of the next date, whose changes are redone.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from typing import TYPE_CHECKING, Any

from icr.warehouse.reporting import as_date
from icr.warehouse.runlog import now_utc

if TYPE_CHECKING:
    from icr.warehouse.merge import _Steps

_CHANGES = ("new", "removed", "removed_uninstalled", "removed_suspended")


def cutoff_of(day: date) -> datetime:
    """The end of a snapshot date: the next midnight, UTC."""
    return datetime.combine(day + timedelta(days=1), time.min, tzinfo=timezone.utc)


def loaded_at(finished: datetime) -> datetime:
    """This load's moment for the view: just after everything it wrote (its history versions
    start at or before ``finished``, when it began)."""
    return max(now_utc(), finished + timedelta(microseconds=1))


def write_day(steps: _Steps, day: date, *, finished: datetime) -> int:
    """Write the per-day rows of ``day`` (see the module's doc); returns its active installations."""
    ts = steps.warehouse.ts
    current = cutoff_of(day) > finished
    d = steps.params["snapshot_date"]
    steps.run("daily_archive_delete")
    if steps.params.get("full_resync"):  # it rewrites rows without a history version
        steps.run("totals_forget_counted")
    base = steps.run("daily_counted_base", day=d).one_or_none() if current else None
    prev = steps.run("daily_previous_date", day=d).scalar_one()
    steps.run("totals_delete", day=d)
    loaded = loaded_at(finished)
    steps.run("totals_insert", day=d, prev=prev, loaded_at=ts(loaded), as_of=ts(min(cutoff_of(day), loaded)))
    counted = count_current(steps, base) if current else count_past(steps)
    for table in ("type_counts", "country_counts"):  # from org_counts
        steps.run(f"{table}_delete")
        steps.run(f"{table}_insert")
    active = int(steps.run("org_counts_total").scalar_one())
    steps.run("totals_set_active", day=d, active=active, counted=counted)
    steps.run("totals_update_changes", day=d, prev=prev, **changes(steps, d, prev))
    following = steps.run("daily_next_date", day=d).scalar_one()
    if following is not None:
        steps.run("totals_update_changes", day=following, prev=d, **changes(steps, following, d))
    return active


def count_past(steps: _Steps) -> None:
    """Count a past date from the view (history); no later date builds on it (returns None)."""
    for table in ("org_counts", "permission_counts"):
        steps.run(f"{table}_delete")
        steps.run(f"{table}_insert")


def count_current(steps: _Steps, base: Any) -> int | None:
    """Count a date in progress from the current rows; returns its ``counted_history_id``.

    ``base`` (``daily_counted_base``) is the date up to this one, itself on a rerun, that was
    counted last from the then current rows, and the history_id W it was counted at. The counts
    are then the base's, less what the installations with a history version after W counted then
    (their version at W), plus what their current rows count: a copy of a few hundred rows on a
    night without changes. That is exact because every writer of the state holds the merge lock
    (``Warehouse.write``), so history ids are handed out in commit order, and writes a history
    version for each change that can move a count: the nightly merge and the webhook events, for
    a new, changed, returning or removed installation (``created_at`` is part of the record, so
    its change is a change of ``record_hash``). What does not is made safe: a full resync
    rewrites unchanged records without a version and a migration may rewrite anything, so both
    forget every date's ``counted_history_id`` (``totals_forget_counted``); a date with a current
    row created after its end left out a row that a later date counts, so it stores none
    (``daily_counted_history_id``). Without a base the counts are grouped from all current rows.
    """
    if base is None:
        for table in ("org_counts", "permission_counts"):
            steps.run(f"{table}_delete")
            steps.run(f"{table}_insert_current")
    else:
        base_day, counted = base
        for table in ("org_counts", "permission_counts"):  # aside first: the base may be this date
            steps.run(f"daily_base_{table}", base=base_day)
        steps.run("create_daily_changed", counted=counted)
        steps.run_optional("analyze_daily_changed")
        for table in ("org_counts", "permission_counts"):
            steps.run(f"{table}_delete")
            steps.run(f"{table}_insert_since")
        steps.drop_temp("icr_tmp_base_org_counts", "icr_tmp_base_permission_counts", "icr_tmp_daily_changed")
    return steps.run("daily_counted_history_id").scalar_one()


def changes(steps: _Steps, day: Any, prev: Any) -> dict[str, int | None]:
    """New and removed on ``day`` compared with ``prev`` (all None: nothing to compare), and how
    many of the removed webhook events reported as uninstalled or suspended (both None when none
    of them has a recorded reason: no webhooks, or they just vanished)."""
    out: dict[str, int | None] = dict.fromkeys(_CHANGES)
    if prev is None:
        return out
    active, as_of, loaded = steps.run("daily_total", day=day).one()
    before, prev_as_of, prev_loaded = steps.run("daily_total", day=prev).one()
    if as_of is not None and prev_as_of is not None:
        ts = steps.warehouse.ts
        new, removed, uninstalled, suspended = steps.run(
            "daily_changes_from_history", as_of=as_of, loaded_at=loaded, prev_as_of=prev_as_of,
            prev_loaded_at=prev_loaded, since=min(as_of, prev_as_of), until=max(loaded, prev_loaded),
            cutoff=ts(cutoff_of(as_date(day))), prev_cutoff=ts(cutoff_of(as_date(prev)))).one()
    else:
        kept = int(steps.run("daily_count_kept", day=day, prev=prev).scalar_one())
        new, removed = int(active) - kept, int(before) - kept
        uninstalled, suspended = steps.run("daily_removed_by_reason", day=day, prev=prev).one() if removed else (0, 0)
    out.update(new=int(new), removed=int(removed))
    if uninstalled or suspended:
        out.update(removed_uninstalled=int(uninstalled), removed_suspended=int(suspended))
    return out

