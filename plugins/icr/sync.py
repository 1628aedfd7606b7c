"""One sync run, split into the steps the DAG's tasks call (and the tests and the benchmark).

    migrate  →  extract (fetch · normalize · stage)  →  load (one transaction)  →  verify  →  cleanup

Extract streams: a fetcher thread pages through the API into a small bounded queue while this
thread normalizes chunks and bulk-writes them to the run's staging tables, so fetching overlaps
loading and memory stays flat whatever the number of installations. Only small summaries leave
these functions (they become XComs); the data waits in the warehouse.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from icr.defaults import (
    DEFAULT_MAX_REJECT_SHARE,
    DEFAULT_MAX_REMOVAL_SHARE,
    DEFAULT_PAGE_SIZE,
    DEFAULT_REUSE_SNAPSHOT_MAX_AGE_HOURS,
    DEFAULT_RUN_TIMEOUT_HOURS,
)
from icr.errors import ICRAPIError
from icr.normalize import normalize_records
from icr.paging import SnapshotReport, fetch_installation
from icr.timings import Timings
from icr.unchanged import KnownHashes, WireReader
from icr.warehouse import removals
from icr.warehouse.engine import Warehouse
from icr.warehouse.housekeeping import start_run, tidy_after_load
from icr.warehouse.merge import LoadOptions, merge_run, verify_run
from icr.warehouse.migrations import apply_migrations
from icr.warehouse.runlog import RunContext, fail_run, find_reusable_snapshot, now_utc, update_run
from icr.warehouse.stage_writer import StageWriter
from icr.warehouse.staging import Staging

if TYPE_CHECKING:
    from icr.client import ClientStats

log = logging.getLogger(__name__)


class _Pager(Protocol):  # icr.paging.InstallationPager
    report: SnapshotReport
    page_size: int
    concurrency: int

    def __iter__(self) -> Iterator[Any]: ...


class _Auth(Protocol):  # icr.auth.AppJWT
    app_id: str


class _Client(Protocol):  # icr.client.ICRClient
    base_url: str
    auth: _Auth
    stats: ClientStats

    def get_installation(self, installation_id: str, *, decode: Any = None) -> Any: ...


class _Hook(Protocol):  # icr.hooks.ICRHook
    def installations(self, page_size: int | None = None, concurrency: int | None = None,
                      wire: WireReader | None = None) -> _Pager: ...

    def get_conn(self) -> _Client: ...


@dataclass(frozen=True)
class SyncSettings:
    """Knobs of one run. Scheduled runs use the defaults; triggered runs may override (DAG params)."""

    page_size: int | None = None  # None: the connection's page_size extra
    concurrency: int | None = None  # None: the connection's concurrency extra
    full_resync: bool = False  # always read the API and rewrite every row
    accept_mass_removal: bool = False
    max_removal_share: float = DEFAULT_MAX_REMOVAL_SHARE
    max_reject_share: float = DEFAULT_MAX_REJECT_SHARE
    reuse_snapshot_max_age: timedelta = timedelta(hours=DEFAULT_REUSE_SNAPSHOT_MAX_AGE_HOURS)
    snapshot_attempts: int = 2  # re-read once when the snapshot moved while paging
    chunk_records: int = 5_000  # records per normalize + staging write
    stale_run_after: timedelta = timedelta(hours=DEFAULT_RUN_TIMEOUT_HOURS)
    progress_every_s: float = 15.0
    many_pages: int = 10_000  # warn when a snapshot needs more pages (requests) than this
    queue_pages: int = 16  # pages buffered between the fetcher thread and the loader

    @classmethod
    def from_params(cls, params: Mapping[str, Any], **overrides: Any) -> SyncSettings:
        """Build from DAG params; unknown keys are ignored, None means "use the default"."""
        values: dict[str, Any] = {}
        for name in ("page_size", "concurrency", "chunk_records", "snapshot_attempts"):
            if params.get(name) is not None:
                values[name] = int(params[name])
        for name in ("full_resync", "accept_mass_removal"):
            if params.get(name) is not None:
                values[name] = bool(params[name])
        for name in ("max_removal_share", "max_reject_share"):
            if params.get(name) is not None:
                values[name] = float(params[name])
        if params.get("reuse_snapshot_max_age_hours") is not None:
            values["reuse_snapshot_max_age"] = timedelta(hours=float(params["reuse_snapshot_max_age_hours"]))
        return replace(cls(), **{**values, **overrides})

    @property
    def load_options(self) -> LoadOptions:
        return LoadOptions(
            full_resync=self.full_resync,
            accept_mass_removal=self.accept_mass_removal,
            max_removal_share=self.max_removal_share,
            max_reject_share=self.max_reject_share,
        )


def migrate(warehouse: Warehouse) -> list[str]:
    with warehouse.out_of_space_explained("applying the schema migrations"):
        return apply_migrations(warehouse)


# -- extract ------------------------------------------------------------------------------------
#: Timings of the extract: the loader thread's seconds in normalize_records and in writing staging
#: (the COPY or inserts, then keying the staged rows, which is also timed on its own).
NORMALIZE = "extract:normalize"
STAGE = "extract:stage"
STAGING_FINISH = "extract:staging_finish"
HASH = "extract:hash_unchanged"  # hashing record bytes, deciding "unchanged" (icr.unchanged; fetch thread)
LOAD_HASHES = "extract:load_known_hashes"
STAGE_KEPT = "extract:stage_kept"  # staging the unchanged ids and the decoded records' wire hashes
KEPT_BATCH = 100_000  # unchanged ids staged at a time (1.6 MB: one COPY each)


@dataclass
class _StreamResult:
    report: Any = None
    pages: int = 0
    valid: int = 0
    rejected: int = 0
    kept: int = 0  # records found unchanged before decoding (only their ids are staged)
    kept_staged: int = 0
    duplicates: int = 0
    started_at: Any = None
    seconds: float = 0.0
    timings: Timings = field(default_factory=Timings)
    recovered: int = 0
    complete: bool = False
    reason: str | None = None


def extract(warehouse: Warehouse, hook: _Hook, run: RunContext, settings: SyncSettings,
            timings: Timings | None = None) -> dict[str, Any]:
    """Record the run, then stage a snapshot of the API (or note a reusable recent one).

    ``timings`` collects the seconds per step (the summary's normalize/stage totals come from it).
    """
    with warehouse.out_of_space_explained(f"staging the snapshot of run {run.run_id}"):
        return _extract(warehouse, hook, run, settings, timings or Timings())


def _extract(warehouse: Warehouse, hook: _Hook, run: RunContext, settings: SyncSettings,
             timings: Timings) -> dict[str, Any]:
    start_run(warehouse, run, stale_after=settings.stale_run_after)
    if run.snapshot_date < now_utc().date() and not settings.full_resync:
        reusable = find_reusable_snapshot(
            warehouse, max_age=settings.reuse_snapshot_max_age, exclude_run=run.run_id)
        if reusable:
            log.info("Run for past date %s reuses the complete snapshot of run %s taken at %s "
                     "(within %s): the API is not read again", run.snapshot_date, reusable["run_id"],
                     reusable["snapshot_at"], settings.reuse_snapshot_max_age)
            update_run(warehouse, run.run_id, snapshot_source="reused", reused_run_id=reusable["run_id"],
                       snapshot_complete=True, snapshot_at=None)
            return {"run_id": run.run_id, "snapshot_source": "reused", "reused_run_id": reusable["run_id"]}

    staging = Staging(warehouse, run.run_id)
    staging.create()
    result = _StreamResult(timings=timings)
    attempts = max(1, settings.snapshot_attempts)
    for attempt in range(1, attempts + 1):
        result = _stream_snapshot(warehouse, hook, staging, settings, timings)
        complete, reason = bool(result.report.complete), result.report.reason
        if complete:
            result.recovered = _recover_skipped(hook, staging, settings)
            result.valid += result.recovered
            if result.recovered:
                complete = False
                reason = (f"{result.recovered} installations still listed were skipped by paging "
                          "(the listing moved while it was read); they were fetched by id")
        result.complete, result.reason = complete, reason
        if complete or attempt == attempts:
            break
        log.warning("Snapshot attempt %d was inconsistent (%s): reading the API again", attempt, reason)
        staging.truncate()
    _finish_staging(staging, timings)

    report = result.report
    stats = _client_stats(hook)
    fields = dict(
        snapshot_source="api",
        snapshot_at=result.started_at,
        pages=result.pages,
        records_fetched=result.valid + result.kept + result.rejected,
        rejected=result.rejected,
        duplicates=result.duplicates,
        api_total=report.total_last if report.total_last is not None else report.total_first,
        snapshot_complete=result.complete,
        incomplete_reason=None if result.complete else result.reason,
        api_requests=int(stats.get("requests", 0)),
        retries=int(stats.get("retries", 0)),
        retries_by_reason=dict(stats.get("retries_by_reason", {}) or {}),
        step_seconds=timings.rounded(),
    )
    update_run(warehouse, run.run_id, **fields)
    fetched = result.valid + result.kept + result.rejected
    rate = fetched / result.seconds if result.seconds else 0.0
    log.info("Extract done: %d pages, %d records (%d unchanged, %d rejected, %d duplicates dropped) in %.1fs "
             "(%.0f records/s); snapshot %s", result.pages, fetched, result.kept, result.rejected, result.duplicates,
             result.seconds, rate, "complete" if result.complete else f"INCOMPLETE: {result.reason}")
    return {
        "run_id": run.run_id,
        "snapshot_source": "api",
        "pages": result.pages,
        "records_fetched": fetched,
        "rejected": result.rejected,
        "unchanged_before_normalize": result.kept,
        "snapshot_complete": result.complete,
        "recovered": result.recovered,
        "seconds": round(result.seconds, 3),
        "normalize_seconds": round(timings[NORMALIZE], 3),
        "stage_seconds": round(timings[STAGE], 3),
        "hash_seconds": round(timings[HASH], 3),
    }


def _known_hashes(warehouse: Warehouse, settings: SyncSettings, timings: Timings) -> KnownHashes | None:
    """What the warehouse holds, to recognise unchanged records before normalizing them (None on a
    first load, or on a full resync, which rewrites every row)."""
    if settings.full_resync:
        return None
    with timings.measure(LOAD_HASHES):
        known = KnownHashes.load(warehouse)
    if known is not None:
        log.info("Loaded %d active installations' record hashes (%.1f MB) in %.1fs: unchanged records are "
                 "recognised by their bytes, before decoding", len(known), known.nbytes / 1e6, timings[LOAD_HASHES])
    return known


_DONE = object()


def _stream_snapshot(warehouse: Warehouse, hook: _Hook, staging: Staging, settings: SyncSettings,
                     timings: Timings) -> _StreamResult:
    # The snapshot's moment comes before what the warehouse holds is read: a row a webhook event
    # writes after it is newer than the list (the load leaves it alone), and before it, known.
    result = _StreamResult(started_at=now_utc(), timings=timings)
    wire = WireReader(_known_hashes(warehouse, settings, timings))
    pager = hook.installations(page_size=settings.page_size, concurrency=settings.concurrency, wire=wire)
    pages: queue.Queue[Any] = queue.Queue(maxsize=max(1, settings.queue_pages))
    stop = threading.Event()

    def offer(item: Any) -> bool:
        """Hand an item to the loader; False once the loader has stopped listening."""
        while not stop.is_set():
            try:
                pages.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def fetch() -> None:
        try:
            for page in pager:
                if not offer(page):
                    return
            offer(_DONE)
        except BaseException as exc:  # handed to the loader thread, which re-raises it
            offer(exc)

    _log_start(hook, pager)
    t0 = time.monotonic()
    fetcher = threading.Thread(target=fetch, name="icr-fetch", daemon=True)
    buffer: list[Any] = []
    digests: list[bytes | None] = []
    kept: list[Any] = []
    last_log = t0
    page_count = total = None

    def flush(writer: Any) -> None:
        if buffer:
            _normalize_and_stage(writer, buffer, result, staging=staging, digests=digests)
        buffer.clear()
        digests.clear()

    def flush_kept() -> None:
        if kept:
            _stage_kept(staging, wire, kept, result)
        kept.clear()

    try:
        # One writer for the whole pass: on PostgreSQL one COPY that the server consumes on its
        # own core while this thread normalizes the next chunk; committed only at the end.
        with _staging_pass(staging, timings) as writer:
            fetcher.start()
            while True:
                item = pages.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                result.pages += 1
                page_count = item.page_count or page_count
                total = item.total if item.total is not None else total
                if result.pages == 1:
                    _log_first_page(item, pager, settings)
                buffer.extend(item.records)
                digests.extend(item.digests if item.digests is not None else [None] * len(item.records))
                if item.kept is not None and len(item.kept):
                    kept.append(item.kept)
                    result.kept += len(item.kept)
                if len(buffer) >= settings.chunk_records:
                    flush(writer)
                if result.kept - result.kept_staged >= KEPT_BATCH:
                    flush_kept()
                now = time.monotonic()
                if now - last_log >= settings.progress_every_s:
                    last_log = now
                    done = result.valid + result.kept + result.rejected + len(buffer)
                    _log_progress(result.pages, page_count, done, total, now - t0)
            flush(writer)
            flush_kept()
    finally:
        stop.set()
        if fetcher.ident is not None:
            fetcher.join(timeout=30)
    result.report = pager.report
    result.duplicates += pager.report.duplicates
    timings.add(HASH, wire.seconds)
    result.seconds = time.monotonic() - t0
    return result


#: Also warn when the page size makes a run send this many times the requests of the default page
#: size (page_size=1 on 1,000 installations: 1,000 requests instead of 10), once that is over
#: _SMALL_PAGES_MIN_REQUESTS requests.
_SMALL_PAGES_FACTOR = 10
_SMALL_PAGES_MIN_REQUESTS = 100


def _log_start(hook: _Hook, pager: _Pager) -> None:
    """Say what the extract is about to read, before the first (possibly slow) request."""
    client = hook.get_conn()
    log.info("Extract started: reading %s/app/installations as ICR App %s, page size %s, %s concurrent request(s)",
             client.base_url, client.auth.app_id, pager.page_size, pager.concurrency)


def _log_first_page(page: Any, pager: _Pager, settings: SyncSettings) -> None:
    """After page 0: how big the snapshot is, and a warning when the page size makes it very many requests."""
    page_size = pager.page_size
    if page.total is None:
        log.info("ICR gave no pagination.total on the first page: paging until a short or empty page")
        return
    pages = page.page_count if page.page_count is not None else -(-page.total // page_size)
    log.info("ICR lists %d installations: %s pages of %s", page.total, pages, page_size)
    at_default = -(-page.total // DEFAULT_PAGE_SIZE)
    if pages > settings.many_pages or (pages > _SMALL_PAGES_MIN_REQUESTS and pages >= _SMALL_PAGES_FACTOR * at_default):
        log.warning("page_size=%s makes this run send %d page requests (%d at page_size=%d): set a larger page "
                    "size in the connection's page_size or the run's page_size param", page_size, pages, at_default,
                    DEFAULT_PAGE_SIZE)


def _log_progress(pages: int, page_count: int | None, done: int, total: int | None, seconds: float) -> None:
    """One periodic progress line, with an ETA once ICR has said how many installations there are."""
    rate = done / seconds if seconds > 0 else 0.0
    of_pages = page_count if page_count is not None else "?"
    if total and rate > 0:
        left = max(total - done, 0) / rate
        log.info("Fetched page %d of %s: %d of %d records, %.0f records/s, about %s left", pages, of_pages, done,
                 total, rate, _duration(left))
    else:
        log.info("Fetched page %d of %s: %d records so far, %.0f records/s", pages, of_pages, done, rate)


def _duration(seconds: float) -> str:
    """12s, 3m05s, 1h02m: short enough for a log line."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


@contextmanager
def _staging_pass(staging: Staging, timings: Timings) -> Iterator[StageWriter]:
    """One staging writer for a whole pass; the time the server takes to finish the COPY when
    it closes counts as staging."""
    with staging.writer() as writer:
        yield writer
        c0 = time.monotonic()
    timings.add(STAGE, time.monotonic() - c0)


def _normalize_and_stage(writer: StageWriter, records: Sequence[Any], result: _StreamResult, *,
                         staging: Staging | None = None, digests: Sequence[bytes | None] = ()) -> None:
    """The loader's step: normalize one chunk and append it to the open staging writer, timed
    and counted in ``result``; with ``digests`` (the records' wire hashes), stage those of the
    rows staged."""
    with result.timings.measure(NORMALIZE):
        chunk = normalize_records(records)
    with result.timings.measure(STAGE):
        writer.write(chunk.frame, chunk.rejects)
    if staging is not None and any(d is not None for d in digests):
        with result.timings.measure(STAGE_KEPT):
            staging.write_wire(_wire_rows(records, digests, chunk.frame["installation_id"]))
    result.valid += len(chunk.frame)
    result.rejected += len(chunk.rejects)
    result.duplicates += chunk.duplicates


def _wire_rows(records: Sequence[Any], digests: Sequence[bytes | None], staged_ids: Any) -> list[tuple[str, bytes]]:
    """(id, wire hash) of each staged row whose record came with one: the first record of each id,
    as normalize keeps the first."""
    by_id: dict[str, bytes | None] = {}
    for record, digest in zip(records, digests):
        rid = record.get("id") if type(record) is dict else None
        if type(rid) is str:
            by_id.setdefault(rid.lower(), digest)
    return [(iid, d) for iid in staged_ids if (d := by_id.get(iid)) is not None]


def _stage_kept(staging: Staging, wire: WireReader, kept: list[Any], result: _StreamResult) -> None:
    """Stage the ids of the installations listed unchanged (positions in the WireReader's known
    installations), in bulk."""
    assert wire.known is not None
    positions = np.concatenate(kept)
    with result.timings.measure(STAGE_KEPT):
        staging.write_kept(wire.known.id_bytes(positions))
    result.kept_staged += int(positions.size)


def _finish_staging(staging: Staging, timings: Timings) -> None:
    """Key and analyze the staged rows; the time counts as staging."""
    with timings.measure(STAGE), timings.measure(STAGING_FINISH):
        staging.finish()


def stage_records(staging: Staging, records: Sequence[Any], *, chunk_records: int, timings: Timings) -> int:
    """Normalize and stage records already in memory exactly as the extract's loader thread does
    (chunks of ``chunk_records`` through one writer, then key the staged rows), timed in
    ``timings``; returns the rows staged. The benchmark times the extract's own path with it."""
    result = _StreamResult(timings=timings)
    with _staging_pass(staging, timings) as writer:
        for start in range(0, len(records), chunk_records):
            _normalize_and_stage(writer, records[start:start + chunk_records], result)
    _finish_staging(staging, timings)
    return result.valid


def _recover_skipped(hook: _Hook, staging: Staging, settings: SyncSettings) -> int:
    """Ask ICR by id for every installation the load would mark removed; stage those still there.

    Offset paging over live data can skip a record that is still listed (a removal on an
    earlier page shifts it back onto a page already read) while an addition elsewhere keeps
    ``pagination.total`` and the distinct count in agreement. A 404 confirms a removal; an
    answer means the record was skipped, so it is staged like any other. Returns how many were
    recovered. Skipped when the load would refuse the removal anyway (the mass-removal guard).
    The guard's denominator is counted only once there is a candidate: most nights have none, and
    counting a million active installations takes seconds.
    """
    active: int | None = None
    recovered = checked = 0
    client = hook.get_conn()
    for ids in removals.removal_candidates(staging):
        if active is None:
            active = removals.active_count(staging)
        if (not settings.accept_mass_removal and active
                and (checked + len(ids) - recovered) / active > settings.max_removal_share):
            log.warning("More than %.0f%% of active installations are missing from the snapshot: "
                        "not confirming them one by one (the load will stop on the mass-removal guard)",
                        settings.max_removal_share * 100)
            break
        found = []
        for installation_id in ids:
            try:
                found.append(fetch_installation(client, installation_id))
            except ICRAPIError as exc:
                if exc.status != 404:
                    raise
        checked += len(ids)
        if found:
            chunk = normalize_records(found)
            staging.write(chunk.frame, chunk.rejects)
            recovered += len(found)
    if checked:
        log.info("Confirmed removals by id: %d of %d missing installations are gone (404); %d were still "
                 "listed and skipped by paging, now staged", checked - recovered, checked, recovered)
    return recovered


def _client_stats(hook: _Hook) -> dict[str, Any]:
    return hook.get_conn().stats.as_dict()


# -- load, verify, cleanup ------------------------------------------------------------------------
def load(warehouse: Warehouse, run: RunContext, settings: SyncSettings,
         timings: Timings | None = None) -> dict[str, Any]:
    """Merge the run's staged snapshot (``timings``: seconds per merge statement, ``merge:<name>``),
    then tidy the tables when it rewrote a large share of them (``load:tidy``)."""
    timings = timings if timings is not None else Timings()
    with warehouse.out_of_space_explained(f"loading run {run.run_id}"):
        loaded = merge_run(warehouse, run, settings.load_options, timings)
        with timings.measure("load:tidy"):
            tidy_after_load(warehouse, loaded)
    return loaded


def verify(warehouse: Warehouse, run: RunContext) -> dict[str, Any]:
    row = verify_run(warehouse, run)
    keys = ("records_fetched", "inserted", "updated", "unchanged", "removed", "restored", "rejected",
            "active_after", "daily_rows", "snapshot_complete", "snapshot_source", "api_total")
    return {k: row[k] for k in keys}


def cleanup(warehouse: Warehouse, run: RunContext) -> None:
    Staging(warehouse, run.run_id).drop()


def fail(warehouse: Warehouse, run: RunContext, error: BaseException | str) -> None:
    """Record the failure (redacted) and drop the run's staging tables."""
    fail_run(warehouse, run.run_id, error)
    try:
        cleanup(warehouse, run)
    except Exception:
        log.exception("Could not drop the staging tables of run %s", run.run_id)


def run_sync(warehouse: Warehouse, hook: _Hook, run: RunContext, settings: SyncSettings | None = None) -> dict[str, Any]:
    """All steps in one process, as the DAG runs them across tasks (tests, benchmark, CLI)."""
    settings = settings or SyncSettings()
    migrate(warehouse)
    try:
        extracted = extract(warehouse, hook, run, settings)
        loaded = load(warehouse, run, settings)
        verified = verify(warehouse, run)
    except BaseException as exc:
        fail(warehouse, run, exc)
        raise
    cleanup(warehouse, run)
    return {**extracted, **loaded, **verified}
