"""6. Bad records served inside real pages (the simulator's ``extra_records`` knob): valid ones
load exactly, invalid ones land in icr_rejected_records with a reason naming the field,
duplicates (within and across pages) are stored once, and the reject threshold fails the run
before it writes anything."""

from __future__ import annotations

import copy
import json
import uuid

import pytest
import sqlalchemy as sa

from tests.faults.conftest import compare_with_truth, new_run, staging_tables
from tests.support.warehouse import outcome_fingerprint, run_row, run_rows

FAULT_CLASS = "bad_records"
pytestmark = pytest.mark.faults

N = 200
PAGE = 50


def _u() -> str:
    return str(uuid.uuid4())


def _crafted(sim):
    truth = list(sim.truth())
    base = copy.deepcopy(truth[0])

    def rec(**changes):
        r = copy.deepcopy(base)
        r["id"] = _u()
        for k, v in changes.items():
            if v is _DROP:
                r.pop(k, None)
            else:
                r[k] = v
        return r

    big = "x" * (1024 * 1024)
    valid = [
        rec(someNewField={"nested": [1, 2, 3]}, anotherOne=None),  # unknown extra fields
        rec(organization={**base["organization"], "fullName": big}),  # a 1 MB string
        rec(organization={**base["organization"], "fullName": "Zoë 🌳🌍 碳登记 — ünïcødé \u202e"}),
        rec(organization={**base["organization"], "fullName": "'); DROP TABLE icr_installation_state; --"},
            appNameId="1; DELETE FROM icr_sync_runs WHERE '1'='1"),
    ]
    invalid = [
        (rec(id=_DROP), "id is missing"),
        (rec(id="not-a-uuid"), "id is not a UUID"),
        (rec(createdAt="yesterday"), "createdAt"),
        (rec(updatedAt="2024-13-45T99:00:00Z"), "updatedAt"),
        (rec(permissions=["organization_info"]), "permissions"),
        (rec(organization=None), "organization is missing"),
        (rec(organization={**base["organization"], "fullName": "nul\u0000byte"}), "NUL"),
    ]
    # duplicates: a changed copy of a record of the same page (page 1), and of page 0 (across pages)
    dup_within = copy.deepcopy(truth[PAGE + 3])
    dup_within["organization"]["fullName"] = "DUPLICATE WITHIN PAGE"
    dup_across = copy.deepcopy(truth[5])
    dup_across["organization"]["fullName"] = "DUPLICATE ACROSS PAGES"
    extra = {
        1: [valid[0], valid[1], invalid[0][0], invalid[1][0], dup_within, invalid[2][0]],
        2: [valid[2], valid[3], invalid[3][0], invalid[4][0], invalid[5][0], invalid[6][0], dup_across],
    }
    return valid, invalid, extra


class _Drop:
    pass


_DROP = _Drop()


def test_bad_records_rejected_valid_ones_loaded(make_simulator, hook_for, faults_pg, ledger, leaks):
    from icr.sync import SyncSettings, run_sync

    sim = make_simulator(installations=N, seed=71)
    valid, invalid, extra = _crafted(sim)
    sim.faults.extra_records = extra
    hook = hook_for(sim)
    result = run_sync(faults_pg, hook, new_run("bad-records"), SyncSettings(page_size=PAGE))

    expected = list(sim.truth()) + valid  # duplicates lose: the first occurrence wins
    diff = compare_with_truth(faults_pg, expected)
    with faults_pg.read() as conn:
        rejects = conn.execute(sa.text("SELECT installation_id, reason, raw FROM icr_rejected_records")).all()
    reasons = [r.reason for r in rejects]
    matched = sum(1 for _, want in invalid if any(want in reason for reason in reasons))
    ledger.record(FAULT_CLASS, injected=len(valid) + len(invalid) + 2, runs=1,
                  survived=int(diff.lost == 0 and matched == len(invalid)), rows_lost=diff.lost)
    assert diff.lost == 0, str(diff)
    assert len(rejects) == len(invalid), reasons
    for _, want in invalid:
        assert any(want in reason for reason in reasons), (want, reasons)
    for r in rejects:  # the record as received is kept for inspection
        assert json.loads(r.raw)
    assert result["rejected"] == len(invalid)
    with faults_pg.read() as conn:
        names = {row[0] for row in conn.execute(sa.text(
            "SELECT organization_name FROM icr_installations WHERE organization_name LIKE 'DUPLICATE%'"))}
        tables = {row[0] for row in conn.execute(sa.text(
            "SELECT tablename FROM pg_tables WHERE tablename = 'icr_installation_state'"))}
    assert names == set(), "a duplicate replaced the first occurrence"
    assert tables == {"icr_installation_state"}
    (row,) = run_rows(faults_pg)
    assert row["status"] == "success"


def test_reject_threshold_fails_the_run_before_writing(make_simulator, hook_for, faults_pg, ledger, leaks):
    from icr.errors import RejectThresholdError
    from icr.sync import SyncSettings, run_sync

    sim = make_simulator(installations=N, seed=72)
    hook = hook_for(sim)
    run_sync(faults_pg, hook, new_run("bad-seed"), SyncSettings(page_size=PAGE))
    before = outcome_fingerprint(faults_pg)
    _, invalid, extra = _crafted(sim)
    sim.faults.extra_records = extra
    sim.apply_changes({"update": 10})
    run = new_run("bad-threshold")
    with pytest.raises(RejectThresholdError) as info:
        run_sync(faults_pg, hook, run, SyncSettings(page_size=PAGE, max_reject_share=0.01))
    leaks.feed_exception(info.value)
    assert "max_reject_share" in str(info.value)
    assert outcome_fingerprint(faults_pg) == before
    row = run_row(faults_pg, run.run_id)
    assert row["status"] == "failed" and "RejectThresholdError" in row["error"]
    assert staging_tables(faults_pg) == []
    ledger.record(FAULT_CLASS, injected=len(invalid), runs=2, survived=2)
