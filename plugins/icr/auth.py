"""The app's identity: private key loading, RS256 app JWTs, key fingerprint.

Nothing here talks HTTP. The client asks an :class:`AppJWT` for a token before every request
and tells it to ``invalidate()`` after a ``401``.

Choices (documented here because they are ours, not ICR's):

* RSA keys shorter than 2048 bits are **rejected** (``ICRConfigError``): ICR generates the key
  pair, GitHub-style apps use 2048+, and a shorter key means the wrong file was configured.
* An App ID that is not a UUID only logs a **warning**: ICR documents UUIDs, but a wrong ID is
  answered with a clear ``401`` anyway, and an error here would block a format ICR might change.
* Every secret that passes through (PEM text, passphrase, each JWT) is registered with Airflow's
  secrets masker via :func:`mask`, which is a no-op outside Airflow.
* ``extra.private_key_path`` must name a regular file of at most 64 KiB (``MAX_KEY_FILE_BYTES``):
  a PEM key is a few KB, and a device or FIFO would exhaust or hang the worker.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import stat
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from icr.errors import ICRConfigError

log = logging.getLogger(__name__)

FIELD_KEY = "password (private key PEM)"
FIELD_KEY_PATH = "extra.private_key_path"
FIELD_PASSPHRASE = "extra.private_key_passphrase"
FIELD_APP_ID = "login (App ID)"

MIN_RSA_BITS = 2048
#: ICR: exp "no more than 10 minutes into the future"; 540 s leaves a minute for clock drift [Assumed].
MAX_LIFETIME_S = 540
#: ICR: "set [iat] 60 seconds in the past" to protect against clock drift.
DEFAULT_BACKDATE_S = 60
#: extra.private_key_path: a PEM RSA key is 1.7 KB (2048 bits) to 3.3 KB (4096 bits); a bigger
#: file is the wrong one, and reading it whole could exhaust the worker (``/dev/zero``).
MAX_KEY_FILE_BYTES = 64 * 1024

_PEM_RE = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)


# --------------------------------------------------------------------------- masking


def mask(value: str | bytes | None) -> None:
    """Register ``value`` with Airflow's secrets masker; silently do nothing outside Airflow.

    Airflow 3.3: ``airflow.sdk.log.mask_secret`` masks in the task process *and* sends the value
    to the task's supervisor (whose log output is what users read); a worker's supervisor logs
    that message with its body omitted. Under ``airflow dags test`` the supervisor runs in this
    very process, and its in-process comms log every message they carry at DEBUG, value included
    (``Sending request … msg=MaskSecret(value='-----BEGIN PRIVATE KEY-----…')``). There the value
    only goes into this process's masker, which is the supervisor's own.
    """
    if not value:
        return
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return
    try:
        from airflow.sdk._shared.secrets_masker import mask_secret as mask_in_this_process
        from airflow.sdk.log import mask_secret
    except Exception:  # pragma: no cover - Airflow missing or broken: nothing to mask into
        return
    try:
        if _supervisor_in_this_process():
            mask_in_this_process(value)
        else:
            mask_secret(value)
    except Exception:  # pragma: no cover - masking must never break a request
        log.debug("could not register a secret with the Airflow masker", exc_info=False)


def _supervisor_in_this_process() -> bool:
    """True when the task's supervisor comms are Airflow's in-process ones (``airflow dags test``)."""
    supervisor = sys.modules.get("airflow.sdk.execution_time.supervisor")
    task_runner = sys.modules.get("airflow.sdk.execution_time.task_runner")
    in_process = getattr(supervisor, "InProcessSupervisorComms", None)
    comms = getattr(task_runner, "SUPERVISOR_COMMS", None)
    return isinstance(in_process, type) and isinstance(comms, in_process)


def _mask_pem(text: str) -> None:
    """Mask the PEM as given and its base64 body as one run (how single-line forms show it).

    Not every body line on its own: Airflow recompiles one regex per new secret, and dozens of
    patterns per key would slow every log line for little gain.
    """
    mask(text)
    match = _PEM_RE.search(text)
    if match:
        mask("".join(match.group(2).split()))


# --------------------------------------------------------------------------- key loading


def normalize_pem(text: str) -> str:
    """Undo what copy/paste into a web form does to a PEM.

    Handles literal ``\\n`` escapes (JSON-in-env-var or a single-line form field), CRLF,
    surrounding whitespace/quotes, indented lines, and a body whose newlines became spaces.
    """
    text = text.strip().strip('"').strip("'").strip()
    text = text.replace("\\r\\n", "\n").replace("\\n", "\n").replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.strip() for line in text.split("\n")]
    kept: list[str] = []
    for line in lines:
        if line:
            kept.append(line)
            if line.startswith("DEK-Info:"):
                kept.append("")  # legacy encrypted PEM: headers end with a blank line
    text = "\n".join(kept)
    match = _PEM_RE.search(text)
    if match and "\n" not in match.group(2).strip() and ":" not in match.group(2):
        # Whole key on one line (newlines turned into spaces): rebuild 64-char lines.
        body = "".join(match.group(2).split())
        chunks = [body[i : i + 64] for i in range(0, len(body), 64)]
        label = match.group(1)
        text = "\n".join([f"-----BEGIN {label}-----", *chunks, f"-----END {label}-----"])
    return text + "\n"


def load_private_key(
    pem: str | bytes | None,
    *,
    path: str | None = None,
    passphrase: str | None = None,
    conn_id: str | None = None,
) -> RSAPrivateKey:
    """Load the app's RSA private key from PEM text or a file.

    Accepts PKCS#1 (``BEGIN RSA PRIVATE KEY``), PKCS#8 (``BEGIN PRIVATE KEY``) and encrypted
    PEM with ``passphrase``. Every failure is one ``ICRConfigError`` naming the connection
    field; no message contains key material or the passphrase.
    """
    if passphrase is not None and not isinstance(passphrase, str):
        passphrase = str(passphrase)
    if passphrase == "":
        passphrase = None
    if passphrase:
        mask(passphrase)
    text, field = _key_text(pem, path, conn_id)
    match = _private_key_block(text, field, conn_id)
    key = _deserialize(match, passphrase, field, conn_id)
    if not isinstance(key, RSAPrivateKey):
        kind = type(key).__name__.lstrip("_").replace("PrivateKey", "") or "non-RSA"
        raise ICRConfigError(
            field, f"is a {kind} key; ICR app JWTs are RS256 and need an RSA private key", conn_id
        )
    if key.key_size < MIN_RSA_BITS:
        raise ICRConfigError(
            field,
            f"RSA key is {key.key_size} bits; at least {MIN_RSA_BITS} are required "
            "(is this the key ICR generated for the app?)",
            conn_id,
        )
    return key


def _key_text(pem: str | bytes | None, path: str | None, conn_id: str | None) -> tuple[str, str]:
    """``(normalized PEM text, the field it came from)``: the PEM when given, else the file."""
    field = FIELD_KEY
    if isinstance(pem, bytes):
        try:
            pem = pem.decode("utf-8")
        except UnicodeDecodeError:
            raise ICRConfigError(
                field, "is not PEM text (binary data; a DER key must be converted to PEM)", conn_id
            ) from None
    if pem is not None and not pem.strip():
        pem = None

    if pem is None:
        if not path:
            raise ICRConfigError(
                FIELD_KEY,
                "password (private key PEM) or extra.private_key_path is required",
                conn_id,
            )
        field = FIELD_KEY_PATH
        pem = _read_key_file(path, conn_id)
    elif path:
        log.warning("ICR connection has both a private key PEM and extra.private_key_path; using the PEM")

    _mask_pem(pem)
    text = normalize_pem(pem)
    _mask_pem(text)
    return text, field


def _private_key_block(text: str, field: str, conn_id: str | None) -> re.Match[str]:
    """The PEM block of a private key in ``text``, or an error saying what the text is instead."""
    match = _PEM_RE.search(text)
    if not match:
        raise ICRConfigError(
            field,
            "is not a PEM private key (expected a '-----BEGIN RSA PRIVATE KEY-----' or "
            "'-----BEGIN PRIVATE KEY-----' block, as in the .pem file ICR lets you download)",
            conn_id,
        )
    label = match.group(1)
    if "PRIVATE KEY" not in label:
        what = "a public key or certificate" if ("PUBLIC" in label or "CERTIFICATE" in label) else label
        raise ICRConfigError(field, f"contains {what} ('BEGIN {label}'), not the private key", conn_id)
    if label == "OPENSSH PRIVATE KEY":
        raise ICRConfigError(
            field,
            "is an OpenSSH-format key; use the PEM file ICR issued (or convert with "
            "'ssh-keygen -p -m PEM -f KEYFILE')",
            conn_id,
        )
    return match


def _deserialize(match: re.Match[str], passphrase: str | None, field: str, conn_id: str | None) -> Any:
    """The key object of the PEM block, decrypted with ``passphrase`` when it is encrypted."""
    label = match.group(1)
    encrypted = label == "ENCRYPTED PRIVATE KEY" or "Proc-Type: 4,ENCRYPTED" in match.group(2)
    if encrypted and not passphrase:
        raise ICRConfigError(
            FIELD_PASSPHRASE,
            "the private key is encrypted; set extra.private_key_passphrase",
            conn_id,
        )
    password = passphrase.encode("utf-8") if (encrypted and passphrase) else None
    if passphrase and not encrypted:
        log.warning("extra.private_key_passphrase is set but the ICR private key is not encrypted; ignoring it")

    try:
        return serialization.load_pem_private_key(match.group(0).encode("ascii", "replace"), password=password)
    except (ValueError, TypeError) as exc:
        if encrypted:
            raise ICRConfigError(
                FIELD_PASSPHRASE, "could not decrypt the private key: wrong passphrase?", conn_id
            ) from None
        raise ICRConfigError(
            field,
            f"the PEM block 'BEGIN {label}' could not be parsed as a private key "
            f"({type(exc).__name__}); was it truncated or altered when pasted?",
            conn_id,
        ) from None
    except Exception as exc:  # unsupported algorithm etc.
        raise ICRConfigError(field, f"could not load the private key ({type(exc).__name__})", conn_id) from None


def _read_key_file(path: str, conn_id: str | None) -> str:
    """The key file's text: a regular file (symlinks followed) of at most ``MAX_KEY_FILE_BYTES``.

    Checked with ``stat`` before opening and ``fstat`` after (the path may change in between),
    and opened non-blocking: ``/dev/zero`` would otherwise fill the worker's memory and a FIFO
    block it forever.
    """
    p = Path(path).expanduser()
    try:
        _check_key_file(p, p.stat(), conn_id)
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as f:
            _check_key_file(p, os.fstat(f.fileno()), conn_id)
            data = f.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise _key_file_error(p, exc, conn_id) from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise _too_big(p, conn_id)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ICRConfigError(
            FIELD_KEY_PATH, f"file {str(p)!r} is not PEM text (binary; convert DER to PEM)", conn_id
        ) from None


def _check_key_file(p: Path, st: os.stat_result, conn_id: str | None) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise ICRConfigError(FIELD_KEY_PATH, f"{str(p)!r} is a directory, not a PEM file", conn_id)
    if not stat.S_ISREG(st.st_mode):
        raise ICRConfigError(
            FIELD_KEY_PATH,
            f"{str(p)!r} is {_file_kind(st.st_mode)}, not a regular file; point it at the .pem file ICR issued",
            conn_id,
        )
    if st.st_size > MAX_KEY_FILE_BYTES:
        raise _too_big(p, conn_id)


def _too_big(p: Path, conn_id: str | None) -> ICRConfigError:
    return ICRConfigError(
        FIELD_KEY_PATH,
        f"file {str(p)!r} is larger than {MAX_KEY_FILE_BYTES // 1024} KiB; a PEM private key is a few KB: "
        "is this the right file?",
        conn_id,
    )


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "a special file"


def _key_file_error(p: Path, exc: OSError, conn_id: str | None) -> ICRConfigError:
    if isinstance(exc, FileNotFoundError):
        return ICRConfigError(FIELD_KEY_PATH, f"file {str(p)!r} does not exist on this worker", conn_id)
    if isinstance(exc, IsADirectoryError):
        return ICRConfigError(FIELD_KEY_PATH, f"{str(p)!r} is a directory, not a PEM file", conn_id)
    if isinstance(exc, PermissionError):
        return ICRConfigError(
            FIELD_KEY_PATH, f"file {str(p)!r} is not readable by this process (permission denied)", conn_id
        )
    return ICRConfigError(
        FIELD_KEY_PATH, f"file {str(p)!r} could not be read ({exc.strerror or type(exc).__name__})", conn_id
    )


# --------------------------------------------------------------------------- fingerprints


def _spki_der(key: RSAPrivateKey | RSAPublicKey) -> bytes:
    public = key.public_key() if isinstance(key, RSAPrivateKey) else key
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_key_fingerprint(key: RSAPrivateKey | RSAPublicKey) -> str:
    """``SHA256:<base64, no padding>`` of the DER SubjectPublicKeyInfo (GitHub's format).

    Lets an operator match the configured key against the fingerprints ICR shows per key.
    """
    digest = hashlib.sha256(_spki_der(key)).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def public_key_fingerprint_hex(key: RSAPrivateKey | RSAPublicKey) -> str:
    """Same digest as :func:`public_key_fingerprint`, as lowercase hex (colon-free)."""
    return hashlib.sha256(_spki_der(key)).hexdigest()


# --------------------------------------------------------------------------- app id


def validate_app_id(app_id: Any, *, conn_id: str | None = None) -> str:
    """Return the App ID stripped; missing is an error, a non-UUID only a warning (see module doc)."""
    if app_id is None or not str(app_id).strip():
        raise ICRConfigError(FIELD_APP_ID, "is required (the ICR App's ID, a UUID)", conn_id)
    value = str(app_id).strip()
    try:
        uuid.UUID(value)
    except ValueError:
        log.warning(
            "ICR App ID %r is not a UUID; ICR app ids normally are (check the connection's login)", value
        )
    return value


# --------------------------------------------------------------------------- JWT


class AppJWT:
    """Hands out a valid app JWT: cached, re-minted ``refresh_margin_s`` before it expires.

    Thread-safe: concurrent page fetches share one token and at most one thread mints.
    """

    def __init__(
        self,
        app_id: str,
        private_key: RSAPrivateKey,
        *,
        lifetime_s: int = MAX_LIFETIME_S,
        backdate_s: int = DEFAULT_BACKDATE_S,
        refresh_margin_s: int = 60,
        clock: Callable[[], float] = time.time,
        conn_id: str | None = None,
    ) -> None:
        self.app_id = validate_app_id(app_id, conn_id=conn_id)
        if not isinstance(private_key, RSAPrivateKey):
            raise ICRConfigError(FIELD_KEY, "an RSA private key is required for RS256", conn_id)
        if not 0 < lifetime_s <= MAX_LIFETIME_S:
            raise ValueError(f"lifetime_s must be in 1..{MAX_LIFETIME_S} (ICR rejects exp > 10 min ahead)")
        if refresh_margin_s < 0 or refresh_margin_s >= lifetime_s:
            raise ValueError("refresh_margin_s must be >= 0 and smaller than lifetime_s")
        self._key = private_key
        self.lifetime_s = int(lifetime_s)
        self.backdate_s = int(backdate_s)
        self.refresh_margin_s = int(refresh_margin_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self.minted = 0

    @property
    def fingerprint(self) -> str:
        return public_key_fingerprint(self._key)

    def claims(self, now: float) -> dict[str, Any]:
        """The payload ICR asks for; exposed for tests and debugging (no secrets in it)."""
        now_i = int(now)
        return {
            "iat": now_i - self.backdate_s,
            "exp": now_i + self.lifetime_s,
            "iss": self.app_id,
            "alg": "RS256",  # ICR's own sample puts it in the payload too
        }

    def token(self) -> str:
        """The cached JWT, or a fresh one when fewer than ``refresh_margin_s`` remain."""
        with self._lock:
            now = self._clock()
            if self._token is None or now >= self._expires_at - self.refresh_margin_s:
                claims = self.claims(now)
                token = jwt.encode(claims, self._key, algorithm="RS256", headers={"typ": "JWT"})
                mask(token)
                self._token = token
                self._expires_at = float(claims["exp"])
                self.minted += 1
                log.debug("minted ICR app JWT #%d (exp in %ds)", self.minted, self.lifetime_s)
            return self._token

    def invalidate(self, token: str | None = None) -> None:
        """Forget the cached token (after a 401) so the next ``token()`` mints a new one.

        With ``token``, only forget it if it is still the cached one: when several threads get
        a 401 for the same token, the first re-mints and the others reuse that new token.
        """
        with self._lock:
            if token is None or token == self._token:
                self._token = None
                self._expires_at = 0.0

    def __repr__(self) -> str:
        return f"AppJWT(app_id={self.app_id!r}, minted={self.minted})"
