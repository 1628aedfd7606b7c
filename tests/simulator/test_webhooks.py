"""The simulator's webhooks: every change becomes a signed ICR-shaped delivery; faults on demand."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from icr.webhooks.delivery import DeliveryRefused, parse_delivery
from icr.webhooks.signature import HEADER, sign

from .webhooks import WebhookFaults

SECRET = "sim-webhook-secret-42"


class Collector:
    """A loopback endpoint that records each POST; ``answers`` (a list of statuses) are used first."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, dict]] = []
        self.answers: list[int] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = outer.answers.pop(0) if outer.answers else 202
                if status < 500:
                    outer.received.append((body, {k.lower(): v for k, v in self.headers.items()}))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[tuple[str, str]]:
        return [(json.loads(b)["event"], json.loads(b)["installation"]["id"]) for b, _ in self.received]

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def collector():
    c = Collector()
    yield c
    c.close()


def test_every_change_is_a_signed_icr_shaped_delivery_in_order(make_simulator, collector):
    sim = make_simulator(installations=20, seed=3, webhook_urls=(collector.url,), webhook_secret=SECRET)
    added = sim.add_installations(2)
    removed = sim.remove_installations([added[0]])
    updated = sim.update_installations([added[1]])
    suspended = sim.suspend_installations(1)
    back = sim.unsuspend_installations(suspended)
    assert sim.webhooks.flush(10)
    assert collector.events() == [("installed", added[0]), ("installed", added[1]), ("uninstalled", removed[0]),
                                  ("newPermissionsAccepted", updated[0]), ("suspended", suspended[0]),
                                  ("unsuspended", back[0])]
    for body, headers in collector.received:
        doc = json.loads(body)
        assert set(doc) == {"event", "installation", "sender", "signedData"}
        assert set(doc["sender"]) == {"email", "fullName", "id", "profilePicture"}
        inner = json.loads(base64.b64decode(doc["signedData"]))
        assert inner == {k: v for k, v in doc.items() if k != "signedData"}
        assert headers[HEADER] == sign(SECRET, doc["signedData"])
        assert parse_delivery(body, SECRET, headers[HEADER]).event == doc["event"]  # the receiver agrees
    by_event = {json.loads(b)["event"]: json.loads(b) for b, _ in collector.received}
    assert by_event["newPermissionsAccepted"]["installation"] == sim.installation(updated[0])
    assert by_event["unsuspended"]["installation"] == sim.installation(back[0])


def test_suspended_installations_leave_the_list_and_404_until_unsuspended(make_simulator):
    sim = make_simulator(installations=10, seed=4)
    target = sim.truth_id_list()[3]
    assert sim.suspend_installations([target]) == [target]
    assert sim.suspend_installations([target]) == []  # already suspended: no new event
    assert target not in sim.truth_ids() and sim.count == 9
    r = requests.get(f"{sim.base_url}/app/installations/{target}", headers=sim.auth_headers(), timeout=5)
    assert r.status_code == 404
    listed = requests.get(f"{sim.base_url}/app/installations?limit=100&page=0", headers=sim.auth_headers(),
                          timeout=5).json()["installations"]
    assert target not in {i["id"] for i in listed}
    sim.unsuspend_installations([target])
    assert sim.truth_id_list()[3] == target and sim.count == 10
    with pytest.raises(KeyError):
        sim.unsuspend_installations([target])


def test_no_url_no_delivery_and_no_cost(make_simulator):
    sim = make_simulator(installations=5, seed=1)
    sim.apply_changes({"add": 3, "remove": 1, "update": 1})
    assert sim.webhooks.state()["deliveries"] == []


