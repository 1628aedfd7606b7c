"""ICRClient against the ICR simulator over loopback HTTP (plus a stub server and unit checks)."""

from __future__ import annotations

import json
import email.utils
import logging
import threading
import time

import pytest
import requests

from icr.auth import AppJWT
from icr.client import (
    DEFAULT_BASE_URL,
    ClientStats,
    ICRClient,
    RateGate,
    api_message,
    is_loopback,
    normalize_base_url,
    parse_retry_after,
)
from icr.errors import ICRAPIError, ICRConfigError

from tests.support.secrets import assert_no_secrets

from .conftest import APP_ID, Reply, needs_simulator


@pytest.fixture
def sim_client(simulator, make_client):
    """(simulator, client) with the simulator's app and key; tiny backoff."""
    from icr.auth import load_private_key

    auth = AppJWT(simulator.app_id, load_private_key(simulator.private_key_pem))
    return simulator, make_client(simulator.base_url, auth)


# --------------------------------------------------------------------------- base URL


def test_base_url_rules():
    assert normalize_base_url(None) == DEFAULT_BASE_URL == "https://api.carbonregistry.com"
    assert normalize_base_url("  ") == DEFAULT_BASE_URL
    assert normalize_base_url("https://sandbox-api.carbonregistry.com/") == "https://sandbox-api.carbonregistry.com"
    for ok in ("http://127.0.0.1:8765", "http://127.9.9.9", "http://localhost:1", "http://[::1]:8080"):
        assert normalize_base_url(ok) == ok
    with pytest.raises(ICRConfigError) as ei:
        normalize_base_url("api.carbonregistry.com")
    assert ei.value.field == "host (API base URL)" and "scheme" in str(ei.value)
    with pytest.raises(ICRConfigError, match="unencrypted") as ei:
        normalize_base_url("http://api.carbonregistry.com")
    assert ei.value.field == "host (API base URL)"
    assert normalize_base_url("http://10.0.0.5:80", allow_insecure_http=True) == "http://10.0.0.5:80"
    with pytest.raises(ICRConfigError, match="credentials"):
        normalize_base_url("https://user:pw@api.carbonregistry.com")
    assert is_loopback("::1") and is_loopback("LOCALHOST") and not is_loopback("128.0.0.1")


def test_client_rejects_scheme_less_url(app_jwt):
    with pytest.raises(ICRConfigError, match=r"host \(API base URL\)"):
        ICRClient("127.0.0.1:8765", app_jwt)


def test_repr_has_no_secrets(app_jwt):
    c = ICRClient("http://127.0.0.1:1", app_jwt)
    token = app_jwt.token()
    assert token not in repr(c) and APP_ID in repr(c)


# --------------------------------------------------------------------------- headers (stub server)


def test_headers_on_every_request(stub_server, make_client):
    srv = stub_server(lambda seen: Reply(200, {"ok": True}))
    c = make_client(srv.base_url, api_version="2023-06-16")
    assert c.get_json("/app/installations", params={"limit": 1, "page": 0}) == {"ok": True}
    assert c.get_installation("abc") == {"ok": True}
    assert len(srv.requests) == 2
    for r in srv.requests:
        assert r.headers["authorization"] == f"Bearer {c.auth.token()}"
        assert r.headers["x-icr-api-version"] == "2023-06-16"
        assert r.headers["accept"] == "application/json"
        assert r.headers["user-agent"].startswith("icr-installations-sync/")
    assert srv.requests[0].query == {"limit": "1", "page": "0"}


# --------------------------------------------------------------------------- happy path


@needs_simulator
def test_list_and_get(sim_client):
    sim, c = sim_client
    body = c.get_json("/app/installations", params={"limit": 5, "page": 0})
    assert body["pagination"]["total"] == 1000 and len(body["installations"]) == 5
    one = c.get_installation(body["installations"][0]["id"])
    assert one["id"] == body["installations"][0]["id"]
    assert c.stats.requests == 2 and c.stats.retries == 0 and c.stats.tokens_minted == 1


# --------------------------------------------------------------------------- non-retryable errors


