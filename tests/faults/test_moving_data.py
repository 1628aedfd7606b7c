"""3. Data moving while paging: installations are added (at the front, shifting every page
boundary, and at the end) and removed between page requests. The sync must notice an
inconsistent snapshot (or re-read it cleanly), never duplicate a row, and never mark removed an
installation that is still there — after a first clean load, a moving sync may not give
``deleted_at`` to anything still in the truth. A final quiet sync must equal the truth exactly."""

from __future__ import annotations

import pytest

from tests.faults.conftest import compare_with_truth, deleted_ids, new_run
from tests.support.warehouse import run_rows

FAULT_CLASS = "moving_data"
pytestmark = pytest.mark.faults

N = 1000
PAGE = 100


def _sync(warehouse, hook, **settings):
    from icr.sync import SyncSettings, run_sync

    return run_sync(warehouse, hook, new_run("moving"), SyncSettings(page_size=PAGE, **settings))


def _check_moving_run(warehouse, sim, ledger, changes: int) -> dict:
    truth_ids = sim.truth_ids()
    wrongly_removed = sorted(deleted_ids(warehouse) & truth_ids)
    diff = compare_with_truth(warehouse, sim.truth())
    row = run_rows(warehouse)[-1]
    consistent = row["snapshot_complete"] and diff.lost == 0
    flagged = (not row["snapshot_complete"]) and bool(row["incomplete_reason"])
    ledger.record(FAULT_CLASS, injected=changes, runs=1,
                  survived=int(row["status"] == "success" and not wrongly_removed and diff.duplicated == 0
                               and (consistent or flagged)),
                  rows_lost=len(wrongly_removed) + diff.duplicated)
    assert not wrongly_removed, (
        f"{len(wrongly_removed)} installation(s) still listed by the API were marked removed by a run "
        f"that read a moving listing (snapshot_complete={row['snapshot_complete']}, "
        f"reason={row['incomplete_reason']!r}): {wrongly_removed[:3]}")
    assert diff.duplicated == 0
    assert row["status"] == "success"
    assert consistent or flagged, (row["snapshot_complete"], row["incomplete_reason"], str(diff))
    return row


@pytest.mark.parametrize("changes,concurrency", [
    ({"add_front": 3}, 1),
    ({"remove": 2}, 1),
    ({"add_front": 2, "remove": 2}, 1),
    ({"add": 1, "remove": 1}, 1),  # the total stays the same on every page
    ({"add_front": 2, "remove": 1}, 4),
], ids=["add_front", "remove", "add_front+remove", "add+remove_same_total", "concurrent_add_front+remove"])
def test_moving_sync_never_removes_a_present_installation(make_simulator, hook_for, faults_pg, ledger,
                                                          changes, concurrency):
    sim = make_simulator(installations=N, seed=41)
    hook = hook_for(sim, concurrency=concurrency)
    _sync(faults_pg, hook)  # the first clean load
    assert compare_with_truth(faults_pg, sim.truth()).lost == 0

    served: list[int] = []

    def move(s, page):
        served.append(page)
        s.apply_changes(changes)

    sim.faults.mutate_while_paging = move
    _sync(faults_pg, hook, concurrency=concurrency)
    sim.faults.mutate_while_paging = None
    _check_moving_run(faults_pg, sim, ledger, changes=len(served) * sum(changes.values()))

    _sync(faults_pg, hook, concurrency=concurrency)  # quiet again: exact
    diff = compare_with_truth(faults_pg, sim.truth())
    ledger.record(FAULT_CLASS, runs=1, survived=int(diff.lost == 0), rows_lost=diff.lost)
    assert diff.lost == 0, str(diff)
    assert not (deleted_ids(faults_pg) & sim.truth_ids())


def test_inconsistent_first_read_is_reread(make_simulator, hook_for, faults_pg, ledger):
    """Changes only during the first pass over the pages: the re-read is consistent, the run is
    complete and exact, removals included."""
    sim = make_simulator(installations=N, seed=42)
    hook = hook_for(sim)
    _sync(faults_pg, hook)
    passes = {"pages": 0}

    def move_in_first_pass(s, page):
        passes["pages"] += 1
        if passes["pages"] < N // PAGE:  # pages 1..9 of the first pass
            s.apply_changes({"add_front": 2, "remove": 2})

    sim.faults.mutate_while_paging = move_in_first_pass
    result = _sync(faults_pg, hook)
    sim.faults.mutate_while_paging = None
    row = run_rows(faults_pg)[-1]
    diff = compare_with_truth(faults_pg, sim.truth())
    ledger.record(FAULT_CLASS, injected=(N // PAGE - 1) * 4, runs=2, survived=1 + int(diff.lost == 0),
                  rows_lost=diff.lost)
    assert row["snapshot_complete"] is True, row["incomplete_reason"]
    assert diff.lost == 0, str(diff)
    assert result["removed"] == (N // PAGE - 1) * 2
    assert passes["pages"] >= 2 * (N // PAGE - 1), "the API was not read a second time"
