"""Decide "unchanged" before decoding: the nightly run's fast path.

Each record of a page is hashed as the bytes the API sent (its span in the ``installations``
array, cut by msgspec without building the record): the *wire hash*, the first 16 bytes of its
SHA-256. The warehouse keeps the wire hash of every installation it wrote from such bytes
(``icr_installation_state.wire_hash``, migration 0012, set only together with ``record_hash``
from the same bytes). A listed record whose wire hash is an active installation's is that
installation, byte for byte as stored: it is not decoded, normalized, staged or compared again.
Only its position in :class:`KnownHashes` travels on; the loader stages the ids of those
positions in bulk (``Staging.write_kept``), and the load counts them as present and unchanged,
so removals, counts and the quality checks stay what they were. Every other record (new,
changed, sent with other bytes, or an installation without a wire hash yet) is decoded and goes
the full way, carrying its wire hash so the load can store it.

A wrong "unchanged" needs two different byte strings with the same 128-bit hash prefix. Records
are matched by their bytes alone, so an unchanged record's id is the stored one; duplicates (an
installation listed twice, as offset paging over live data can) are told apart by position: the
first copy wins, whichever path it took, as in ``normalize_records``.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import sqlalchemy as sa

from icr.warehouse.engine import Warehouse

log = logging.getLogger(__name__)

WIRE_BYTES = 16  # bytes of the SHA-256 kept as the wire hash
_NO_WIRE = b"\x00" * WIRE_BYTES  # the load's stand-in for NULL (no real digest is all zeros)
_BATCH = 100_000  # rows converted at a time on SQLite (bounds the transient Python lists)
_decode = msgspec.json.decode


def wire_hash(span: Any) -> bytes:
    """The wire hash of one record's bytes."""
    return hashlib.sha256(span).digest()[:WIRE_BYTES]


