"""Paging over ``GET /app/installations``: the robust loop, concurrency, de-duplication, and the
completeness report.

Offset paging over live data can show an installation twice or skip one [general]. So each
page is de-duplicated by id against everything seen in this snapshot, and the report says
whether the snapshot can be trusted as complete:

* the loop ended normally (no loop guard, no ``max_pages`` guard), and
* ``pagination.total`` was the same on every page, and
* the number of distinct ids equals that total.

If ICR sends no ``total`` at all, "complete" means only that the loop ended normally
(nothing better is knowable). A page whose JSON has the wrong shape (not an object, or
``installations`` not a list) raises :class:`~icr.errors.ICRSnapshotError` at once: it is
valid JSON, so it is deterministic, not transient, and it is not retried (non-JSON bodies are
retried by the client). So does a page whose ``pagination`` numbers are absurd (negative, above
2^31-1, not integers): :data:`MAX_ENVELOPE_INT`.

Bounds (:class:`PagingLimits`, one place with defaults): the walk may not go more than a margin
past what the API announced (``pagination.total`` at this page size, else ``pageCount``), and
it stops with :class:`~icr.errors.ICRSnapshotError` when several full pages in a row bring no
new id. When the API announces nothing, ``max_pages_unannounced`` is the ceiling.

Records the JSON decoder refuses are read one by one (:mod:`icr.pagejson`) and the unreadable
ones travel on as :class:`~icr.normalize.BadRecord` rejects. An answer ``400 limit must not be
greater than N`` to the first page makes the pager retry once with N (logged as a warning).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import re
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from icr.defaults import DEFAULT_PAGE_SIZE
from icr.errors import ICRAPIError, ICRSnapshotError
from icr.pagejson import SpanBody, decode_installation, decode_page, decode_page_spans

if TYPE_CHECKING:
    from icr.client import ICRClient
    from icr.unchanged import Sorted, WireReader

log = logging.getLogger(__name__)

INSTALLATIONS_PATH = "/app/installations"
#: pagination numbers above this are absurd (``api_total`` is an int4 on PostgreSQL).
MAX_ENVELOPE_INT = 2**31 - 1
#: the numbers of ``pagination`` that are checked when a page arrives.
ENVELOPE_FIELDS = ("total", "pageCount", "currentPage", "nextPage")
_LIMIT_TOO_HIGH = re.compile(r"limit must not be greater than (\d{1,9})")


@dataclass(frozen=True)
class PagingLimits:
    """How far the walk may go. The API's own numbers bound it; these are the margins.

    ``extra_pages`` / ``extra_share``: pages allowed past the announced page count (whichever is
    more), for installations added while paging. ``max_repeat_pages``: full pages in a row with no
    new id before the walk fails. ``max_pages_unannounced``: the ceiling when the API gives neither
    ``total`` nor ``pageCount`` (10 million installations at 100 a page)."""

    extra_pages: int = 5
    extra_share: float = 0.10
    max_repeat_pages: int = 3
    max_pages_unannounced: int = 100_000

    def allowed_pages(self, announced: int) -> int:
        return announced + max(self.extra_pages, math.ceil(announced * self.extra_share))


DEFAULT_LIMITS = PagingLimits()
#: kept for callers of earlier releases: the ceiling when the API announces nothing.
DEFAULT_MAX_PAGES = DEFAULT_LIMITS.max_pages_unannounced


# --------------------------------------------------------------------------- de-duplication


class SeenIds:
    """A compact set of ids: 64-bit blake2b hashes in sorted numpy arrays.

    One million ids cost 8 MB, where a Python ``set`` of UUID strings costs ~100 MB. New
    hashes go to a small sorted "pending" array that is folded into the main one every
    ``merge_every`` ids, so each batch costs O(batch + pending) instead of re-sorting
    everything. Two different ids collide with probability ~n²/2⁶⁵ (≈3e-8 for a million):
    a collision would count a new id as a duplicate; acceptable for a completeness report.
    """

    def __init__(self, merge_every: int = 65_536) -> None:
        self._sorted = np.empty(0, dtype=np.uint64)
        self._pending = np.empty(0, dtype=np.uint64)
        self._merge_every = merge_every

    @staticmethod
    def hash_id(value: str) -> int:
        return int.from_bytes(hashlib.blake2b(value.encode("utf-8"), digest_size=8).digest(), "little")

    @staticmethod
    def _hashes(ids: Iterable[str]) -> np.ndarray:
        blake = hashlib.blake2b
        digests = b"".join(blake(i.encode("utf-8"), digest_size=8).digest() for i in ids)
        return np.frombuffer(digests, dtype="<u8").astype(np.uint64)

    @staticmethod
    def _member(haystack: np.ndarray, needles: np.ndarray) -> np.ndarray:
        if haystack.size == 0 or needles.size == 0:
            return np.zeros(needles.size, dtype=bool)
        pos = np.searchsorted(haystack, needles)
        pos[pos >= haystack.size] = haystack.size - 1
        return haystack[pos] == needles

    @staticmethod
    def _merge(a: np.ndarray, b_sorted: np.ndarray) -> np.ndarray:
        """Merge two sorted, disjoint arrays in O(len(a) + len(b))."""
        if a.size == 0:
            return b_sorted.copy()
        return np.insert(a, np.searchsorted(a, b_sorted), b_sorted)

    def add_batch(self, ids: Iterable[str]) -> list[bool]:
        """Add ids; return one flag per id, True where the id was not seen before."""
        hashes = self._hashes(ids)
        if hashes.size == 0:
            return []
        new = ~(self._member(self._sorted, hashes) | self._member(self._pending, hashes))
        uniq, first = np.unique(hashes, return_index=True)  # sorted; first occurrence in the batch
        first_mask = np.zeros(hashes.size, dtype=bool)
        first_mask[first] = True
        new &= first_mask
        if new.any():
            self._pending = self._merge(self._pending, np.sort(hashes[new]))
            if self._pending.size >= self._merge_every:
                self.compact()
        return new.tolist()

    def add(self, value: str) -> bool:
        return self.add_batch([value])[0]

    def add_records(self, records: list[Any]) -> list[bool | None]:
        """Add the ids of records; per record: True (its id is new), False (seen before: a
        duplicate), or None (no usable string ``id``: passed on for normalize to reject)."""
        ids = [rec.get("id") if isinstance(rec, dict) else None for rec in records]
        usable = [isinstance(rid, str) and bool(rid.strip()) for rid in ids]
        flags = iter(self.add_batch(rid for rid, ok in zip(ids, usable) if ok))
        return [next(flags) if ok else None for ok in usable]

    def compact(self) -> None:
        """Fold the pending array into the main one."""
        if self._pending.size:
            self._sorted = self._merge(self._sorted, self._pending)
            self._pending = np.empty(0, dtype=np.uint64)

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, str):
            return False
        h = np.array([self.hash_id(value)], dtype=np.uint64)
        return bool(self._member(self._sorted, h)[0] or self._member(self._pending, h)[0])

    def __len__(self) -> int:
        return int(self._sorted.size + self._pending.size)

    @property
    def nbytes(self) -> int:
        """Memory held by the hash arrays (8 bytes per distinct id)."""
        return int(self._sorted.nbytes + self._pending.nbytes)

    def __repr__(self) -> str:
        return f"SeenIds(distinct={len(self)}, nbytes={self.nbytes})"


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Page:
    """One fetched page. ``records`` holds only ids not seen before in this snapshot (and records
    without a usable string ``id``, passed through for normalization to reject)."""

    number: int
    records: list[dict[str, Any]]
    total: int | None
    page_count: int | None
    received: int
    #: With a :class:`~icr.unchanged.WireReader`: each record's wire hash (None: not known), and
    #: the positions in its KnownHashes of the installations listed unchanged (not decoded).
    digests: list[bytes | None] | None = None
    kept: Any = None


@dataclass(frozen=True)
class SnapshotReport:
    """Whether the pages read add up to a complete snapshot, and why not."""

    complete: bool
    reason: str | None
    pages: int
    records: int
    distinct_ids: int
    duplicates: int
    total_first: int | None
    total_last: int | None
    totals_seen: tuple[int, ...] = ()
    records_without_id: int = 0
    stop: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "complete": self.complete,
            "reason": self.reason,
            "pages": self.pages,
            "records": self.records,
            "distinct_ids": self.distinct_ids,
            "duplicates": self.duplicates,
            "total_first": self.total_first,
            "total_last": self.total_last,
            "totals_seen": list(self.totals_seen),
            "records_without_id": self.records_without_id,
            "stop": self.stop,
        }


@dataclass
class _State:
    seen: SeenIds = field(default_factory=SeenIds)
    wire: WireReader | None = None
    pages: int = 0
    records: int = 0
    duplicates: int = 0
    without_id: int = 0
    total_first: int | None = None
    total_last: int | None = None
    totals_seen: set[int] = field(default_factory=set)
    any_total_missing: bool = False
    max_total: int | None = None
    max_page_count: int | None = None
    repeat_pages: int = 0
    ended_normally: bool = False
    abnormal: str | None = None
    stop: str | None = None

    @property
    def distinct(self) -> int:
        """Distinct ids read: those decoded, and those listed unchanged (never decoded)."""
        return len(self.seen) + (self.wire.kept - self.wire.overlap if self.wire is not None else 0)


@dataclass(frozen=True)
class _Raw:
    number: int
    installations: list[Any]
    total: int | None
    page_count: int | None
    next_page: int | None
    has_next_key: bool
    has_pagination: bool
    sorted: Sorted | None = None  # the records sorted by the WireReader (installations: its fresh ones)

    @property
    def received(self) -> int:
        """Records on the page, decoded or not."""
        return len(self.installations) + (int(self.sorted.kept.size) if self.sorted is not None else 0)


def _envelope_int(pagination: dict[str, Any], name: str, where: str) -> int | None:
    """``pagination[name]`` as an int in 0..2^31-1, None if absent or null; else ICRSnapshotError."""
    value = pagination.get(name)
    if value is None:
        return None
    parsed = _as_int(value) if not isinstance(value, str) or len(value) <= 12 else None
    if parsed is None or not 0 <= parsed <= MAX_ENVELOPE_INT:
        shown = _show_number(value)
        raise ICRSnapshotError(
            f"{where}: pagination.{name} is {shown}, not a whole number between 0 and {MAX_ENVELOPE_INT}; "
            "the page cannot be trusted and nothing was written")
    return parsed


def _show_number(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        digits = len(str(abs(value))) if value.bit_length() < 10_000 else None
        if digits is None or digits > 30:
            return f"an integer of {digits or 'thousands of'} digits"
        return str(value)
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def fetch_installation(client: ICRClient, installation_id: str) -> Any:
    """``GET /app/installations/{id}``: the record, or a :class:`~icr.normalize.BadRecord` when
    the JSON decoder cannot read it (rejected like a bad record of a page); 404 → ICRAPIError."""
    where = f"GET {INSTALLATIONS_PATH}/{installation_id}"
    decode = functools.partial(decode_installation, installation_id=installation_id, where=where)
    return client.get_installation(installation_id, decode=decode)


# --------------------------------------------------------------------------- the pager


class InstallationPager:
    """Iterates the app's installations page by page (streaming), then reports completeness.

    ``concurrency > 1``: page 0 is fetched first; once ``pageCount`` is known, pages
    1..pageCount-1 are fetched by a bounded thread pool (at most ``concurrency`` in flight and
    yielded as they complete, in any order); if the last of those was still full, the loop
    continues sequentially past it. The client's shared rate gate slows all threads down
    together when ICR rate-limits.
    """

    def __init__(
        self,
        client: ICRClient,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        concurrency: int = 1,
        max_pages: int | None = None,
        path: str = INSTALLATIONS_PATH,
        limits: PagingLimits = DEFAULT_LIMITS,
        wire: WireReader | None = None,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.client = client
        self.page_size = int(page_size)
        self.concurrency = int(concurrency)
        self.limits = limits
        self.max_pages = limits.max_pages_unannounced if max_pages is None else int(max_pages)
        self.path = path
        self.wire = wire  # hash record bytes, skip decoding unchanged ones (icr.unchanged)
        self._limit_retried = False
        if self.concurrency > 1:
            client.ensure_pool_size(self.concurrency)
        self._state: _State | None = None
        self._report: SnapshotReport | None = None

    def __repr__(self) -> str:
        return f"InstallationPager(page_size={self.page_size}, concurrency={self.concurrency}, max_pages={self.max_pages})"

    @property
    def report(self) -> SnapshotReport:
        """The completeness report; meaningful once iteration has finished."""
        if self._report is not None:
            return self._report
        if self._state is None:
            return SnapshotReport(False, "not iterated yet", 0, 0, 0, 0, None, None)
        return self._build_report(self._state, finished=False)

    # ------------------------------------------------------------------ iteration

    def __iter__(self) -> Iterator[Page]:
        self._state = state = _State(wire=self.wire)
        self._report = None
        try:
            if self.concurrency > 1:
                yield from self._run_concurrent(state)
            else:
                yield from self._run_sequential(state, 0)
        finally:
            # close() on an abandoned generator lands here too: the report then says so.
            self._report = self._build_report(state, finished=state.ended_normally or state.abnormal is not None)

    def _run_sequential(self, state: _State, start: int) -> Iterator[Page]:
        number = start
        while True:
            if state.pages >= self.max_pages:
                state.abnormal = f"stopped by the max_pages guard ({self.max_pages} pages) before page {number}"
                state.stop = "max_pages"
                return
            self._check_bound(state, number)
            raw = self._fetch(number)
            yield self._accept(state, raw)
            nxt = self._next_page(state, raw)
            if nxt is None:
                return
            number = nxt

    def _run_concurrent(self, state: _State) -> Iterator[Page]:
        first = self._fetch(0)
        yield self._accept(state, first)
        nxt = self._next_page(state, first)
        if nxt is None:
            return
        if first.page_count is None:
            log.info("ICR gave no pageCount on page 0; paging sequentially")
            yield from self._run_sequential(state, nxt)
            return
        last = min(first.page_count, self.max_pages, self._bound(state) or first.page_count) - 1
        numbers = iter(range(1, last + 1))
        last_raw: _Raw | None = None
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="icr-page") as pool:
            in_flight: set[Future[_Raw]] = set()
            try:
                for n in numbers:
                    in_flight.add(pool.submit(self._fetch, n))
                    if len(in_flight) >= self.concurrency:
                        break
                while in_flight:
                    done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    for fut in done:
                        raw = fut.result()  # an ICRAPIError aborts the snapshot
                        if raw.number == last:
                            last_raw = raw
                        yield self._accept(state, raw)
                        n = next(numbers, None)
                        if n is not None:
                            in_flight.add(pool.submit(self._fetch, n))
            finally:
                for fut in in_flight:
                    fut.cancel()
        if last_raw is None:  # pageCount was 1 but page 0 claimed more: follow it sequentially
            if state.pages >= self.max_pages:
                state.abnormal = f"stopped by the max_pages guard ({self.max_pages} pages)"
                state.stop = "max_pages"
            return
        nxt = self._next_page(state, last_raw)
        if nxt is not None:
            log.info("ICR page %d (last per page 0's pageCount) was full; continuing sequentially", last)
            yield from self._run_sequential(state, nxt)  # hits the max_pages guard if that capped us

    # ------------------------------------------------------------------ one page

    def _bound(self, state: _State) -> int | None:
        """Pages the walk may read, from what the API announced so far (None: it announced nothing)."""
        if state.max_total is not None:
            announced = -(-state.max_total // self.page_size)
        elif state.max_page_count is not None:
            announced = state.max_page_count
        else:
            return None
        return self.limits.allowed_pages(announced)

    def _check_bound(self, state: _State, number: int) -> None:
        bound = self._bound(state)
        if bound is not None and number >= bound:
            said = (f"pagination.total={state.max_total}" if state.max_total is not None
                    else f"pageCount={state.max_page_count}")
            raise ICRSnapshotError(
                f"GET {self.path}?limit={self.page_size}&page={number}: ICR keeps sending full pages past what it "
                f"announced ({said}, so at most {bound} pages of {self.page_size} with the paging margin); "
                f"stopped after {state.pages} pages and {state.distinct} distinct ids. The snapshot is not "
                "trusted and nothing was written (PagingLimits in icr.paging sets the margin)")

    def _get(self, number: int) -> Any:
        where = f"GET {self.path}?limit={self.page_size}&page={number}"
        decode = functools.partial(decode_page_spans if self.wire is not None else decode_page, where=where)
        try:
            return self.client.get_json(self.path, params={"limit": self.page_size, "page": number}, decode=decode)
        except ICRAPIError as exc:
            match = _LIMIT_TOO_HIGH.search(exc.api_message or "") if exc.status == 400 else None
            if match is None or self._limit_retried or number != 0 or not 0 < int(match.group(1)) < self.page_size:
                raise
            self._limit_retried = True
            log.warning("ICR refused page size %d (HTTP 400: %s); retrying once with page size %s. Set the "
                        "connection's extra.max_page_size (and page_size) to %s to avoid this request",
                        self.page_size, exc.api_message, match.group(1), match.group(1))
            self.page_size = int(match.group(1))
            return self._get(number)

    def _fetch(self, number: int) -> _Raw:
        body = self._get(number)
        where = f"GET {self.path}?limit={self.page_size}&page={number}"
        if not isinstance(body, dict):
            raise ICRSnapshotError(f"{where}: answer is a JSON {type(body).__name__}, not an object")
        installations = body.get("installations")
        if not isinstance(installations, list):
            got = "missing" if installations is None else f"a {type(installations).__name__}"
            raise ICRSnapshotError(f"{where}: 'installations' is {got}, expected a list")
        pagination = body.get("pagination")
        has_pagination = isinstance(pagination, dict)
        if pagination is not None and not has_pagination:
            log.warning("%s: 'pagination' is not an object; ignoring it", where)
        pag = pagination if has_pagination else {}
        numbers = {name: _envelope_int(pag, name, where) for name in ENVELOPE_FIELDS}
        sorted_ = None
        if self.wire is not None and isinstance(body, SpanBody):
            sorted_ = self.wire.sort(installations)
            installations = sorted_.fresh if sorted_ is not None else decode_page(body.content, where=where)["installations"]
        return _Raw(
            number=number,
            installations=installations,
            total=numbers["total"],
            page_count=numbers["pageCount"],
            next_page=numbers["nextPage"],
            has_next_key="nextPage" in pag,
            has_pagination=has_pagination,
            sorted=sorted_,
        )

    def _accept(self, state: _State, raw: _Raw) -> Page:
        received = raw.received
        state.pages += 1
        state.records += received
        if raw.total is not None:
            state.max_total = max(state.max_total or 0, raw.total)
        if raw.page_count is not None:
            state.max_page_count = max(state.max_page_count or 0, raw.page_count)
        if raw.total is None:
            state.any_total_missing = True
        else:
            if state.total_first is None and state.pages == 1:
                state.total_first = raw.total
            state.totals_seen.add(raw.total)
        state.total_last = raw.total if raw.total is not None else state.total_last

        if raw.sorted is not None and state.wire is not None:
            return self._accept_sorted(state, raw, received)
        flags = state.seen.add_records(raw.installations)
        state.without_id += flags.count(None)
        state.duplicates += flags.count(False)
        records = [rec for rec, new in zip(raw.installations, flags) if new is not False]
        self._count_repeats(state, raw, new=len(records), received=received)
        return Page(raw.number, records, raw.total, raw.page_count, received)

    def _accept_sorted(self, state: _State, raw: _Raw, received: int) -> Page:
        """The same for a page the WireReader sorted: unchanged installations stay positions."""
        assert raw.sorted is not None and state.wire is not None
        out = state.wire.accept(raw.sorted, state.seen)
        state.duplicates += out.duplicates
        state.without_id += out.without_id
        self._count_repeats(state, raw, new=len(out.records) + int(out.kept.size), received=received)
        return Page(raw.number, out.records, raw.total, raw.page_count, received, digests=out.digests, kept=out.kept)

    def _count_repeats(self, state: _State, raw: _Raw, *, new: int, received: int) -> None:
        """Fail when full pages keep bringing only ids already read (an API stuck on a page)."""
        if new or received < self.page_size:
            state.repeat_pages = 0
            return
        state.repeat_pages += 1
        if state.repeat_pages >= self.limits.max_repeat_pages:
            raise ICRSnapshotError(
                f"GET {self.path}?limit={self.page_size}&page={raw.number}: {state.repeat_pages} full pages in a row "
                f"brought no new installation id (only ids already read); ICR seems to repeat itself. Stopped "
                f"after {state.pages} pages and {state.distinct} distinct ids; the snapshot is not trusted and "
                "nothing was written")

    def _next_page(self, state: _State, raw: _Raw) -> int | None:
        """The robust loop's decision after ``raw``: next page number, or None to stop."""
        n = raw.number
        stop = None
        if not raw.received:
            stop = "empty page"
        elif raw.received < self.page_size:
            stop = "short page"
        elif raw.has_pagination and raw.next_page is None:
            stop = "nextPage null" if raw.has_next_key else "nextPage absent"
        elif raw.page_count is not None and n + 1 >= raw.page_count:
            stop = "last page per pageCount"
        elif raw.next_page is not None and raw.next_page <= n:
            state.abnormal = f"loop guard: page {n} says nextPage={raw.next_page}, which is not after it"
            state.stop = "loop guard"
            log.warning("ICR paging %s; stopping", state.abnormal)
            return None
        if stop is not None:
            state.ended_normally = True
            state.stop = stop
            return None
        if raw.next_page is not None and raw.next_page != n + 1:
            # [Assumed] pages are 0-based and consecutive; following a jump would skip data.
            log.warning("ICR page %d says nextPage=%d; reading page %d instead", n, raw.next_page, n + 1)
        return n + 1

    # ------------------------------------------------------------------ report

    def _build_report(self, state: _State, *, finished: bool) -> SnapshotReport:
        distinct = state.distinct
        reason: str | None = None
        if not finished:
            reason = "iteration did not finish (stopped early or failed)"
        elif state.abnormal:
            reason = state.abnormal
        elif len(state.totals_seen) > 1:
            reason = (
                f"pagination.total changed while paging ({', '.join(map(str, sorted(state.totals_seen)))}): "
                "installations were added or removed mid-snapshot"
            )
        elif state.totals_seen and state.any_total_missing:
            reason = "pagination.total was missing on some pages"
        elif state.totals_seen and distinct != next(iter(state.totals_seen)):
            total = next(iter(state.totals_seen))
            reason = f"read {distinct} distinct ids but pagination.total is {total}"
        return SnapshotReport(
            complete=reason is None,
            reason=reason,
            pages=state.pages,
            records=state.records,
            distinct_ids=distinct,
            duplicates=state.duplicates,
            total_first=state.total_first,
            total_last=state.total_last,
            totals_seen=tuple(sorted(state.totals_seen)),
            records_without_id=state.without_id,
            stop=state.stop,
        )
