"""The ICR simulator's data set: which installations exist now, in listing order, and their changes.

Installation ``i`` (an integer index) is generated on demand by ``data.InstallationFactory``; the set
is the index range ``[lo, hi)`` minus the sorted ``removed`` list (uninstalled and ``suspended``
ones; ``unsuspend`` brings the latter back), and ``overrides[i] = (version,
updated_ms)`` marks an updated record. Adding at the front lowers ``lo`` (every page shifts). A
record is addressed for encoding by its cache key ``(i, version, updated_ms)``.

``listener`` (the webhook sender), when ``listener.active``, gets ``emit(event, records)`` for
every change: ``installed``, ``uninstalled``, ``suspended``, ``unsuspended``,
``newPermissionsAccepted`` (an update changes the permissions).
"""

from __future__ import annotations

import bisect
import random
import threading
from typing import Any, Callable, Iterable, Iterator

from .data import InstallationFactory

CacheKey = tuple[int, int, int]


class InstallationSet:
    def __init__(self, factory: InstallationFactory, installations: int, seed: int, clock: Callable[[], float]):
        self.factory = factory
        self._clock = clock
        self.lock = threading.RLock()
        self._lo = 0
        self._hi = installations
        self._removed: list[int] = []
        self._overrides: dict[int, tuple[int, int]] = {}
        self._change_rng = random.Random(f"changes:{seed}")
        self._suspended: set[int] = set()
        self.listener: Any = None

    # -- reading ----------------------------------------------------------------------------
    @property
    def count(self) -> int:
        with self.lock:
            return self._total()

    def _total(self) -> int:
        return self._hi - self._lo - len(self._removed)

    def page(self, pos: int, limit: int, endless: str | None) -> tuple[int, list[CacheKey], list[CacheKey]]:
        """``(total, keys of page pos, keys of page pos+1)`` for pages of ``limit`` (``pos`` from 0).
        ``endless`` (``FaultConfig.endless_pages``): past the end, ``"repeat"`` serves the last full
        page again and ``"new"`` serves never-seen installations."""
        with self.lock:
            total = self._total()
            page_count = -(-total // limit)
            keys = self._keys_for(self._live_indices(pos * limit, limit)) if pos < page_count else []
            if endless == "repeat" and pos >= page_count and total >= limit:
                keys = self._keys_for(self._live_indices((total // limit - 1) * limit, limit))
            elif endless == "new" and pos >= page_count:
                start = self._hi + (pos - page_count) * limit
                keys = [(i, 0, 0) for i in range(start, start + limit)]
            ahead = self._keys_for(self._live_indices((pos + 1) * limit, limit)) if pos + 1 < page_count else []
        return total, keys, ahead

    def truth(self) -> Iterator[dict]:
        """The installation objects the API would list now, in listing order (a snapshot of the ids)."""
        with self.lock:
            lo, hi, removed = self._lo, self._hi, set(self._removed)
        for i in range(lo, hi):
            if i not in removed:
                with self.lock:
                    rec = self._record_of(i)
                yield rec

    def truth_id_list(self) -> list[str]:
        with self.lock:
            lo, hi, removed = self._lo, self._hi, set(self._removed)
        iid = self.factory.installation_id
        return [iid(i) for i in range(lo, hi) if i not in removed]

    def installation(self, installation_id: str) -> dict | None:
        with self.lock:
            i = self.factory.index_of(installation_id)
            if i is None or not self._is_live(i):
                return None
            return self._record_of(i)

    # -- changing ---------------------------------------------------------------------------
    def add(self, n: int, *, at: str = "end") -> list[str]:
        if at not in ("end", "front"):
            raise ValueError("at must be 'end' or 'front'")
        with self.lock:
            if at == "end":
                idx = range(self._hi, self._hi + n)
                self._hi += n
            else:
                self._lo -= n
                idx = range(self._lo, self._lo + n)
            self._notify("installed", idx)
            return [self.factory.installation_id(i) for i in idx]

    def remove(self, n_or_ids: int | Iterable[str]) -> list[str]:
        with self.lock:
            gone: list[dict] = []  # their records, for the webhooks, before the overrides go
            if isinstance(n_or_ids, int):
                # draw one at a time so ranks stay valid as the removed list grows
                out = []
                for _ in range(min(n_or_ids, self._total())):
                    i = self._rank_to_index(self._change_rng.randrange(self._total()))
                    gone += self._records([i])
                    bisect.insort(self._removed, i)
                    self._overrides.pop(i, None)
                    out.append(i)
            else:
                out = self._resolve(list(n_or_ids))
                for i in dict.fromkeys(out):
                    gone += self._records([i])
                    bisect.insort(self._removed, i)
                    self._overrides.pop(i, None)
            self._emit("uninstalled", gone)
            return [self.factory.installation_id(i) for i in out]

    def update(self, n_or_ids: int | Iterable[str]) -> list[str]:
        with self.lock:
            idx = self._resolve(n_or_ids if isinstance(n_or_ids, int) else list(n_or_ids))
            now_ms = int(self._clock() * 1000)
            for i in idx:
                version = self._overrides.get(i, (0, 0))[0] + 1
                self._overrides[i] = (version, now_ms)
            self._notify("newPermissionsAccepted", idx)
            return [self.factory.installation_id(i) for i in idx]

    def suspend(self, n_or_ids: int | Iterable[str]) -> list[str]:
        """Suspend ``n`` random active installations or the given ids: they leave the list and
        ``GET /app/installations/{id}`` answers 404 until :meth:`unsuspend`. An id already
        suspended is skipped (no new event). Returns the newly suspended ids."""
        with self.lock:
            if isinstance(n_or_ids, int):
                idx = self._resolve(n_or_ids)
            else:
                wanted = [iid for iid in dict.fromkeys(n_or_ids) if self.factory.index_of(iid) not in self._suspended]
                idx = self._resolve(wanted)
            for i in idx:
                bisect.insort(self._removed, i)
                self._suspended.add(i)
            self._notify("suspended", idx)
            return [self.factory.installation_id(i) for i in idx]

    def unsuspend(self, ids: Iterable[str]) -> list[str]:
        """Bring suspended installations back (unknown or not suspended → KeyError)."""
        with self.lock:
            idx = []
            for iid in dict.fromkeys(ids):
                i = self.factory.index_of(iid)
                if i is None or i not in self._suspended:
                    raise KeyError(f"no suspended installation {iid!r}")
                idx.append(i)
            for i in idx:
                self._removed.pop(bisect.bisect_left(self._removed, i))
                self._suspended.discard(i)
            self._notify("unsuspended", idx)
            return [self.factory.installation_id(i) for i in idx]

    @property
    def suspended_ids(self) -> list[str]:
        with self.lock:
            return [self.factory.installation_id(i) for i in sorted(self._suspended)]

    def apply_changes(self, changes: dict) -> dict:
        """``{"add_front", "add", "remove", "update"}`` → ``{"added", "removed", "updated", "count"}``."""
        out: dict[str, Any] = {"added": [], "removed": [], "updated": []}
        if changes.get("add_front"):
            out["added"] += self.add(int(changes["add_front"]), at="front")
        if changes.get("add"):
            out["added"] += self.add(int(changes["add"]))
        if changes.get("remove"):
            out["removed"] = self.remove(changes["remove"])
        if changes.get("update"):
            out["updated"] = self.update(changes["update"])
        if changes.get("suspend"):
            out["suspended"] = self.suspend(changes["suspend"])
        if changes.get("unsuspend"):
            out["unsuspended"] = self.unsuspend(changes["unsuspend"])
        out["count"] = self.count
        return out

    # -- webhooks (callers hold the lock) ---------------------------------------------------
    def _records(self, idx: Iterable[int]) -> list[dict]:
        listener = self.listener
        return [self._record_of(i) for i in idx] if listener is not None and listener.active else []

    def _notify(self, event: str, idx: Iterable[int]) -> None:
        self._emit(event, self._records(idx))

    def _emit(self, event: str, records: list[dict]) -> None:
        if records:
            self.listener.emit(event, records)

    # -- indices (callers hold the lock) ----------------------------------------------------
    def _rank_to_index(self, k: int) -> int:
        r, lo = self._removed, self._lo
        a, b = 0, len(r)
        while a < b:
            mid = (a + b) // 2
            if r[mid] - lo - mid <= k:
                a = mid + 1
            else:
                b = mid
        return lo + k + a

    def _is_live(self, i: int) -> bool:
        if not self._lo <= i < self._hi:
            return False
        j = bisect.bisect_left(self._removed, i)
        return not (j < len(self._removed) and self._removed[j] == i)

    def _live_indices(self, start_rank: int, n: int) -> list[int]:
        """Up to ``n`` live indices starting at listing position ``start_rank``."""
        out: list[int] = []
        if start_rank >= self._total() or n <= 0:
            return out
        i = self._rank_to_index(start_rank)
        r = self._removed
        j = bisect.bisect_left(r, i)
        nr = len(r)
        hi = self._hi
        while len(out) < n and i < hi:
            if j < nr and r[j] == i:
                j += 1
            else:
                out.append(i)
            i += 1
        return out

    def _keys_for(self, idx: list[int]) -> list[CacheKey]:
        get = self._overrides.get
        out = []
        for i in idx:
            ov = get(i)
            out.append((i, 0, 0) if ov is None else (i, ov[0], ov[1]))
        return out

    def _record_of(self, i: int) -> dict:
        ov = self._overrides.get(i)
        if ov is None:
            return self.factory.record(i)
        return self.factory.record(i, ov[0], ov[1])

    def _resolve(self, n_or_ids: int | Iterable[str]) -> list[int]:
        """Live indices: ``n`` seeded-random distinct ones, or those of the given ids (unknown → KeyError)."""
        if isinstance(n_or_ids, int):
            n = min(n_or_ids, self._total())
            ranks = self._change_rng.sample(range(self._total()), n) if n > 0 else []
            return [self._rank_to_index(k) for k in ranks]
        out = []
        for iid in n_or_ids:
            i = self.factory.index_of(iid)
            if i is None or not self._is_live(i):
                raise KeyError(f"no active installation {iid!r}")
            out.append(i)
        return out