def _split_digests(digests: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated 16-byte digests as (first 8 bytes, last 8 bytes), each a uint64 array."""
    pairs = np.frombuffer(digests, dtype=">u8").reshape(-1, 2)
    return pairs[:, 0].astype(np.uint64), pairs[:, 1].astype(np.uint64)


class KnownHashes:
    """The warehouse's active installations: their ids (16-byte UUIDs; an installation's position
    is its place here) and, for those that have one, their wire hash (sorted by its first 8 bytes,
    pointing at the position). 40 bytes an installation: 40 MB at a million."""

    def __init__(self, ids: bytes, digests: bytes) -> None:
        """``ids``: 16 bytes per installation; ``digests``: its wire hash (all zeros: none)."""
        self.ids = np.frombuffer(ids, dtype="V16")
        keys, checks = _split_digests(digests)
        has = (keys != 0) | (checks != 0)
        by_key = np.argsort(keys[has])
        self.keys, self.checks = keys[has][by_key], checks[has][by_key]
        self.positions = np.flatnonzero(has)[by_key].astype(np.int64)
        self._by_id: tuple[np.ndarray, np.ndarray] | None = None  # built on the first id lookup

    def __len__(self) -> int:
        return int(self.ids.size)

    @property
    def nbytes(self) -> int:
        return int(self.ids.nbytes + self.keys.nbytes + self.checks.nbytes + self.positions.nbytes
                   + (self._by_id[0].nbytes * 2 if self._by_id is not None else 0))

    @classmethod
    def load(cls, warehouse: Warehouse) -> KnownHashes | None:
        """The active installations of ``warehouse``; None when there are none (a first load
        recognises nothing, and only hashes)."""
        if warehouse.dialect.stages_with_copy:
            ids, digests = _load_copy(warehouse)
        else:
            ids, digests = _load_rows(warehouse)
        return cls(ids, digests) if ids else None

    def match(self, digests: bytes) -> np.ndarray:
        """Per 16-byte digest: the position of the installation with that wire hash, else -1."""
        keys, checks = _split_digests(digests)
        out = np.full(keys.size, -1, dtype=np.int64)
        size = self.keys.size
        if not size or not keys.size:
            return out
        at = np.minimum(np.searchsorted(self.keys, keys), size - 1)
        hit = (self.keys[at] == keys) & (self.checks[at] == checks)
        out[hit] = self.positions[at[hit]]
        # Digests sharing their first 8 bytes (rare): any entry of the run of equal keys may match.
        for i in np.flatnonzero(~hit & (self.keys[at] == keys)).tolist():
            j = int(at[i]) + 1
            while j < size and self.keys[j] == keys[i]:
                if self.checks[j] == checks[i]:
                    out[i] = self.positions[j]
                    break
                j += 1
        return out

    def position_of(self, installation_id: str) -> int:
        """The position of an active installation's id (any case), else -1. The first call sorts
        the ids by their first 8 bytes (nights where every record is unchanged never ask)."""
        try:
            key = uuid.UUID(installation_id).bytes
        except (ValueError, TypeError, AttributeError):
            return -1
        if self._by_id is None:
            high = np.frombuffer(self.ids.tobytes(), dtype=">u8")[::2].astype(np.uint64)
            order = np.argsort(high)
            self._by_id = (high[order], order)
        high, order = self._by_id
        j = int(np.searchsorted(high, np.uint64(int.from_bytes(key[:8], "big"))))
        while j < high.size and int(high[j]) == int.from_bytes(key[:8], "big"):
            if self.ids[order[j]].tobytes() == key:
                return int(order[j])
            j += 1
        return -1

    def id_bytes(self, positions: np.ndarray) -> bytes:
        """The 16-byte ids at ``positions``, concatenated."""
        return self.ids[positions].tobytes()


def _load_copy(warehouse: Warehouse) -> tuple[bytes, bytes]:
    """PostgreSQL: one binary COPY of (id, wire hash), read straight into arrays."""
    sql = ("COPY (SELECT installation_id, CASE WHEN octet_length(wire_hash) = 16 THEN wire_hash "
           "ELSE '\\x" + "00" * WIRE_BYTES + "'::bytea END FROM icr_installation_state "
           "WHERE deleted_at IS NULL) TO STDOUT (FORMAT binary)")
    with warehouse.read() as conn:
        with conn.connection.driver_connection.cursor() as cursor:
            with cursor.copy(sql) as copy:
                data = b"".join(bytes(block) for block in copy)
    body = data[19:-2]  # signature, flags and header extension; the trailer
    row = np.dtype([("n", ">i2"), ("idlen", ">i4"), ("id", "V16"), ("hlen", ">i4"), ("h", "V16")])
    rows = np.frombuffer(body, dtype=row)
    if rows.size and not ((rows["n"] == 2).all() and (rows["idlen"] == 16).all() and (rows["hlen"] == 16).all()):
        raise ValueError("unexpected layout of the binary COPY of icr_installation_state")
    return rows["id"].tobytes(), rows["h"].tobytes()


def _load_rows(warehouse: Warehouse) -> tuple[bytes, bytes]:
    """SQLite: the rows in batches."""
    sql = "SELECT installation_id, wire_hash FROM icr_installation_state WHERE deleted_at IS NULL"
    ids: list[bytes] = []
    digests: list[bytes] = []
    with warehouse.read() as conn:
        result = conn.execution_options(stream_results=True, yield_per=_BATCH).execute(sa.text(sql))
        for part in result.partitions(_BATCH):
            for iid, digest in part:
                ids.append(uuid.UUID(str(iid)).bytes)
                digests.append(digest if isinstance(digest, bytes) and len(digest) == WIRE_BYTES else _NO_WIRE)
    return b"".join(ids), b"".join(digests)


@dataclass
class Sorted:
    """One page's records, sorted (:meth:`WireReader.sort`): ``fresh`` to decode-and-normalize
    (decoded) with their wire hashes (``digests``, None where not known), and ``kept``: the
    positions of unchanged installations, before de-duplication."""

    fresh: list[Any] = field(default_factory=list)
    digests: list[bytes | None] = field(default_factory=list)
    kept: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))


@dataclass
class Accepted:
    """One page after de-duplication (:meth:`WireReader.accept`)."""

    records: list[Any]
    digests: list[bytes | None]
    kept: np.ndarray
    duplicates: int = 0
    without_id: int = 0


class WireReader:
    """One snapshot's reading of record bytes: hash, recognise, de-duplicate (a new one per pass).

    :meth:`sort` may run in the pager's fetching threads; :meth:`accept` runs in page order, in
    one thread (it holds which installations the snapshot has already listed)."""

    def __init__(self, known: KnownHashes | None) -> None:
        self.known = known
        self._listed = np.zeros(len(known) if known else 0, dtype=bool)
        self.kept = 0  # distinct installations found unchanged so far
        self.overlap = 0  # ids the pager's SeenIds holds that were first listed unchanged
        self.seconds = 0.0  # spent hashing, recognising and de-duplicating

    def sort(self, spans: Sequence[Any]) -> Sorted | None:
        """Hash every span; decode those not recognised. None when a span does not decode as is
        (the caller then reads the page the slow, exact way: :func:`icr.pagejson.decode_page`)."""
        t0 = time.perf_counter()
        try:
            return self._sort(spans)
        finally:
            self.seconds += time.perf_counter() - t0

    def _sort(self, spans: Sequence[Any]) -> Sorted | None:
        digests = b"".join([wire_hash(s) for s in spans])
        found = self.known.match(digests) if self.known is not None else np.full(len(spans), -1, dtype=np.int64)
        out = Sorted(kept=found[found >= 0])
        for i in np.flatnonzero(found < 0).tolist():
            try:
                out.fresh.append(_decode(spans[i]))
            except (ValueError, RecursionError):
                return None
            out.digests.append(digests[i * WIRE_BYTES:(i + 1) * WIRE_BYTES])
        return out

    def accept(self, page: Sorted, seen: Any) -> Accepted:
        """Drop what the snapshot already listed, in page order: kept positions by position,
        decoded records by id (``seen``: the pager's :class:`~icr.paging.SeenIds`), across both."""
        t0 = time.perf_counter()
        try:
            return self._accept(page, seen)
        finally:
            self.seconds += time.perf_counter() - t0

    def _accept(self, page: Sorted, seen: Any) -> Accepted:
        out = Accepted([], [], page.kept[:0])
        flags = seen.add_records(page.fresh)
        out.without_id = flags.count(None)
        for record, digest, new in zip(page.fresh, page.digests, flags):
            if new is False:
                out.duplicates += 1
                continue
            if new and not self._claim(record["id"]):  # a kept copy came first: counted there
                self.overlap += 1
                out.duplicates += 1
                continue
            out.records.append(record)
            out.digests.append(digest)
        if page.kept.size:
            unique = np.unique(page.kept)
            fresh = unique[~self._listed[unique]]
            out.duplicates += int(page.kept.size - fresh.size)
            self._listed[fresh] = True
            out.kept = fresh
            self.kept += int(fresh.size)
        return out

    def _claim(self, installation_id: str) -> bool:
        """Mark a decoded record's installation listed; False when a kept copy came first."""
        if self.known is None:
            return True
        at = self.known.position_of(installation_id)
        if at < 0:
            return True
        if self._listed[at]:
            return False
        self._listed[at] = True
        return True
