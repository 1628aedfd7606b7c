"""Configuration of the ICR simulator.

Every behaviour that the ICR API reference (``icr-api.md``) marks **[Assumed]** is a field of
:class:`SimulatorConfig`, so that a different real behaviour is a config change, not a code
change. Fault injection lives in :class:`FaultConfig`, which stays mutable while the server runs
(``sim.faults.error_rate = 0.2`` takes effect on the next request).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Union

#: Every fault the simulator can inject.
#:
#: ``429_seconds``     429 + ``Retry-After: <retry_after_seconds>``
#: ``429_http_date``   429 + ``Retry-After: <HTTP date ~retry_after_seconds+1 s ahead of the server clock>``
#: ``429_zero``        429 + ``Retry-After: 0``
#: ``429_none``        429 without ``Retry-After``
#: ``403_rate_limit``  GitHub-style 403 with ``x-ratelimit-remaining: 0`` and ``x-ratelimit-reset`` (epoch s)
#: ``500`` ``503``     NestJS JSON error bodies
#: ``502`` ``504``     an HTML body from a "gateway" (``text/html``), like nginx in front of the API
#: ``reset``           the request is read, then the socket is closed with SO_LINGER 0 (TCP RST), no answer
#: ``truncated_json``  200, the real body cut in half, ``Content-Length`` matching the truncated body
#: ``invalid_json``    200, ``application/json``, full length, but not parseable JSON
#: ``slow``            sleeps ``slow_seconds`` (meant to be longer than the client's read timeout), then answers
FAULT_KINDS: tuple[str, ...] = (
    "429_seconds",
    "429_http_date",
    "429_zero",
    "429_none",
    "403_rate_limit",
    "500",
    "502",
    "503",
    "504",
    "reset",
    "truncated_json",
    "invalid_json",
    "slow",
)

#: kinds answered instead of the request (an outage can be made of these).
_PRE_FAULT_KINDS = frozenset(k for k in FAULT_KINDS if k not in ("truncated_json", "invalid_json", "slow"))

#: Default kinds for ``error_rate``: everything except ``slow`` (which only makes sense together
#: with a known client timeout, so tests opt in to it explicitly).
DEFAULT_FAULT_KINDS: tuple[str, ...] = tuple(k for k in FAULT_KINDS if k != "slow")

MutationHook = Callable[[Any, int], None]  # on_page(sim, page_number)


@dataclass
class FaultConfig:
    """Faults to inject. All off by default; the RNG is seeded, so runs are reproducible.

    ``error_rate``            probability (0..1) that a request in ``scope`` gets a fault instead of its answer.
    ``fault_kinds``           kinds drawn uniformly when ``error_rate`` fires (see :data:`FAULT_KINDS`).
    ``retry_after_seconds``   the ``Retry-After`` / ``x-ratelimit-reset`` distance used by the 429/403 kinds.
    ``slow_seconds``          how long the ``slow`` kind sleeps before answering.
    ``latency_ms``            added to every (non-admin) request — for benchmarks.
    ``clock_offset_s``        server clock = ``time.time() + clock_offset_s`` (JWT checks, timestamps, dates).
    ``mutate_while_paging``   after each served page of ``GET /app/installations`` whose number is greater
                              than the first page (``page_base``), apply either a dict
                              ``{"add": k, "add_front": k, "remove": k, "update": k}`` or call a hook
                              ``hook(sim, page_number)``.
    ``max_faults``            upper bound on faults injected by ``error_rate`` (``fail_next`` is not bounded).
    ``scope``                 ``"list"``: ``error_rate`` applies to ``GET /app/installations`` only;
                              ``"app"``: to every ``/app/...`` request.
    ``seed``                  seed of the fault RNG (``None``: the simulator's seed).
    ``extra_records``         ``{page_number: [record, ...]}``: raw records appended to that page of
                              ``GET /app/installations`` as given (dicts/lists/values are JSON-encoded,
                              ``str``/``bytes`` are sent verbatim as JSON text); not validated and not
                              counted in ``pagination.total`` — for hand-crafted bad records.
    ``pagination_override``   ``{field: value}`` merged into the ``pagination`` object of every page
                              (``bytes`` values are inserted verbatim as JSON text, e.g. ``b"1e400"``;
                              ``None`` removes the field) — for absurd or missing envelope numbers.
    ``endless_pages``         ``"repeat"``: every page past the last one serves the last full page again;
                              ``"new"``: pages past the last one are full of new installations that are
                              never counted in ``total``. Both always send ``nextPage = page + 1`` and no
                              ``pageCount`` — a paging loop that never ends.
    ``dribble_seconds``       seconds between bytes of each ``GET /app/installations`` body (the
                              status line and headers go at once): a server that sends 1 byte/s.
    ``outage_until``          ``time.monotonic()`` until which every ``/app/...`` request gets
                              ``outage_kind`` (see ``ICRSimulator.outage``).
    """

    error_rate: float = 0.0
    fault_kinds: list[str] = field(default_factory=lambda: list(DEFAULT_FAULT_KINDS))
    retry_after_seconds: float = 1
    slow_seconds: float = 5.0
    latency_ms: float = 0.0
    clock_offset_s: float = 0.0
    mutate_while_paging: Union[dict, MutationHook, None] = None
    max_faults: int | None = None
    scope: str = "list"
    seed: int | None = None
    extra_records: dict | None = None
    pagination_override: dict | None = None
    endless_pages: str | None = None
    dribble_seconds: float = 0.0
    outage_until: float = 0.0
    outage_kind: str = "reset"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not 0.0 <= float(self.error_rate) <= 1.0:
            raise ValueError(f"error_rate must be within 0..1, got {self.error_rate!r}")
        unknown = [k for k in self.fault_kinds if k not in FAULT_KINDS]
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown}; known: {list(FAULT_KINDS)}")
        if self.error_rate and not self.fault_kinds:
            raise ValueError("error_rate > 0 needs at least one fault kind")
        if self.endless_pages not in (None, "repeat", "new"):
            raise ValueError(f"endless_pages must be None, 'repeat' or 'new', got {self.endless_pages!r}")
        if self.outage_kind not in _PRE_FAULT_KINDS:
            raise ValueError(f"outage_kind must be one of {sorted(_PRE_FAULT_KINDS)}")
        if self.scope not in ("list", "app"):
            raise ValueError(f"scope must be 'list' or 'app', got {self.scope!r}")
        if self.extra_records is not None:
            if not isinstance(self.extra_records, dict) or not all(
                    isinstance(v, (list, tuple)) for v in self.extra_records.values()):
                raise ValueError("extra_records must be a dict {page_number: [record, ...]}")
            self.extra_records = {int(k): list(v) for k, v in self.extra_records.items()}
        m = self.mutate_while_paging
        if m is not None and not callable(m):
            if not isinstance(m, dict):
                raise ValueError("mutate_while_paging must be a dict or a callable")
            bad = set(m) - {"add", "add_front", "remove", "update"}
            if bad:
                raise ValueError(f"mutate_while_paging: unknown keys {sorted(bad)}")

    def update(self, **changes: Any) -> None:
        """Set several fields at once (validated; unknown names raise ``ValueError``)."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = set(changes) - names
        if unknown:
            raise ValueError(f"unknown FaultConfig fields: {sorted(unknown)}")
        old = dataclasses.asdict(self) if not callable(self.mutate_while_paging) else None
        for k, v in changes.items():
            setattr(self, k, list(v) if k == "fault_kinds" else v)
        try:
            self.validate()
        except ValueError:
            if old is not None:
                for k, v in old.items():
                    setattr(self, k, v)
            raise

    def to_json(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if callable(v):
                v = f"<callable {getattr(v, '__name__', type(v).__name__)}>"
            out[f.name] = v
        return out


@dataclass
class SimulatorConfig:
    """How the simulated ICR behaves. Fields tagged [Assumed] mirror assumptions of the reference."""

    installations: int = 1000
    seed: int = 7
    #: [Assumed] ``limit`` above this → 400 "limit must not be greater than N". 100: the largest
    #: page size ICR's docs show working (the client's default ``max_page_size`` is the same).
    max_page_size: int = 100
    #: [Assumed] page size when ``limit`` is absent (ICR's sample calls the endpoint with no query).
    default_page_size: int = 100
    #: [Assumed] 0-based pages (ICR's examples start at page=0). Set 1 for 1-based.
    page_base: int = 0
    #: [ICR] the version header may be absent; any other value than these → 400.
    supported_api_versions: tuple[str, ...] = ("2023-06-16",)
    #: [Assumed] on the last page ``nextPage`` (and on the first page ``prevPage``) is JSON
    #: ``null`` ("null") or left out of the object ("absent").
    next_page_on_last: str = "null"
    #: [ICR] ``exp`` no more than 10 minutes ahead of the server clock.
    max_token_lifetime_s: int = 600
    #: [Assumed] how far in the future ``iat`` may be (server clock). 30 s: a client that follows
    #: ICR's advice (iat = now - 60) is accepted with a clock up to 90 s ahead of the server.
    iat_skew_s: int = 30
    #: [ICR] installation access tokens expire after 2 hours.
    access_token_ttl_s: int = 7200
    #: [Assumed] ICR's docs say 200; GitHub answers 201. Clients must accept both.
    access_token_status: int = 200
    #: RSA key size of generated app keys (keys are cached per process, per seed and key number).
    key_bits: int = 2048
    #: Use this private key (PEM, PKCS#1 or PKCS#8, unencrypted) as the app's first key instead of
    #: generating one.
    private_key_pem: str | None = None
    app_name_id: str = "icr-sim-connector"
    #: Synthetic timestamps lie in ``[data_anchor - history_days, data_anchor)`` (clamped to now),
    #: so data is deterministic per seed whatever day the tests run.
    data_anchor: str = "2026-01-01T00:00:00Z"
    history_days: int = 3 * 365
    #: LRU of encoded installation records (about 1 KB each).
    record_cache_size: int = 20000
    #: after serving page P, generate page P+1 into the cache in a background thread. Pays off
    #: when the simulator runs in its own process (the CLI turns it on); in-process it only
    #: competes with the client for the GIL, so it is off by default.
    prefetch: bool = False
    #: pre-generate the JSON of every initial installation when the simulator starts (about 1 KB
    #: each, kept for the simulator's life), so a long benchmark measures the client, not the
    #: simulator's record generation (~40 µs a record in pure Python). ``warm_workers`` > 1
    #: generates in that many processes. Updated and added installations still go through the LRU.
    warm: bool = False
    warm_workers: int = 1
    #: POST a signed webhook delivery to each of these URLs on every change (``webhooks.py``;
    #: also ``POST /_sim/webhooks``). ``webhook_secret``: the webhook's secret (None: unsigned).
    webhook_urls: tuple[str, ...] = ()
    webhook_secret: str | None = field(default=None, repr=False)
    #: serve the ``/_sim/*`` admin API (loopback clients only).
    admin_api: bool = True
    faults: FaultConfig = field(default_factory=FaultConfig)

    def __post_init__(self) -> None:
        if self.installations < 0:
            raise ValueError("installations must be >= 0")
        if self.max_page_size < 1 or self.default_page_size < 1:
            raise ValueError("page sizes must be >= 1")
        if self.default_page_size > self.max_page_size:
            raise ValueError("default_page_size must not exceed max_page_size")
        if self.next_page_on_last not in ("null", "absent"):
            raise ValueError("next_page_on_last must be 'null' or 'absent'")
        if self.access_token_status not in (200, 201):
            raise ValueError("access_token_status must be 200 or 201")
        if self.page_base not in (0, 1):
            raise ValueError("page_base must be 0 or 1")
        self.supported_api_versions = tuple(self.supported_api_versions)
        if isinstance(self.faults, dict):
            self.faults = FaultConfig(**self.faults)
