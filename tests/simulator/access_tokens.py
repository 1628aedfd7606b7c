"""Installation and app access tokens (``crs_...``) the ICR simulator issues, checks and revokes."""

from __future__ import annotations

import random
import string
import threading
import uuid

from .config import SimulatorConfig
from .data import iso_ms

_TOKEN_ALPHABET = string.ascii_letters + string.digits


class AccessTokens:
    def __init__(self, config: SimulatorConfig, app_id: str):
        self._rng = random.Random(f"tokens:{config.seed}")
        self._app_id = app_id
        self._config = config  # read live: a test may change access_token_ttl_s on a running simulator
        self._lock = threading.Lock()
        self._tokens: dict[str, dict] = {}

    def issue(self, rec: dict | None, now: float) -> dict:
        """The API's access-token object for installation ``rec`` (None: an app token)."""
        with self._lock:
            tok = "crs_" + "".join(self._rng.choices(_TOKEN_ALPHABET, k=40))
            tid = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        ttl = self._config.access_token_ttl_s
        created = iso_ms(int(now * 1000))
        out = {
            "id": tid,
            "createdAt": created,
            "updatedAt": created,
            "token": tok,
            "expiresAt": iso_ms(int((now + ttl) * 1000)),
            "isActive": True,
            "permissions": dict(rec["permissions"]) if rec else {},
            "appId": self._app_id,
        }
        if rec is not None:
            out["installationId"] = rec["id"]
            out["organizationId"] = rec["organization"]["id"]
        with self._lock:
            self._tokens[tok] = {"expires": now + ttl, "active": True,
                                 "installation_id": rec["id"] if rec else None}
        return out

    def revoke(self, token: str | None, now: float) -> bool:
        """Revoke an active, unexpired token; False if there is none such."""
        with self._lock:
            info = self._tokens.get(token) if token else None
            if info is None or not info["active"] or info["expires"] <= now:
                return False
            info["active"] = False
            return True

    def active(self, token: str, now: float) -> bool:
        with self._lock:
            info = self._tokens.get(token)
            return bool(info and info["active"] and info["expires"] > now)
