"""HTTP client for the ICR Apps API: session, retry policy, error mapping, shared rate gate.

Retry policy (ICR's documentation, documentation.carbonregistry.com "API > Apps", states no rate
limits: what follows is GitHub Apps' behaviour and our assumptions):

* transient → retried with tenacity: 429, 500, 502, 503, 504, GitHub-style ``403`` with
  ``x-ratelimit-remaining: 0``, connect/read timeouts, connection resets / truncated bodies,
  and a ``200`` whose body is not JSON (a proxy page or a cut-off response);
* wait: ``Retry-After`` (seconds or HTTP date; ``0``, negative or garbage = no hint), or
  ``x-ratelimit-reset`` for the 403 form, else exponential backoff with full jitter;
* bounded by a time budget (``retry_budget_s``, the connection's ``retry_budget``: seconds from
  the first attempt, attempts included), by attempts (``max_retries``) and by the total of the
  waits (``max_retry_wait_s``): whichever comes first raises :class:`~icr.errors.ICRAPIError`
  with the last status, ICR's message, how long it tried and how many attempts. The defaults let
  the budget govern (two minutes: a 30-60 s outage is ridden out); each wait is exponential
  backoff with jitter, capped at ``backoff_max_s``;
* ``401``: the app JWT is invalidated and the request retried once with a fresh one;
* any other 4xx fails at once.

Each answer is read by streaming, at most ``max_response_bytes`` (more fails the request at
once, naming the path and the cap), and within one total deadline per attempt (``timeout``:
a server that dribbles its body byte by byte is cut off when the deadline passes, not only
when one socket read stalls).

A :class:`RateGate` shared by all threads of one client makes everyone pause when one request
is rate limited, so concurrent paging slows down as a whole instead of hammering the API.
"""

from __future__ import annotations

import email.utils
import heapq
import ipaddress
import itertools
import socket
import json
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timezone
from typing import Any
from urllib.parse import urlencode, urlsplit

import msgspec
import requests
import tenacity
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from icr import __version__
from icr.auth import AppJWT
from icr.errors import ICRAPIError, ICRConfigError, ICRError
from icr.defaults import (
    DEFAULT_API_VERSION,
    DEFAULT_BACKOFF_BASE_S,
    DEFAULT_BACKOFF_MAX_S,
    DEFAULT_BASE_URL,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_MAX_RETRIES,
    DEFAULT_MAX_RETRY_WAIT_S,
    DEFAULT_POOL_SIZE,
    DEFAULT_RETRY_BUDGET_S,
    DEFAULT_TIMEOUT_S,
)
from icr.redact import redact

log = logging.getLogger(__name__)

USER_AGENT = f"icr-installations-sync/{__version__} (+Apache Airflow provider; python-requests/{requests.__version__})"
FIELD_HOST = "host (API base URL)"

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: statuses whose wait should pause every thread (they say "too much traffic").
_GATE_REASONS = frozenset({"429", "403-ratelimit"})

MAX_MESSAGE_CHARS = 300
#: what a JSON decoder returns; anything else came from a caller's own ``decode``.
_JSON_VALUES = (dict, list, str, int, float, bool, type(None))
#: bytes asked of the socket per read while streaming an answer.
READ_CHUNK = 1 << 20


# --------------------------------------------------------------------------- helpers