@needs_simulator
def test_404_fails_at_once_with_icr_message(sim_client):
    sim, c = sim_client
    with pytest.raises(ICRAPIError) as ei:
        c.get_installation("00000000-0000-4000-8000-000000000000")
    e = ei.value
    assert e.status == 404 and e.attempts == 1 and e.method == "GET"
    assert "Installation not found" in str(e)
    assert "/app/installations/00000000-0000-4000-8000-000000000000" in str(e)
    assert sim.stats["requests"] == 1
    assert_no_secrets(str(e), tokens=[c.auth.token()])


@needs_simulator
def test_unknown_api_version_fails_at_once_naming_the_field(simulator, make_client):
    from icr.auth import load_private_key
    from icr.errors import ICRConfigError

    auth = AppJWT(simulator.app_id, load_private_key(simulator.private_key_pem))
    c = make_client(simulator.base_url, auth, api_version="1999-01-01")
    with pytest.raises(ICRConfigError) as ei:
        c.get_json("/app/installations", params={"limit": 10, "page": 0})
    assert ei.value.field == "extra.api_version"
    assert "Unsupported API version" in str(ei.value) and "'1999-01-01'" in str(ei.value)
    assert "?limit=10&page=0" in str(ei.value)
    assert simulator.stats["requests"] == 1


@needs_simulator
def test_400_list_message_from_nestjs(sim_client):
    sim, c = sim_client
    with pytest.raises(ICRAPIError) as ei:
        c.get_json("/app/installations", params={"limit": 100000, "page": 0})
    assert ei.value.status == 400 and "limit must not be greater than" in ei.value.api_message


# --------------------------------------------------------------------------- retries


RETRY_KINDS = [
    ("429_seconds", "429"),
    ("429_zero", "429"),
    ("429_none", "429"),
    ("500", "500"),
    ("502", "502"),
    ("503", "503"),
    ("504", "504"),
    ("reset", "reset"),
    ("truncated_json", "bad_json"),
    ("invalid_json", "bad_json"),
]


@needs_simulator
@pytest.mark.parametrize("kind,reason", RETRY_KINDS)
def test_transient_faults_are_retried(sim_client, kind, reason, caplog):
    sim, c = sim_client
    sim.faults.retry_after_seconds = 0.05
    sim.fail_next(kind, 2)
    with caplog.at_level(logging.WARNING, logger="icr.client"):
        body = c.get_json("/app/installations", params={"limit": 3, "page": 0})
    assert len(body["installations"]) == 3
    assert c.stats.retries == 2 and c.stats.retries_by_reason == {reason: 2}
    assert c.stats.requests == 3
    assert sum(sim.stats["faults_injected"].values()) == 2
    assert caplog.text.count("retrying in") == 2 and reason in caplog.text
    assert_no_secrets(caplog.text, secrets=[sim.private_key_pem], tokens=[c.auth.token()])


@needs_simulator
@pytest.mark.parametrize("kind,reason", [("429_http_date", "429"), ("403_rate_limit", "403-ratelimit")])
def test_rate_limit_waits_until_the_server_says(sim_client, kind, reason):
    sim, c = sim_client
    sim.faults.retry_after_seconds = 0.2
    sim.fail_next(kind, 1)
    t0 = time.monotonic()
    c.get_json("/app/installations", params={"limit": 1, "page": 0})
    elapsed = time.monotonic() - t0
    assert c.stats.retries_by_reason == {reason: 1}
    # the date/epoch header has 1 s resolution; it always points at least ~0.2 s ahead
    assert 0.05 <= c.stats.wait_seconds <= 2.5 and elapsed >= 0.05


@needs_simulator
def test_retry_after_seconds_is_honoured_and_zero_is_no_hint(sim_client):
    sim, c = sim_client
    sim.faults.retry_after_seconds = 0.3
    sim.fail_next("429_seconds", 1)
    c.get_json("/app/installations", params={"limit": 1, "page": 0})
    assert c.stats.wait_seconds == pytest.approx(0.3, abs=0.01)
    before = c.stats.wait_seconds
    sim.fail_next("429_zero", 1)
    c.get_json("/app/installations", params={"limit": 1, "page": 0})
    assert c.stats.wait_seconds - before < 0.05  # fell back to (tiny) backoff, not 0 or a big wait


