"""The Airflow hook for ICR: an ``icr`` connection in, a ready :class:`~icr.client.ICRClient` out.

Connection fields (the form itself comes from :mod:`icr.provider`):

* ``host``: the API base URL *with* scheme, e.g. ``https://sandbox-api.carbonregistry.com``.
  Empty means production. In the JSON form of ``AIRFLOW_CONN_ICR_DEFAULT`` write it whole:
  ``{"conn_type": "icr", "host": "http://127.0.0.1:8765", "login": "<app id>", "password": "<PEM>"}``.
  The URI form puts a bare host in ``host``; give the scheme as the URI path (Airflow's ``schema``):
  ``icr://<app id>:<url-encoded PEM>@api.carbonregistry.com/https``.
* ``login``: the App ID; ``password``: the private key PEM (or ``extra.private_key_path``).
* ``extra.key_source`` (the form's "Key source" select): ``"pem"`` signs with the ``password`` PEM,
  ``"file"`` with ``extra.private_key_path`` even when a PEM is still stored (Airflow keeps a stored
  password when the form submits the field empty or masked). Absent: the PEM when one is stored,
  else the file. Test and the task log name the key in use (source and fingerprint, never the key).
* extras (declared once, with their defaults, in :data:`icr.provider.EXTRA_FIELDS`): ``key_source``,
  ``private_key_path``, ``private_key_passphrase``, ``api_version``, ``page_size``, ``concurrency``, ``timeout``, ``max_retries``, ``max_retry_wait``, ``allow_insecure_http``,
  ``max_page_size`` (page sizes above it are refused before any request), ``retry_budget``
  (seconds a request keeps retrying transient failures).
  Strings such as ``"10"`` or ``"true"`` are accepted; anything else is an ``ICRConfigError``
  naming ``extra.<name>``. The ``extra__icr__<name>`` spelling of older forms works too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook, Connection

from icr import provider
from icr.auth import FIELD_KEY, FIELD_KEY_PATH, AppJWT, load_private_key, validate_app_id
from icr.client import FIELD_HOST, ICRClient, normalize_base_url
from icr.defaults import (
    DEFAULT_BASE_URL,
    DEFAULT_POOL_SIZE,
    TEST_MAX_RETRIES,
    TEST_MAX_RETRY_WAIT_S,
    TEST_TIMEOUT_S,
)
from icr.errors import ICRAPIError, ICRConfigError, ICRError
from icr.paging import InstallationPager
from icr.provider import EXTRA_FIELDS, EXTRA_FIELDS_BY_NAME, ExtraField

if TYPE_CHECKING:
    from icr.unchanged import WireReader

log = logging.getLogger(__name__)

#: Airflow's UI shows stored secrets as this; it must never be taken for a key, path or passphrase.
UI_MASK = "***"
KEY_FROM_PEM = "the connection's Private key (PEM) field"

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", ""}


@dataclass(frozen=True)
class ICRConnectionSettings:
    """What an ``icr`` connection says, parsed and validated (no secrets in its repr).

    One attribute per non-secret extra of :data:`icr.provider.EXTRA_FIELDS` (its ``setting``
    name), plus the standard fields."""

    conn_id: str | None
    base_url: str
    app_id: str
    key_source: str | None
    private_key_path: str | None
    api_version: str
    page_size: int
    max_page_size: int
    concurrency: int
    timeout: float
    max_retries: int
    max_retry_wait_s: float
    retry_budget_s: float
    allow_insecure_http: bool

    @classmethod
    def from_connection(cls, conn: Connection) -> ICRConnectionSettings:
        conn_id = conn.conn_id
        extras = _extras(conn)
        unknown = sorted(k for k in extras if k not in EXTRA_FIELDS_BY_NAME)
        if unknown:
            log.warning("ICR connection %r: ignoring unknown extra field(s) %s", conn_id, ", ".join(unknown))
        allow_http = read_extra(extras, "allow_insecure_http", conn_id)
        base_url = _base_url(conn, allow_http, conn_id)
        app_id = validate_app_id(conn.login, conn_id=conn_id)
        values = {f.setting: _read(extras, f, conn_id) for f in EXTRA_FIELDS if f.kind != "secret"}
        _check_page_size_extras(values["page_size"], values["max_page_size"], conn_id)
        return cls(conn_id=conn_id, base_url=base_url, app_id=app_id, **values)


class ICRHook(BaseHook):
    """Interact with the ICR Apps API as an ICR App (app JWT auth, paging, retries)."""

    conn_name_attr = "icr_conn_id"
    default_conn_name = "icr_default"
    conn_type = "icr"
    hook_name = "ICR App"

    def __init__(self, icr_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.icr_conn_id = icr_conn_id
        self._client: ICRClient | None = None
        self._settings: ICRConnectionSettings | None = None
        #: Which key the client signs with, e.g. "file /path/key.pem" (set when the client is built).
        self.key_description: str | None = None

    def __repr__(self) -> str:
        return f"ICRHook(icr_conn_id={self.icr_conn_id!r})"

    # ------------------------------------------------------------------ UI (fallback only)

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Same as the provider info's ``ui-field-behaviour`` (which Airflow 3.3 prefers)."""
        b = provider.UI_FIELD_BEHAVIOUR
        return {
            "hidden_fields": list(b["hidden-fields"]),
            "relabeling": dict(b["relabeling"]),
            "placeholders": dict(b["placeholders"]),
        }

    # ------------------------------------------------------------------ client

    @property
    def settings(self) -> ICRConnectionSettings:
        if self._settings is None:
            self._settings = ICRConnectionSettings.from_connection(self.get_connection(self.icr_conn_id))
        return self._settings

    def _build_client(self, **overrides: Any) -> ICRClient:
        conn = self.get_connection(self.icr_conn_id)
        settings = ICRConnectionSettings.from_connection(conn)
        self._settings = settings
        extras = _extras(conn)
        pem, path, description = _key_source(conn, settings)
        passphrase = read_extra(extras, "private_key_passphrase", settings.conn_id)
        _refuse_mask(passphrase, "extra.private_key_passphrase", settings.conn_id)
        key = load_private_key(pem, path=path, passphrase=passphrase, conn_id=settings.conn_id)
        auth = AppJWT(settings.app_id, key, conn_id=settings.conn_id)
        self.key_description = description
        log.info("ICR connection %r: key: %s, fingerprint %s", settings.conn_id, description, auth.fingerprint)
        kwargs: dict[str, Any] = {
            "api_version": settings.api_version,
            "timeout": settings.timeout,
            "max_retries": settings.max_retries,
            "max_retry_wait_s": settings.max_retry_wait_s,
            "retry_budget_s": settings.retry_budget_s,
            "allow_insecure_http": settings.allow_insecure_http,
            "pool_size": max(DEFAULT_POOL_SIZE, settings.concurrency),
            "conn_id": settings.conn_id,
        }
        kwargs.update(overrides)
        return ICRClient(settings.base_url, auth, **kwargs)

    def get_conn(self) -> ICRClient:
        """The hook's client, built on first use and then reused (one JWT cache, one rate gate)."""
        if self._client is None:
            self._client = self._build_client()
        return self._client

    def installations(self, page_size: int | None = None, concurrency: int | None = None,
                      wire: WireReader | None = None) -> InstallationPager:
        """A pager over ``GET /app/installations``: the run's page size and concurrency (the
        arguments), else the connection's extras; ``wire``: hash each record's bytes and leave
        unchanged ones undecoded (:mod:`icr.unchanged`, the sync's extract)."""
        client = self.get_conn()
        settings = self.settings
        size = page_size or settings.page_size
        check_page_size(size, settings, "the run's page_size" if page_size else None)
        return InstallationPager(client, page_size=size, concurrency=concurrency or settings.concurrency, wire=wire)

    # ------------------------------------------------------------------ test button

    def test_connection(self) -> tuple[bool, str]:
        """Really call ICR (``GET /app/installations?limit=1&page=0``) and say what happened."""
        try:
            client = self._build_client(
                max_retries=TEST_MAX_RETRIES, max_retry_wait_s=TEST_MAX_RETRY_WAIT_S, timeout=TEST_TIMEOUT_S
            )
            base_url = client.base_url
            fingerprint = client.auth.fingerprint
            try:
                body = client.get_json("/app/installations", params={"limit": 1, "page": 0})
            finally:
                client.close()
        except ICRConfigError as exc:
            return False, f"Invalid ICR connection: {exc}"
        except ICRAPIError as exc:  # the client's message already names the field at fault
            hint = " The app is not allowed to list its installations." if exc.status == 403 else ""
            return False, f"{exc}.{hint}"
        except ICRError as exc:
            return False, str(exc)
        except Exception as exc:  # noqa: BLE001 - the UI must get a message, not a traceback
            return False, f"Unexpected {type(exc).__name__} while testing the ICR connection: {exc}"
        total: Any = None
        if isinstance(body, dict) and isinstance(body.get("pagination"), dict):
            total = body["pagination"].get("total")
        if total is None and isinstance(body, dict) and isinstance(body.get("installations"), list):
            total = f"at least {len(body['installations'])}"
        return True, (
            f"Connected to {base_url} as ICR App {self.settings.app_id}: {total} installations; "
            f"key: {self.key_description}, fingerprint {fingerprint}"
        )


