"""The ICR simulator: a strict, fast, standard-library HTTP stand-in for the ICR Apps API.

API endpoints (see /work/shared/icr-api.md):

* ``GET  /app/installations?limit=L&page=P``           app JWT; paged list
* ``GET  /app/installations/{id}``                     app JWT; one installation, 404 if unknown
* ``POST /app/installations/{id}/accessTokens``        app JWT; installation access token (200 or 201)
* ``POST /app/accessTokens``                           app JWT; app access token
* ``DELETE /app/installations/token``                  *access token*; revokes it, 204

Admin API (no auth; loopback clients only; disabled with ``admin_api=False``) — lets a test drive a
simulator that runs in another process (``python -m tests.simulator``):

* ``GET  /_sim/state``      → ``{"count", "app_id", "base_url", "fingerprints", "stats", "faults"}``
* ``GET  /_sim/truth_ids``  → ``{"count", "ids": [...]}`` (the ids the API lists now, in order)
* ``POST /_sim/changes``    JSON ``{"add": n, "add_front": n, "remove": n | [ids], "update": n | [ids]}``
  → ``{"added": [...], "removed": [...], "updated": [...], "count": n}``
* ``POST /_sim/faults``     JSON with any :class:`FaultConfig` fields (partial update), plus optional
  ``"fail_next": {"kind": "503", "n": 2}`` (or a list of such) → ``{"faults": {...}}``
* ``POST /_sim/reset_stats`` → ``{"ok": true}``
* ``POST /_sim/keys``        → ``{"private_key_pem", "fingerprint", "fingerprints"}``: one more app key
  (a key rotation), for a test that switches a connection to a new key

Speed: records are rendered straight to JSON text (``data.InstallationFactory.record_json``) and kept in
an LRU; ``SimulatorConfig(warm=True)`` (CLI ``--warm``) pre-generates every initial record at start,
so paging serves bytes from memory (``/_sim/state`` reports ``warm_records`` and ``warm_seconds``).

Errors are NestJS-style ``{"statusCode", "message", "error"}``. The server speaks HTTP/1.1 with
keep-alive and always sends ``Content-Length``.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import email.utils
import functools
import http
import ipaddress
import json
import math
import queue
import random
import re
import socket
import string
import struct
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable, Iterator
from urllib.parse import parse_qs, urlsplit

from .config import FAULT_KINDS, FaultConfig, SimulatorConfig
from .data import InstallationFactory, iso_ms, parse_iso_ms, seeded_uuid
from .tokens import (
    AppKey,
    JWTVerifier,
    TokenRejected,
    fingerprint,
    generate_private_key,
    load_private_key,
    mint_app_jwt,
    private_pem,
)

_JSON = "application/json; charset=utf-8"
_PRE_FAULTS = {"429_seconds", "429_http_date", "429_zero", "429_none", "403_rate_limit",
               "500", "502", "503", "504", "reset"}
_RE_ONE = re.compile(r"^/app/installations/([^/]+)$")
_RE_TOKEN = re.compile(r"^/app/installations/([^/]+)/accessTokens$")
_TOKEN_ALPHABET = string.ascii_letters + string.digits


class _Resp:
    __slots__ = ("status", "headers", "body", "reset")

    def __init__(self, status: int, body: bytes = b"", headers: list | None = None, reset: bool = False):
        self.status = status
        self.body = body
        self.headers = headers if headers is not None else []
        self.reset = reset


def _json_resp(status: int, obj: Any, headers: list | None = None) -> _Resp:
    body = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    return _Resp(status, body, [("Content-Type", _JSON)] + (headers or []))


def _error(status: int, message: Any, extra: dict | None = None, headers: list | None = None) -> _Resp:
    obj = {"statusCode": status, "message": message, "error": http.HTTPStatus(status).phrase}
    if extra:
        obj.update(extra)
    return _json_resp(status, obj, headers)


def _gateway_html(status: int) -> _Resp:
    phrase = http.HTTPStatus(status).phrase
    body = (
        f"<html>\r\n<head><title>{status} {phrase}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {phrase}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()
    return _Resp(status, body, [("Content-Type", "text/html")])


class ICRSimulator:
    """A running (or startable) simulated ICR API. See the module docstring."""

    def __init__(self, config: SimulatorConfig | None = None, **kwargs: Any):
        if config is None:
            config = SimulatorConfig(**kwargs)
        elif kwargs:
            config = dataclasses.replace(config, **kwargs)
        self.config = config
        self._faults = config.faults
        self._lock = threading.RLock()
        self._stats_lock = threading.Lock()
        self._stop_event = threading.Event()
        seed = config.seed
        self.app_id = seeded_uuid(seed, "app")
        # keys
        self._keys: list[AppKey] = []
        self._key_counter = 0
        if config.private_key_pem:
            self._register_key(load_private_key(config.private_key_pem))
        else:
            self._register_key(generate_private_key(seed, 0, config.key_bits))
        self._verifier = JWTVerifier(self.app_id, self._keys, config.max_token_lifetime_s, config.iat_skew_s)
        # data
        anchor = min(parse_iso_ms(config.data_anchor), int(time.time() * 1000))
        self._factory = InstallationFactory(seed, self.app_id, config.app_name_id, anchor, config.history_days)
        self._lo = 0
        self._hi = config.installations
        self._removed: list[int] = []
        self._overrides: dict[int, tuple[int, int]] = {}
        self._change_rng = random.Random(f"changes:{seed}")
        self._token_rng = random.Random(f"tokens:{seed}")
        self._fault_rng = random.Random(f"faults:{seed if config.faults.seed is None else config.faults.seed}")
        self._faults_injected_random = 0
        self._fail_next: collections.deque[str] = collections.deque()
        self._lru = functools.lru_cache(maxsize=config.record_cache_size)(self._encode_uncached)
        self._warm: list[bytes] = []  # JSON of initial installation i at [i], when config.warm
        self._warm_seconds = 0.0
        self._access_tokens: dict[str, dict] = {}
        self._prefetch_q = queue.Queue(maxsize=2)
        # server
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self.reset_stats()

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 0) -> "ICRSimulator":
        if self._server is not None:
            return self
        if self.config.warm and not self._warm:
            self.warm_up(self.config.warm_workers)
        self._stop_event.clear()
        self._prefetch_q: queue.Queue = queue.Queue(maxsize=2)
        self._prefetcher = threading.Thread(target=self._prefetch_loop, name="icr-simulator-prefetch", daemon=True)
        self._prefetcher.start()
        server = _Server((host, port), _Handler)
        server.sim = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="icr-simulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stop_event.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        while True:
            try:
                self._prefetch_q.get_nowait()
            except queue.Empty:
                break
        self._prefetch_q.put(None)
        self._prefetcher.join(timeout=5)

    def __enter__(self) -> "ICRSimulator":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def host(self) -> str:
        if self._server is None:
            raise RuntimeError("the simulator is not running; call start()")
        return self._server.server_address[0]

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the simulator is not running; call start()")
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        host = self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    # -- keys -------------------------------------------------------------------------------
    def _register_key(self, key) -> str:
        pem = private_pem(key)
        pub = key.public_key()
        self._keys.append(AppKey(key, pub, fingerprint(pub), pem))
        self._key_counter += 1
        return pem

    @property
    def private_key_pem(self) -> str:
        return self._keys[0].private_pem  # type: ignore[return-value]

    def add_app_key(self) -> str:
        """Register another RSA key for the app (rotation); returns its private PEM (PKCS#8)."""
        with self._lock:
            return self._register_key(generate_private_key(self.config.seed, self._key_counter, self.config.key_bits))

    def revoke_app_key(self, pem_or_fingerprint: str) -> None:
        with self._lock:
            for k in self._keys:
                if pem_or_fingerprint in (k.private_pem, k.fingerprint):
                    k.active = False
                    break
            else:
                raise KeyError("no such app key")
        self._verifier.clear_cache()

    @property
    def public_key_fingerprints(self) -> list[str]:
        return [k.fingerprint for k in self._keys if k.active]

    def mint_jwt(self, pem: str | None = None, **kwargs: Any) -> str:
        """A valid app JWT for this simulator (server clock), for tests. See ``tokens.mint_app_jwt``."""
        kwargs.setdefault("now", self.now())
        key: Any = pem
        for k in self._keys:  # a key object avoids re-parsing (and re-validating) the PEM each time
            if pem is None or pem == k.private_pem:
                key = k.private
                break
        return mint_app_jwt(key, self.app_id, **kwargs)

    def auth_headers(self, **kwargs: Any) -> dict:
        return {"Authorization": f"Bearer {self.mint_jwt(**kwargs)}", "X-ICR-Api-Version": "2023-06-16",
                "Accept": "application/json"}

    # -- clock & faults ---------------------------------------------------------------------
    def now(self) -> float:
        """The server clock: ``time.time() + faults.clock_offset_s``."""
        return time.time() + float(self._faults.clock_offset_s)

    @property
    def faults(self) -> FaultConfig:
        return self._faults

    @faults.setter
    def faults(self, value: FaultConfig) -> None:
        value.validate()
        self._faults = value
        self._fault_rng = random.Random(f"faults:{self.config.seed if value.seed is None else value.seed}")
        self._faults_injected_random = 0

    def fail_next(self, kind: str, n: int = 1) -> None:
        """Answer exactly the next ``n`` ``/app/...`` requests with fault ``kind`` (any endpoint)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {list(FAULT_KINDS)}")
        with self._lock:
            self._fail_next.extend([kind] * int(n))

    def outage(self, seconds: float, kind: str = "reset") -> None:
        """For the next ``seconds``, answer every ``/app/...`` request with fault ``kind`` (an API
        that is down: ``reset`` drops each connection, ``503``/``502`` answer an error)."""
        self._faults.update(outage_until=time.monotonic() + float(seconds), outage_kind=kind)

    def clear_faults(self) -> None:
        with self._lock:
            self._fail_next.clear()
        self.faults = FaultConfig()

    def _pick_fault(self, kind: str) -> str | None:
        f = self._faults
        with self._lock:
            if f.outage_until and time.monotonic() < f.outage_until:
                return f.outage_kind
            if self._fail_next:
                return self._fail_next.popleft()
            if not f.error_rate or (f.scope == "list" and kind != "list"):
                return None
            if f.max_faults is not None and self._faults_injected_random >= f.max_faults:
                return None
            if self._fault_rng.random() >= f.error_rate:
                return None
            self._faults_injected_random += 1
            return self._fault_rng.choice(list(f.fault_kinds))

    # -- stats ------------------------------------------------------------------------------
    def reset_stats(self) -> None:
        with self._stats_lock:
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

    @property
    def stats(self) -> dict:
        with self._stats_lock:
            return {k: dict(v) if isinstance(v, dict) else v for k, v in self._stats.items()}

    def _count(self, name: str, key: Any = None, n: int = 1) -> None:
        with self._stats_lock:
            if key is None:
                self._stats[name] += n
            else:
                self._stats[name][key] += n

    # -- data -------------------------------------------------------------------------------
    @property
    def count(self) -> int:
        with self._lock:
            return self._hi - self._lo - len(self._removed)

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
        """Up to ``n`` live indices starting at listing position ``start_rank`` (caller holds the lock)."""
        out: list[int] = []
        total = self._hi - self._lo - len(self._removed)
        if start_rank >= total or n <= 0:
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

    def _encode_uncached(self, i: int, version: int, updated_ms: int) -> bytes:
        return self._factory.record_json(i, version, updated_ms if version else None).encode()

    def _encoded(self, i: int, version: int, updated_ms: int) -> bytes:
        warm = self._warm
        if not version and 0 <= i < len(warm):
            return warm[i]
        return self._lru(i, version, updated_ms)

    def warm_up(self, workers: int = 1) -> float:
        """Generate the JSON of every initial installation now (see ``SimulatorConfig.warm``)."""
        t0 = time.monotonic()
        n = self.config.installations
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
        self._warm = warm
        self._warm_seconds = time.monotonic() - t0
        return self._warm_seconds

    def _encoded_of(self, i: int) -> bytes:
        ov = self._overrides.get(i)
        if ov is None:
            return self._encoded(i, 0, 0)
        return self._encoded(i, ov[0], ov[1])

    def _keys_for(self, idx: list[int]) -> list[tuple[int, int, int]]:
        """Cache keys of these indices (caller holds the lock)."""
        get = self._overrides.get
        out = []
        for i in idx:
            ov = get(i)
            out.append((i, 0, 0) if ov is None else (i, ov[0], ov[1]))
        return out

    def _prefetch_loop(self) -> None:
        """Warm the record cache with the page after the one just served (sequential pagers then
        mostly hit the cache, and a simulator in its own process generates while the client parses)."""
        q = self._prefetch_q
        while True:
            keys = q.get()
            if keys is None:
                return
            enc = self._encoded
            for k in keys:
                if not k[1] and k[0] < len(self._warm):
                    continue
                if self._stop_event.is_set():
                    break
                enc(*k)

    def _record_of(self, i: int) -> dict:
        ov = self._overrides.get(i)
        if ov is None:
            return self._factory.record(i)
        return self._factory.record(i, ov[0], ov[1])

    def truth(self) -> Iterator[dict]:
        """The installation objects the API would list now, in listing order (a snapshot of the ids)."""
        with self._lock:
            lo, hi, removed = self._lo, self._hi, set(self._removed)
        for i in range(lo, hi):
            if i not in removed:
                with self._lock:
                    rec = self._record_of(i)
                yield rec

    def truth_ids(self) -> set[str]:
        return set(self.truth_id_list())

    def truth_id_list(self) -> list[str]:
        with self._lock:
            lo, hi, removed = self._lo, self._hi, set(self._removed)
        iid = self._factory.installation_id
        return [iid(i) for i in range(lo, hi) if i not in removed]

    def installation(self, installation_id: str) -> dict | None:
        with self._lock:
            i = self._factory.index_of(installation_id)
            if i is None or not self._is_live(i):
                return None
            return self._record_of(i)

    def _resolve(self, n_or_ids: int | Iterable[str]) -> list[int]:
        """Live indices: ``n`` seeded-random distinct ones, or those of the given ids (unknown → KeyError)."""
        if isinstance(n_or_ids, int):
            n = min(n_or_ids, self._hi - self._lo - len(self._removed))
            total = self._hi - self._lo - len(self._removed)
            ranks = self._change_rng.sample(range(total), n) if n > 0 else []
            return [self._rank_to_index(k) for k in ranks]
        out = []
        for iid in n_or_ids:
            i = self._factory.index_of(iid)
            if i is None or not self._is_live(i):
                raise KeyError(f"no active installation {iid!r}")
            out.append(i)
        return out

    def add_installations(self, n: int, *, at: str = "end") -> list[str]:
        """Add ``n`` installations at the end of the listing (``at="front"``: before all others,
        which shifts every page). Returns their ids in listing order."""
        if at not in ("end", "front"):
            raise ValueError("at must be 'end' or 'front'")
        with self._lock:
            if at == "end":
                idx = range(self._hi, self._hi + n)
                self._hi += n
            else:
                self._lo -= n
                idx = range(self._lo, self._lo + n)
            return [self._factory.installation_id(i) for i in idx]

    def remove_installations(self, n_or_ids: int | Iterable[str]) -> list[str]:
        """Uninstall ``n`` seeded-random installations, or the given ids. Returns the removed ids."""
        with self._lock:
            if isinstance(n_or_ids, int):
                # draw one at a time so ranks stay valid as the removed list grows
                out = []
                for _ in range(min(n_or_ids, self._hi - self._lo - len(self._removed))):
                    total = self._hi - self._lo - len(self._removed)
                    i = self._rank_to_index(self._change_rng.randrange(total))
                    bisect.insort(self._removed, i)
                    self._overrides.pop(i, None)
                    out.append(i)
            else:
                out = self._resolve(list(n_or_ids))
                for i in dict.fromkeys(out):
                    bisect.insort(self._removed, i)
                    self._overrides.pop(i, None)
            return [self._factory.installation_id(i) for i in out]

    def update_installations(self, n_or_ids: int | Iterable[str]) -> list[str]:
        """Change permissions, organization name and updatedAt of ``n`` random installations or the
        given ids (updatedAt = the server clock). Returns the updated ids."""
        with self._lock:
            idx = self._resolve(n_or_ids if isinstance(n_or_ids, int) else list(n_or_ids))
            now_ms = int(self.now() * 1000)
            for i in idx:
                version = self._overrides.get(i, (0, 0))[0] + 1
                self._overrides[i] = (version, now_ms)
            return [self._factory.installation_id(i) for i in idx]

    def apply_changes(self, changes: dict) -> dict:
        out: dict[str, Any] = {"added": [], "removed": [], "updated": []}
        if changes.get("add_front"):
            out["added"] += self.add_installations(int(changes["add_front"]), at="front")
        if changes.get("add"):
            out["added"] += self.add_installations(int(changes["add"]))
        if changes.get("remove"):
            out["removed"] = self.remove_installations(changes["remove"])
        if changes.get("update"):
            out["updated"] = self.update_installations(changes["update"])
        out["count"] = self.count
        return out

    # -- request handling -------------------------------------------------------------------
    def _serve(self, method: str, target: str, headers, client_ip: str) -> _Resp:
        parts = urlsplit(target)
        path = parts.path
        kind = self._classify(method, path)
        self._count("requests")
        self._count("by_kind", kind)
        f = self._faults
        if f.latency_ms:
            self._stop_event.wait(f.latency_ms / 1000.0)
        fault = self._pick_fault(kind) if path.startswith("/app/") else None
        if fault is not None:
            self._count("faults_injected", fault)
            self._count("faults_total")
        if fault in _PRE_FAULTS:
            resp = self._fault_response(fault)
        else:
            try:
                resp = self._api(method, path, parts.query, headers, kind)
            except Exception as exc:  # a simulator bug must show up as a 500, not a hung client
                resp = _error(500, f"simulator error: {type(exc).__name__}: {exc}")
            if fault == "slow":
                self._stop_event.wait(float(f.slow_seconds))
            elif fault == "truncated_json":
                resp.body = resp.body[: max(1, len(resp.body) // 2)]
            elif fault == "invalid_json":
                resp.body = b"{'pagination': " + resp.body[1:] if resp.body else b"{'oops'"
                resp.headers = [(k, v) for k, v in resp.headers if k != "Content-Type"]
                resp.headers.append(("Content-Type", _JSON))
        self._count("by_status", resp.status)
        return resp

    @staticmethod
    def _classify(method: str, path: str) -> str:
        if path == "/app/installations":
            return "list" if method == "GET" else "unknown"
        if path == "/app/installations/token" and method == "DELETE":
            return "revoke_token"
        if path == "/app/accessTokens" and method == "POST":
            return "app_token"
        if _RE_TOKEN.match(path) and method == "POST":
            return "installation_token"
        if _RE_ONE.match(path) and method == "GET":
            return "get"
        return "unknown"

    def _fault_response(self, fault: str) -> _Resp:
        f = self._faults
        ra = f.retry_after_seconds
        ra_text = str(int(ra)) if float(ra).is_integer() else str(ra)
        tmr = {"message": "ThrottlerException: Too Many Requests"}
        if fault == "429_seconds":
            return _error(429, tmr["message"], headers=[("Retry-After", ra_text)])
        if fault == "429_http_date":
            when = email.utils.formatdate(math.ceil(self.now() + float(ra)) + 1, usegmt=True)
            return _error(429, tmr["message"], headers=[("Retry-After", when)])
        if fault == "429_zero":
            return _error(429, tmr["message"], headers=[("Retry-After", "0")])
        if fault == "429_none":
            return _error(429, tmr["message"])
        if fault == "403_rate_limit":
            reset = math.ceil(self.now() + float(ra))
            return _error(
                403,
                "API rate limit exceeded",
                extra={"documentation_url": "https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting"},
                headers=[("x-ratelimit-limit", "5000"), ("x-ratelimit-remaining", "0"),
                         ("x-ratelimit-used", "5000"), ("x-ratelimit-reset", str(reset)),
                         ("x-ratelimit-resource", "core")],
            )
        if fault in ("502", "504"):
            return _gateway_html(int(fault))
        if fault in ("500", "503"):
            return _error(int(fault), "Internal server error" if fault == "500" else "Service Unavailable")
        if fault == "reset":
            return _Resp(0, reset=True)
        raise AssertionError(fault)

    def _api(self, method: str, path: str, query: str, headers, kind: str) -> _Resp:
        version = headers.get("X-ICR-Api-Version")
        if version is not None and version not in self.config.supported_api_versions:
            return _error(400, f"Unsupported API version '{version}'. Supported versions: "
                               + ", ".join(self.config.supported_api_versions))
        if kind == "unknown":
            return _error(404, f"Cannot {method} {path}")
        token = self._bearer(headers)
        if kind == "revoke_token":
            return self._revoke_access_token(token)
        if token is None:
            self._reject("Authorization header with a Bearer app JWT is required")
            return _error(401, "Authorization header with a Bearer app JWT is required")
        if token.startswith("crs_"):
            self._reject("access token used where an app JWT is required")
            return _error(401, "This endpoint requires an app JWT, not an access token")
        try:
            self._verifier.verify(token, self.now())
        except TokenRejected as exc:
            self._reject(exc.message)
            return _error(401, exc.message)
        self._count("tokens_accepted")
        if kind == "list":
            return self._list(query)
        if kind == "get":
            rec = self.installation(_RE_ONE.match(path).group(1))
            if rec is None:
                return _error(404, "Installation not found")
            return _json_resp(200, rec)
        if kind == "installation_token":
            rec = self.installation(_RE_TOKEN.match(path).group(1))
            if rec is None:
                return _error(404, "Installation not found")
            return _json_resp(self.config.access_token_status, self._issue_token(rec))
        if kind == "app_token":
            return _json_resp(self.config.access_token_status, self._issue_token(None))
        return _error(404, f"Cannot {method} {path}")

    @staticmethod
    def _bearer(headers) -> str | None:
        auth = headers.get("Authorization")
        if not auth:
            return None
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return None
        return value.strip()

    def _reject(self, reason: str) -> None:
        self._count("tokens_rejected")
        self._count("rejections", reason)

    def _issue_token(self, rec: dict | None) -> dict:
        now = self.now()
        with self._lock:
            tok = "crs_" + "".join(self._token_rng.choices(_TOKEN_ALPHABET, k=40))
            tid = str(uuid.UUID(int=self._token_rng.getrandbits(128), version=4))
        created = iso_ms(int(now * 1000))
        out = {
            "id": tid,
            "createdAt": created,
            "updatedAt": created,
            "token": tok,
            "expiresAt": iso_ms(int((now + self.config.access_token_ttl_s) * 1000)),
            "isActive": True,
            "permissions": dict(rec["permissions"]) if rec else {},
            "appId": self.app_id,
        }
        if rec is not None:
            out["installationId"] = rec["id"]
            out["organizationId"] = rec["organization"]["id"]
        with self._lock:
            self._access_tokens[tok] = {"expires": now + self.config.access_token_ttl_s, "active": True,
                                        "installation_id": rec["id"] if rec else None}
        self._count("access_tokens_issued")
        return out

    def _revoke_access_token(self, token: str | None) -> _Resp:
        with self._lock:
            info = self._access_tokens.get(token) if token else None
            if info is None or not info["active"] or info["expires"] <= self.now():
                ok = False
            else:
                info["active"] = False
                ok = True
        if not ok:
            self._reject("invalid access token")
            return _error(401, "Bad credentials: a valid installation access token is required")
        self._count("tokens_accepted")
        return _Resp(204, b"")

    def access_token_active(self, token: str) -> bool:
        with self._lock:
            info = self._access_tokens.get(token)
            return bool(info and info["active"] and info["expires"] > self.now())

    def _list(self, query: str) -> _Resp:
        cfg = self.config
        q = parse_qs(query, keep_blank_values=True)
        errors: list[str] = []

        def int_param(name: str, default: int, minimum: int, maximum: int | None) -> int:
            vals = q.get(name)
            if vals is None:
                return default
            if len(vals) != 1 or not re.fullmatch(r"[+-]?\d+", vals[0].strip() or "x"):
                errors.append(f"{name} must be an integer number")
                return default
            v = int(vals[0])
            if v < minimum:
                errors.append(f"{name} must not be less than {minimum}")
            elif maximum is not None and v > maximum:
                errors.append(f"{name} must not be greater than {maximum}")
            return v

        limit = int_param("limit", cfg.default_page_size, 1, cfg.max_page_size)
        page = int_param("page", cfg.page_base, cfg.page_base, None)
        if errors:
            return _error(400, errors)
        base = cfg.page_base
        absent = cfg.next_page_on_last == "absent"
        endless = self._faults.endless_pages
        with self._lock:
            total = self._hi - self._lo - len(self._removed)
            page_count = -(-total // limit)
            pos = page - base
            keys = self._keys_for(self._live_indices(pos * limit, limit)) if pos < page_count else []
            if endless == "repeat" and pos >= page_count and total >= limit:
                keys = self._keys_for(self._live_indices((total // limit - 1) * limit, limit))
            elif endless == "new" and pos >= page_count:
                start = self._hi + (pos - page_count) * limit
                keys = [(i, 0, 0) for i in range(start, start + limit)]
            ahead = self._keys_for(self._live_indices((pos + 1) * limit, limit)) if pos + 1 < page_count else []
        if ahead and self.config.prefetch:
            try:
                self._prefetch_q.put_nowait(ahead)
            except queue.Full:
                pass
        enc = self._encoded
        items = [enc(*k) for k in keys]
        extra = self._faults.extra_records
        if extra and extra.get(page):
            items += [r if isinstance(r, bytes) else r.encode() if isinstance(r, str)
                      else json.dumps(r, separators=(",", ":")).encode() for r in extra[page]]
        pagination: dict[str, Any] = {"total": total, "currentPage": page, "pageCount": page_count}
        if pos + 1 < page_count:
            pagination["nextPage"] = page + 1
        elif not absent:
            pagination["nextPage"] = None
        if pos > 0:
            pagination["prevPage"] = page - 1
        elif not absent:
            pagination["prevPage"] = None
        if endless:
            pagination["nextPage"] = page + 1
            pagination.pop("pageCount")
        pagination_json = _pagination_json(pagination, self._faults.pagination_override)
        body = b"".join((b'{"pagination":', pagination_json,
                         b',"installations":[', b",".join(items), b"]}"))
        self._count("pages_served")
        self._count("installations_served", n=len(items))
        m = self._faults.mutate_while_paging
        if m is not None and pos > 0:
            if callable(m):
                m(self, page)
            else:
                self.apply_changes(m)
        return _Resp(200, body, [("Content-Type", _JSON)])

    # -- admin ------------------------------------------------------------------------------
    def _admin_request(self, method: str, path: str, body: bytes, client_ip: str) -> _Resp:
        self._count("admin_requests")
        if not self.config.admin_api:
            return _error(404, f"Cannot {method} {path}")
        try:
            if not ipaddress.ip_address(client_ip.split("%")[0]).is_loopback:
                return _error(403, "the admin API answers loopback clients only")
        except ValueError:
            return _error(403, "the admin API answers loopback clients only")
        try:
            data = json.loads(body) if body.strip() else {}
        except ValueError:
            return _error(400, "request body is not valid JSON")
        if method == "POST" and not isinstance(data, dict):
            return _error(400, "request body must be a JSON object")
        try:
            if method == "GET" and path == "/_sim/state":
                return _json_resp(200, {
                    "count": self.count, "app_id": self.app_id, "base_url": self.base_url,
                    "fingerprints": self.public_key_fingerprints, "stats": self.stats,
                    "faults": self._faults.to_json(), "pending_fail_next": list(self._fail_next),
                    "warm_records": len(self._warm), "warm_seconds": round(self._warm_seconds, 3),
                })
            if method == "GET" and path == "/_sim/truth_ids":
                ids = self.truth_id_list()
                return _json_resp(200, {"count": len(ids), "ids": ids})
            if method == "POST" and path == "/_sim/changes":
                bad = set(data) - {"add", "add_front", "remove", "update"}
                if bad:
                    return _error(400, [f"unknown change {k!r}" for k in sorted(bad)])
                return _json_resp(200, self.apply_changes(data))
            if method == "POST" and path == "/_sim/faults":
                fail_next = data.pop("fail_next", None)
                if data:
                    self._faults.update(**data)
                if fail_next:
                    for item in fail_next if isinstance(fail_next, list) else [fail_next]:
                        self.fail_next(item["kind"], int(item.get("n", 1)))
                return _json_resp(200, {"faults": self._faults.to_json(), "pending_fail_next": list(self._fail_next)})
            if method == "POST" and path == "/_sim/reset_stats":
                self.reset_stats()
                return _json_resp(200, {"ok": True})
            if method == "POST" and path == "/_sim/keys":
                pem = self.add_app_key()
                return _json_resp(200, {"private_key_pem": pem, "fingerprint": self.public_key_fingerprints[-1],
                                        "fingerprints": self.public_key_fingerprints})
        except (ValueError, KeyError, TypeError) as exc:
            return _error(400, str(exc))
        return _error(404, f"Cannot {method} {path}")


def _pagination_json(pagination: dict, override: dict | None) -> bytes:
    """``pagination`` with ``FaultConfig.pagination_override`` applied (bytes = verbatim JSON)."""
    if not override:
        return json.dumps(pagination, separators=(",", ":")).encode()
    merged = dict(pagination)
    for k, v in override.items():
        if v is None:
            merged.pop(k, None)
        else:
            merged[k] = v
    parts = [json.dumps(k).encode() + b":" + (v if isinstance(v, bytes) else json.dumps(v).encode())
             for k, v in merged.items()]
    return b"{" + b",".join(parts) + b"}"


def _warm_span(task: tuple) -> list[bytes]:
    """Worker of ``ICRSimulator.warm_up``: the JSON of installations ``a..b-1``."""
    (seed, app_id, app_name_id, anchor_ms, span_ms), a, b = task
    f = InstallationFactory(seed, app_id, app_name_id, anchor_ms, 1)
    f.span_ms = span_ms
    rj = f.record_json
    return [rj(i).encode() for i in range(a, b)]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 256
    sim: ICRSimulator

    def handle_error(self, request, client_address) -> None:  # clients hanging up are normal here
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ICRSimulator/1.0"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        sim = self.server.sim
        with sim._lock:
            sim._conns.add(self.connection)
        sim._count("connections")

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.sim._lock:
                self.server.sim._conns.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _dispatch(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        body = self.rfile.read(length) if length > 0 else b""
        sim: ICRSimulator = self.server.sim
        path = urlsplit(self.path).path
        if path.startswith("/_sim/"):
            resp = sim._admin_request(self.command, path, body, self.client_address[0])
        else:
            resp = sim._serve(self.command, self.path, self.headers, self.client_address[0])
        if resp.reset:
            self.close_connection = True
            try:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
            except OSError:
                pass
            return
        dribble = sim.faults.dribble_seconds if sim._classify(self.command, path) == "list" else 0.0
        self._write(resp, dribble)

    def _write(self, resp: _Resp, dribble: float = 0.0) -> None:
        status = resp.status
        lines = [
            f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n",
            f"Server: {self.server_version}\r\n",
            f"Date: {self.date_time_string()}\r\n",
        ]
        for k, v in resp.headers:
            lines.append(f"{k}: {v}\r\n")
        lines.append(f"Content-Length: {len(resp.body)}\r\n")
        if self.close_connection:
            lines.append("Connection: close\r\n")
        lines.append("\r\n")
        try:
            if dribble > 0:  # headers at once, then the body one byte at a time
                self.wfile.write("".join(lines).encode("latin-1"))
                self.wfile.flush()
                stop = self.server.sim._stop_event
                for i in range(len(resp.body)):
                    if stop.wait(dribble):
                        break
                    self.wfile.write(resp.body[i:i + 1])
                    self.wfile.flush()
                return
            self.wfile.write("".join(lines).encode("latin-1") + resp.body)
        except OSError:
            self.close_connection = True

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _dispatch

    def do_HEAD(self) -> None:
        self._write(_Resp(404, b""))
