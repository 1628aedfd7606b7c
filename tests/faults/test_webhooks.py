"""11. Webhook deliveries: forged, replayed, oversized and malformed deliveries are refused (0
accepted), the warehouse down is a 503 that ICR's retry gets through, Redis down still accepts
(the event stays pending), and a receiver killed while deliveries arrive loses none and doubles
none. The receiver runs as `python -m icr.webhooks` on loopback, with a PostgreSQL inbox."""

from __future__ import annotations

import base64
import json
import signal
import socket
import threading
import time
import uuid

import psycopg
import pytest
import requests
import sqlalchemy as sa

from icr.warehouse.engine import Warehouse
from icr.webhooks.signature import HEADER, sign
from tests.conftest import _libpq
from tests.faults.conftest import dump_warehouse
from tests.simulator.webhooks import delivery, encode, payload
from tests.support.receiver import ReceiverProcess

FAULT_CLASS = "webhooks"
pytestmark = pytest.mark.faults

SECRET = "whsec-faults-" + uuid.uuid4().hex
LIMIT = 64 * 1024
DEAD_REDIS = "redis://127.0.0.1:1/0"


def inst(inst_id: str | None = None) -> dict:
    inst_id = inst_id or str(uuid.uuid4())
    return {"id": inst_id, "appId": "d23967cc-dd16-452b-8af4-869965745978", "appNameId": "x",
            "createdAt": "2024-03-26T08:47:15.356Z", "updatedAt": "2024-03-26T08:47:15.356Z",
            "permissions": {"organization_info": "VIEW"},
            "organization": {"id": str(uuid.uuid4()), "type": "other", "fullName": "Org"}}


def inbox_rows(url: str) -> list[tuple]:
    with psycopg.connect(_libpq(url)) as conn:
        return conn.execute("SELECT delivery_id, event, status FROM icr_webhook_inbox ORDER BY seq").fetchall()


@pytest.fixture(scope="module")
def module_db(pg_admin_url):
    name = f"icr_test_webhooks_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_libpq(pg_admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield pg_admin_url.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(_libpq(pg_admin_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def module_receiver(module_db):
    """One receiver process for the module (starting one costs seconds: it imports Airflow)."""
    rx = ReceiverProcess(secret=SECRET, warehouse_url=module_db, redis_url=DEAD_REDIS,
                         args=["--max-body-bytes", str(LIMIT)])
    rx.start()
    yield rx
    rx.stop()


@pytest.fixture
def receiver(module_receiver, module_db, leaks):
    """The module's receiver, its inbox emptied; its output and warehouse scanned for secrets after."""
    leaks.secret(SECRET, "webhook secret")
    with psycopg.connect(_libpq(module_db), autocommit=True) as conn:
        conn.execute("DELETE FROM icr_webhook_inbox")
    yield module_receiver
    leaks.feed("receiver output", module_receiver.output())
    wh = Warehouse.from_url(module_db)
    try:
        dump_warehouse(wh, leaks)
    finally:
        wh.dispose()


def signed_body(doc: dict) -> tuple[bytes, dict]:
    return encode(doc, SECRET)


def forged(leaks) -> list[tuple[str, bytes, dict]]:
    out = []
    good_body, good_headers = delivery("installed", inst(), SECRET)
    no_header = {k: v for k, v in good_headers.items() if k != HEADER}
    out.append(("no signature header", good_body, no_header))
    out.append(("signed with another secret", *delivery("installed", inst(), "not-" + SECRET)))
    out.append(("unsigned", *delivery("installed", inst(), None)))
    doc = payload("installed", inst())
    other = payload("installed", inst())
    out.append(("signature of another delivery", json.dumps(doc).encode(),
                dict(no_header, **{HEADER: sign(SECRET, other["signedData"])})))
    sig = sign(SECRET, doc["signedData"])
    out.append(("signature without sha256= prefix", json.dumps(doc).encode(), dict(no_header, **{HEADER: sig[7:]})))
    out.append(("signature truncated", json.dumps(doc).encode(), dict(no_header, **{HEADER: sig[:-2]})))
    out.append(("signature in upper case", json.dumps(doc).encode(), dict(no_header, **{HEADER: "sha256=" + sig[7:].upper()})))
    out.append(("sha1 signature", json.dumps(doc).encode(), dict(no_header, **{HEADER: "sha1=" + sig[7:47]})))
    # a correctly signed signedData, with the body changed beside it: uninstall someone else
    tampered = dict(doc, event="uninstalled")
    out.append(("body changed beside a signed signedData", *signed_body(tampered)))
    # a signedData re-encoded by the attacker with a signature it cannot make
    evil = {"event": "uninstalled", "installation": inst()}
    evil["signedData"] = base64.b64encode(json.dumps(evil).encode()).decode()
    out.append(("attacker's own signedData", json.dumps(evil).encode(),
                dict(no_header, **{HEADER: sign("guess", evil["signedData"])})))
    for _, _, headers in out:
        if headers.get(HEADER):
            leaks.secret(headers[HEADER], "webhook signature")
    return out


