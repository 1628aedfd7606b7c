"""The ICR Apps API routes of the simulator (see the ICR API reference, ``icr-api.md``):

* ``GET  /app/installations?limit=L&page=P``           app JWT; paged list
* ``GET  /app/installations/{id}``                     app JWT; one installation, 404 if unknown
* ``POST /app/installations/{id}/accessTokens``        app JWT; installation access token (200 or 201)
* ``POST /app/accessTokens``                           app JWT; app access token
* ``DELETE /app/installations/token``                  *access token*; revokes it, 204

``ApiRouter.serve`` counts the request, applies the fault ``faults.FaultInjector`` picks, checks
the API version and the bearer token, and answers. Errors are NestJS-style bodies.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from .access_tokens import AccessTokens
from .config import SimulatorConfig
from .faults import PRE_FAULTS, FaultInjector
from .installations import InstallationSet
from .keyring import AppKeyring
from .record_cache import RecordCache
from .responses import JSON_TYPE, Response, error, json_response
from .stats import Stats
from .tokens import TokenRejected

_RE_ONE = re.compile(r"^/app/installations/([^/]+)$")
_RE_TOKEN = re.compile(r"^/app/installations/([^/]+)/accessTokens$")


def classify(method: str, path: str) -> str:
    """The route of a request: list, get, installation_token, app_token, revoke_token or unknown."""
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


class ApiRouter:
    def __init__(self, *, config: SimulatorConfig, keyring: AppKeyring, access_tokens: AccessTokens,
                 data: InstallationSet, cache: RecordCache, injector: FaultInjector, stats: Stats,
                 clock: Callable[[], float], stop_event: threading.Event, owner: Any):
        self.config = config
        self.keyring = keyring
        self.access_tokens = access_tokens
        self.data = data
        self.cache = cache
        self.injector = injector
        self.stats = stats
        self.now = clock
        self.stop_event = stop_event
        self.owner = owner  # the ICRSimulator, handed to a callable FaultConfig.mutate_while_paging

    def serve(self, method: str, target: str, headers) -> Response:
        parts = urlsplit(target)
        path = parts.path
        kind = classify(method, path)
        count = self.stats.count
        count("requests")
        count("by_kind", kind)
        f = self.injector.config
        if f.latency_ms:
            self.stop_event.wait(f.latency_ms / 1000.0)
        fault = self.injector.pick(kind) if path.startswith("/app/") else None
        if fault is not None:
            count("faults_injected", fault)
            count("faults_total")
        if fault in PRE_FAULTS:
            resp = self.injector.response(fault, self.now())
        else:
            try:
                resp = self._api(method, path, parts.query, headers, kind)
            except Exception as exc:  # a simulator bug must show up as a 500, not a hung client
                resp = error(500, f"simulator error: {type(exc).__name__}: {exc}")
            if fault == "slow":
                self.stop_event.wait(float(f.slow_seconds))
            elif fault == "truncated_json":
                resp.body = resp.body[: max(1, len(resp.body) // 2)]
            elif fault == "invalid_json":
                resp.body = b"{'pagination': " + resp.body[1:] if resp.body else b"{'oops'"
                resp.headers = [(k, v) for k, v in resp.headers if k != "Content-Type"]
                resp.headers.append(("Content-Type", JSON_TYPE))
        count("by_status", resp.status)
        return resp

    def _api(self, method: str, path: str, query: str, headers, kind: str) -> Response:
        version = headers.get("X-ICR-Api-Version")
        if version is not None and version not in self.config.supported_api_versions:
            return error(400, f"Unsupported API version '{version}'. Supported versions: "
                              + ", ".join(self.config.supported_api_versions))
        if kind == "unknown":
            return error(404, f"Cannot {method} {path}")
        token = _bearer(headers)
        if kind == "revoke_token":
            return self._revoke_access_token(token)
        rejected = self._check_app_jwt(token)
        if rejected is not None:
            return rejected
        if kind == "list":
            return self._list(query)
        if kind == "get":
            rec = self.data.installation(_RE_ONE.match(path).group(1))
            if rec is None:
                return error(404, "Installation not found")
            return json_response(200, rec)
        if kind == "installation_token":
            rec = self.data.installation(_RE_TOKEN.match(path).group(1))
            if rec is None:
                return error(404, "Installation not found")
            return json_response(self.config.access_token_status, self._issue_token(rec))
        if kind == "app_token":
            return json_response(self.config.access_token_status, self._issue_token(None))
        return error(404, f"Cannot {method} {path}")

    # -- auth -------------------------------------------------------------------------------
    def _check_app_jwt(self, token: str | None) -> Response | None:
        """None if ``token`` is a valid app JWT, else the 401 to answer."""
        if token is None:
            self._reject("Authorization header with a Bearer app JWT is required")
            return error(401, "Authorization header with a Bearer app JWT is required")
        if token.startswith("crs_"):
            self._reject("access token used where an app JWT is required")
            return error(401, "This endpoint requires an app JWT, not an access token")
        try:
            self.keyring.verifier.verify(token, self.now())
        except TokenRejected as exc:
            self._reject(exc.message)
            return error(401, exc.message)
        self.stats.count("tokens_accepted")
        return None

    def _reject(self, reason: str) -> None:
        self.stats.count("tokens_rejected")
        self.stats.count("rejections", reason)

    def _issue_token(self, rec: dict | None) -> dict:
        out = self.access_tokens.issue(rec, self.now())
        self.stats.count("access_tokens_issued")
        return out

    def _revoke_access_token(self, token: str | None) -> Response:
        if not self.access_tokens.revoke(token, self.now()):
            self._reject("invalid access token")
            return error(401, "Bad credentials: a valid installation access token is required")
        self.stats.count("tokens_accepted")
        return Response(204, b"")

    # -- the paged list ---------------------------------------------------------------------
    def _list(self, query: str) -> Response:
        cfg = self.config
        q = parse_qs(query, keep_blank_values=True)
        errors: list[str] = []
        limit = _int_param(q, errors, "limit", cfg.default_page_size, 1, cfg.max_page_size)
        page = _int_param(q, errors, "page", cfg.page_base, cfg.page_base, None)
        if errors:
            return error(400, errors)
        faults = self.injector.config
        pos = page - cfg.page_base
        total, keys, ahead = self.data.page(pos, limit, faults.endless_pages)
        if ahead and cfg.prefetch:
            self.cache.prefetch(ahead)
        enc = self.cache.encoded
        items = [enc(*k) for k in keys]
        extra = faults.extra_records
        if extra and extra.get(page):
            items += [r if isinstance(r, bytes) else r.encode() if isinstance(r, str)
                      else json.dumps(r, separators=(",", ":")).encode() for r in extra[page]]
        pagination = _pagination(page, pos, total, limit, cfg.next_page_on_last == "absent", faults.endless_pages)
        body = b"".join((b'{"pagination":', pagination_json(pagination, faults.pagination_override),
                         b',"installations":[', b",".join(items), b"]}"))
        self.stats.count("pages_served")
        self.stats.count("installations_served", n=len(items))
        m = faults.mutate_while_paging
        if m is not None and pos > 0:
            if callable(m):
                m(self.owner, page)
            else:
                self.data.apply_changes(m)
        return Response(200, body, [("Content-Type", JSON_TYPE)])


def _bearer(headers) -> str | None:
    auth = headers.get("Authorization")
    if not auth:
        return None
    scheme, _, value = auth.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def _int_param(q: dict, errors: list[str], name: str, default: int, minimum: int, maximum: int | None) -> int:
    """Query parameter ``name`` as an int; a problem is appended to ``errors`` (class-validator text)."""
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


def _pagination(page: int, pos: int, total: int, limit: int, absent: bool, endless: str | None) -> dict:
    page_count = -(-total // limit)
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
    return pagination


def pagination_json(pagination: dict, override: dict | None) -> bytes:
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
