"""Installation records for tests that need exact ones (tests of the client itself, or of a whole
sync, use the simulator over HTTP instead).

* ``SAMPLE`` — the sandbox payload of icr-api.md section 4, verbatim; ``sample(**changes)`` a copy.
* ``make_record(i)`` — record number ``i``: the same shape, its own ids (``0xA5…``/``0x5A…`` UUIDs),
  created ``i`` hours after ``BASE - 400 days``, fields varying with ``i``.

``changes`` are applied to a deep copy: a key like ``"organization.isPublic"`` reaches into the
organization, and the value ``DELETE`` removes the key.
"""

from __future__ import annotations

import copy
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

BASE = datetime(2026, 11, 1, 2, 0, tzinfo=timezone.utc)
SAMPLE_ID = "88f89df1-0a53-41c5-974d-dd99708b2f9f"

# The sandbox payload from docs (icr-api.md section 4), verbatim.
SAMPLE: dict[str, Any] = {
    "id": SAMPLE_ID,
    "appId": "d23967cc-dd16-452b-8af4-869965745978",
    "appNameId": "climatetrade-connector",
    "createdAt": "2024-03-26T08:47:15.356Z",
    "updatedAt": "2024-03-26T08:47:15.356Z",
    "permissions": {"organization_info": "VIEW"},
    "organization": {
        "id": "e3f779a2-b502-492a-a74c-599723f24c81",
        "url": "undefined/organizations/e3f779a2-b502-492a-a74c-599723f24c81",
        "zip": "",
        "city": "",
        "logo": "https://…/file.png",
        "type": "projectDeveloper",
        "website": "",
        "fullName": "MyFavouriteProjectDeveloper",
        "isPublic": True,
        "createdAt": "2024-03-14T10:38:35.501Z",
        "updatedAt": "2024-03-14T10:38:35.501Z",
        "countryCode": "CR",
        "physicalAddress": "",
        "registrationNumber": "",
        "organizationIndustries": None,
    },
    "accessTokensUrl": f"undefined/app/installations/{SAMPLE_ID}/accessTokens",
}

#: as the value of a change: remove the key
DELETE = object()


def changed(record: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of ``record`` with ``changes`` (dotted keys reach into nested objects)."""
    record = copy.deepcopy(record)
    for key, value in changes.items():
        target = record
        parts = key.split(".")
        for part in parts[:-1]:
            target = target[part]
        if value is DELETE:
            del target[parts[-1]]
        else:
            target[parts[-1]] = value
    return record


def sample(**changes: Any) -> dict[str, Any]:
    """A deep copy of ``SAMPLE`` with ``changes``."""
    return changed(SAMPLE, **changes)


def make_record(i: int, *, created: datetime | None = None, **changes: Any) -> dict[str, Any]:
    """Record number ``i``, shaped like ICR's sandbox payload, with ``changes``."""
    iid = str(uuid.UUID(int=(0xA5 << 120) | i))
    org = str(uuid.UUID(int=(0x5A << 120) | i))
    created = created or (BASE - timedelta(days=400) + timedelta(hours=i))
    stamp = created.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    rec = {
        "id": iid,
        "appId": "d23967cc-dd16-452b-8af4-869965745978",
        "appNameId": "climatetrade-connector",
        "createdAt": stamp,
        "updatedAt": stamp,
        "permissions": {"organization_info": "VIEW", **({"organization_projects": "WRITE"} if i % 2 else {})},
        "organization": {
            "id": org, "url": f"undefined/organizations/{org}", "zip": "", "city": "",
            "type": ["projectDeveloper", "validationBody", "other"][i % 3], "website": "",
            "fullName": f"Organization {i}", "isPublic": bool(i % 2),
            "createdAt": stamp, "updatedAt": stamp, "countryCode": ["CR", "DE", "BR"][i % 3],
            "physicalAddress": "", "registrationNumber": "", "organizationIndustries": None,
        },
        "accessTokensUrl": f"undefined/app/installations/{iid}/accessTokens",
    }
    return changed(rec, **changes) if changes else rec
