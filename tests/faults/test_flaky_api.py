"""1. Flaky API: ~10 % of requests fail at random (every fault kind the simulator has) over a
20,000-installation sync into PostgreSQL; the result must equal the simulator's truth exactly and
the run row must account for every retry."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tests.faults.conftest import compare_with_truth, new_run
from tests.support.warehouse import run_rows
from tests.simulator.config import FAULT_KINDS

FAULT_CLASS = "flaky_api"
pytestmark = pytest.mark.faults

#: the client's retry reason for each simulator fault kind
REASON = {
    "429_seconds": "429", "429_http_date": "429", "429_zero": "429", "429_none": "429",
    "403_rate_limit": "403-ratelimit", "500": "500", "502": "502", "503": "503", "504": "504",
    "reset": "reset", "truncated_json": "bad_json", "invalid_json": "bad_json", "slow": "timeout",
}


def test_flaky_api_20k_sync_equals_truth(make_simulator, hook_for, faults_pg, ledger, leaks):
    from icr.sync import SyncSettings, run_sync

    assert set(REASON) == set(FAULT_KINDS), "a new simulator fault kind needs a mapping here"
    sim = make_simulator(installations=20_000, seed=2024, max_page_size=500, faults={
        "error_rate": 0.10, "fault_kinds": list(FAULT_KINDS), "retry_after_seconds": 0.2,
        "slow_seconds": 2.0, "seed": 99})
    # Besides the random 10 %, make sure every kind is injected at least once, spread over pages:
    # after each served page, queue the next kind for the following request.
    scheduled = list(FAULT_KINDS)

    def one_of_each(s, page):
        if scheduled:
            s.fail_next(scheduled.pop(0))

    sim.faults.mutate_while_paging = one_of_each
    hook = hook_for(sim, timeout=1, max_retries=40, max_retry_wait=300, page_size=500, max_page_size=500)
    run = new_run("flaky")

    result = run_sync(faults_pg, hook, run, SyncSettings(page_size=500))

    stats = sim.stats
    injected = Counter(stats["faults_injected"])
    assert not scheduled, f"not every fault kind was injected: {scheduled}"
    assert set(injected) == set(FAULT_KINDS), injected
    assert stats["faults_total"] > len(FAULT_KINDS), "the random ~10 % injected nothing"

    diff = compare_with_truth(faults_pg, sim.truth())
    ledger.record(FAULT_CLASS, injected=stats["faults_total"], runs=1,
                  survived=int(result["snapshot_complete"] and diff.lost == 0), rows_lost=diff.lost)
    assert diff.lost == 0, str(diff)
    assert diff.truth == 20_000
    assert result["snapshot_complete"] is True
    assert result["inserted"] == 20_000 and result["rejected"] == 0

    (row,) = run_rows(faults_pg)
    assert row["status"] == "success"
    # every injected fault cost exactly one retry, recorded under the right reason
    expected = Counter()
    for kind, n in injected.items():
        expected[REASON[kind]] += n
    assert row["retries"] == stats["faults_total"], (row["retries"], injected)
    assert json.loads(row["retries_by_reason"]) == dict(expected)
    assert row["api_requests"] == stats["by_kind"]["list"]
    assert row["api_requests"] == row["pages"] + row["retries"]
