"""11. Secrets in error texts and at DEBUG (issue 19, items 6-10).

* An API whose error bodies echo the ``Authorization`` header, whole or cut: no part of the JWT
  (nor of a ``crs_`` token) reaches the exception text, the task log lines or the run row.
* ``airflow dags test`` at DEBUG prints no PEM body and no JWT: the hook registers its secrets
  with the masker without Airflow's in-process supervisor echoing them.
* ``extra.private_key_path`` pointing at ``/dev/zero``, a FIFO or a huge file fails at once with
  a clear error instead of exhausting memory or hanging.
* ``http://`` to a ``*.localhost`` name is refused like any other remote host.
* The scanner itself sees DEBUG records of the test's call phase.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import subprocess
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.logs import captured_log_text
from tests.faults.conftest import new_run, staging_tables
from tests.support.secrets import JWT_RE
from tests.support.warehouse import outcome_fingerprint, run_row

FAULT_CLASS = "secrets"
pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- an API that echoes tokens


@dataclass
class _EchoAPI:
    """A stand-in ICR API on loopback whose error answers quote the request's credentials.

    It has what ``hook_for`` needs (``base_url``, ``app_id``, ``private_key_pem``); ``seen`` holds
    every token it received, so the test can look for any piece of them."""

    status: int
    message: Any  # callable(token) -> the NestJS "message"
    private_key_pem: str
    app_id: str = "6f1c2a54-8a1b-4c9e-9d53-0b8c1f2e7a10"
    base_url: str = ""

    def __post_init__(self) -> None:
        self.seen: list[str] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                auth = self.headers.get("Authorization", "")
                token = auth.partition(" ")[2]
                api.seen.append(token)
                body = json.dumps({"statusCode": api.status, "message": api.message(token),
                                   "error": "Echo"}).encode()
                self.send_response(api.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def app_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


ACCESS_TOKEN = "crs_" + "Zq8" * 13 + "x"

ECHOES = {
    # name: (status, message(token)) -- what a proxy or a chatty API might answer
    "403 quotes the request headers (cut at 300 by the client)":
        (403, lambda t: f"Forbidden resource; request headers: {{'authorization': 'Bearer {t}', "
                        f"'x-icr-api-version': '2023-06-16'}}"),
    "500 quotes the header, retried and logged":
        (500, lambda t: f"upstream failed for Authorization: Bearer {t}"),
    "401 quotes the token, re-minted and logged":
        (401, lambda t: f"invalid signature in {t}"),
    "400 quotes the JWT header segment alone":
        (400, lambda t: f"malformed JOSE header {t.split('.')[0]}"),
    "400 quotes a token the server cut":
        (400, lambda t: f"token rejected: Bearer {t[:60]}"),
    "403 quotes a token cut inside its signature":
        (403, lambda t: f"revoked: {t[:len(t) - 150]}"),
    "403 quotes access tokens, whole and cut":
        (403, lambda t: f"installation token {ACCESS_TOKEN} expired; token {ACCESS_TOKEN[:14]}… revoked"),
}


@pytest.mark.parametrize("echo", list(ECHOES))
def test_echoed_tokens_are_redacted_everywhere(app_key_pem, hook_for, faults_pg, ledger, leaks, caplog, echo):
    from icr.errors import ICRError
    from icr.sync import SyncSettings, migrate, run_sync

    status, message = ECHOES[echo]
    api = _EchoAPI(status, message, app_key_pem)
    try:
        hook = hook_for(api, max_retries=2, max_retry_wait=5)
        migrate(faults_pg)
        before = outcome_fingerprint(faults_pg)
        run = new_run("echo")
        with pytest.raises(ICRError) as info:
            run_sync(faults_pg, hook, run, SyncSettings(page_size=50))
    finally:
        api.stop()
    leaks.feed_exception(info.value)
    assert api.seen, "the API was never called"
    text = f"{info.value}\n{info.value!r}"
    row = run_row(faults_pg, run.run_id)
    logs = captured_log_text(caplog)
    redacted_everywhere = all("[redacted]" in t and "eyJ" not in t and "crs_Zq8" not in t
                              for t in (text, row["error"]))
    ledger.record(FAULT_CLASS, injected=1, runs=1,
                  survived=int(redacted_everywhere and row["status"] == "failed"
                               and staging_tables(faults_pg) == []))
    # the error still says what happened, with the secret cut out
    assert f"HTTP {status}" in text, text
    assert "[redacted]" in text, text
    for where, t in (("exception", text), ("icr_sync_runs.error", row["error"]), ("log", logs)):
        assert "eyJ" not in t, f"{where} holds a piece of a JWT: {_around(t, 'eyJ')}"
        assert "crs_Zq8" not in t, f"{where} holds a piece of an access token: {_around(t, 'crs_')}"
        for token in api.seen:
            signature = token.split(".")[-1]
            assert not any(signature[i:i + 40] in t for i in range(0, len(signature) - 40, 10)), where
    if status in (401, 500):  # these were logged before the final error: the log lines are redacted too
        assert "[redacted]" in logs, logs[-2000:]
    assert row["status"] == "failed" and "[redacted]" in row["error"], row
    assert outcome_fingerprint(faults_pg) == before


def _around(text: str, needle: str) -> str:
    at = text.find(needle)
    return text[max(0, at - 60):at] + "<…>" if at >= 0 else ""


REDACT_CASES = {
    "whole JWT after Bearer": ("Authorization: Bearer {jwt}", "Authorization: Bearer [redacted]"),
    "JWT cut in the signature": ("x {jwt_cut}…", "x [redacted]…"),
    "header segment alone": ("hdr {header} end", "hdr [redacted] end"),
    "header.claims": ("{header}.{claims}", "[redacted]"),
    "cut right after 'Bearer '": ("Authorization: Bearer eyJhb", "Authorization: Bearer [redacted]"),
    "opaque bearer token": ("Bearer abcdefghijklmnop0123456789", "Bearer [redacted]"),
    "access token": ("token crs_abcdefghijkl0123 ok", "token [redacted] ok"),
    "access token cut": ("token crs_ab…", "token [redacted]…"),
    "PEM cut": ("key -----BEGIN PRIVATE KEY-----\nMIIEvAIBADANBg", "key [private key redacted]"),
    "PEM whole": ("a -----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY----- b",
                  "a [private key redacted] b"),
    "plain words stay": ("Authorization header with a Bearer app JWT is required; keyJson",
                         "Authorization header with a Bearer app JWT is required; keyJson"),
}


@pytest.mark.parametrize("case", list(REDACT_CASES))
def test_redact_catches_whole_and_cut_secrets(case, make_simulator):
    from icr.redact import redact
    from icr.warehouse import runlog

    sim = make_simulator(installations=1, seed=5)
    jwt = sim.mint_jwt()
    header, claims, _sig = jwt.split(".")
    template, expected = REDACT_CASES[case]
    text = template.format(jwt=jwt, jwt_cut=jwt[:len(header) + len(claims) + 60], header=header, claims=claims)
    assert redact(text) == expected
    assert redact(redact(text)) == expected  # idempotent: redacting an error twice changes nothing
    assert runlog.redact is redact or runlog.redact(text) == expected  # the run log uses the same one


# --------------------------------------------------------------------------- DEBUG in `airflow dags test`


def _pem_lines(pem: str) -> list[str]:
    return [ln for ln in pem.splitlines() if ln and "-----" not in ln]


def _dags_test_at_debug(home: Path, sim: Any, icr_conn: dict, tmp_path: Path, leaks) -> tuple[str, list[str]]:
    """``airflow dags test icr_installations_sync`` with every logger at DEBUG; returns its
    output and the texts of its task log files and XComs."""
    from icr.redact import redact
    from tests.support.airflow_home import AIRFLOW, airflow_env

    env = airflow_env(home, AIRFLOW_CONN_ICR_DEFAULT=json.dumps(icr_conn),
                      AIRFLOW_CONN_ICR_WAREHOUSE=json.dumps({"conn_type": "sqlite",
                                                             "host": str(tmp_path / "warehouse.sqlite")}),
                      AIRFLOW__LOGGING__LOGGING_LEVEL="DEBUG")
    proc = subprocess.run([AIRFLOW, "dags", "test", "icr_installations_sync"], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    others = [p.read_text("utf-8", "replace") for p in (home / "logs").rglob("*") if p.is_file()]
    with sqlite3.connect(home / "airflow.db") as db:
        others += [v if isinstance(v, str) else (v.decode("utf-8", "replace") if isinstance(v, bytes)
                                                 else json.dumps(v))
                   for (v,) in db.execute("SELECT value FROM xcom")]
    assert proc.returncode == 0, redact(output[-4000:])
    debug = "[debug" in output and "minted ICR app JWT" in output
    assert debug, "the run did not log at DEBUG"
    assert sim.stats["tokens_accepted"] > 0
    return output, others


def test_dags_test_at_debug_prints_no_key_and_no_jwt(make_simulator, airflow_home, tmp_path, leaks, ledger):
    """The key in a file (extra.private_key_path): nothing of it, and no JWT, in the output."""
    sim = make_simulator(installations=40, seed=61)
    leaks.secret(sim.private_key_pem, "simulator app private key")
    key_file = tmp_path / "icr_private_key.pem"
    key_file.write_text(sim.private_key_pem)
    key_file.chmod(0o600)
    output, others = _dags_test_at_debug(airflow_home, sim, {
        "conn_type": "icr", "host": sim.base_url, "login": sim.app_id,
        "extra": {"private_key_path": str(key_file), "max_retry_wait": 30}}, tmp_path, leaks)
    body = _pem_lines(sim.private_key_pem)
    leaked = [ln for ln in body if ln in output] + (["JWT"] if JWT_RE.search(output) else [])
    ledger.record(FAULT_CLASS, injected=1, runs=1, survived=int(not leaked))
    leaks.feed("dags test output", output)
    for i, text in enumerate(others):
        leaks.feed(f"dags test task log or xcom {i}", text)
    echoed = [v for v in ("MaskSecret(value='-----BEGIN", "MaskSecret(value='eyJ") if v in output]
    assert not echoed, f"Airflow's in-process supervisor echoed a secret the hook registered: {echoed}"
    assert not leaked, f"{len(leaked)} PEM body line(s) or a JWT in the DEBUG output"
    one_run = "".join(body) in output
    assert not one_run, "the PEM body (as one run) is in the DEBUG output"


def test_dags_test_at_debug_pem_in_password(make_simulator, airflow_home, tmp_path, leaks, ledger):
    """The key in the connection's password: Airflow itself echoes the password once each time it
    loads the connection (its in-process supervisor logs the MaskSecret message at DEBUG, see
    docs/security.md). The hook adds no echo of its own, and no JWT is printed."""
    sim = make_simulator(installations=40, seed=62)
    leaks.secret(sim.private_key_pem, "simulator app private key")
    output, others = _dags_test_at_debug(airflow_home, sim, {
        "conn_type": "icr", "host": sim.base_url, "login": sim.app_id, "password": sim.private_key_pem,
        "extra": {"max_retry_wait": 30}}, tmp_path, leaks)
    body = _pem_lines(sim.private_key_pem)
    with_key = [ln for ln in output.splitlines() if any(b in ln for b in body)]
    airflow_echo = re.compile(r"Sending request .*msg=MaskSecret\(value=" + re.escape(repr(sim.private_key_pem)))
    loads = len(re.findall(r"Connection Retrieved 'icr_default'", output))
    ours = [ln for ln in with_key if not airflow_echo.search(ln)]
    ledger.record(FAULT_CLASS, injected=1, runs=1, survived=int(not ours and not JWT_RE.search(output)))
    # Scan everything except Airflow's own echo lines (counted below).
    leaks.feed("dags test output", "\n".join(ln for ln in output.splitlines() if ln not in with_key or ln in ours))
    for i, text in enumerate(others):
        leaks.feed(f"dags test task log or xcom {i}", text)
    assert not ours, f"{len(ours)} line(s) besides Airflow's own echo hold key material"
    assert len(with_key) <= loads, f"{len(with_key)} echo lines for {loads} connection loads"
    jwt_printed = JWT_RE.search(output) is not None
    assert not jwt_printed, "a JWT is in the DEBUG output"


# --------------------------------------------------------------------------- extra.private_key_path


_LOAD_IN_CHILD = r"""
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (768 * 2**20, 768 * 2**20))
from icr.auth import load_private_key
from icr.errors import ICRConfigError
try:
    load_private_key(None, path=sys.argv[1], conn_id="icr_default")
    print(json.dumps({"ok": True}))
