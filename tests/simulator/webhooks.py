"""The simulator's webhooks: ICR-shaped, signed deliveries (ICR API reference ``icr-api.md`` §7).

``payload``/``encode``/``delivery`` build what ICR sends: ``{event, installation, sender,
transaction?, signedData}`` where ``signedData`` is base64 of the JSON payload (without
``signedData``) and ``x-icr-signature-256`` is ``sha256=`` + hex HMAC-SHA256(secret, signedData).

:class:`WebhookSender` POSTs them, on every change of the data set (``installed``,
``uninstalled``, ``suspended``, ``unsuspended``, ``newPermissionsAccepted``), to the configured
URLs from a background thread, with :class:`WebhookFaults` (bad signature, duplicates, out of
order, delayed, dropped). Nothing is sent while no URL is configured.

[Assumed] ICR's retry policy is not documented: a delivery answered 5xx or not answered at all
is tried again ``retries`` times, ``retry_wait_s`` apart (a later delivery may overtake it).
"""

from __future__ import annotations

import base64
import dataclasses
import heapq
import itertools
import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from icr.webhooks.signature import HEADER, delivery_id, sign

EVENTS = ("installed", "uninstalled", "suspended", "unsuspended", "newPermissionsAccepted",
          "warehouseTransaction", "organizationTransaction")
SENDER = {"email": "admin@simulator.invalid", "fullName": "Simulator Admin",
          "id": "5c3f1a8e-0000-4000-8000-00000000cafe", "profilePicture": None}


def payload(event: str, installation: dict, sender: dict | None = None,
            transaction: dict | None = None) -> dict[str, Any]:
    """The payload with its ``signedData``."""
    doc: dict[str, Any] = {"event": event, "installation": installation, "sender": sender or SENDER}
    if transaction is not None:
        doc["transaction"] = transaction
    doc["signedData"] = base64.b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode("ascii")
    return doc


def encode(doc: dict[str, Any], secret: str | None) -> tuple[bytes, dict[str, str]]:
    """Body bytes and headers for a payload; signed when there is a secret."""
    headers = {"Content-Type": "application/json", "User-Agent": "icr-simulator-webhooks"}
    if secret:
        headers[HEADER] = sign(secret, doc["signedData"])
    return json.dumps(doc).encode("utf-8"), headers


def delivery(event: str, installation: dict, secret: str | None, **kw: Any) -> tuple[bytes, dict[str, str]]:
    return encode(payload(event, installation, **kw), secret)


@dataclass
class WebhookFaults:
    """Faults of the deliveries (probabilities 0..1 per delivery; seeded, so reproducible).

    ``bad_signature``   signed with a wrong secret (the receiver must answer 403)
    ``duplicate``       sent twice (the second ``duplicate_gap_s`` later)
    ``out_of_order``    held back ``reorder_s`` seconds, so later deliveries overtake it
    ``delay_s``         every delivery waits this long before it is sent
    ``drop``            never sent (lost): only a full sync can notice
    """

    bad_signature: float = 0.0
    duplicate: float = 0.0
    duplicate_gap_s: float = 0.05
    out_of_order: float = 0.0
    reorder_s: float = 1.0
    delay_s: float = 0.0
    drop: float = 0.0

    def __post_init__(self) -> None:
        for name in ("bad_signature", "duplicate", "out_of_order", "drop"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"webhook fault {name} must be within 0..1, got {getattr(self, name)!r}")
        for name in ("duplicate_gap_s", "reorder_s", "delay_s"):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"webhook fault {name} must be >= 0")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(order=True)
class _Job:
    due: float
    order: int
    url: str = dataclasses.field(compare=False)
    body: bytes = dataclasses.field(compare=False, repr=False)
    headers: dict = dataclasses.field(compare=False, repr=False)
    log: dict = dataclasses.field(compare=False)
    attempt: int = dataclasses.field(default=0, compare=False)


