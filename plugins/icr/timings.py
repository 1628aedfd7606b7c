"""Where a run's time goes: seconds per named step, collected while the run works.

The extract and the load fill one :class:`Timings` each (``"normalize"``, ``"stage"``,
``"merge:<statement>"``...); the extract's summary reads its totals from it, and the benchmark
passes its own collector in to get the per-statement breakdown, so no code exists only to be
timed and nothing is patched to time it.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager


class Timings:
    """Seconds per step name, summed over every time the step ran."""

    def __init__(self) -> None:
        self._seconds: defaultdict[str, float] = defaultdict(float)

    @contextmanager
    def measure(self, name: str) -> Iterator[None]:
        """Add the time the ``with`` body takes (even when it raises) to ``name``."""
        t0 = time.monotonic()
        try:
            yield
        finally:
            self._seconds[name] += time.monotonic() - t0

    def add(self, name: str, seconds: float) -> None:
        self._seconds[name] += seconds

    def __getitem__(self, name: str) -> float:
        return self._seconds.get(name, 0.0)

    def rounded(self, digits: int = 3) -> dict[str, float]:
        """Every step's seconds, slowest first, rounded (what the run row keeps)."""
        return {name: round(seconds, digits) for name, seconds in self.as_dict().items()}

    def as_dict(self) -> dict[str, float]:
        """Every step's seconds, slowest first."""
        return dict(sorted(self._seconds.items(), key=lambda kv: -kv[1]))
