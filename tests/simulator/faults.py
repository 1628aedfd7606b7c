"""Fault injection in the ICR simulator: which fault (if any) the next ``/app/...`` request gets —
an outage, a queued ``fail_next``, or a seeded-random draw at ``FaultConfig.error_rate`` — and the
responses of the faults answered before the route runs (429s, 403 rate limit, 5xx, connection reset).
Faults that alter a real answer (``slow``, ``truncated_json``, ``invalid_json``) are applied by
``routes.ApiRouter``."""

from __future__ import annotations

import collections
import email.utils
import math
import random
import threading
import time

from .config import FAULT_KINDS, FaultConfig
from .responses import Response, error, gateway_html

#: fault kinds answered instead of the route (the others alter the route's answer)
PRE_FAULTS = {"429_seconds", "429_http_date", "429_zero", "429_none", "403_rate_limit",
              "500", "502", "503", "504", "reset"}
_RATE_LIMIT_DOCS = "https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting"


class FaultInjector:
    def __init__(self, config: FaultConfig, seed: int):
        self._seed = seed
        self._lock = threading.Lock()
        self._fail_next: collections.deque[str] = collections.deque()
        self.config = config

    @property
    def config(self) -> FaultConfig:
        return self._config

    @config.setter
    def config(self, value: FaultConfig) -> None:
        """A new fault configuration; restarts the seeded random draws and the ``max_faults`` count."""
        self._config = value
        self._rng = random.Random(f"faults:{self._seed if value.seed is None else value.seed}")
        self._injected_random = 0

    def fail_next(self, kind: str, n: int = 1) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {list(FAULT_KINDS)}")
        with self._lock:
            self._fail_next.extend([kind] * int(n))

    def clear_fail_next(self) -> None:
        with self._lock:
            self._fail_next.clear()

    @property
    def pending_fail_next(self) -> list[str]:
        with self._lock:
            return list(self._fail_next)

    def outage(self, seconds: float, kind: str) -> None:
        self._config.update(outage_until=time.monotonic() + float(seconds), outage_kind=kind)

    def pick(self, kind: str) -> str | None:
        """The fault for one ``/app/...`` request of route ``kind``, or None."""
        f = self._config
        with self._lock:
            if f.outage_until and time.monotonic() < f.outage_until:
                return f.outage_kind
            if self._fail_next:
                return self._fail_next.popleft()
            if not f.error_rate or (f.scope == "list" and kind != "list"):
                return None
            if f.max_faults is not None and self._injected_random >= f.max_faults:
                return None
            if self._rng.random() >= f.error_rate:
                return None
            self._injected_random += 1
            return self._rng.choice(list(f.fault_kinds))

    def response(self, fault: str, now: float) -> Response:
        """The answer of a fault in ``PRE_FAULTS`` (``now``: the server clock)."""
        ra = self._config.retry_after_seconds
        ra_text = str(int(ra)) if float(ra).is_integer() else str(ra)
        tmr = "ThrottlerException: Too Many Requests"
        if fault == "429_seconds":
            return error(429, tmr, headers=[("Retry-After", ra_text)])
        if fault == "429_http_date":
            when = email.utils.formatdate(math.ceil(now + float(ra)) + 1, usegmt=True)
            return error(429, tmr, headers=[("Retry-After", when)])
        if fault == "429_zero":
            return error(429, tmr, headers=[("Retry-After", "0")])
        if fault == "429_none":
            return error(429, tmr)
        if fault == "403_rate_limit":
            reset = math.ceil(now + float(ra))
            return error(
                403,
                "API rate limit exceeded",
                extra={"documentation_url": _RATE_LIMIT_DOCS},
                headers=[("x-ratelimit-limit", "5000"), ("x-ratelimit-remaining", "0"),
                         ("x-ratelimit-used", "5000"), ("x-ratelimit-reset", str(reset)),
                         ("x-ratelimit-resource", "core")],
            )
        if fault in ("502", "504"):
            return gateway_html(int(fault))
        if fault in ("500", "503"):
            return error(int(fault), "Internal server error" if fault == "500" else "Service Unavailable")
        if fault == "reset":
            return Response(0, reset=True)
        raise AssertionError(fault)
