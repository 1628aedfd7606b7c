"""Test doubles for the API side of a sync, when a test needs exact records.

``StaticHook`` stands where ``ICRHook`` stands in ``icr.sync.extract``: it serves given records
as pages with the real ``Page``/``SnapshotReport`` types, and lets a test declare the snapshot
incomplete. Tests of the client itself use the real simulator over HTTP instead.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from icr.paging import Page, SnapshotReport

BASE = datetime(2026, 11, 1, 2, 0, tzinfo=timezone.utc)


def make_record(i: int, *, created: datetime | None = None, **overrides: Any) -> dict[str, Any]:
    """A record shaped like ICR's sandbox payload (icr-api.md section 4)."""
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
    rec.update(overrides)
    return rec


class StaticPager:
    def __init__(self, records: list[Any], page_size: int, complete: bool, reason: str | None) -> None:
        self._records = records
        self._page_size = page_size
        self._complete = complete
        self._reason = reason
        self.report: SnapshotReport | None = None

    def __iter__(self) -> Iterator[Page]:
        n = len(self._records)
        pages = max(1, -(-n // self._page_size))
        for p in range(pages):
            chunk = copy.deepcopy(self._records[p * self._page_size:(p + 1) * self._page_size])
            yield Page(number=p, records=chunk, total=n, page_count=pages, received=len(chunk))
        self.report = SnapshotReport(
            complete=self._complete, reason=self._reason, pages=pages, records=n, distinct_ids=n,
            duplicates=0, total_first=n, total_last=n)


class StaticHook:
    def __init__(self, records: list[Any], *, page_size: int = 50, complete: bool = True,
                 reason: str | None = None) -> None:
        self.records = records
        self.page_size = page_size
        self.complete = complete
        self.reason = reason if not complete else None
        self.pagers = 0

    def installations(self, page_size: int | None = None, concurrency: int | None = None) -> StaticPager:
        self.pagers += 1
        return StaticPager(self.records, page_size or self.page_size, self.complete,
                           self.reason or ("test: declared incomplete" if not self.complete else None))

    def get_conn(self) -> Any:
        return _StaticClient(self)


class _StaticClient:
    """``get_installation`` answers from the same records (404 for the others), like ICR."""

    def __init__(self, hook: StaticHook) -> None:
        self.hook = hook
        self.stats = {"requests": hook.pagers, "retries": 0}
        self.lookups: list[str] = []

    def get_installation(self, installation_id: str, *, decode: Any = None) -> dict[str, Any]:
        from icr.errors import ICRAPIError

        self.lookups.append(installation_id)
        for rec in self.hook.records:
            if isinstance(rec, dict) and rec.get("id") == installation_id:
                return copy.deepcopy(rec)
        raise ICRAPIError(404, "GET", f"/app/installations/{installation_id}", "Not Found")


def table_fingerprint(warehouse: Any, *, ignore_run_ids: bool = False) -> dict[str, Any]:
    """Everything a load may change, in a comparable form (to prove a failed run changed nothing).

    ``ignore_run_ids`` leaves out which run wrote a row, to compare the results of two runs.
    """
    out: dict[str, Any] = {}
    with warehouse.read() as conn:
        for table, order in [
            ("icr_installation_state", "installation_id"),
            ("icr_installation_permissions", "installation_id, permission"),
            ("icr_installation_history", "installation_id, valid_from"),
            ("icr_installation_daily", "snapshot_date, installation_id"),
            ("icr_rejected_records", "reject_id"),
            ("icr_daily_totals", "snapshot_date"),
            ("icr_daily_org_counts", "snapshot_date, organization_type, organization_country_code"),
            ("icr_daily_type_counts", "snapshot_date, organization_type"),
            ("icr_daily_country_counts", "snapshot_date, organization_country_code"),
            ("icr_daily_permission_counts", "snapshot_date, permission, access"),
        ]:
            result = conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY {order}"))
            keep = [i for i, name in enumerate(result.keys())
                    if not (ignore_run_ids and name in ("sync_run_id", "last_sync_run_id"))]
            out[table] = [tuple(str(row[i]) for i in keep) for row in result]
    return out


def run_rows(warehouse: Any) -> dict[str, dict[str, Any]]:
    with warehouse.read() as conn:
        return {r["run_id"]: dict(r) for r in conn.execute(sa.text("SELECT * FROM icr_sync_runs")).mappings()}


def scalar(warehouse: Any, sql: str, **params: Any) -> Any:
    with warehouse.read() as conn:
        return conn.execute(sa.text(sql), params).scalar_one()


def permission_mismatches(warehouse: Any) -> int:
    """Rows in which icr_installation_permissions and the permissions JSON of the installations
    disagree, both ways (0: every permission row has its installation and nothing is missing)."""
    expand = ("SELECT CAST(s.installation_id AS text) AS i, kv.key AS k, kv.value AS v FROM icr_installation_state s, "
              + ("jsonb_each_text(s.permissions) kv" if warehouse.dialect_name == "postgresql" else "json_each(s.permissions) kv"))
    rows = "SELECT CAST(installation_id AS text), permission, access FROM icr_installation_permissions"
    return int(scalar(warehouse, f"SELECT (SELECT count(*) FROM ({expand} EXCEPT {rows}) a) "
                                 f"+ (SELECT count(*) FROM ({rows} EXCEPT {expand}) b)"))