except ICRConfigError as exc:
    print(json.dumps({"error": str(exc), "field": exc.field}))
"""


def _load_key_in_child(path: str, timeout: float = 60) -> dict[str, Any]:
    """load_private_key(path=...) in a child process with 768 MB of address space: a regression
    runs out of memory or hangs there (and is killed), not in the test process."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT)])}
    try:
        proc = subprocess.run([sys.executable, "-c", _LOAD_IN_CHILD, path], env=env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"hung": True}
    if proc.returncode != 0:
        return {"crashed": proc.returncode, "stderr": proc.stderr[-1500:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind", ["/dev/zero", "fifo", "symlink to /dev/zero", "directory", "4 MB file"])
def test_private_key_path_must_be_a_small_regular_file(kind, tmp_path, ledger, make_simulator):
    sim = make_simulator(installations=1, seed=5)
    if kind == "/dev/zero":
        path = "/dev/zero"
    elif kind == "fifo":
        path = str(tmp_path / "key.pem")
        os.mkfifo(path)
    elif kind == "symlink to /dev/zero":
        path = str(tmp_path / "key.pem")
        os.symlink("/dev/zero", path)
    elif kind == "directory":
        path = str(tmp_path)
    else:
        path = str(tmp_path / "key.pem")
        # a real key followed by junk: the size, not the content, is what must stop it
        Path(path).write_text(sim.private_key_pem + ("#" * 63 + "\n") * 65536)
    result = _load_key_in_child(path, timeout=30 if kind == "fifo" else 60)
    ok = "error" in result and result.get("field") == "extra.private_key_path"
    ledger.record(FAULT_CLASS, injected=1, runs=1, survived=int(ok))
    assert ok, f"{kind}: {result}"
    message = result["error"]
    assert "connection 'icr_default'" in message and path in message, message
    expected = {"/dev/zero": "not a regular file", "fifo": "not a regular file",
                "symlink to /dev/zero": "not a regular file", "directory": "directory",
                "4 MB file": "64 KiB"}[kind]
    assert expected in message, message


def test_private_key_path_regular_file_still_loads(tmp_path, make_simulator):
    from icr.auth import load_private_key

    sim = make_simulator(installations=1, seed=5)
    path = tmp_path / "key.pem"
    path.write_text(sim.private_key_pem)
    path.chmod(0o400)
    link = tmp_path / "current.pem"  # mounted secrets are often symlinks (Kubernetes)
    link.symlink_to(path)
    assert load_private_key(None, path=str(link)).key_size == 2048


# --------------------------------------------------------------------------- plain http and loopback


@pytest.mark.parametrize("host", ["http://api.localhost:{port}", "http://localhost.example.com:{port}",
                                  "http://127.0.0.1.nip.io:{port}"])
def test_plain_http_to_a_localhost_name_is_refused(host, make_simulator, hook_for, faults_pg, ledger, leaks):
    from icr.errors import ICRConfigError
    from icr.sync import SyncSettings, run_sync

    sim = make_simulator(installations=20, seed=63)
    port = sim.base_url.rsplit(":", 1)[1]
    hook = hook_for(sim, host=host.format(port=port))
    with pytest.raises(ICRConfigError) as info:
        run_sync(faults_pg, hook, new_run("http-name"), SyncSettings(page_size=50))
    leaks.feed_exception(info.value)
    ok = info.value.field == "host (API base URL)" and "unencrypted" in str(info.value)
    ledger.record(FAULT_CLASS, injected=1, runs=1, survived=int(ok))
    assert ok, str(info.value)
    assert sim.stats["requests"] == 0  # refused before any request carried the JWT


@pytest.mark.parametrize("host,loopback", [
    ("localhost", True), ("LOCALHOST", True), ("127.0.0.1", True), ("127.10.20.30", True), ("::1", True),
    ("[::1]", True), ("api.localhost", False), ("localhost.example.com", False), ("10.0.0.1", False),
    ("example.com", False), ("", False),
])
def test_is_loopback_only_for_loopback_addresses_and_localhost(host, loopback):
    from icr.client import is_loopback

    assert is_loopback(host) is loopback


# --------------------------------------------------------------------------- the scanner at DEBUG


def test_scanner_reads_debug_records_of_the_call_phase(caplog):
    """The autouse scanner reads captured_log_text at teardown: it must hold this DEBUG line."""
    logging.getLogger("icr.auth").debug("probe: a DEBUG line logged by the test itself")
    assert logging.getLogger("icr.auth").isEnabledFor(logging.DEBUG)
    assert "probe: a DEBUG line logged by the test itself" in captured_log_text(caplog)
