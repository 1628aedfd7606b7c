"""The ICR simulator's encoding cache: installation JSON bytes by cache key ``(i, version, updated_ms)``.

Records are rendered straight to JSON text (``data.InstallationFactory.record_json``) and kept in an
LRU. ``warm_up`` pre-generates every initial record (``SimulatorConfig.warm``), optionally in worker
processes; a prefetch thread (``SimulatorConfig.prefetch``) encodes the page after the one just
served, so a sequential pager mostly hits the cache.
"""

from __future__ import annotations

import functools
import queue
import threading
import time

from .data import InstallationFactory
from .installations import CacheKey


class RecordCache:
    def __init__(self, factory: InstallationFactory, size: int, stop_event: threading.Event):
        self._factory = factory
        self._stop_event = stop_event
        self._lru = functools.lru_cache(maxsize=size)(self._encode_uncached)
        self.warm: list[bytes] = []  # JSON of initial installation i at [i], after warm_up
        self.warm_seconds = 0.0
        self._prefetch_q: queue.Queue = queue.Queue(maxsize=2)
        self._prefetcher: threading.Thread | None = None

    def encoded(self, i: int, version: int, updated_ms: int) -> bytes:
        warm = self.warm
        if not version and 0 <= i < len(warm):
            return warm[i]
        return self._lru(i, version, updated_ms)

    def _encode_uncached(self, i: int, version: int, updated_ms: int) -> bytes:
        return self._factory.record_json(i, version, updated_ms if version else None).encode()

    def warm_up(self, n: int, workers: int = 1) -> float:
        """Generate the JSON of installations ``0..n-1`` now; returns the seconds it took."""
        t0 = time.monotonic()
        f = self._factory
        if workers > 1 and n >= 20_000:
            import concurrent.futures
            import multiprocessing

            step = -(-n // (workers * 4))
            spans = [(a, min(n, a + step)) for a in range(0, n, step)]
            args = (f.seed, f.app_id, f.app_name_id, f.anchor_ms, f.span_ms)
            ctx = multiprocessing.get_context("spawn")  # no fork of a threaded process
            with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                parts = list(pool.map(_warm_span, [(args, a, b) for a, b in spans]))
            warm: list[bytes] = []
            for part in parts:
                warm.extend(part)
        else:
            rj = f.record_json
            warm = [rj(i).encode() for i in range(n)]
        self.warm = warm
        self.warm_seconds = time.monotonic() - t0
        return self.warm_seconds

    # -- prefetch ---------------------------------------------------------------------------
    def start_prefetch(self) -> None:
        self._prefetch_q = queue.Queue(maxsize=2)
        self._prefetcher = threading.Thread(target=self._prefetch_loop, name="icr-simulator-prefetch", daemon=True)
        self._prefetcher.start()

    def stop_prefetch(self) -> None:
        while True:
            try:
                self._prefetch_q.get_nowait()
            except queue.Empty:
                break
        self._prefetch_q.put(None)
        if self._prefetcher is not None:
            self._prefetcher.join(timeout=5)

    def prefetch(self, keys: list[CacheKey]) -> None:
        """Encode these records in the background (dropped when the prefetcher is busy)."""
        try:
            self._prefetch_q.put_nowait(keys)
        except queue.Full:
            pass

    def _prefetch_loop(self) -> None:
        q = self._prefetch_q
        while True:
            keys = q.get()
            if keys is None:
                return
            enc = self.encoded
            for k in keys:
                if not k[1] and k[0] < len(self.warm):
                    continue
                if self._stop_event.is_set():
                    break
                enc(*k)


def _warm_span(task: tuple) -> list[bytes]:
    """Worker of ``RecordCache.warm_up``: the JSON of installations ``a..b-1``."""
    (seed, app_id, app_name_id, anchor_ms, span_ms), a, b = task
    f = InstallationFactory(seed, app_id, app_name_id, anchor_ms, 1)
    f.span_ms = span_ms
    rj = f.record_json
    return [rj(i).encode() for i in range(a, b)]
