"""The ICR simulator: a strict, fast, standard-library HTTP stand-in for the ICR Apps API.

``ICRSimulator`` puts together the parts, each in a module of its own:

* ``http_server``   — the HTTP/1.1 server on a background thread (keep-alive, ``Content-Length``)
* ``routes``        — the API endpoints (see that module, and the ICR API reference ``icr-api.md``)
* ``admin``         — the admin HTTP API ``/_sim/...`` for a simulator in another process
* ``keyring``       — the app's RSA keys and the app-JWT verifier; ``access_tokens`` — ``crs_`` tokens
* ``faults``        — which fault a request gets (``FaultConfig``, ``fail_next``, outages)
* ``installations`` — the data set and its changes; ``record_cache`` — the JSON of each record
* ``stats``         — request counters; ``responses`` — the ``Response`` type and error bodies
* ``webhooks``      — signed ICR webhook deliveries on every change (``sim.webhooks``)

Speed: records are rendered straight to JSON text (``data.InstallationFactory.record_json``) and kept in
an LRU; ``SimulatorConfig(warm=True)`` (CLI ``--warm``) pre-generates every initial record at start,
so paging serves bytes from memory (``/_sim/state`` reports ``warm_records`` and ``warm_seconds``).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any, Iterable, Iterator
from urllib.parse import urlsplit

from .access_tokens import AccessTokens
from .admin import admin_request
from .config import FaultConfig, SimulatorConfig
from .data import InstallationFactory, parse_iso_ms, seeded_uuid
from .faults import FaultInjector
from .http_server import HTTPFrontEnd
from .installations import InstallationSet
from .keyring import AppKeyring
from .record_cache import RecordCache
from .responses import Response
from .routes import ApiRouter, classify
from .stats import Stats
from .webhooks import WebhookSender


class ICRSimulator:
    """A running (or startable) simulated ICR API. See the module docstring."""

    def __init__(self, config: SimulatorConfig | None = None, **kwargs: Any):
        if config is None:
            config = SimulatorConfig(**kwargs)
        elif kwargs:
            config = dataclasses.replace(config, **kwargs)
        self.config = config
        seed = config.seed
        self.app_id = seeded_uuid(seed, "app")
        self._stop_event = threading.Event()
        self._stats = Stats()
        self._injector = FaultInjector(config.faults, seed)
        self._keyring = AppKeyring(self.app_id, seed, config.key_bits, config.max_token_lifetime_s,
                                   config.iat_skew_s, config.private_key_pem)
        anchor = min(parse_iso_ms(config.data_anchor), int(time.time() * 1000))
        factory = InstallationFactory(seed, self.app_id, config.app_name_id, anchor, config.history_days)
        self._data = InstallationSet(factory, config.installations, seed, self.now)
        self.webhooks = WebhookSender(config.webhook_urls, config.webhook_secret, seed)
        self._data.listener = self.webhooks
        self._cache = RecordCache(factory, config.record_cache_size, self._stop_event)
        self._access_tokens = AccessTokens(config, self.app_id)
        self._router = ApiRouter(config=config, keyring=self._keyring, access_tokens=self._access_tokens,
                                 data=self._data, cache=self._cache, injector=self._injector,
                                 stats=self._stats, clock=self.now, stop_event=self._stop_event, owner=self)
        self._http = HTTPFrontEnd(self._dispatch, self._stop_event, lambda: self._stats.count("connections"))

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 0) -> "ICRSimulator":
        if self.running:
            return self
        if self.config.warm and not self._cache.warm:
            self.warm_up(self.config.warm_workers)
        self._stop_event.clear()
        self._cache.start_prefetch()
        self._http.start(host, port)
        return self

    def stop(self) -> None:
        if not self.running:
            return
        self._stop_event.set()
        self._http.stop()
        self._cache.stop_prefetch()
        self.webhooks.stop()

    def __enter__(self) -> "ICRSimulator":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._http.address is not None

    def _address(self) -> tuple[str, int]:
        address = self._http.address
        if address is None:
            raise RuntimeError("the simulator is not running; call start()")
        return address

    @property
    def host(self) -> str:
        return self._address()[0]

    @property
    def port(self) -> int:
        return self._address()[1]

    @property
    def base_url(self) -> str:
        host = self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def _dispatch(self, method: str, target: str, headers, body: bytes, client_ip: str) -> tuple[Response, float]:
        path = urlsplit(target).path
        if path.startswith("/_sim/"):
            self._stats.count("admin_requests")
            return admin_request(self, method, path, body, client_ip), 0.0
        resp = self._router.serve(method, target, headers)
        return resp, (self.faults.dribble_seconds if classify(method, path) == "list" else 0.0)

    # -- keys -------------------------------------------------------------------------------
    @property
    def keyring(self) -> AppKeyring:
        """The app's keys (``keyring.keys``: every ``tokens.AppKey``, revoked ones too)."""
        return self._keyring

    @property
    def private_key_pem(self) -> str:
        return self._keyring.first_pem

    def add_app_key(self) -> str:
        """Register another RSA key for the app (rotation); returns its private PEM (PKCS#8)."""
        return self._keyring.add()

    def revoke_app_key(self, pem_or_fingerprint: str) -> None:
        self._keyring.revoke(pem_or_fingerprint)

    @property
    def public_key_fingerprints(self) -> list[str]:
        return self._keyring.fingerprints

    def mint_jwt(self, pem: str | None = None, **kwargs: Any) -> str:
        """A valid app JWT for this simulator (server clock), for tests. See ``tokens.mint_app_jwt``."""
        kwargs.setdefault("now", self.now())
        return self._keyring.mint_jwt(pem, **kwargs)

    def auth_headers(self, **kwargs: Any) -> dict:
        return {"Authorization": f"Bearer {self.mint_jwt(**kwargs)}", "X-ICR-Api-Version": "2023-06-16",
                "Accept": "application/json"}

    def access_token_active(self, token: str) -> bool:
        return self._access_tokens.active(token, self.now())

    # -- clock & faults ---------------------------------------------------------------------
    def now(self) -> float:
        """The server clock: ``time.time() + faults.clock_offset_s``."""
        return time.time() + float(self._injector.config.clock_offset_s)

    @property
    def faults(self) -> FaultConfig:
        return self._injector.config

    @faults.setter
    def faults(self, value: FaultConfig) -> None:
        value.validate()
        self._injector.config = value

    def fail_next(self, kind: str, n: int = 1) -> None:
        """Answer exactly the next ``n`` ``/app/...`` requests with fault ``kind`` (any endpoint)."""
        self._injector.fail_next(kind, n)

    def outage(self, seconds: float, kind: str = "reset") -> None:
        """For the next ``seconds``, answer every ``/app/...`` request with fault ``kind`` (an API
        that is down: ``reset`` drops each connection, ``503``/``502`` answer an error)."""
        self._injector.outage(seconds, kind)

    def clear_faults(self) -> None:
        self._injector.clear_fail_next()
        self.faults = FaultConfig()

    # -- stats & state ----------------------------------------------------------------------
    def reset_stats(self) -> None:
        self._stats.reset()

    @property
    def stats(self) -> dict:
        return self._stats.snapshot()

    def state(self) -> dict:
        """What ``GET /_sim/state`` answers."""
        return {
            "count": self.count, "app_id": self.app_id, "base_url": self.base_url,
            "fingerprints": self.public_key_fingerprints, "stats": self.stats,
            "faults": self.faults.to_json(), "pending_fail_next": self._injector.pending_fail_next,
            "warm_records": len(self._cache.warm), "warm_seconds": round(self._cache.warm_seconds, 3),
        }

    # -- data -------------------------------------------------------------------------------
    @property
    def count(self) -> int:
        return self._data.count

    def warm_up(self, workers: int = 1) -> float:
        """Generate the JSON of every initial installation now (see ``SimulatorConfig.warm``)."""
        return self._cache.warm_up(self.config.installations, workers)

    def truth(self) -> Iterator[dict]:
        """The installation objects the API would list now, in listing order (a snapshot of the ids)."""
        return self._data.truth()

    def truth_ids(self) -> set[str]:
        return set(self.truth_id_list())

    def truth_id_list(self) -> list[str]:
        return self._data.truth_id_list()

    def installation(self, installation_id: str) -> dict | None:
        return self._data.installation(installation_id)

    def add_installations(self, n: int, *, at: str = "end") -> list[str]:
        """Add ``n`` installations at the end of the listing (``at="front"``: before all others,
        which shifts every page). Returns their ids in listing order."""
        return self._data.add(n, at=at)

    def remove_installations(self, n_or_ids: int | Iterable[str]) -> list[str]:
        """Uninstall ``n`` seeded-random installations, or the given ids. Returns the removed ids."""
        return self._data.remove(n_or_ids)

    def update_installations(self, n_or_ids: int | Iterable[str]) -> list[str]:
        """Change permissions, organization name and updatedAt of ``n`` random installations or the
        given ids (updatedAt = the server clock). Returns the updated ids."""
        return self._data.update(n_or_ids)

    def suspend_installations(self, n_or_ids: int | Iterable[str]) -> list[str]:
        """Suspend installations: gone from the list and 404 until unsuspended."""
        return self._data.suspend(n_or_ids)

    def unsuspend_installations(self, ids: Iterable[str]) -> list[str]:
        return self._data.unsuspend(ids)

    def apply_changes(self, changes: dict) -> dict:
        return self._data.apply_changes(changes)