@needs_simulator
def test_read_timeout_is_retried(sim_client):
    sim, c = sim_client
    c.timeout = 0.3
    sim.faults.slow_seconds = 1.0
    sim.fail_next("slow", 1)
    body = c.get_json("/app/installations", params={"limit": 2, "page": 0})
    assert len(body["installations"]) == 2
    assert c.stats.retries_by_reason == {"timeout": 1}


def test_connect_error_is_retried_then_fails():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens here now
    from .conftest import make_keys

    c = ICRClient(f"http://127.0.0.1:{port}", AppJWT(APP_ID, make_keys().key), max_retries=3, backoff_base_s=0.001)
    with pytest.raises(ICRAPIError) as ei:
        c.get_json("/app/installations")
    assert ei.value.status is None and ei.value.attempts == 3
    assert "no response" in str(ei.value)
    assert c.stats.retries_by_reason == {"reset": 2}


@needs_simulator
def test_bounded_attempts(sim_client, caplog):
    sim, c = sim_client
    c.max_retries = 3
    sim.fail_next("503", 10)
    with pytest.raises(ICRAPIError) as ei:
        c.get_json("/app/installations", params={"limit": 1, "page": 0})
    e = ei.value
    assert e.status == 503 and e.attempts == 3
    assert "GET /app/installations?limit=1&page=0" in str(e)
    assert "Service Unavailable" in str(e) and "after 3 attempts" in str(e)
    assert sim.stats["requests"] == 3
    assert_no_secrets(str(e) + repr(e) + caplog.text, secrets=[sim.private_key_pem], tokens=[c.auth.token()])


@needs_simulator
def test_bounded_total_wait(sim_client):
    sim, c = sim_client
    c.max_retries = 50
    c.max_retry_wait_s = 0.5
    sim.faults.retry_after_seconds = 0.2
    sim.fail_next("429_seconds", 50)
    t0 = time.monotonic()
    with pytest.raises(ICRAPIError) as ei:
        c.get_json("/app/installations", params={"limit": 1, "page": 0})
    assert time.monotonic() - t0 < 2
    e = ei.value
    assert e.status == 429 and e.attempts == 3  # waits 0.2 + 0.2, a third 0.2 would exceed 0.5
    assert "max_retry_wait" in str(e) and "Too Many Requests" in str(e)


@needs_simulator
def test_retry_after_beyond_budget_gives_up_at_once(sim_client):
    sim, c = sim_client
    c.max_retry_wait_s = 1.0
    sim.faults.retry_after_seconds = 30
    sim.fail_next("429_seconds", 1)
    t0 = time.monotonic()
    with pytest.raises(ICRAPIError, match="would exceed max_retry_wait"):
        c.get_json("/app/installations")
    assert time.monotonic() - t0 < 1


# --------------------------------------------------------------------------- 401


@needs_simulator
def test_401_remints_once_and_succeeds(simulator, make_client):
    from icr.auth import load_private_key

    calls = {"n": 0}

    def clock() -> float:  # the first token is minted 1000 s in the past: expired on arrival
        calls["n"] += 1
        return time.time() - (1000 if calls["n"] == 1 else 0)

    auth = AppJWT(simulator.app_id, load_private_key(simulator.private_key_pem), clock=clock)
    c = make_client(simulator.base_url, auth)
    body = c.get_json("/app/installations", params={"limit": 1, "page": 0})
    assert body["installations"]
    assert auth.minted == 2 and c.stats.tokens_minted == 2
    assert c.stats.retries_by_reason == {"401": 1}
    assert simulator.stats["rejections"] == {"JWT expired": 1}


@needs_simulator
def test_second_401_fails(sim_client, caplog):
    sim, c = sim_client
    sim.faults.clock_offset_s = -1000  # server clock far behind: every exp looks too far ahead
    with pytest.raises(ICRAPIError) as ei:
        c.get_json("/app/installations", params={"limit": 1, "page": 0})
    e = ei.value
    assert e.status == 401 and e.attempts == 2
    assert "too far in the future" in str(e)
    assert sim.stats["requests"] == 2 and c.auth.minted == 2
    assert_no_secrets(str(e) + caplog.text, secrets=[sim.private_key_pem], tokens=[c.auth.token()])


