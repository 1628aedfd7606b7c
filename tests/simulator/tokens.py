"""App keys and strict app-JWT verification for the ICR simulator.

Verification order (first failure wins, every failure is a 401 with a NestJS body):

1. the token has three base64url parts and a JSON header → else "A JSON web token could not be decoded"
2. header ``alg`` is exactly ``RS256`` (``none``, ``HS256`` — even signed with the public key PEM as
   the HMAC secret — and everything else are refused before any key is used)
3. payload has ``iss`` ("'Issuer' claim ('iss') must be present") equal to the app id ("Unknown issuer")
4. the RS256 signature verifies against one of the app's *active* public keys ("Invalid signature")
5. ``exp`` is an integer, ``exp > now`` ("JWT expired") and ``exp <= now + max_token_lifetime_s``
   ("'Expiration time' claim ('exp') is too far in the future")
6. ``iat`` is an integer and ``iat <= now + iat_skew_s`` ("'Issued at' claim ('iat') is in the future")

``now`` is the simulator's clock (``time.time() + faults.clock_offset_s``). Successful signature
checks are cached by token string; claims are re-checked against the clock on every request and the
cache is cleared when a key is revoked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

_KEY_CACHE: dict[tuple, rsa.RSAPrivateKey] = {}
_KEY_LOCK = threading.Lock()


def generate_private_key(seed: int, number: int, bits: int = 2048) -> rsa.RSAPrivateKey:
    """An RSA key, generated once per process for each ``(seed, number, bits)``."""
    k = (seed, number, bits)
    with _KEY_LOCK:
        key = _KEY_CACHE.get(k)
        if key is None:
            key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
            _KEY_CACHE[k] = key
        return key


def load_private_key(pem: str | bytes, password: bytes | None = None) -> rsa.RSAPrivateKey:
    data = pem.encode() if isinstance(pem, str) else pem
    key = serialization.load_pem_private_key(data, password=password)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the app key must be an RSA private key")
    return key


def private_pem(key: rsa.RSAPrivateKey) -> str:
    """PKCS#8, unencrypted."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def public_pem(key: rsa.RSAPublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def fingerprint(public_key: rsa.RSAPublicKey) -> str:
    """``SHA256:<base64 of sha256(DER SubjectPublicKeyInfo), no padding>`` as GitHub shows it."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "SHA256:" + base64.b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")


# -- minting (for tests; the real client has its own) -------------------------------------------
def mint_app_jwt(
    private_key_pem: "str | rsa.RSAPrivateKey",
    app_id: str,
    *,
    now: float | None = None,
    iat_offset: int = -60,
    exp_offset: int = 540,
    claims: dict | None = None,
    drop: tuple[str, ...] = (),
    headers: dict | None = None,
) -> str:
    """An RS256 app JWT like ICR documents: iat = now-60, exp = now+540, iss = app id."""
    t = int(time.time() if now is None else now)
    payload: dict[str, Any] = {"iat": t + iat_offset, "exp": t + exp_offset, "iss": app_id, "alg": "RS256"}
    payload.update(claims or {})
    for name in drop:
        payload.pop(name, None)
    return jwt.encode(payload, private_key_pem, algorithm="RS256", headers=headers)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def forge_token(payload: dict, *, alg: str, secret: bytes | None = None, typ: str = "JWT") -> str:
    """Hand-craft a JWT that PyJWT refuses to make (``alg: none``, HS256 with a PEM as secret…)."""
    head = _b64(json.dumps({"alg": alg, "typ": typ}, separators=(",", ":")).encode())
    body = _b64(json.dumps(payload, separators=(",", ":")).encode())
    signing_input = f"{head}.{body}".encode()
    if alg == "HS256":
        sig = _b64(hmac.new(secret or b"", signing_input, hashlib.sha256).digest())
    elif alg.lower() == "none":
        sig = ""
    else:
        sig = _b64(secret or b"\0" * 32)
    return f"{head}.{body}.{sig}"


# -- verification --------------------------------------------------------------------------------
@dataclass
class AppKey:
    private: rsa.RSAPrivateKey | None
    public: rsa.RSAPublicKey
    fingerprint: str
    private_pem: str | None
    active: bool = True


class TokenRejected(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class JWTVerifier:
    def __init__(self, app_id: str, keys: list[AppKey], max_lifetime_s: int, iat_skew_s: int):
        self.app_id = app_id
        self.keys = keys
        self.max_lifetime_s = max_lifetime_s
        self.iat_skew_s = iat_skew_s
        self._cache: dict[str, dict] = {}
        self._lock = threading.Lock()

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    def _verify_signature(self, token: str) -> dict:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRejected("A JSON web token could not be decoded") from None
        alg = header.get("alg")
        if alg != "RS256":
            raise TokenRejected("'alg' must be RS256")
        try:
            payload = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise TokenRejected("A JSON web token could not be decoded") from None
        if "iss" not in payload:
            raise TokenRejected("'Issuer' claim ('iss') must be present")
        if payload["iss"] != self.app_id:
            raise TokenRejected("Unknown issuer")
        opts = {
            "verify_signature": True,
            "verify_exp": False,
            "verify_iat": False,
            "verify_nbf": False,
            "verify_aud": False,
            "verify_iss": False,
            "require": [],
        }
        for key in [k for k in self.keys if k.active]:
            try:
                return jwt.decode(token, key.public, algorithms=["RS256"], options=opts)
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError:
                raise TokenRejected("A JSON web token could not be decoded") from None
        raise TokenRejected("Invalid signature")

    def verify(self, token: str, now: float) -> dict:
        """Return the verified claims or raise :class:`TokenRejected`."""
        with self._lock:
            payload = self._cache.get(token)
        if payload is None:
            payload = self._verify_signature(token)
            with self._lock:
                if len(self._cache) > 4096:
                    self._cache.clear()
                self._cache[token] = payload
        exp = payload.get("exp")
        if exp is None:
            raise TokenRejected("'Expiration time' claim ('exp') is missing")
        if type(exp) is not int:
            raise TokenRejected("'Expiration time' claim ('exp') must be an Integer")
        if exp <= now:
            raise TokenRejected("JWT expired")
        if exp > now + self.max_lifetime_s:
            raise TokenRejected("'Expiration time' claim ('exp') is too far in the future")
        iat = payload.get("iat")
        if iat is None:
            raise TokenRejected("'Issued at' claim ('iat') is missing")
        if type(iat) is not int:
            raise TokenRejected("'Issued at' claim ('iat') must be an Integer")
        if iat > now + self.iat_skew_s:
            raise TokenRejected("'Issued at' claim ('iat') is in the future")
        return payload
