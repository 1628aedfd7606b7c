"""The webhook signature: ``x-icr-signature-256: sha256=<hex HMAC-SHA256(secret, signedData)>``.

ICR signs the ``signedData`` string of the payload (docs/webhooks.md, icr-api.md §7). The
comparison is constant-time (``hmac.compare_digest``); neither the secret nor a signature is
ever part of a message or log line made here.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "x-icr-signature-256"
PREFIX = "sha256="


def sign(secret: str | bytes, signed_data: str) -> str:
    """The header value ICR sends for ``signed_data`` (used by the simulator and the tests)."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    return PREFIX + hmac.new(key, signed_data.encode("utf-8"), hashlib.sha256).hexdigest()


def verify(secret: str | bytes, signed_data: str, header: str | None) -> bool:
    """True when ``header`` is the signature of ``signed_data`` under ``secret``."""
    if not header or not secret:
        return False
    expected = sign(secret, signed_data).encode("ascii")
    # compare_digest on bytes: a non-ASCII header cannot raise, and the time does not depend
    # on where the first difference is.
    return hmac.compare_digest(expected, header.strip().encode("utf-8", "replace"))


def delivery_id(signed_data: str) -> str:
    """The id of a delivery: lowercase hex SHA-256 of its ``signedData`` (icr-api.md §7)."""
    return hashlib.sha256(signed_data.encode("utf-8")).hexdigest()