class WebhookSender:
    """Sends the simulator's events (see the module docstring). Thread-safe."""

    def __init__(self, urls: tuple[str, ...] | list[str] = (), secret: str | None = None, seed: int = 7,
                 faults: WebhookFaults | None = None, timeout_s: float = 5.0, retries: int = 3,
                 retry_wait_s: float = 0.5, keep: int = 10_000) -> None:
        self.urls: tuple[str, ...] = tuple(urls)
        self._secret = secret
        self.faults = faults or WebhookFaults()
        self.timeout_s, self.retries, self.retry_wait_s = timeout_s, retries, retry_wait_s
        self._rng = random.Random(f"webhooks:{seed}")
        self._order = itertools.count()
        self._heap: list[_Job] = []
        self._cond = threading.Condition()
        self._in_flight = 0
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.log: deque[dict] = deque(maxlen=keep)  # one entry per delivery attempt chain
        self.counts: Counter = Counter()

    # -- configuration --------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return bool(self.urls)

    @property
    def signed(self) -> bool:
        return bool(self._secret)

    def configure(self, urls: list[str] | None = None, secret: str | None = None,
                  faults: dict | WebhookFaults | None = None) -> None:
        with self._cond:
            if urls is not None:
                if not all(isinstance(u, str) and u.startswith(("http://", "https://")) for u in urls):
                    raise ValueError("webhook urls must be a list of http(s):// URLs")
                self.urls = tuple(urls)
            if secret is not None:
                self._secret = secret or None
            if faults is not None:
                base = dataclasses.asdict(self.faults)
                base.update(faults if isinstance(faults, dict) else dataclasses.asdict(faults))
                self.faults = WebhookFaults(**base)

    def state(self) -> dict:
        """What ``GET /_sim/webhooks`` answers (never the secret)."""
        with self._cond:
            return {"urls": list(self.urls), "signed": self.signed, "faults": self.faults.to_json(),
                    "counts": dict(self.counts), "queued": len(self._heap) + self._in_flight,
                    "deliveries": [dict(d) for d in self.log]}

    # -- sending --------------------------------------------------------------------------------
    def emit(self, event: str, records: list[dict], transaction: dict | None = None) -> None:
        """Queue one delivery per record and URL (faults applied here); no-op without URLs."""
        if not self.urls or not records:
            return
        now = time.time()
        with self._cond:
            for rec in records:
                doc = payload(event, rec, transaction=transaction)
                for url in self.urls:
                    self._queue(event, rec, doc, url, now)
            self._ensure_thread()
            self._cond.notify_all()

    def _queue(self, event: str, rec: dict, doc: dict, url: str, now: float) -> None:
        f, rng = self.faults, self._rng
        entry = {"event": event, "installation_id": rec.get("id"), "delivery_id": delivery_id(doc["signedData"]),
                 "url": url, "emitted_at": now, "faults": [], "status": None, "sent_at": None, "attempts": 0}
        if f.drop and rng.random() < f.drop:
            entry["faults"].append("dropped")
            self.counts["dropped"] += 1
            self.log.append(entry)
            return
        secret = self._secret
        if f.bad_signature and rng.random() < f.bad_signature:
            entry["faults"].append("bad_signature")
            secret = (secret or "") + "-not-the-secret"
        body, headers = encode(doc, secret)
        due = now + f.delay_s
        if f.delay_s:
            entry["faults"].append("delayed")
        if f.out_of_order and rng.random() < f.out_of_order:
            entry["faults"].append("out_of_order")
            due += f.reorder_s
        copies = 2 if f.duplicate and rng.random() < f.duplicate else 1
        for n in range(copies):
            log = entry if n == 0 else dict(entry, faults=entry["faults"] + ["duplicate"])
            self.log.append(log)
            heapq.heappush(self._heap, _Job(due + n * f.duplicate_gap_s, next(self._order), url, body, headers, log))
        self.counts["queued"] += copies

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every queued delivery was sent (or gave up); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._heap or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        with self._cond:
            self._stopped = False

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="icr-sim-webhooks", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0].due > time.time()):
                    self._cond.wait(0.05 if not self._heap else max(0.0, min(0.05, self._heap[0].due - time.time())))
                if self._stopped:
                    return
                job = heapq.heappop(self._heap)
                self._in_flight += 1
            try:
                self._send(job)
            finally:
                with self._cond:
                    self._in_flight -= 1
                    self._cond.notify_all()

    def _send(self, job: _Job) -> None:
        job.attempt += 1
        status: int | str
        try:
            req = urllib.request.Request(job.url, data=job.body, headers=job.headers, method="POST")
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                status = resp.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (OSError, urllib.error.URLError) as exc:
            status = type(exc).__name__
        with self._cond:
            job.log.update(status=status, sent_at=time.time(), attempts=job.attempt)
            self.counts[f"status_{status}"] += 1
            retry = not isinstance(status, int) or status >= 500
            if retry and job.attempt <= self.retries and not self._stopped:
                job.due, job.order = time.time() + self.retry_wait_s, next(self._order)
                heapq.heappush(self._heap, job)