def normalize_base_url(base_url: str | None, *, allow_insecure_http: bool = False, conn_id: str | None = None) -> str:
    """Validate the API base URL: https anywhere, http only to loopback unless allowed."""
    if base_url is None or not str(base_url).strip():
        return DEFAULT_BASE_URL
    url = str(base_url).strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ICRConfigError(
            FIELD_HOST,
            f"{url!r} has no http(s):// scheme; use e.g. {DEFAULT_BASE_URL} (or leave it empty for production)",
            conn_id,
        )
    if parts.username or parts.password:
        raise ICRConfigError(FIELD_HOST, "must not contain credentials (user:password@)", conn_id)
    if parts.query or parts.fragment:
        raise ICRConfigError(FIELD_HOST, "must not contain a query string or fragment", conn_id)
    if parts.scheme == "http" and not allow_insecure_http and not is_loopback(parts.hostname or ""):
        raise ICRConfigError(
            FIELD_HOST,
            f"plain http:// to {parts.hostname!r} would send the app JWT unencrypted; use https:// "
            "(or set extra.allow_insecure_http for a test server)",
            conn_id,
        )
    return url


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and the literal ``localhost``: the only hosts where plain http is harmless.

    Not ``*.localhost``: on many machines (this one included) such names are resolved through
    DNS, so the JWT could travel unencrypted to whatever address DNS returns.
    """
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, or None for "no usable hint"."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds <= 0 or seconds == float("inf"):  # NaN, 0, negative
        return None
    return seconds


def api_message(response: requests.Response) -> str:
    """ICR's error message, from NestJS or GitHub JSON or plain text, truncated."""
    text = ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        msg = body.get("message")
        if isinstance(msg, list):
            text = "; ".join(str(m) for m in msg)
        elif msg is not None:
            text = str(msg)
        error = body.get("error")
        if isinstance(error, str) and error and error not in text:
            text = f"{error}: {text}" if text else error
        doc = body.get("documentation_url")
        if isinstance(doc, str) and doc:
            text = f"{text} ({doc})" if text else doc
        if not text:
            text = json.dumps(body)[:MAX_MESSAGE_CHARS]
    elif body is not None:
        text = json.dumps(body)
    else:
        try:
            text = response.text
        except Exception:  # pragma: no cover - undecodable body
            text = ""
        text = " ".join(text.split())
    if not text:
        text = response.reason or "(empty body)"
    return _truncate(redact(text))  # redact first: a cut JWT is still recognised by its shape


