import base64
import json

import pytest

from icr.webhooks.delivery import DeliveryRefused, parse_delivery
from icr.webhooks.signature import HEADER, delivery_id, sign
from tests.icr.webhooks.helpers import SECRET, encode, installation, payload, signed


def refused(body: bytes, header: str | None) -> DeliveryRefused:
    with pytest.raises(DeliveryRefused) as info:
        parse_delivery(body, SECRET, header)
    return info.value


def test_a_signed_delivery_parses_to_what_the_inbox_stores():
    inst = installation()
    body, headers = signed("installed", inst)
    d = parse_delivery(body, SECRET, headers[HEADER])
    doc = json.loads(body)
    assert (d.event, d.installation_id, d.payload) == ("installed", inst["id"], body.decode())
    assert d.delivery_id == delivery_id(doc["signedData"])


def test_transaction_events_and_unknown_events_are_accepted():
    tx = {"id": "t1", "status": "processed", "type": "retire", "amount": 3, "creditId": "c"}
    body, headers = signed("warehouseTransaction", transaction=tx)
    assert parse_delivery(body, SECRET, headers[HEADER]).event == "warehouseTransaction"
    body, headers = signed("somethingNew")
    assert parse_delivery(body, SECRET, headers[HEADER]).event == "somethingNew"


def test_missing_or_wrong_signature_is_403():
    body, headers = signed()
    assert refused(body, None).status == 403
    assert refused(body, "").status == 403
    assert refused(body, sign("wrong-secret", json.loads(body)["signedData"])).status == 403
    unsigned_body, _ = signed(secret=None)
    assert refused(unsigned_body, None).status == 403


def test_the_reason_names_the_problem_but_never_the_secret_or_signature():
    body, headers = signed()
    bad = sign("wrong-secret", json.loads(body)["signedData"])
    reason = refused(body, bad).reason
    assert "does not match" in reason
    assert SECRET not in reason and bad not in reason and bad[7:] not in reason


@pytest.mark.parametrize("body, why", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "not an object"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b'{"event": "installed"}', "no signedData"),
    (b'{"event": "installed", "signedData": 5}', "no signedData"),
])
def test_malformed_bodies_are_400(body, why):
    r = refused(body, "sha256=" + "0" * 64)
    assert r.status == 400 and why in r.reason


def test_signed_data_that_does_not_match_the_body_is_400():
    doc = payload("installed", installation())
    tampered = dict(doc, event="uninstalled")  # same (validly signed) signedData, other body
    body, headers = encode(tampered, SECRET)
    r = refused(body, headers[HEADER])
    assert r.status == 400 and "does not match the body" in r.reason and "event" in r.reason


def test_signed_data_that_is_not_base64_json_is_400():
    for signed_data in ("not base64!!", base64.b64encode(b"not json").decode(), base64.b64encode(b"[]").decode()):
        doc = {"event": "installed", "installation": installation(), "signedData": signed_data}
        body, headers = encode(doc, SECRET)
        assert refused(body, headers[HEADER]).status == 400


def test_an_event_that_is_not_a_string_is_400():
    doc = payload("installed", installation())
    inner = json.loads(base64.b64decode(doc["signedData"]))
    inner["event"] = 7
    signed_data = base64.b64encode(json.dumps(inner).encode()).decode()
    body, headers = encode(dict(inner, signedData=signed_data), SECRET)
    r = refused(body, headers[HEADER])
    assert r.status == 400 and "event" in r.reason


def test_an_installation_without_id_is_stored_without_one():
    body, headers = signed("installed", {"organization": {}})
    assert parse_delivery(body, SECRET, headers[HEADER]).installation_id is None