def malformed() -> list[tuple[str, bytes, dict]]:
    def with_sig(body: bytes, signed_data: str = "eA==") -> dict:
        return {"Content-Type": "application/json", HEADER: sign(SECRET, signed_data)}

    out = [
        ("not JSON", b"{event: installed", with_sig(b"")),
        ("empty body", b"", with_sig(b"")),
        ("JSON array", b"[1,2,3]", with_sig(b"")),
        ("not UTF-8", b'{"event": "\xff\xfe"}', with_sig(b"")),
        ("JSON nested 20,000 deep", b"[" * 20_000 + b"]" * 20_000, with_sig(b"")),
        ("no signedData", json.dumps({"event": "installed", "installation": inst()}).encode(), with_sig(b"")),
    ]
    for name, signed_data in (("signedData not base64", "%%% not base64 %%%"),
                              ("signedData base64 of garbage", base64.b64encode(b"\x00garbage").decode()),
                              ("signedData base64 of a JSON string", base64.b64encode(b'"text"').decode())):
        doc = {"event": "installed", "installation": inst(), "signedData": signed_data}
        out.append((name, json.dumps(doc).encode(), with_sig(b"", signed_data)))
    doc = payload("installed", inst())
    doc["installation"] = dict(doc["installation"], permissions={"organization_info": "WRITE"})
    out.append(("installation differs from signedData", *signed_body(doc)))
    doc = payload("installed", inst())
    doc["extra"] = "added after signing"
    out.append(("key added after signing", *signed_body(doc)))
    inner = {"event": 42, "installation": inst()}
    sd = base64.b64encode(json.dumps(inner).encode()).decode()
    out.append(("event not a string", json.dumps(dict(inner, signedData=sd)).encode(), with_sig(b"", sd)))
    return out


def test_forged_replayed_oversized_and_malformed_deliveries_are_never_accepted(receiver, module_db, leaks, ledger):
    start = len(receiver.output())
    legit = [delivery("installed", inst(), SECRET) for _ in range(3)]
    for body, headers in legit:
        leaks.secret(headers[HEADER], "webhook signature")
        assert receiver.post(body, headers).status_code == 202
    baseline = inbox_rows(module_db)
    assert len(baseline) == 3

    answers = {}
    for name, body, headers in forged(leaks):
        answers[name] = receiver.post(body, headers).status_code
    for name, body, headers in malformed():
        answers[name] = receiver.post(body, headers).status_code
    big = json.dumps(payload("installed", dict(inst(), padding="x" * LIMIT))).encode()
    answers["over the limit (Content-Length)"] = receiver.post(big, {HEADER: "sha256=" + "0" * 64}).status_code
    answers["over the limit (chunked, no Content-Length)"] = _chunked_status(receiver.port, LIMIT * 4)
    # replays: the same delivery again, one by one and 10 at once
    replays = []
    for body, headers in legit:
        replays.append(receiver.post(body, headers).status_code)
    threads = [threading.Thread(target=lambda: replays.append(receiver.post(*legit[0]).status_code))
               for _ in range(10)]
    [t.start() for t in threads]
    [t.join() for t in threads]

    expected_status = {name: 403 for name, _, _ in forged(leaks)}
    expected_status["body changed beside a signed signedData"] = 400
    expected_status.update({name: 400 for name, _, _ in malformed()})
    expected_status["over the limit (Content-Length)"] = 413
    expected_status["over the limit (chunked, no Content-Length)"] = 413
    accepted_bad = {n: s for n, s in answers.items() if s == 202}
    ledger.record(FAULT_CLASS, injected=len(answers) + len(replays), runs=len(answers) + len(replays),
                  survived=sum(1 for n, s in answers.items() if s == expected_status[n]) + replays.count(202),
                  rows_lost=len(inbox_rows(module_db)) - len(baseline))
    assert not accepted_bad, f"accepted: {accepted_bad}"
    assert answers == expected_status
    assert replays == [202] * 13  # idempotent: a replay is acknowledged...
    assert inbox_rows(module_db) == baseline  # ...and never written twice; nothing bad got in
    out = receiver.output()[start:]
    for name in ("no x-icr-signature-256 header", "does not match signedData", "not valid JSON",
                 "over the limit", "signedData does not match the body", "is a replay"):
        assert name in out, f"no log line says {name!r}"
    assert out.count("Refused ICR webhook delivery") == len(answers)


