"""Decide "unchanged" before normalizing: the nightly run's fast path.

A record whose canonical JSON hashes to the ``record_hash`` the warehouse holds for the same
active installation is byte-for-byte what was stored: normalizing it, staging its columns and
comparing it in SQL would only confirm that. :class:`KnownHashes` holds the warehouse's active
installations compactly (a 64-bit lookup key, the id's 128 bits and the hash's first 64 bits: four ``uint64``
arrays, 32 bytes an installation, 32 MB at a million) and :meth:`KnownHashes.split` sends each chunk's
records either on to ``normalize_records`` (new, changed, returning, or anything it cannot
judge: not an object, no valid id, not encodable) or to the list of kept ids. The extract stages
only the kept *ids*; the load counts them as present and unchanged, so removals, counts and
the quality checks stay what they were, and only new and changed records are normalized,
staged in full and merged.

Safe by construction: a record is kept only when its id and its hash prefix both match; two
installations sharing the id's first 64 bits, or a hash collision in 64 bits, at worst send a
record down the full path (where SQL compares the full hash); ids sharing a lookup key are told
apart by their whole 128 bits. What counts as "the same record"
is exactly what ``record_hash`` already means: the SHA-256 of the canonical JSON of the record
as received (see :mod:`icr.normalize`).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa

from icr.normalize import _UUID_RE, _encode_record
from icr.warehouse.engine import Warehouse

log = logging.getLogger(__name__)

_BATCH = 100_000  # rows converted at a time while loading (bounds the transient Python lists)
_MASK64 = (1 << 64) - 1
_MIX = np.uint64(0x9E3779B97F4A7C15)  # spreads ids whose high bits agree (sequential, time-ordered)


def _key(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """The sort key: both halves of the id mixed into 64 bits (uint64 arithmetic wraps)."""
    return lo ^ (hi * _MIX)


@dataclass
class Split:
    """One chunk, split: the records to normalize, the ids kept as unchanged, duplicates dropped."""

    fresh: list[Any] = field(default_factory=list)
    kept_ids: list[str] = field(default_factory=list)
    duplicates: int = 0


class KnownHashes:
    """The warehouse's active installations: id -> record_hash prefix, arrays sorted by a key
    mixed from the id (looked up with ``searchsorted``, then the whole id compared)."""

    def __init__(self, hi: np.ndarray, lo: np.ndarray, digest: np.ndarray) -> None:
        key = _key(hi, lo)
        order = np.argsort(key, kind="stable")
        self.key, self.hi, self.lo, self.digest = key[order], hi[order], lo[order], digest[order]

    def __len__(self) -> int:
        return int(self.hi.size)

    @property
    def nbytes(self) -> int:
        return int(self.key.nbytes + self.hi.nbytes + self.lo.nbytes + self.digest.nbytes)

    @classmethod
    def load(cls, warehouse: Warehouse) -> KnownHashes | None:
        """The active installations' (id, hash) of ``warehouse``; None when there are none (a first
        load has nothing to compare with, and skips the hashing)."""
        sql = ("SELECT CAST(installation_id AS TEXT), record_hash FROM icr_installation_state "
               "WHERE deleted_at IS NULL")
        his: list[np.ndarray] = []
        los: list[np.ndarray] = []
        digests: list[np.ndarray] = []
        with warehouse.read() as conn:
            result = conn.execution_options(stream_results=True, yield_per=_BATCH).execute(sa.text(sql))
            for part in result.partitions(_BATCH):
                ids = [int(row[0].replace("-", ""), 16) for row in part]
                his.append(np.fromiter((v >> 64 for v in ids), dtype=np.uint64, count=len(ids)))
                los.append(np.fromiter((v & _MASK64 for v in ids), dtype=np.uint64, count=len(ids)))
                digests.append(np.fromiter((int(row[1][:16], 16) for row in part), dtype=np.uint64,
                                           count=len(part)))
        if not his:
            return None
        return cls(np.concatenate(his), np.concatenate(los), np.concatenate(digests))

    def split(self, records: list[Any]) -> Split:
        """Records whose id and hash match an active installation become kept ids; the rest go on
        to be normalized, in their order. The first occurrence of an id wins, as in
        ``normalize_records``."""
        out = Split()
        ids: list[str | None] = []  # per record: its lower-case id, or None (normalize judges it)
        his: list[int] = []
        los: list[int] = []
        digests: list[int] = []
        uuid_match = _UUID_RE.fullmatch
        sha256 = hashlib.sha256
        for rec in records:
            rid = rec.get("id") if type(rec) is dict else None
            raw = None
            if type(rid) is str and len(rid) == 36 and uuid_match(rid) is not None:
                try:
                    raw = _encode_record(rec)
                except Exception:  # noqa: BLE001 - normalize names the problem in its reject
                    raw = None
            if raw is None:
                ids.append(None)
                continue
            value = int(rid.replace("-", ""), 16)
            ids.append(rid.lower())
            his.append(value >> 64)
            los.append(value & _MASK64)
            digests.append(int.from_bytes(sha256(raw).digest()[:8], "big"))
        same = iter(self._matches(np.array(his, dtype=np.uint64), np.array(los, dtype=np.uint64),
                                  np.array(digests, dtype=np.uint64)).tolist() if his else ())
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

    def _matches(self, hi: np.ndarray, lo: np.ndarray, digest: np.ndarray) -> np.ndarray:
        size = self.hi.size
        if not size:
            return np.zeros(hi.size, dtype=bool)
        key = _key(hi, lo)
        at = np.minimum(np.searchsorted(self.key, key), size - 1)
        found = (self.hi[at] == hi) & (self.lo[at] == lo)
        # Two ids with the same key (rare): look further along the run of equal keys.
        for i in np.flatnonzero(~found & (self.key[at] == key)).tolist():
            j = int(at[i]) + 1
            while j < size and self.key[j] == key[i]:
                if self.hi[j] == hi[i] and self.lo[j] == lo[i]:
                    at[i], found[i] = j, True
                    break
                j += 1
        return found & (self.digest[at] == digest)
