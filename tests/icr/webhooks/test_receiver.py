import gc
import json
import logging
import threading
import time

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from icr.warehouse.engine import Warehouse
from icr.webhooks import inbox
from icr.webhooks.notify import RedisPublisher, redis_url
from icr.webhooks.receiver import create_app
from icr.webhooks.secret import SecretSource, SecretUnavailable, connection_password
from icr.webhooks.settings import ReceiverSettings
from icr.webhooks.signature import HEADER, sign
from tests.icr.webhooks.helpers import SECRET, installation, signed
from tests.support.logs import captured_log_text

PATH = "/webhooks/icr"


def client_for(warehouse, publisher=None, secret=SECRET, freeze_heap=False, **settings):
    app = create_app(ReceiverSettings(**settings), warehouse=warehouse,
                     secret=SecretSource.fixed(secret) if isinstance(secret, str) else secret,
                     publisher=publisher or False, freeze_heap=freeze_heap)
    return TestClient(app)


def rows(wh):
    with wh.read() as conn:
        return conn.execute(sa.text("SELECT delivery_id, event, status FROM icr_webhook_inbox ORDER BY seq")).all()


def test_a_signed_delivery_is_stored_then_answered_202_then_notified(warehouse, publisher):
    body, headers = signed("installed")
    with client_for(warehouse, publisher) as client:
        r = client.post(PATH, content=body, headers=headers)
    assert r.status_code == 202, r.text
    did = r.json()["delivery_id"]
    assert r.json()["status"] == "accepted"
    assert rows(warehouse) == [(did, "installed", "pending")]
    assert [d.delivery_id for d in publisher.published] == [did]
    assert publisher.closed  # lifespan shut it down


def test_a_replay_is_202_and_written_once_and_not_notified_again(sqlite_warehouse, publisher):
    body, headers = signed("installed")
    with client_for(sqlite_warehouse, publisher) as client:
        first = client.post(PATH, content=body, headers=headers)
        again = client.post(PATH, content=body, headers=headers)
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json() == {"delivery_id": first.json()["delivery_id"], "status": "duplicate"}
    assert len(rows(sqlite_warehouse)) == 1 and len(publisher.published) == 1


@pytest.mark.parametrize("case", ["missing", "forged", "other secret"])
def test_bad_signatures_are_403_and_not_stored(sqlite_warehouse, publisher, case, caplog):
    body, headers = signed("installed")
    good = headers.pop(HEADER)
    forged = {"missing": None, "forged": "sha256=" + "ab" * 32,
              "other secret": sign("not-the-secret", json.loads(body)["signedData"])}[case]
    if forged:
        headers[HEADER] = forged
    caplog.set_level(logging.INFO)
    with client_for(sqlite_warehouse, publisher) as client:
        r = client.post(PATH, content=body, headers=headers)
    assert r.status_code == 403
    assert not _has_inbox(sqlite_warehouse) or rows(sqlite_warehouse) == []
    assert publisher.published == []
    text = captured_log_text(caplog)
    assert "Refused ICR webhook delivery" in text and "answered 403" in text
    for secret_ish in (SECRET, good, good[7:], forged or "x" * 70):
        assert secret_ish not in text


def _has_inbox(wh):
    return "icr_webhook_inbox" in sa.inspect(wh.engine).get_table_names()


def test_over_the_limit_by_content_length_is_413(sqlite_warehouse):
    body, headers = signed("installed")
    with client_for(sqlite_warehouse, max_body_bytes=1024) as client:
        r = client.post(PATH, content=body + b" " * 2048, headers=headers)
    assert r.status_code == 413 and "over the limit of 1024 bytes" in r.json()["error"]


def test_over_the_limit_while_streaming_is_refused_before_the_end():
    """No Content-Length (chunked): read_body stops pulling chunks once past the limit."""
    import asyncio

    from starlette.requests import Request

    from icr.webhooks.delivery import DeliveryRefused
    from icr.webhooks.receiver import read_body

    pulled = []

    async def receive():
        pulled.append(1)
        return {"type": "http.request", "body": b" " * 512, "more_body": len(pulled) < 10_000}

    request = Request({"type": "http", "method": "POST", "headers": []}, receive)
    with pytest.raises(DeliveryRefused) as info:
        asyncio.run(read_body(request, 4096))
    assert info.value.status == 413
    assert len(pulled) == 9  # 9 × 512 > 4096: refused at the first chunk past the limit


def test_malformed_json_is_400(sqlite_warehouse):
    with client_for(sqlite_warehouse) as client:
        r = client.post(PATH, content=b"{nope", headers={HEADER: "sha256=" + "0" * 64})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]


def test_warehouse_down_is_503_with_retry_after(tmp_path, caplog):
    down = Warehouse.from_url("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=2")
    body, headers = signed("installed")
    with client_for(down) as client:
        r = client.post(PATH, content=body, headers=headers)
    assert r.status_code == 503 and r.headers["retry-after"] == "30"
    assert "Could not write ICR webhook delivery" in captured_log_text(caplog)
    assert body.decode()[:40] not in captured_log_text(caplog)  # no payload echo