def _chunked_status(port: int, total: int) -> int:
    """POST a chunked body of ``total`` bytes; the answer must come before the body ends."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(("POST /webhooks/icr HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                 f"{HEADER}: sha256={'0' * 64}\r\nContent-Type: application/json\r\n\r\n").encode())
    chunk = b"2000\r\n" + b" " * 0x2000 + b"\r\n"
    sent = 0
    try:
        while sent < total:
            sock.sendall(chunk)
            sent += 0x2000
        sock.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # the server answered and closed while we were still sending: fine
    data = sock.recv(200)
    sock.close()
    return int(data.split(b" ", 2)[1])


def test_warehouse_down_is_503_and_the_retry_gets_through(pg_admin_url, leaks, ledger):
    name = f"icr_test_wh_down_{uuid.uuid4().hex[:8]}"
    url = pg_admin_url.rsplit("/", 1)[0] + "/" + name  # does not exist yet: the warehouse is "down"
    leaks.secret(SECRET, "webhook secret")
    body, headers = delivery("uninstalled", inst(), SECRET)
    leaks.secret(headers[HEADER], "webhook signature")
    with ReceiverProcess(secret=SECRET, warehouse_url=url, redis_url=DEAD_REDIS) as rx:
        first = rx.post(body, headers)
        assert first.status_code == 503 and first.headers["Retry-After"] == "30"
        with psycopg.connect(_libpq(pg_admin_url), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            retried = rx.post(body, headers)  # what ICR does after a 5xx
            assert retried.status_code == 202
            assert [r[1:] for r in inbox_rows(url)] == [("uninstalled", "pending")]
        finally:
            rx.stop()
            leaks.feed("receiver output", rx.output())
            with psycopg.connect(_libpq(pg_admin_url), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    assert "Could not write ICR webhook delivery" in rx.output() and "answered 503" in rx.output()
    # both ended as designed: the 503 failed cleanly, the retry got in
    ledger.record(FAULT_CLASS, injected=1, runs=2, survived=2, rows_lost=0)


def test_redis_down_still_accepts_and_the_event_stays_pending(receiver, module_db, ledger):
    sent = [delivery(ev, inst(), SECRET) for ev in ("installed", "suspended", "unsuspended")]
    assert [receiver.post(b, h).status_code for b, h in sent] == [202, 202, 202]
    assert [r[1:] for r in inbox_rows(module_db)] == [("installed", "pending"), ("suspended", "pending"),
                                                        ("unsuspended", "pending")]
    deadline = time.monotonic() + 10
    while "stay pending in the inbox" not in receiver.output() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "stay pending in the inbox" in receiver.output()  # said once per 30 s, not per delivery
    ledger.record(FAULT_CLASS, injected=3, runs=3, survived=3, rows_lost=0)


def test_receiver_killed_while_deliveries_arrive_loses_and_doubles_nothing(pg_database, leaks, ledger):
    """A sender that retries like ICR (until 202) while the receiver is SIGKILLed and restarted:
    every delivery ends in the inbox exactly once."""
    leaks.secret(SECRET, "webhook secret")
    deliveries = [delivery("installed", inst(), SECRET) for _ in range(120)]
    rx = ReceiverProcess(secret=SECRET, warehouse_url=pg_database, redis_url=DEAD_REDIS).start()
    retries = [0]
    stop = threading.Event()
    under_way = threading.Event()  # a third of the deliveries are in: kill the receiver now

    def send_all():
        for n, (body, headers) in enumerate(deliveries):
            if n == len(deliveries) // 3:
                under_way.set()
            while not stop.is_set():
                try:
                    if requests.post(rx.url, data=body, headers=headers, timeout=5).status_code == 202:
                        break
                except requests.RequestException:
                    pass
                retries[0] += 1
                time.sleep(0.05)

    sender = threading.Thread(target=send_all)
    sender.start()
    try:
        assert under_way.wait(60), "the sender did not get a third of the deliveries in"
        rx.stop(signal.SIGKILL)
        leaks.feed("receiver output", rx.output())
        time.sleep(0.5)
        rx.start()
        sender.join(120)
    finally:
        stop.set()
        rx.stop()
        leaks.feed("receiver output", rx.output())
    rows = inbox_rows(pg_database)
    ids = [r[0] for r in rows]
    expected = {__import__("hashlib").sha256(json.loads(b)["signedData"].encode()).hexdigest() for b, _ in deliveries}
    ledger.record(FAULT_CLASS, injected=1, runs=len(deliveries), survived=len(set(ids) & expected),
                  rows_lost=len(expected - set(ids)) + (len(ids) - len(set(ids))))
    assert not sender.is_alive()
    assert retries[0] > 0, "the kill did not hit a delivery in flight"
    assert len(ids) == len(set(ids)) == len(deliveries) and set(ids) == expected