def _truncate(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _display_path(path: str, params: dict[str, Any] | None) -> str:
    """Path (and harmless query) as it appears in errors and logs."""
    if not params:
        return path
    return f"{path}?{urlencode(params)}"


# --------------------------------------------------------------------------- stats and gate


class ClientStats:
    """Thread-safe counters the sync records in its run row."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.retries = 0
        self.retries_by_reason: Counter[str] = Counter()
        self.tokens_minted = 0
        self.wait_seconds = 0.0
        self.gate_waits = 0
        self.gate_wait_seconds = 0.0

    def count_request(self) -> None:
        with self._lock:
            self.requests += 1

    def count_retry(self, reason: str, wait: float) -> None:
        with self._lock:
            self.retries += 1
            self.retries_by_reason[reason] += 1
            self.wait_seconds += wait

    def count_gate_wait(self, seconds: float) -> None:
        with self._lock:
            self.gate_waits += 1
            self.gate_wait_seconds += seconds
            self.wait_seconds += seconds

    def set_tokens_minted(self, value: int) -> None:
        with self._lock:
            self.tokens_minted = value

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "retries": self.retries,
                "retries_by_reason": dict(self.retries_by_reason),
                "tokens_minted": self.tokens_minted,
                "wait_seconds": round(self.wait_seconds, 3),
                "gate_waits": self.gate_waits,
                "gate_wait_seconds": round(self.gate_wait_seconds, 3),
            }

    def __repr__(self) -> str:
        return f"ClientStats({self.as_dict()})"


class RateGate:
    """A shared "not before" time: after a rate limit every thread waits before its next request."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._not_before = 0.0

    def hold(self, seconds: float) -> None:
        """Nobody sends before ``now + seconds`` (extends, never shortens, an existing hold)."""
        if seconds <= 0:
            return
        with self._lock:
            self._not_before = max(self._not_before, self._clock() + seconds)

    def remaining(self) -> float:
        with self._lock:
            return max(0.0, self._not_before - self._clock())

    def wait(self) -> float:
        """Block until the gate is open; return the seconds waited (0 if it was open)."""
        waited = 0.0
        while True:
            remaining = self.remaining()
            if remaining <= 0:
                return waited
            self._sleep(remaining)
            waited += remaining

    def __repr__(self) -> str:
        return f"RateGate(remaining={self.remaining():.3f}s)"


# --------------------------------------------------------------------------- the per-request deadline


class _Watchdog:
    """One thread that shuts the socket of any request still waiting when its deadline passes.

    Socket timeouts bound each read, not the request: a server that sends one byte of its headers
    every second never trips them. Arming costs a lock and a heap push (no thread per request)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        self._socks: dict[int, socket.socket] = {}
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, deadline: float, sock: socket.socket) -> int:
        token = next(self._ids)
        with self._cond:
            self._socks[token] = sock
            heapq.heappush(self._heap, (deadline, token))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="icr-request-deadline", daemon=True)
                self._thread.start()
            elif self._heap[0][1] == token:
                self._cond.notify()
        return token

    def disarm(self, token: int) -> None:
        with self._cond:
            self._socks.pop(token, None)

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                while self._heap and (self._heap[0][0] <= now or self._heap[0][1] not in self._socks):
                    _, token = heapq.heappop(self._heap)
                    sock = self._socks.pop(token, None)
                    if sock is not None:
                        try:
                            sock.shutdown(socket.SHUT_RDWR)  # the blocked read returns at once
                        except OSError:
                            pass
                self._cond.wait(self._heap[0][0] - now if self._heap else None)


_WATCHDOG = _Watchdog()
_DEADLINE = threading.local()  # .value: the deadline of this thread's current attempt


class _DeadlineMixin:
    """Arms the watchdog when the request is sent and the answer awaited (headers and body)."""

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        deadline = getattr(_DEADLINE, "value", None)
        sock = getattr(self, "sock", None)
        if deadline is not None and sock is not None:
            _DEADLINE.token = _WATCHDOG.arm(deadline, sock)
        return super().getresponse(*args, **kwargs)  # type: ignore[misc]


class _DeadlineHTTPConnection(_DeadlineMixin, HTTPConnection):
    pass


class _DeadlineHTTPSConnection(_DeadlineMixin, HTTPSConnection):
    pass


class _DeadlineHTTPPool(HTTPConnectionPool):
    ConnectionCls = _DeadlineHTTPConnection


class _DeadlineHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection


class _DeadlineAdapter(HTTPAdapter):
    """requests' adapter with connections that honour the attempt's total deadline."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _DeadlineHTTPPool, "https": _DeadlineHTTPSPool}


# --------------------------------------------------------------------------- retry plumbing


class _Transient(Exception):
    """One failed attempt worth retrying (internal; never escapes the client)."""

    def __init__(self, reason: str, status: int | None, message: str, hint: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status
        self.message = message
        self.hint = hint  # seconds the server asked us to wait, if it said so


class _Unauthorized(Exception):
    def __init__(self, message: str, token: str) -> None:
        super().__init__(message)
        self.message = message
        self.token = token


@dataclass(frozen=True)
class _Call:
    method: str
    path: str
    display: str
    params: dict[str, Any] | None
    ok: tuple[int, ...]
    decode: Callable[[bytes], Any] | None = None


# --------------------------------------------------------------------------- the client


class ICRClient:
    """Talks to the ICR Apps API as the app; safe to share between threads."""

    def __init__(
        self,
        base_url: str | None,
        auth: AppJWT,
        *,
        api_version: str = DEFAULT_API_VERSION,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_retry_wait_s: float = DEFAULT_MAX_RETRY_WAIT_S,
        retry_budget_s: float = DEFAULT_RETRY_BUDGET_S,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        backoff_base_s: float = DEFAULT_BACKOFF_BASE_S,
        backoff_max_s: float = DEFAULT_BACKOFF_MAX_S,
        allow_insecure_http: bool = False,
        pool_size: int = DEFAULT_POOL_SIZE,
        session: requests.Session | None = None,
        gate: RateGate | None = None,
        conn_id: str | None = None,
    ) -> None:
        self.base_url = normalize_base_url(base_url, allow_insecure_http=allow_insecure_http, conn_id=conn_id)
        self.conn_id = conn_id
        if max_retries < 1:
            raise ValueError("max_retries counts attempts and must be >= 1")
        self.auth = auth
        self.api_version = api_version or DEFAULT_API_VERSION
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.max_retry_wait_s = float(max_retry_wait_s)
        self.retry_budget_s = float(retry_budget_s)
        self.max_response_bytes = int(max_response_bytes)
        self.backoff_base_s = float(backoff_base_s)
        self.backoff_max_s = float(backoff_max_s)
        self.pool_size = max(1, int(pool_size))
        self.gate = gate or RateGate()
        self.stats = ClientStats()
        self._session = session or self._new_session()

    def _new_session(self) -> requests.Session:
        session = requests.Session()
        # With trust_env on, requests re-reads proxy, NO_PROXY, CA-bundle and netrc settings from
        # the environment on every request: in an Airflow worker, with its large environment,
        # over 10% of the fetch's CPU. Every request goes to one host, so resolve them once.
        settings = session.merge_environment_settings(self.base_url, {}, None, None, None)
        session.proxies.update(settings["proxies"])
        session.verify = settings["verify"]
        session.trust_env = False
        adapter = _DeadlineAdapter(pool_connections=self.pool_size, pool_maxsize=self.pool_size, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    def ensure_pool_size(self, n: int) -> None:
        """Let ``n`` threads keep their connections (the pager calls this for its concurrency)."""
        if n > self.pool_size:
            self.pool_size = n
            adapter = _DeadlineAdapter(pool_connections=n, pool_maxsize=n, max_retries=0)
            self._session.mount("https://", adapter)
            self._session.mount("http://", adapter)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> ICRClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ICRClient(base_url={self.base_url!r}, app_id={self.auth.app_id!r}, api_version={self.api_version!r})"

    # ------------------------------------------------------------------ public API

    def get_json(
        self, path: str, params: dict[str, Any] | None = None, *, decode: Callable[[bytes], Any] | None = None
    ) -> Any:
        """GET ``path`` and return the decoded JSON body (retries as in the module doc).

        ``decode(body_bytes)`` replaces the default decoder; a :class:`ValueError` from it means
        "not JSON" (retried as transient), any other exception propagates at once."""
        return self._request("GET", path, params=params, ok=(200,), decode=decode)

    def get_installation(
        self, installation_id: str, *, decode: Callable[[bytes], Any] | None = None
    ) -> Any:
        """One installation (ICR answers the object unwrapped); 404 → ICRAPIError. ``decode`` as
        for :meth:`get_json` (it may turn an unreadable answer into a reject object)."""
        body = self.get_json(f"/app/installations/{installation_id}", decode=decode)
        if not isinstance(body, _JSON_VALUES):
            return body  # what the caller's decoder made of an unreadable record
        if not isinstance(body, dict):
            raise ICRAPIError(200, "GET", f"/app/installations/{installation_id}", "answer is not a JSON object")
        return body

    # ------------------------------------------------------------------ request machinery

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        ok: tuple[int, ...] = (200,),
        decode: Callable[[bytes], Any] | None = None,
    ) -> Any:
        if not path.startswith("/"):
            path = "/" + path
        call = _Call(method, path, _display_path(path, params), params, ok, decode)
        try:
            return self._with_retries(call)
        except _Unauthorized as first:
            # [GitHub practice] one re-mint after a 401: the token may have expired in flight or
            # the clocks disagree. Only this token is dropped; a second 401 is final.
            self.auth.invalidate(first.token)
            self.stats.count_retry("401", 0.0)
            log.warning("ICR %s %s: HTTP 401 (%s); minting a new app JWT and retrying once", method, call.display, first.message)
            try:
                return self._with_retries(call)
            except _Unauthorized as second:
                raise self._error(call, 401, second.message, attempts=2) from None

    def _with_retries(self, call: _Call) -> Any:
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Transient),
            wait=self._wait,
            stop=self._stop,
            before_sleep=self._before_sleep(call),
            retry_error_callback=self._give_up(call),
            sleep=time.sleep,
        )
        return retrying(self._attempt, call)

    def _attempt(self, call: _Call) -> Any:
        waited = self.gate.wait()
        if waited > 0:
            self.stats.count_gate_wait(waited)
        token = self.auth.token()
        self.stats.set_tokens_minted(self.auth.minted)
        # Per request, not session defaults, so a caller-supplied session gets them too.
        headers = {
            "Authorization": f"Bearer {token}",
            "X-ICR-Api-Version": self.api_version,
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        self.stats.count_request()
        deadline = time.monotonic() + self.timeout
        _DEADLINE.value, _DEADLINE.token = deadline, None
        try:
            response = self._session.request(
                call.method,
                self.base_url + call.path,
                params=call.params,
                headers=headers,
                timeout=self.timeout,
                stream=True,
            )
            try:
                self._read_body(call, response, deadline)
            finally:
                if response.raw is not None:
                    response.close()  # after a full read: the connection goes back to the pool
        except requests.Timeout as exc:
            if time.monotonic() >= deadline:
                raise self._past_deadline() from None
            raise _Transient("timeout", None, f"timed out after {self.timeout:g}s ({type(exc).__name__})") from None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError,
                urllib3.exceptions.HTTPError) as exc:
            if time.monotonic() >= deadline:
                raise self._past_deadline() from None
            text = str(exc)
            if "timed out" in text.lower() or isinstance(exc, urllib3.exceptions.TimeoutError):
                raise _Transient("timeout", None, f"timed out after {self.timeout:g}s while reading") from None
            raise _Transient("reset", None, f"connection failed ({type(exc).__name__})") from None
        finally:
            if _DEADLINE.token is not None:
                _WATCHDOG.disarm(_DEADLINE.token)
            _DEADLINE.value = _DEADLINE.token = None
        return self._handle(call, response, token)

    def _read_body(self, call: _Call, response: requests.Response, deadline: float) -> None:
        """Read the whole answer into ``response`` (so ``.content``/``.json()`` work), refusing more
        than ``max_response_bytes`` and anything still arriving when the deadline passes."""
        if response._content is not False:  # noqa: SLF001 - already read (a stand-in session)
            return
        cap = self.max_response_bytes
        length = response.headers.get("Content-Length", "")
        if length.strip().isdigit() and int(length) > cap:
            raise self._too_large(call, response.status_code, f"announces {int(length):,} bytes")
        raw = response.raw
        sock = getattr(getattr(raw, "_connection", None), "sock", None)
        parts: list[bytes] = []
        size = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._past_deadline(size)
            if sock is not None:  # no single read may outlast the deadline either
                try:
                    sock.settimeout(min(self.timeout, remaining))
                except OSError:
                    pass
            chunk = raw.read1(READ_CHUNK, decode_content=True)
            if not chunk:  # read1 answers b"" only at the end of the body
                break
            size += len(chunk)
            if size > cap:
                raise self._too_large(call, response.status_code, f"sent more than {cap:,} bytes")
            parts.append(chunk)
        if time.monotonic() >= deadline:  # the watchdog shut the socket: what came is not the answer
            raise self._past_deadline(size)
        response._content = b"".join(parts)  # noqa: SLF001 - requests' own cache of the body
        response._content_consumed = True  # noqa: SLF001

    def _past_deadline(self, size: int | None = None) -> _Transient:
        read = f"; {size:,} bytes read" if size is not None else ""
        return _Transient("timeout", None, f"the answer was still arriving after {self.timeout:g}s "
                                           f"(the connection's timeout is the total deadline per request{read})")

    def _too_large(self, call: _Call, status: int, what: str) -> ICRAPIError:
        return ICRAPIError(
            status, call.method, call.display,
            f"the answer {what}, above the cap of {self.max_response_bytes:,} bytes per response "
            "(max_response_bytes); a page this large is not an answer ICR should send (lower the page size "
            "if its records are really this big)")

    def _handle(self, call: _Call, response: requests.Response, token: str) -> Any:
        status = response.status_code
        if status in call.ok:
            if status == 204 or not response.content:
                if call.method == "GET":
                    raise _Transient("bad_json", status, "empty body where JSON was expected")
                return None
            try:
                if call.decode is not None:
                    return call.decode(response.content)
                # msgspec parses a 100-record page ~3x faster than requests' json(), and the GIL
                # time it saves is time the loader thread gets (DecodeError is a ValueError).
                return msgspec.json.decode(response.content)
            except (ValueError, RecursionError):
                # A 200 with a cut-off or non-JSON body (a proxy page, a truncated stream) is
                # transient: asking again usually gets the real answer.
                raise _Transient("bad_json", status, f"HTTP {status} body is not valid JSON") from None
        message = api_message(response)
        if status == 401:
            raise _Unauthorized(message, token)
        if status in RETRY_STATUSES:
            hint = parse_retry_after(response.headers.get("Retry-After"))
            raise _Transient(str(status), status, message, hint)
        if status == 403 and response.headers.get("x-ratelimit-remaining", "").strip() == "0":
            hint = None
            reset = response.headers.get("x-ratelimit-reset")
            try:
                hint = float(reset) - time.time() if reset is not None else None
            except ValueError:
                hint = None
            if hint is not None and hint <= 0:
                hint = 1.0  # the window already reset by our clock: wait a moment, not zero
            raise _Transient("403-ratelimit", status, message, hint)
        raise self._error(call, status, message)

    def _error(self, call: _Call, status: int | None, message: str, *, attempts: int = 1) -> ICRError:
        """The final error of a request, pointing at the connection field most likely at fault."""
        if status == 400 and "version" in message.lower():
            return ICRConfigError(
                "extra.api_version",
                f"ICR rejected API version {self.api_version!r} with HTTP 400 ({call.method} {call.display}: {message})",
                self.conn_id,
            )
        if status == 401:
            message += (
                f". Check the App ID (field login (App ID)), that the key with fingerprint "
                f"{self.auth.fingerprint} is active for this app, and the worker's clock"
            )
        elif status is None:
            message += f". Could not reach {self.base_url}: check the field host (API base URL) and the network"
        return ICRAPIError(status, call.method, call.display, message, attempts=attempts)

    # tenacity callbacks ------------------------------------------------

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hint = exc.hint if isinstance(exc, _Transient) else None
        if hint is not None:
            wait = hint
        else:
            # "equal jitter" (AWS architecture blog): half of min(cap, base * 2**n) plus a random
            # share of the other half, so waits keep growing (an outage is ridden out within the
            # retry budget in a bounded number of attempts) while threads still spread out.
            ceiling = min(self.backoff_max_s, self.backoff_base_s * (2 ** (state.attempt_number - 1)))
            wait = ceiling / 2 + random.uniform(0, ceiling / 2)
        return wait

    def _stop(self, state: tenacity.RetryCallState) -> bool:
        if state.attempt_number >= self.max_retries:
            return True
        if state.seconds_since_start + state.upcoming_sleep > self.retry_budget_s:
            return True
        return state.idle_for + state.upcoming_sleep > self.max_retry_wait_s

    def _before_sleep(self, call: _Call) -> Callable[[tenacity.RetryCallState], None]:
        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            reason = exc.reason if isinstance(exc, _Transient) else "unknown"
            wait = state.upcoming_sleep
            if isinstance(exc, _Transient) and (
                exc.reason in _GATE_REASONS or (exc.reason == "503" and exc.hint is not None)
            ):
                # Only now (we will really sleep): make every thread of this client wait too.
                self.gate.hold(wait)
            self.stats.count_retry(reason, wait)
            log.warning(
                "ICR %s %s: %s (%s); attempt %d/%d, retrying in %.2fs",
                call.method,
                call.display,
                reason,
                exc.message if isinstance(exc, _Transient) else exc,
                state.attempt_number,
                self.max_retries,
                wait,
            )

        return before_sleep

    def _give_up(self, call: _Call) -> Callable[[tenacity.RetryCallState], Any]:
        def give_up(state: tenacity.RetryCallState) -> Any:
            exc = state.outcome.exception() if state.outcome else None
            if not isinstance(exc, _Transient):  # pragma: no cover - only _Transient is retried
                raise exc if exc else RuntimeError("retry failed without an exception")
            message = exc.message
            tried = state.seconds_since_start or 0.0
            if state.attempt_number >= self.max_retries:
                why = f"max_retries {self.max_retries} attempts reached"
            elif tried + state.upcoming_sleep > self.retry_budget_s:
                why = f"the next wait of {state.upcoming_sleep:.1f}s would exceed the retry budget of {self.retry_budget_s:g}s"
            else:
                why = f"the next wait of {state.upcoming_sleep:.1f}s would exceed max_retry_wait {self.max_retry_wait_s:g}s"
            message += f" (tried for {tried:.1f}s in {state.attempt_number} attempts; gave up: {why})"
            error = self._error(call, exc.status, message, attempts=state.attempt_number)
            if isinstance(error, ICRAPIError):
                error.transient = True  # e.g. a rate-limit 403: a later try of the task may get through
            raise error

        return give_up

