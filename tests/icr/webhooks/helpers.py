"""Deliveries for the webhook tests: ICR-shaped installation objects, signed bodies."""

from __future__ import annotations

import uuid
from typing import Any

from tests.simulator.webhooks import delivery, encode, payload

SECRET = "whsec-test-0123456789abcdef"


def installation(inst_id: str | None = None, **over: Any) -> dict[str, Any]:
    inst_id = inst_id or str(uuid.uuid4())
    doc = {
        "id": inst_id,
        "appId": "d23967cc-dd16-452b-8af4-869965745978",
        "appNameId": "climatetrade-connector",
        "createdAt": "2024-03-26T08:47:15.356Z",
        "updatedAt": "2024-03-26T08:47:15.356Z",
        "permissions": {"organization_info": "VIEW"},
        "organization": {"id": str(uuid.uuid4()), "fullName": "Org", "type": "projectDeveloper",
                         "countryCode": "CR", "isPublic": True},
        "accessTokensUrl": f"undefined/app/installations/{inst_id}/accessTokens",
    }
    doc.update(over)
    return doc


def signed(event: str = "installed", inst: dict | None = None, secret: str | None = SECRET,
           **kw: Any) -> tuple[bytes, dict[str, str]]:
    return delivery(event, inst or installation(), secret, **kw)


__all__ = ["SECRET", "installation", "signed", "payload", "encode"]