def test_faults_bad_signature_duplicate_drop(make_simulator, collector):
    sim = make_simulator(installations=5, seed=2, webhook_urls=(collector.url,), webhook_secret=SECRET)
    sim.webhooks.configure(faults={"bad_signature": 1.0})
    sim.add_installations(1)
    sim.webhooks.flush(10)
    body, headers = collector.received[-1]
    with pytest.raises(DeliveryRefused) as info:
        parse_delivery(body, SECRET, headers[HEADER])
    assert info.value.status == 403
    sim.webhooks.configure(faults={"bad_signature": 0.0, "duplicate": 1.0})
    ids = sim.add_installations(2)
    sim.webhooks.flush(10)
    assert sorted(e[1] for e in collector.events()[1:]) == sorted([ids[0], ids[0], ids[1], ids[1]])
    bodies = [b for b, _ in collector.received[1:]]
    assert len(set(bodies)) == 2  # true replays: the same bytes twice
    sim.webhooks.configure(faults={"duplicate": 0.0, "drop": 1.0})
    sim.add_installations(3)
    sim.webhooks.flush(10)
    assert len(collector.received) == 5
    assert sim.webhooks.state()["counts"]["dropped"] == 3


def test_faults_out_of_order_and_delayed(make_simulator, collector):
    sim = make_simulator(installations=5, seed=5, webhook_urls=(collector.url,), webhook_secret=SECRET)
    sim.webhooks.configure(faults={"out_of_order": 0.5, "reorder_s": 0.3})
    ids = sim.add_installations(12)
    sim.webhooks.flush(10)
    got = [e[1] for e in collector.events()]
    assert sorted(got) == sorted(ids) and got != ids  # all arrived, not in order
    sim.webhooks.configure(faults={"out_of_order": 0.0, "delay_s": 0.4})
    sim.add_installations(1)
    sim.webhooks.flush(10)
    last = sim.webhooks.state()["deliveries"][-1]
    assert "delayed" in last["faults"] and last["sent_at"] - last["emitted_at"] >= 0.4


def test_a_5xx_is_retried(make_simulator, collector):
    sim = make_simulator(installations=5, seed=6, webhook_urls=(collector.url,), webhook_secret=SECRET)
    sim.webhooks.retry_wait_s = 0.05
    collector.answers = [503, 503]
    sim.add_installations(1)
    sim.webhooks.flush(10)
    assert len(collector.received) == 1
    assert sim.webhooks.state()["deliveries"][-1]["attempts"] == 3


def test_admin_api_configures_webhooks_without_echoing_the_secret(make_simulator, collector):
    sim = make_simulator(installations=5, seed=8)
    base = sim.base_url
    state = requests.post(base + "/_sim/webhooks", json={"urls": [collector.url], "secret": SECRET,
                                                          "faults": {"delay_s": 0}}, timeout=5).json()
    assert state["urls"] == [collector.url] and state["signed"] is True and SECRET not in json.dumps(state)
    r = requests.post(base + "/_sim/changes", json={"suspend": 1}, timeout=5).json()
    target = r["suspended"][0]
    requests.post(base + "/_sim/changes", json={"unsuspend": [target]}, timeout=5).raise_for_status()
    tx = {"id": "tx-1", "status": "processed", "type": "retire", "amount": 5, "creditId": "c-1"}
    requests.post(base + "/_sim/webhooks/emit", json={"event": "warehouseTransaction", "installation_id": target,
                                                       "transaction": tx}, timeout=5).raise_for_status()
    sim.webhooks.flush(10)
    assert collector.events() == [("suspended", target), ("unsuspended", target), ("warehouseTransaction", target)]
    assert json.loads(collector.received[-1][0])["transaction"] == tx
    state = requests.get(base + "/_sim/webhooks", timeout=5).json()
    assert [d["status"] for d in state["deliveries"]] == [202, 202, 202] and SECRET not in json.dumps(state)
    assert requests.post(base + "/_sim/webhooks", json={"urls": ["ftp://x"]}, timeout=5).status_code == 400
    assert requests.post(base + "/_sim/webhooks", json={"faults": {"drop": 2}}, timeout=5).status_code == 400


def test_fault_values_are_checked():
    with pytest.raises(ValueError, match="duplicate"):
        WebhookFaults(duplicate=1.5)
