"""One webhook delivery: check the body and turn it into the :class:`Delivery` the inbox stores.

The checks, in order, each with the status the receiver answers when it fails:

1. the body is a JSON object (UTF-8) — 400;
2. ``signedData`` is a non-empty string — 400;
3. the signature header matches HMAC-SHA256(secret, signedData) — 403 (:mod:`.signature`);
4. ``signedData`` is base64 of JSON equal to the body without its ``signedData`` key — 400;
5. ``event`` is a non-empty string — 400.

What is stored is the body as received; ``delivery_id`` (SHA-256 of signedData) makes a replay
of the same delivery recognizable.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import msgspec

from icr.webhooks import signature

MAX_EVENT_NAME = 100
_decode = msgspec.json.Decoder().decode


class DeliveryRefused(Exception):
    """A delivery the receiver does not accept: ``status`` to answer, ``reason`` to log.

    ``reason`` never contains the secret, the signature or payload values.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Delivery:
    delivery_id: str
    event: str
    installation_id: str | None
    payload: str  # the JSON body as received


def parse_delivery(body: bytes, secret: str, signature_header: str | None) -> Delivery:
    """Check one delivery (see the module docstring); raises :class:`DeliveryRefused`."""
    if not signature_header:
        raise DeliveryRefused(403, f"no {signature.HEADER} header")
    text = _text(body)
    doc = _json_object(text, "the body")
    signed_data = doc.get("signedData")
    if not isinstance(signed_data, str) or not signed_data:
        raise DeliveryRefused(400, "the body has no signedData string")
    if not signature.verify(secret, signed_data, signature_header):
        raise DeliveryRefused(403, f"the {signature.HEADER} header does not match signedData")
    _check_signed_data(signed_data, doc)
    event = doc.get("event")
    if not isinstance(event, str) or not event or len(event) > MAX_EVENT_NAME:
        raise DeliveryRefused(400, "the body has no usable 'event' string")
    installation = doc.get("installation")
    inst_id = installation.get("id") if isinstance(installation, dict) else None
    return Delivery(
        delivery_id=signature.delivery_id(signed_data),
        event=event,
        installation_id=inst_id if isinstance(inst_id, str) and inst_id else None,
        payload=text,
    )


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DeliveryRefused(400, f"the body is not UTF-8 (byte {exc.start})") from None


def _json_object(text: str | bytes, what: str) -> dict[str, Any]:
    try:
        doc = _decode(text)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise DeliveryRefused(400, f"{what} is not valid JSON: {str(exc)[:120]}") from None
    if not isinstance(doc, dict):
        raise DeliveryRefused(400, f"{what} is JSON but not an object")
    return doc


def _check_signed_data(signed_data: str, doc: dict[str, Any]) -> None:
    try:
        raw = base64.b64decode(signed_data, validate=True)
    except (binascii.Error, ValueError):
        raise DeliveryRefused(400, "signedData is not base64") from None
    signed = _json_object(raw, "the JSON in signedData")
    signed.pop("signedData", None)
    body = {k: v for k, v in doc.items() if k != "signedData"}
    if signed != body:
        differs = sorted(k for k in set(signed) | set(body) if signed.get(k, ...) != body.get(k, ...))
        raise DeliveryRefused(400, f"signedData does not match the body (keys differ: {', '.join(differs)[:200]})")
