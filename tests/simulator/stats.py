"""Request counters of the ICR simulator (``ICRSimulator.stats``, ``/_sim/state``)."""

from __future__ import annotations

import collections
import threading
from typing import Any


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._stats = {
                "requests": 0,
                "connections": 0,
                "by_status": collections.Counter(),
                "by_kind": collections.Counter(),
                "faults_injected": collections.Counter(),
                "faults_total": 0,
                "tokens_accepted": 0,
                "tokens_rejected": 0,
                "rejections": collections.Counter(),
                "pages_served": 0,
                "installations_served": 0,
                "access_tokens_issued": 0,
                "admin_requests": 0,
            }

    def snapshot(self) -> dict:
        with self._lock:
            return {k: dict(v) if isinstance(v, dict) else v for k, v in self._stats.items()}

    def count(self, name: str, key: Any = None, n: int = 1) -> None:
        with self._lock:
            if key is None:
                self._stats[name] += n
            else:
                self._stats[name][key] += n