@needs_simulator
def test_revoked_key_fails_after_one_remint(sim_client):
    sim, c = sim_client
    c.get_json("/app/installations", params={"limit": 1, "page": 0})
    sim.revoke_app_key(sim.private_key_pem)
    with pytest.raises(ICRAPIError) as ei:
        c.get_json("/app/installations", params={"limit": 1, "page": 0})
    assert ei.value.status == 401 and "Invalid signature" in str(ei.value)


# --------------------------------------------------------------------------- rate gate


def test_rate_gate_unit():
    now = {"t": 100.0}
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now["t"] += s

    g = RateGate(clock=lambda: now["t"], sleep=sleep)
    assert g.wait() == 0 and not slept
    g.hold(2.0)
    g.hold(1.0)  # never shortens
    assert g.remaining() == 2.0
    assert g.wait() == 2.0 and slept == [2.0]
    assert g.remaining() == 0


@needs_simulator
def test_rate_limit_slows_every_thread(sim_client):
    sim, c = sim_client
    sim.faults.retry_after_seconds = 0.4
    sim.fail_next("429_seconds", 1)
    results: list[int] = []

    def fetch() -> None:
        results.append(len(c.get_json("/app/installations", params={"limit": 1, "page": 0})["installations"]))

    first = threading.Thread(target=fetch)
    first.start()
    deadline = time.monotonic() + 5
    while c.gate.remaining() <= 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert c.gate.remaining() > 0.1
    others = [threading.Thread(target=fetch) for _ in range(3)]
    for t in others:
        t.start()
    for t in [first, *others]:
        t.join()
    assert results == [1, 1, 1, 1]
    assert c.stats.retries_by_reason == {"429": 1}
    assert c.stats.gate_waits == 3 and c.stats.gate_wait_seconds > 0.2
    assert c.stats.wait_seconds >= 0.4 + c.stats.gate_wait_seconds - 0.01
    assert sim.stats["requests"] == 5  # nobody else hit the server while the gate was closed


@needs_simulator
def test_503_with_retry_after_holds_gate_but_plain_5xx_does_not(sim_client, stub_server, make_client):
    sim, c = sim_client
    sim.fail_next("500", 1)
    c.get_json("/app/installations", params={"limit": 1, "page": 0})
    assert c.gate.remaining() == 0
    srv = stub_server(lambda s: Reply(503, {"message": "busy"}, {"Retry-After": "1"}) if len(srv.requests) == 1 else Reply(200, {"ok": 1}))
    c2 = make_client(srv.base_url)
    c2.gate.hold  # noqa: B018 - the gate exists per client
    t = threading.Thread(target=c2.get_json, args=("/x",))
    t.start()
    time.sleep(0.3)
    assert c2.gate.remaining() > 0.3
    t.join()


# --------------------------------------------------------------------------- parsing helpers


def _response(status: int, body: bytes, ctype: str = "application/json") -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r._content = body
    r.headers["Content-Type"] = ctype
    r.encoding = "utf-8"
    r.reason = "Reason"
    return r


def test_api_message_formats():
    assert api_message(_response(400, b'{"statusCode":400,"message":["limit must be an integer number","page bad"],"error":"Bad Request"}')) == "Bad Request: limit must be an integer number; page bad"
    assert api_message(_response(401, b'{"statusCode":401,"message":"Unauthorized","error":"Unauthorized"}')) == "Unauthorized"
    assert api_message(_response(403, b'{"message":"API rate limit exceeded","documentation_url":"https://docs.github.com/x"}')) == "API rate limit exceeded (https://docs.github.com/x)"
    assert api_message(_response(502, b"<html>\n<body>  Bad   Gateway </body></html>", "text/html")) == "<html> <body> Bad Gateway </body></html>"
    long = api_message(_response(500, b"x" * 5000, "text/plain"))
    assert len(long) <= 300
    assert api_message(_response(500, b"")) == "Reason"


def test_parse_retry_after():
    now = time.time()
    assert parse_retry_after("5") == 5
    assert parse_retry_after("1.5") == 1.5
    for no_hint in (None, "", "0", "-3", "soon", "NaN", "inf"):
        assert parse_retry_after(no_hint) is None
    future = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= parse_retry_after(future, now=now) <= 31
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after(past, now=now) is None


def test_client_stats_as_dict():
    s = ClientStats()
    s.count_request()
    s.count_retry("429", 1.25)
    s.count_gate_wait(0.5)
    d = s.as_dict()
    assert d["requests"] == 1 and d["retries"] == 1 and d["retries_by_reason"] == {"429": 1}
    assert d["wait_seconds"] == 1.75 and d["gate_waits"] == 1 and d["tokens_minted"] == 0


