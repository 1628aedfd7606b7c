"""10. No leaks: the session-wide verdict of the secret scanner every fault test fed (logs,
subprocess outputs, Airflow task logs, XComs, exception texts, every icr_* text column), plus
a self-test proving the scanner finds what it looks for. Runs last (file order)."""

from __future__ import annotations

import pytest

from tests.faults.conftest import LEAKS, FAULT_CLASSES
from tests.support.secrets import LeakScanner

FAULT_CLASS = "leaks"
pytestmark = pytest.mark.faults


def test_scanner_finds_planted_secrets(make_simulator):
    sim = make_simulator(installations=1, seed=5)
    scanner = LeakScanner()
    scanner.add_secret(sim.private_key_pem, "key")
    scanner.add_secret("a passphrase 123", "passphrase")
    body_line = sim.private_key_pem.splitlines()[5]
    token = sim.mint_jwt()
    header, claims, signature = token.split(".")
    scanner.add_token(token)
    samples = {
        "jwt": "Authorization: Bearer " + sim.mint_jwt(),
        "jwt cut in its signature": "Authorization: Bearer " + token[:len(header) + len(claims) + 30] + "…",
        "jwt header segment alone": f"bad header {header}…",
        "jwt claims segment alone": f"claims {claims[:30]}",
        "40 characters of a known signature": f"sig={signature[100:140]}!",
        "access token": "token=crs_" + "Ab3" * 14,
        "pem line": f"log: {body_line} ...",
        "pem json-escaped": sim.private_key_pem.replace("\n", "\\n"),
        "passphrase": "error: wrong a passphrase 123!",
    }
    for name, text in samples.items():
        assert scanner.scan("leaks", name, text), f"the scanner misses a {name}"
    assert not scanner.scan("leaks", "clean", "expected a '-----BEGIN RSA PRIVATE KEY-----' block; eyJ only")
    assert not scanner.scan("leaks", "clean", f"39 characters of a signature: {signature[100:139]}")
    assert not scanner.scan("leaks", "clean", "Authorization: Bearer [redacted]; keyJsonWebTokenSettingsAreFine")


def test_no_secret_anywhere_in_the_session(ledger):
    ran = {f.fault_class for f in LEAKS.findings}
    ledger.record(FAULT_CLASS, injected=0, runs=0, survived=0)
    assert LEAKS.texts > 0, "nothing was scanned: run the whole faults suite"
    assert not LEAKS.findings, "secrets found: " + "; ".join(
        f"[{f.fault_class}] {f.what} in {f.source}" for f in LEAKS.findings[:10]) + f" (classes {sorted(ran)})"
    assert set(FAULT_CLASSES) >= ran
