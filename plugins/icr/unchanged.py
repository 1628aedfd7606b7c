"""Decide "unchanged" before normalizing: the nightly run's fast path.

A record whose canonical JSON hashes to the ``record_hash`` the warehouse holds for the same
active installation is byte-for-byte what was stored: normalizing it, staging its columns and
comparing it in SQL would only confirm that. :class:`KnownHashes` holds the warehouse's active
installations compactly — a 64-bit key of the id and the hash's first 64 bits, two sorted numpy
arrays, 16 bytes an installation (16 MB at a million) — and :meth:`KnownHashes.split` sends each
chunk's records either on to ``normalize_records`` (new, changed, returning, or anything it
cannot judge: not an object, no string id, not encodable) or to the list of kept ids. The
extract stages only the kept *ids*; the load counts them as present and unchanged, so removals,
counts and the quality checks stay what they were, and only new and changed records are
normalized, staged in full and merged.

Per record it costs one canonical JSON encode and one SHA-256, about a fifth of normalizing it.
The id's key is Python's own string hash, computed in the same process as the arrays (it is
salted per process, never stored). A record is kept only when both its id key and its hash
prefix match an active installation's: a wrong "unchanged" needs two independent 64-bit
collisions at once. Anything encoded differently from the stored canonical form (a float that
msgspec writes otherwise) only sends the record down the full path, where SQL compares the
whole hash. What counts as "the same record" is exactly what ``record_hash`` already means: the
SHA-256 of the canonical JSON of the record as received (see :mod:`icr.normalize`).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa

from icr.jsontext import exact_encode, fast_encode
from icr.warehouse.engine import Warehouse

log = logging.getLogger(__name__)

_BATCH = 100_000  # rows converted at a time while loading (bounds the transient Python lists)
_SIGN = 1 << 63


def _key(installation_id: str) -> int:
    """The id's lookup key: the string hash of its lower-case text (64-bit, this process only)."""
    return hash(installation_id)


def _digest(hex_hash: str) -> int:
    """The first 64 bits of a hex SHA-256, as a signed 64-bit int."""
    value = int(hex_hash[:16], 16)
    return value - (1 << 64) if value >= _SIGN else value


@dataclass
class Split:
    """One chunk, split: the records to normalize, the ids kept as unchanged, duplicates dropped."""

    fresh: list[Any] = field(default_factory=list)
    kept_ids: list[str] = field(default_factory=list)
    duplicates: int = 0


class KnownHashes:
    """The warehouse's active installations: id key -> record_hash prefix, sorted by key."""

    def __init__(self, keys: np.ndarray, digests: np.ndarray) -> None:
        order = np.argsort(keys, kind="stable")
        self.keys, self.digests = keys[order], digests[order]

    def __len__(self) -> int:
        return int(self.keys.size)

    @property
    def nbytes(self) -> int:
        return int(self.keys.nbytes + self.digests.nbytes)

    @classmethod
    def load(cls, warehouse: Warehouse) -> KnownHashes | None:
        """The active installations' (id, hash) of ``warehouse``; None when there are none (a first
        load has nothing to compare with, and skips the hashing)."""
        sql = ("SELECT CAST(installation_id AS TEXT), record_hash FROM icr_installation_state "
               "WHERE deleted_at IS NULL")
        keys: list[np.ndarray] = []
        digests: list[np.ndarray] = []
        with warehouse.read() as conn:
            result = conn.execution_options(stream_results=True, yield_per=_BATCH).execute(sa.text(sql))
            for part in result.partitions(_BATCH):
                keys.append(np.fromiter((_key(row[0].lower()) for row in part), dtype=np.int64, count=len(part)))
                digests.append(np.fromiter((_digest(row[1]) for row in part), dtype=np.int64, count=len(part)))
        if not keys:
            return None
        return cls(np.concatenate(keys), np.concatenate(digests))

    def split(self, records: list[Any]) -> Split:
        """Records whose id and hash match an active installation become kept ids; the rest go on
        to be normalized, in their order. The first occurrence of an id wins, as in
        ``normalize_records``."""
        out = Split()
        ids: list[str | None] = []  # per record: its lower-case id, or None (normalize judges it)
        keys: list[int] = []
        digests: list[int] = []
        encode = fast_encode or _exact_encode_bytes
        sha256 = hashlib.sha256
        for rec in records:
            rid = rec.get("id") if type(rec) is dict else None
            raw = None
            if type(rid) is str and len(rid) == 36:  # a UUID's length; normalize judges the rest
                try:
                    raw = encode(rec)
                except Exception:  # noqa: BLE001 - normalize names the problem in its reject
                    raw = None
            if raw is None:
                ids.append(None)
                continue
            iid = rid.lower()
            ids.append(iid)
            keys.append(_key(iid))
            digests.append(int.from_bytes(sha256(raw).digest()[:8], "big", signed=True))
        same = iter(self._matches(np.array(keys, dtype=np.int64), np.array(digests, dtype=np.int64)).tolist()
                    if keys else ())
        seen: dict[str, bool] = {}  # id -> kept (True) or sent on (False)
        for rec, iid in zip(records, ids):
            if iid is None:
                out.fresh.append(rec)
                continue
            kept, first = next(same), seen.get(iid)
            if first is True:  # a later copy of a kept id: dropped, as normalize drops duplicates
                out.duplicates += 1
            elif first is None and kept:
                seen[iid] = True
                out.kept_ids.append(iid)
            else:
                seen.setdefault(iid, False)
                out.fresh.append(rec)  # normalize keeps its first copy and drops the others
        return out

    def _matches(self, keys: np.ndarray, digests: np.ndarray) -> np.ndarray:
        size = self.keys.size
        if not size:
            return np.zeros(keys.size, dtype=bool)
        at = np.minimum(np.searchsorted(self.keys, keys), size - 1)
        found = (self.keys[at] == keys) & (self.digests[at] == digests)
        # Ids sharing a key (rare): any entry of the run of equal keys may hold the digest.
        for i in np.flatnonzero(~found & (self.keys[at] == keys)).tolist():
            j = int(at[i]) + 1
            while j < size and self.keys[j] == keys[i]:
                if self.digests[j] == digests[i]:
                    found[i] = True
                    break
                j += 1
        return found


def _exact_encode_bytes(record: Any) -> bytes:
    return exact_encode(record).encode("utf-8")
