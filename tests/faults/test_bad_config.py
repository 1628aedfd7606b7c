"""7. Bad configuration: one clear error each, naming the connection field at fault, raised before
anything is written (the warehouse keeps its data; at most one failed run row; no staging tables)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.faults.conftest import new_run, staging_tables
from tests.support.warehouse import outcome_fingerprint, run_rows

FAULT_CLASS = "bad_config"
pytestmark = pytest.mark.faults

PASSPHRASE = "faults-suite passphrase 7f3c"


def _encrypted(sim) -> str:
    key = serialization.load_pem_private_key(sim.private_key_pem.encode(), password=None)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.BestAvailableEncryption(PASSPHRASE.encode())).decode()


def _ec_key() -> str:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


CASES = {
    # name: (connection overrides(sim) -> dict, words the message must contain)
    "garbage_key": (lambda sim: {"password": "this is not a key at all"}, ["password (private key PEM)"]),
    "encrypted_no_passphrase": (lambda sim: {"password": _encrypted(sim)}, ["extra.private_key_passphrase"]),
    "encrypted_wrong_passphrase": (lambda sim: {"password": _encrypted(sim), "private_key_passphrase": "wrong"},
                                   ["extra.private_key_passphrase", "passphrase"]),
    "non_rsa_key": (lambda sim: {"password": _ec_key()}, ["password (private key PEM)", "RSA"]),
    "wrong_app_id": (lambda sim: {"login": "11111111-2222-4333-8444-555555555555"}, ["401", "App ID"]),
    "unknown_api_version": (lambda sim: {"api_version": "1999-01-01"}, ["400", "api_version"]),
    "http_remote_host": (lambda sim: {"host": "http://api.carbonregistry.com"}, ["host (API base URL)", "http"]),
    "unreachable_host": (lambda sim: {"host": "http://127.0.0.1:9", "max_retries": 2},
                         ["http://127.0.0.1:9"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_configuration_fails_clearly_before_writing(make_simulator, hook_for, faults_pg, ledger, leaks, case):
    from icr.errors import ICRError
    from icr.sync import SyncSettings, run_sync

    make, words = CASES[case]
    sim = make_simulator(installations=100, seed=91)
    leaks.secret(PASSPHRASE, "key passphrase")
    hook = hook_for(sim)
    run_sync(faults_pg, hook, new_run("cfg-seed"), SyncSettings(page_size=50))
    before = outcome_fingerprint(faults_pg)
    runs_before = len(run_rows(faults_pg))

    overrides = make(sim)
    conn = {k: overrides.pop(k) for k in ("password", "login", "host") if k in overrides}
    if "password" in conn and conn["password"].startswith("-----BEGIN"):
        leaks.secret(conn["password"], f"{case} key")
    hook = hook_for(sim, **conn, **overrides)
    run = new_run("cfg-bad")
    with pytest.raises(ICRError) as info:
        run_sync(faults_pg, hook, run, SyncSettings(page_size=50))
    leaks.feed_exception(info.value)
    message = str(info.value)
    ok = all(w in message for w in words)
    rows = run_rows(faults_pg)
    clean = (outcome_fingerprint(faults_pg) == before and len(rows) == runs_before + 1
             and rows[-1]["status"] == "failed" and staging_tables(faults_pg) == [])
    ledger.record(FAULT_CLASS, injected=1, runs=1, survived=int(ok and clean))
    for w in words:
        assert w in message, f"{case}: the error does not name {w!r}: {message}"
    assert outcome_fingerprint(faults_pg) == before
    assert len(rows) == runs_before + 1 and rows[-1]["run_id"] == run.run_id and rows[-1]["status"] == "failed"
    assert staging_tables(faults_pg) == []