# --------------------------------------------------------------------------- parsing helpers


def read_extra(extras: dict[str, Any], name: str, conn_id: str | None) -> Any:
    """The extra ``name`` parsed as :data:`icr.provider.EXTRA_FIELDS` declares it (its default
    when absent); anything else is an ``ICRConfigError`` naming ``extra.<name>``."""
    return _read(extras, EXTRA_FIELDS_BY_NAME[name], conn_id)


def _read(extras: dict[str, Any], f: ExtraField, conn_id: str | None) -> Any:
    if f.kind in ("text", "secret"):
        return _str(extras, f.name, f.default, conn_id)
    if f.kind == "choice":
        return _choice(extras, f.name, f.choices, conn_id)
    if f.kind == "int":
        return _int(extras, f.name, f.default, conn_id, minimum=f.minimum or 0)
    if f.kind == "seconds":
        return _float(extras, f.name, f.default, conn_id, positive=f.above_zero)
    if f.kind == "bool":
        return _bool(extras, f.name, f.default, conn_id)
    raise AssertionError(f"extra {f.name}: unknown kind {f.kind!r}")


def _check_page_size_extras(page_size: int, max_page_size: int, conn_id: str | None) -> None:
    if page_size > max_page_size:
        raise ICRConfigError(_field("page_size"), f"{page_size} is above extra.max_page_size ({max_page_size}); "
                             f"use a page size of at most {max_page_size}", conn_id)


