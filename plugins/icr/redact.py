"""Strip secret-shaped text from error messages before they are logged, raised or stored.

Airflow's secrets masker only hides values it was told about, and only whole: an error body that
echoes the ``Authorization`` header, cut at 300 characters, keeps a JWT's header, claims and part
of its signature, which no registered value matches. :func:`redact` goes by shape instead, and
catches cut secrets too:

* a PEM private key: from its ``-----BEGIN … PRIVATE KEY-----`` line to its END line, or to the
  end of the text when it was cut;
* an opaque credential after ``Bearer`` (16 or more token characters);
* anything JWT-shaped, whole or cut: ``eyJ`` (base64url of ``{"``) and the base64url and dot
  characters that follow it (a header segment alone, header.claims, a cut signature);
* ICR access tokens, whole or cut: ``crs_`` and what follows it.

Each match becomes :data:`REDACTED`. Redacting twice changes nothing. Nothing here truncates:
callers bound the length themselves (after redacting, so that a cut never splits a secret away
from the shape that identifies it).
"""

from __future__ import annotations

import re

REDACTED = "[redacted]"

_B64URL = r"A-Za-z0-9_\-"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # PEM private key, whole or cut (then up to the end of the text: it may hold more lines).
    (re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", re.S),
     "[private key redacted]"),
    # An opaque credential after "Bearer" (RFC 6750 token characters, 16 or more: "Bearer app
    # JWT" in a sentence stays readable; JWTs and access tokens, cut short too, are caught below).
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=\-]{16,}"), r"\1" + REDACTED),
    # JWTs, whole or cut: base64url JSON ("eyJ" = '{"') with any dot-separated segments after it.
    # (Not inside a word: "keyJson" is no token.)
    (re.compile(rf"(?<![A-Za-z0-9])eyJ[{_B64URL}]*(?:\.[{_B64URL}]*)*"), REDACTED),
    # ICR access tokens (installation and app tokens), whole or cut.
    (re.compile(rf"(?<![A-Za-z0-9])crs_[{_B64URL}]*"), REDACTED),
)


def redact(text: str) -> str:
    """``text`` with every secret-shaped part replaced by :data:`REDACTED` (see the module doc)."""
    if not text:
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