def test_no_secret_configured_is_503(sqlite_warehouse, caplog):
    def missing():
        raise SecretUnavailable("Airflow connection 'icr_webhook' not found")

    body, headers = signed("installed")
    with client_for(sqlite_warehouse, secret=SecretSource(missing)) as client:
        r = client.post(PATH, content=body, headers=headers)
    assert r.status_code == 503
    assert "'icr_webhook' not found" in captured_log_text(caplog)


def test_the_heap_is_frozen_out_of_garbage_collection_after_the_warm_up(sqlite_warehouse):
    made_in_warm_up = []

    def lookup():
        made_in_warm_up.append(["an object the warm-up made"])
        return SECRET

    gc.unfreeze()
    try:
        with client_for(sqlite_warehouse, secret=SecretSource(lookup), freeze_heap=True) as client:
            assert made_in_warm_up and gc.get_freeze_count() > 0
            assert not any(o is made_in_warm_up[0] for o in gc.get_objects())  # frozen after the warm-up
            body, headers = signed("installed")
            assert client.post(PATH, content=body, headers=headers).status_code == 202
    finally:
        gc.unfreeze()


def test_without_freeze_heap_nothing_is_frozen(sqlite_warehouse):
    gc.unfreeze()
    with client_for(sqlite_warehouse) as client:
        assert client.get("/healthz").status_code == 200
        assert gc.get_freeze_count() == 0


def test_health(sqlite_warehouse):
    with client_for(sqlite_warehouse) as client:
        assert client.get("/healthz").json() == {"status": "ok"}


def test_the_secret_comes_from_the_airflow_connection(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_ICR_WEBHOOK_T", json.dumps({"conn_type": "generic", "password": SECRET}))
    assert connection_password("icr_webhook_t") == SECRET
    monkeypatch.setenv("AIRFLOW_CONN_ICR_WEBHOOK_EMPTY", json.dumps({"conn_type": "generic"}))
    with pytest.raises(SecretUnavailable, match="has no password"):
        connection_password("icr_webhook_empty")
    with pytest.raises(SecretUnavailable, match="not found") as info:
        connection_password("icr_webhook_nowhere")
    assert "AIRFLOW_CONN_ICR_WEBHOOK_NOWHERE" in str(info.value)


def test_the_secret_is_cached_and_a_failed_refresh_keeps_the_last_one():
    import asyncio

    calls = []

    def lookup():
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("metadata database down")
        return "first"

    source = SecretSource(lookup, ttl_s=0.0)
    assert asyncio.run(source.get()) == "first"
    assert asyncio.run(source.get()) == "first"
    assert len(calls) == 2


def test_redis_url_from_the_airflow_connection(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_REDIS_T", json.dumps(
        {"conn_type": "redis", "host": "redis", "port": 6380, "password": "p@ss", "extra": {"db": 3}}))
    assert redis_url("redis_t") == "redis://:p%40ss@redis:6380/3"


def test_a_real_redis_gets_the_notification(sqlite_warehouse, redis_url):
    import redis

    channel = f"icr.test.{time.time_ns()}"
    sub = redis.Redis.from_url(redis_url).pubsub()
    sub.subscribe(channel)
    assert sub.get_message(timeout=5)["type"] == "subscribe"
    body, headers = signed("uninstalled")
    with client_for(sqlite_warehouse, RedisPublisher.from_url(redis_url, channel)) as client:
        r = client.post(PATH, content=body, headers=headers)
    assert r.status_code == 202
    msg = sub.get_message(timeout=5)
    sub.close()
    assert msg and json.loads(msg["data"]) == {"delivery_id": r.json()["delivery_id"], "event": "uninstalled"}


def test_redis_down_still_202_and_the_event_stays_pending(sqlite_warehouse, caplog):
    body, headers = signed("installed")
    dead = RedisPublisher.from_url("redis://127.0.0.1:1/0", "icr.installation_events", timeout_s=1)
    with client_for(sqlite_warehouse, dead) as client:
        r = client.post(PATH, content=body, headers=headers)
    assert r.status_code == 202
    assert [e.delivery_id for e in inbox.pending(sqlite_warehouse)] == [r.json()["delivery_id"]]
    assert "stay pending in the inbox" in captured_log_text(caplog)


def test_concurrent_identical_deliveries_are_written_once(warehouse):
    body, headers = signed("installed", installation())
    results = []
    with client_for(warehouse) as client:
        warm_body, warm_headers = signed("installed")
        assert client.post(PATH, content=warm_body, headers=warm_headers).status_code == 202  # schema ready

        def post():
            results.append(client.post(PATH, content=body, headers=headers).status_code)

        threads = [threading.Thread(target=post) for _ in range(8)]
        [t.start() for t in threads]
        [t.join() for t in threads]
    assert results == [202] * 8
    assert len(rows(warehouse)) == 2