@needs_simulator
def test_giving_up_does_not_close_the_gate(sim_client):
    sim, c = sim_client
    c.max_retry_wait_s = 1.0
    sim.faults.retry_after_seconds = 30
    sim.fail_next("429_seconds", 1)
    with pytest.raises(ICRAPIError):
        c.get_json("/app/installations")
    assert c.gate.remaining() == 0


def test_headers_with_caller_session(stub_server, make_client):
    srv = stub_server(lambda seen: Reply(200, {"ok": True}))
    c = make_client(srv.base_url, session=requests.Session(), api_version="2023-06-16")
    c.get_json("/app/installations")
    h = srv.requests[0].headers
    assert h["x-icr-api-version"] == "2023-06-16" and h["accept"] == "application/json"
    assert h["user-agent"].startswith("icr-installations-sync/")


class _FlakySession:
    """A requests.Session stand-in that raises the given exceptions, then answers 200."""

    def __init__(self, errors):
        self.errors = list(errors)
        self.calls = 0

    def request(self, method, url, **kw):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        r = requests.Response()
        r.status_code = 200
        r._content = b'{"ok": true}'
        return r

    def close(self):
        pass


def test_connect_timeout_and_chunked_errors_are_retried(app_jwt):
    session = _FlakySession([
        requests.ConnectTimeout("connect timed out"),
        requests.ReadTimeout("read timed out"),
        requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead"),
        requests.ConnectionError("Connection reset by peer"),
    ])
    c = ICRClient("http://127.0.0.1:1", app_jwt, session=session, backoff_base_s=0.001, max_retries=5)
    assert c.get_json("/app/installations") == {"ok": True}
    assert session.calls == 5
    assert c.stats.retries_by_reason == {"timeout": 2, "reset": 2}


def test_environment_proxy_and_ca_settings_are_resolved_once(monkeypatch, make_client, stub_server, tmp_path):
    """requests would re-read them on every request; the client resolves them when it starts."""
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not used: no TLS here")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    c = make_client("https://api.example.com")
    assert c._session.trust_env is False
    assert c._session.proxies.get("https") == "http://proxy.example:3128"
    assert c._session.verify == str(bundle)
    monkeypatch.setenv("NO_PROXY", "api.example.com")
    assert "https" not in make_client("https://api.example.com")._session.proxies
    # Changing the environment later does not reach a running client (resolved once) ...
    srv = stub_server(lambda seen: Reply(200, {"ok": True}))
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "")
    local = make_client(srv.base_url)
    assert local._session.proxies.get("http") == "http://127.0.0.1:9"
    monkeypatch.delenv("HTTP_PROXY")
    before = make_client(srv.base_url)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    assert before.get_json("/app/installations") == {"ok": True}  # ... so it still goes direct


# --------------------------------------------------------------------------- caps, deadline, budget (issue 19.3, 18.5)


def _socket_server(handle):
    """A local TCP server that hands each connection to ``handle`` in a thread of its own, until
    the returned socket is closed; and its URL."""
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.getsockname()[1]}"


def _raw_server(payload: bytes):
    """A one-answer-per-connection HTTP server that sends ``payload`` verbatim (no Content-Length)."""

    def handle(conn):
        with conn:
            conn.recv(65536)
            try:
                conn.sendall(payload)
            except OSError:
                pass

    return _socket_server(handle)