def check_page_size(page_size: int, settings: ICRConnectionSettings, source: str | None) -> None:
    """Refuse a page size above the connection's ``max_page_size`` before any request."""
    if page_size > settings.max_page_size:
        raise ICRConfigError(
            "extra.max_page_size" if source else _field("page_size"),
            f"{source or 'the page size'} {page_size} is above the maximum page size {settings.max_page_size} "
            f"(ICR refuses larger pages); use at most {settings.max_page_size}, or raise extra.max_page_size "
            "if ICR accepts more",
            settings.conn_id,
        )


def _extras(conn: Connection) -> dict[str, Any]:
    try:
        raw = conn.extra_dejson
    except Exception:
        raise ICRConfigError("extra", "is not valid JSON", conn.conn_id) from None
    if not isinstance(raw, dict):
        raise ICRConfigError("extra", "must be a JSON object", conn.conn_id)
    out: dict[str, Any] = {}
    prefix = "extra__icr__"
    for k, v in raw.items():
        name = k[len(prefix):] if k.startswith(prefix) else k
        if k.startswith(prefix) and name in out:
            continue  # the plain spelling wins
        out[name] = v
    return {k: v for k, v in out.items() if v is not None and v != ""}


def _key_source(conn: Connection, settings: ICRConnectionSettings) -> tuple[str | None, str | None, str]:
    """``(pem, path, description)``: exactly one of pem/path is set, the one extra.key_source picks.

    Without extra.key_source: the PEM when one is stored, else the file (when neither is there,
    :func:`~icr.auth.load_private_key` says both are missing).
    """
    conn_id = settings.conn_id
    pem = conn.password or None
    if isinstance(pem, str) and not pem.strip():
        pem = None
    path = settings.private_key_path
    source = settings.key_source
    if source is None:
        if pem is not None and path:
            log.warning(
                "ICR connection %r has a Private key (PEM) and extra.private_key_path but no "
                "extra.key_source: using the PEM (choose the Key source in the connection form)", conn_id)
        source = provider.KEY_SOURCE_PEM if pem is not None else provider.KEY_SOURCE_FILE
    elif source == provider.KEY_SOURCE_PEM and pem is None:
        raise ICRConfigError(
            FIELD_KEY,
            "is empty but extra.key_source is 'pem' (Key source: PEM pasted in the Private key (PEM) "
            "field); paste the key, or choose Key source 'Private key file'",
            conn_id,
        )
    elif source == provider.KEY_SOURCE_FILE and not path:
        raise ICRConfigError(
            FIELD_KEY_PATH,
            "is required when extra.key_source is 'file' (Key source: Private key file); give the "
            "key file's path on the workers",
            conn_id,
        )
    if source == provider.KEY_SOURCE_PEM:
        _refuse_mask(pem, FIELD_KEY, conn_id)
        return pem, None, KEY_FROM_PEM
    _refuse_mask(path, FIELD_KEY_PATH, conn_id)
    return None, path, f"file {path}"


