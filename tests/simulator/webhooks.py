"""The simulator's webhooks: ICR-shaped, signed deliveries (icr-api.md §7).

``delivery(event, installation, secret)`` builds the body and headers ICR sends:
``{event, installation, sender, transaction?, signedData}`` where ``signedData`` is base64 of
the JSON payload (without ``signedData``) and ``x-icr-signature-256`` is
``sha256=`` + hex HMAC-SHA256(secret, signedData).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from icr.webhooks.signature import HEADER, sign

EVENTS = ("installed", "uninstalled", "suspended", "unsuspended", "newPermissionsAccepted",
          "warehouseTransaction", "organizationTransaction")
SENDER = {"email": "admin@simulator.invalid", "fullName": "Simulator Admin",
          "id": "5c3f1a8e-0000-4000-8000-00000000cafe", "profilePicture": None}


def payload(event: str, installation: dict, sender: dict | None = None,
            transaction: dict | None = None) -> dict[str, Any]:
    """The payload with its ``signedData``."""
    doc: dict[str, Any] = {"event": event, "installation": installation, "sender": sender or SENDER}
    if transaction is not None:
        doc["transaction"] = transaction
    doc["signedData"] = base64.b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode("ascii")
    return doc


def encode(doc: dict[str, Any], secret: str | None) -> tuple[bytes, dict[str, str]]:
    """Body bytes and headers for a payload; signed when there is a secret."""
    headers = {"Content-Type": "application/json", "User-Agent": "icr-simulator-webhooks"}
    if secret:
        headers[HEADER] = sign(secret, doc["signedData"])
    return json.dumps(doc).encode("utf-8"), headers


def delivery(event: str, installation: dict, secret: str | None, **kw: Any) -> tuple[bytes, dict[str, str]]:
    return encode(payload(event, installation, **kw), secret)