def test_an_answer_above_the_byte_cap_fails_at_once_naming_path_and_cap(make_client):
    body = b'{"installations": ["' + b"x" * 5000 + b'"]}'
    srv, url = _raw_server(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n" + body)
    try:
        c = make_client(url, max_response_bytes=1000)
        with pytest.raises(ICRAPIError) as ei:
            c.get_json("/app/installations", params={"limit": 1, "page": 0})
    finally:
        srv.close()
    text = str(ei.value)
    assert "/app/installations?limit=1&page=0" in text and "1,000 bytes" in text and "max_response_bytes" in text
    assert ei.value.attempts == 1 and c.stats.requests == 1


def test_an_announced_length_above_the_cap_is_refused_unread(stub_server, make_client):
    srv = stub_server(lambda s: Reply(200, {"installations": ["y" * 3000]}))
    c = make_client(srv.base_url, max_response_bytes=1000)
    with pytest.raises(ICRAPIError, match="announces 3,0[0-9][0-9] bytes"):
        c.get_json("/app/installations")


def test_an_answer_under_the_cap_is_read_whole(make_client):
    body = b'{"ok": "' + b"z" * 50_000 + b'"}'
    srv, url = _raw_server(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n" + body)
    try:
        assert make_client(url, max_response_bytes=60_000).get_json("/x") == json.loads(body)
    finally:
        srv.close()


def test_the_retry_budget_bounds_a_request_and_the_message_says_how_long(stub_server, make_client):
    srv = stub_server(lambda s: Reply(503, {"statusCode": 503, "message": "down"}))
    c = make_client(srv.base_url, max_retries=1000, max_retry_wait_s=1000, retry_budget_s=0.3,
                    backoff_base_s=0.02, backoff_max_s=0.05)
    with pytest.raises(ICRAPIError) as ei:
        c.get_json("/app/installations")
    text = str(ei.value)
    assert ei.value.status == 503 and 1 < ei.value.attempts < 1000
    assert "tried for" in text and f"in {ei.value.attempts} attempts" in text and "retry budget of 0.3s" in text


def test_backoff_waits_grow_with_equal_jitter(make_client):
    import tenacity

    c = make_client("http://127.0.0.1:1", backoff_base_s=1.0, backoff_max_s=8.0)
    for attempt, (low, high) in enumerate([(0.5, 1), (1, 2), (2, 4), (4, 8), (4, 8)], start=1):
        state = tenacity.RetryCallState(None, None, (), {})
        state.attempt_number = attempt
        for _ in range(20):
            assert low <= c._wait(state) <= high


def test_connection_defaults_let_the_budget_govern():
    from icr.defaults import DEFAULT_MAX_RETRIES, DEFAULT_RETRY_BUDGET_S

    # with equal jitter (base 0.5 s, cap 15 s) the waits alone reach the budget before the attempts run out
    floor = sum(min(15.0, 0.5 * 2 ** (n - 1)) / 2 for n in range(1, DEFAULT_MAX_RETRIES))
    assert floor > DEFAULT_RETRY_BUDGET_S


def _dribbling_server(head: bytes, body: bytes, every: float):
    """Sends ``head`` and then ``body`` one byte every ``every`` seconds, on each connection."""
    stop = threading.Event()
    stop.sent_whole = []  # one flag per connection: did the client wait for the whole answer?

    def handle(conn):
        with conn:
            conn.recv(65536)
            try:
                for i in range(len(head)):
                    if stop.wait(every):
                        return
                    conn.sendall(head[i:i + 1])
                conn.sendall(body)
                stop.sent_whole.append(True)
            except OSError:  # the client hung up mid-answer
                stop.sent_whole.append(False)

    srv, url = _socket_server(handle)
    return srv, stop, url


def test_dribbled_headers_are_cut_at_the_total_deadline(make_client):
    """Headers at 20 bytes/s: every socket read succeeds; only the total deadline ends the request."""
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Padding: " + b"p" * 400
            + b"\r\nContent-Length: 2\r\n\r\n")
    srv, stop, url = _dribbling_server(head, b"{}", 0.05)
    try:
        c = make_client(url, timeout=1.0, max_retries=1)
        with pytest.raises(ICRAPIError) as ei:
            c.get_json("/app/installations")
        for _ in range(100):  # the server notices the hang-up at its next byte
            if stop.sent_whole:
                break
            stop.wait(0.05)
    finally:
        stop.set()
        srv.close()
    assert "still arriving after 1s" in str(ei.value) and ei.value.attempts == 1
    assert stop.sent_whole == [False], "the client waited for the whole dribbled answer"


def test_connections_are_kept_alive_with_the_deadline_adapter(stub_server, make_client):
    srv = stub_server(lambda s: Reply(200, {"ok": True}))
    c = make_client(srv.base_url)
    for _ in range(5):
        assert c.get_json("/x") == {"ok": True}
    from icr.client import _WATCHDOG

    assert not _WATCHDOG._socks  # every attempt disarmed its deadline
