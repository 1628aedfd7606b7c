"""Test doubles for the API side of a sync, when a test needs exact records.

``StaticHook`` stands where ``ICRHook`` stands in ``icr.sync.extract``: it serves given records
as pages with the real ``Page``/``SnapshotReport`` types, and lets a test declare the snapshot
incomplete. Tests of the client itself use the real simulator over HTTP instead.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from icr.client import ClientStats
from icr.pagejson import SpanBody, decode_page_spans
from icr.paging import Page, SeenIds, SnapshotReport
from icr.unchanged import WireReader


class StaticPager:
    """The parts of ``InstallationPager`` that ``icr.sync`` uses (its ``_Pager`` protocol)."""

    concurrency = 1

    def __init__(self, records: list[Any], page_size: int, complete: bool, reason: str | None,
                 wire: WireReader | None = None) -> None:
        self._records = records
        self._wire = wire
        self.page_size = page_size
        self._complete = complete
        self._reason = reason
        self.report = SnapshotReport(False, "not iterated yet", 0, 0, 0, 0, None, None)

    def _page(self, number: int, chunk: list[Any], total: int, pages: int, seen: SeenIds) -> Page:
        """A page as the pager makes it; with a WireReader, from the page's JSON bytes the way
        InstallationPager does (records the JSON encoder cannot write are served as they are)."""
        if self._wire is None:
            return Page(number=number, records=chunk, total=total, page_count=pages, received=len(chunk))
        try:
            body = decode_page_spans(json.dumps({"installations": chunk}, separators=(",", ":")).encode())
        except (TypeError, ValueError):
            body = None
        parts = self._wire.sort(body["installations"]) if isinstance(body, SpanBody) else None
        if parts is None:
            return Page(number=number, records=chunk, total=total, page_count=pages, received=len(chunk),
                        digests=[None] * len(chunk))
        out = self._wire.accept(parts, seen)
        self._duplicates += out.duplicates
        return Page(number=number, records=out.records, total=total, page_count=pages, received=len(chunk),
                    digests=out.digests, kept=out.kept)

    def __iter__(self) -> Iterator[Page]:
        n = len(self._records)
        pages = max(1, -(-n // self.page_size))
        seen = SeenIds()
        self._duplicates = 0
        for p in range(pages):
            chunk = copy.deepcopy(self._records[p * self.page_size:(p + 1) * self.page_size])
            yield self._page(p, chunk, n, pages, seen)
        self.report = SnapshotReport(
            complete=self._complete, reason=self._reason, pages=pages, records=n, distinct_ids=n,
            duplicates=self._duplicates, total_first=n, total_last=n)


class StaticHook:
    def __init__(self, records: list[Any], *, page_size: int = 50, complete: bool = True,
                 reason: str | None = None) -> None:
        self.records = records
        self.page_size = page_size
        self.complete = complete
        self.reason = reason if not complete else None
        self.pagers = 0

    def installations(self, page_size: int | None = None, concurrency: int | None = None,
                      wire: WireReader | None = None) -> StaticPager:
        self.pagers += 1
        return StaticPager(self.records, page_size or self.page_size, self.complete,
                           self.reason or ("test: declared incomplete" if not self.complete else None), wire)

    def get_conn(self) -> Any:
        return _StaticClient(self)


class _StaticAuth:
    app_id = "d23967cc-dd16-452b-8af4-869965745978"


class _StaticClient:
    """The parts of ``ICRClient`` that ``icr.sync`` uses (its ``_Client`` protocol):
    ``get_installation`` answers from the same records (404 for the others), like ICR."""

    base_url = "http://static.invalid"
    auth = _StaticAuth()

    def __init__(self, hook: StaticHook) -> None:
        self.hook = hook
        self.stats = ClientStats()
        self.stats.requests = hook.pagers
        self.lookups: list[str] = []

    def get_installation(self, installation_id: str, *, decode: Any = None) -> dict[str, Any]:
        from icr.errors import ICRAPIError

        self.lookups.append(installation_id)
        for rec in self.hook.records:
            if isinstance(rec, dict) and rec.get("id") == installation_id:
                return copy.deepcopy(rec)
        raise ICRAPIError(404, "GET", f"/app/installations/{installation_id}", "Not Found")


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
