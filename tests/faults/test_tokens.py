"""2. Tokens: a server clock ahead, a client clock 30 s off either way, and app JWTs that expire
mid-paging (re-minted ahead of time, or after a 401) — the sync still succeeds and is exact."""

from __future__ import annotations

import time

import pytest

from tests.faults.conftest import compare_with_truth, new_run

FAULT_CLASS = "tokens"
pytestmark = pytest.mark.faults


def _jump_clocks_per_page(sim, auth, step: float, server_lead: float = 0.0) -> list[float]:
    """After every page both clocks jump ``step`` seconds (the server's stays ``server_lead``
    ahead): a run that outlives its JWTs. Returns the shared shift, for the assertions."""
    shift = [0.0]
    auth._clock = lambda: time.time() + shift[0]  # the AppJWT's clock is an injection point

    def jump(s, page):
        shift[0] += step
        s.faults.clock_offset_s = shift[0] + server_lead

    sim.faults.mutate_while_paging = jump
    return shift


def _sync(warehouse, hook):
    from icr.sync import SyncSettings, run_sync

    return run_sync(warehouse, hook, new_run("tokens"), SyncSettings(page_size=100))


@pytest.mark.parametrize("server_offset,client_offset", [
    (300, 0),  # the API's clock runs 5 minutes ahead
    (0, 30),  # our worker's clock runs 30 s ahead
    (0, -30),  # our worker's clock runs 30 s behind
], ids=["server_ahead_300s", "client_ahead_30s", "client_behind_30s"])
def test_clock_skew(make_simulator, hook_for, faults_pg, ledger, server_offset, client_offset):
    sim = make_simulator(installations=400, seed=31, faults={"clock_offset_s": server_offset})
    hook = hook_for(sim)
    auth = hook.get_conn().auth
    auth._clock = lambda: time.time() + client_offset  # the AppJWT's clock is an injection point
    result = _sync(faults_pg, hook)
    diff = compare_with_truth(faults_pg, sim.truth())
    ledger.record(FAULT_CLASS, injected=1, runs=1, survived=int(diff.lost == 0), rows_lost=diff.lost)
    assert diff.lost == 0, str(diff)
    assert result["snapshot_complete"]
    assert sim.stats["tokens_rejected"] == 0, sim.stats["rejections"]


def test_token_reminted_before_expiry_mid_paging(make_simulator, hook_for, faults_pg, ledger):
    """Both clocks jump 4 minutes after every page: a 9-minute JWT cannot cover the run, so the hook
    must mint fresh ones on time (no 401 at all)."""
    sim = make_simulator(installations=1000, seed=32)
    hook = hook_for(sim)
    auth = hook.get_conn().auth
    shift = _jump_clocks_per_page(sim, auth, 240)
    _sync(faults_pg, hook)
    diff = compare_with_truth(faults_pg, sim.truth())
    jumps = int(shift[0] // 240)
    ledger.record(FAULT_CLASS, injected=jumps, runs=1, survived=int(diff.lost == 0), rows_lost=diff.lost)
    assert diff.lost == 0, str(diff)
    assert jumps >= 8
    assert auth.minted >= jumps * 240 // 540, (auth.minted, jumps)
    assert sim.stats["tokens_rejected"] == 0, sim.stats["rejections"]


def test_token_expires_in_flight_reminted_after_401(make_simulator, hook_for, faults_pg, ledger):
    """The server clock runs 150 s ahead of ours *and* both jump 200 s per page: the cached JWT
    still looks fresh to us when the API already calls it expired. One 401, one re-mint, go on."""
    from tests.support.warehouse import run_rows

    sim = make_simulator(installations=1000, seed=33, faults={"clock_offset_s": 150})
    hook = hook_for(sim)
    auth = hook.get_conn().auth
    _jump_clocks_per_page(sim, auth, 200, server_lead=150)
    _sync(faults_pg, hook)
    diff = compare_with_truth(faults_pg, sim.truth())
    expired = sim.stats["rejections"].get("JWT expired", 0)
    ledger.record(FAULT_CLASS, injected=expired, runs=1, survived=int(diff.lost == 0), rows_lost=diff.lost)
    assert diff.lost == 0, str(diff)
    assert expired >= 1, sim.stats["rejections"]
    assert set(sim.stats["rejections"]) == {"JWT expired"}
    (row,) = run_rows(faults_pg)
    assert row["status"] == "success"
    assert '"401": %d' % expired in row["retries_by_reason"], row["retries_by_reason"]
