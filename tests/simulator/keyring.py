"""The app's RSA keys in the ICR simulator: the first key, rotation (another key), revocation, and the
JWT verifier that checks app JWTs against the active ones."""

from __future__ import annotations

import threading
from typing import Any

from .tokens import (
    AppKey,
    JWTVerifier,
    fingerprint,
    generate_private_key,
    load_private_key,
    mint_app_jwt,
    private_pem,
)


class AppKeyring:
    def __init__(self, app_id: str, seed: int, key_bits: int, max_token_lifetime_s: int, iat_skew_s: int,
                 private_key_pem: str | None = None):
        self.app_id = app_id
        self._seed = seed
        self._bits = key_bits
        self._lock = threading.Lock()
        self.keys: list[AppKey] = []
        self._counter = 0
        if private_key_pem:
            self._register(load_private_key(private_key_pem))
        else:
            self._register(generate_private_key(seed, 0, key_bits))
        self.verifier = JWTVerifier(app_id, self.keys, max_token_lifetime_s, iat_skew_s)

    def _register(self, key) -> str:
        pem = private_pem(key)
        pub = key.public_key()
        self.keys.append(AppKey(key, pub, fingerprint(pub), pem))
        self._counter += 1
        return pem

    @property
    def first_pem(self) -> str:
        return self.keys[0].private_pem  # type: ignore[return-value]

    def add(self) -> str:
        """Register another RSA key (rotation); returns its private PEM (PKCS#8)."""
        with self._lock:
            return self._register(generate_private_key(self._seed, self._counter, self._bits))

    def revoke(self, pem_or_fingerprint: str) -> None:
        with self._lock:
            for k in self.keys:
                if pem_or_fingerprint in (k.private_pem, k.fingerprint):
                    k.active = False
                    break
            else:
                raise KeyError("no such app key")
        self.verifier.clear_cache()

    @property
    def fingerprints(self) -> list[str]:
        """The fingerprints of the active keys, oldest first."""
        return [k.fingerprint for k in self.keys if k.active]

    def mint_jwt(self, pem: str | None = None, **kwargs: Any) -> str:
        """An app JWT signed with ``pem`` (default: the first key). See ``tokens.mint_app_jwt``."""
        key: Any = pem
        for k in self.keys:  # a key object avoids re-parsing (and re-validating) the PEM each time
            if pem is None or pem == k.private_pem:
                key = k.private
                break
        return mint_app_jwt(key, self.app_id, **kwargs)