def _refuse_mask(value: Any, field: str, conn_id: str | None) -> None:
    """Airflow's '***' is what the UI shows for a stored secret: it reached us instead of the value."""
    if isinstance(value, str) and value.strip() == UI_MASK:
        raise ICRConfigError(
            field,
            f"holds Airflow's mask '{UI_MASK}', not the value (the stored one was not found); "
            "enter it again in the connection form",
            conn_id,
        )


def _base_url(conn: Connection, allow_http: bool, conn_id: str | None) -> str:
    host = (conn.host or "").strip()
    if not host:
        return DEFAULT_BASE_URL
    if "://" not in host:
        schema = (conn.schema or "").strip().lower()
        if schema not in ("http", "https"):
            raise ICRConfigError(
                FIELD_HOST,
                f"{host!r} has no http(s):// scheme; write the whole URL, e.g. https://{host} "
                "(in a connection URI, give the scheme as the path: icr://...@host/https)",
                conn_id,
            )
        port = conn.port
        host = f"{schema}://{host}" + (f":{port}" if port and ":" not in host.split("]")[-1] else "")
    return normalize_base_url(host, allow_insecure_http=allow_http, conn_id=conn_id)


def _field(name: str) -> str:
    return f"extra.{name}"


def _str(extras: dict[str, Any], name: str, default: str | None, conn_id: str | None) -> str | None:
    value = extras.get(name)
    if value is None:
        return default
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ICRConfigError(_field(name), f"must be a string, got {type(value).__name__}", conn_id)
    return str(value).strip() or default


def _int(extras: dict[str, Any], name: str, default: int, conn_id: str | None, *, minimum: int) -> int:
    value = extras.get(name)
    if value is None:
        return default
    parsed: int | None = None
    if isinstance(value, bool):
        parsed = None
    elif isinstance(value, int):
        parsed = value
    elif isinstance(value, float) and value.is_integer():
        parsed = int(value)
    elif isinstance(value, str):
        try:
            f = float(value.strip())
            parsed = int(f) if f.is_integer() else None
        except ValueError:
            parsed = None
    if parsed is None:
        raise ICRConfigError(_field(name), f"must be a whole number, got {_show(value)}", conn_id)
    if parsed < minimum:
        raise ICRConfigError(_field(name), f"must be at least {minimum}, got {parsed}", conn_id)
    return parsed


def _float(extras: dict[str, Any], name: str, default: float, conn_id: str | None, *, positive: bool = False) -> float:
    value = extras.get(name)
    if value is None:
        return default
    parsed: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        parsed = float(value)
    elif isinstance(value, str):
        try:
            parsed = float(value.strip())
        except ValueError:
            parsed = None
    if parsed is None or parsed != parsed or parsed in (float("inf"), float("-inf")):
        raise ICRConfigError(_field(name), f"must be a number of seconds, got {_show(value)}", conn_id)
    if parsed < 0 or (positive and parsed == 0):
        raise ICRConfigError(_field(name), f"must be {'> 0' if positive else '>= 0'}, got {parsed:g}", conn_id)
    return parsed


def _choice(extras: dict[str, Any], name: str, allowed: tuple[str, ...], conn_id: str | None) -> str | None:
    value = extras.get(name)
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() in allowed:
        return value.strip().lower()
    choices = " or ".join(repr(a) for a in allowed)
    raise ICRConfigError(_field(name), f"must be {choices} (or empty), got {_show(value)}", conn_id)


def _bool(extras: dict[str, Any], name: str, default: bool, conn_id: str | None) -> bool:
    value = extras.get(name)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        v = value.strip().lower()
        if v in _TRUE:
            return True
        if v in _FALSE:
            return False
    raise ICRConfigError(_field(name), f"must be true or false, got {_show(value)}", conn_id)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
