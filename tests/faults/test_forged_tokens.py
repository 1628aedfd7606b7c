"""8. Forged tokens: the simulator rejects every forgery with a 401 — and the hook's own tokens
pass. End to end through the hook too: a hook whose token is forged fails with a clear 401 that
quotes no token, and the warehouse gets nothing but the failed run row."""

from __future__ import annotations


import pytest
import requests

from tests.faults.conftest import fingerprint, new_run, run_rows, staging_tables
from tests.simulator.tokens import forge_token, generate_private_key, mint_app_jwt, public_pem

FAULT_CLASS = "forged_tokens"
pytestmark = pytest.mark.faults


def _forgeries(sim):
    now = int(sim.now())
    claims = {"iat": now - 60, "exp": now + 540, "iss": sim.app_id, "alg": "RS256"}
    key = sim.keyring.keys[0].private
    other = generate_private_key(4242, 0, 2048)
    return {
        "alg_none": forge_token(claims, alg="none"),
        "hs256_public_key": forge_token(claims, alg="HS256", secret=public_pem(key.public_key()).encode()),
        "wrong_key": mint_app_jwt(other, sim.app_id, now=now),
        "expired": mint_app_jwt(key, sim.app_id, now=now - 1000),
        "future_iat": mint_app_jwt(key, sim.app_id, now=now, iat_offset=+300, exp_offset=540),
        "missing_iss": mint_app_jwt(key, sim.app_id, now=now, drop=("iss",)),
        "exp_too_far": mint_app_jwt(key, sim.app_id, now=now, exp_offset=3600),
    }


def test_forged_tokens_rejected_hook_tokens_pass(make_simulator, hook_for, ledger, leaks):
    sim = make_simulator(installations=50, seed=81)
    url = sim.base_url + "/app/installations?limit=5&page=0"
    forgeries = _forgeries(sim)
    rejected = 0
    for name, token in forgeries.items():
        r = requests.get(url, headers={"Authorization": f"Bearer {token}", "X-ICR-Api-Version": "2023-06-16"},
                         timeout=10)
        assert r.status_code == 401, (name, r.status_code, r.text[:200])
        leaks.feed("response", r.text)
        rejected += 1
    assert sim.stats["tokens_rejected"] == len(forgeries)
    # the hook's own tokens pass, on the same server
    hook = hook_for(sim)
    body = hook.get_conn().get_json("/app/installations", params={"limit": 5, "page": 0})
    assert len(body["installations"]) == 5
    assert sim.stats["tokens_rejected"] == len(forgeries)
    ledger.record(FAULT_CLASS, injected=len(forgeries), runs=1, survived=int(rejected == len(forgeries)))


@pytest.mark.parametrize("forgery", ["alg_none", "hs256_public_key", "wrong_key", "expired", "future_iat",
                                     "missing_iss"])
def test_forged_token_through_the_hook_fails_cleanly(make_simulator, hook_for, faults_pg, ledger, leaks,
                                                     forgery):
    from icr.errors import ICRAPIError
    from icr.sync import SyncSettings, run_sync, migrate

    sim = make_simulator(installations=50, seed=82)
    hook = hook_for(sim, max_retries=2)
    auth = hook.get_conn().auth
    token = _forgeries(sim)[forgery]
    leaks.secret(token, f"forged token {forgery}")
    auth.token = lambda: token  # every request (and the re-mint after the 401) carries the forgery
    migrate(faults_pg)
    before = fingerprint(faults_pg)
    run = new_run("forged")
    with pytest.raises(ICRAPIError) as info:
        run_sync(faults_pg, hook, run, SyncSettings(page_size=10))
    leaks.feed_exception(info.value)
    assert info.value.status == 401
    assert "401" in str(info.value) and "/app/installations" in str(info.value)
    assert fingerprint(faults_pg) == before
    (row,) = run_rows(faults_pg)
    assert row["status"] == "failed" and "401" in row["error"]
    assert staging_tables(faults_pg) == []
    assert sim.stats["tokens_rejected"] == 2  # the first try and exactly one re-mint
    ledger.record(FAULT_CLASS, injected=1, runs=1, survived=1)
