"""The secret scanner of the test suite: finds app private keys, app JWTs (whole, cut, or 40+
characters of a known signature), ``crs_`` access tokens and registered literals in any text.

The fault suite feeds one session-wide ``LeakScanner`` (tests/faults/conftest.py); the client tests
scan each test's log with one of their own (tests/icr/conftest.py); the e2e test scans the worker's
DEBUG logs. A finding never carries the secret itself, only what precedes it.
"""

from __future__ import annotations

import re
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")
# a cut JWT: one base64url JSON segment ("eyJ" = '{"') long enough to hold a header or claims
# (not the signedData of a webhook payload: base64 of the payload's own JSON, which starts with eyJ
# too, is public and is scanned anyway as the body beside it, which it must equal)
JWT_PART_RE = re.compile(r'(?<![A-Za-z0-9])(?<!"signedData": ")(?<!"signedData":")eyJ[A-Za-z0-9_-]{16,}')
ACCESS_TOKEN_RE = re.compile(r"crs_[A-Za-z0-9]{12,}")
# runs that may hold part of a known JWT signature (base64url)
_B64URL_RUN_RE = re.compile(r"[A-Za-z0-9_-]{40,}")
#: this many characters of a known JWT signature, anywhere, are a leak
SIGNATURE_CHARS = 40
# a private-key header followed by key material (a bare header in a help text is no secret)
PEM_HEADER_RE = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----(?:\\n|\s)*(?:[A-Za-z-]+: [^\n]*(?:\\n|\s)+)*"
                           r"[A-Za-z0-9+/=]{40,}")


@dataclass
class Finding:
    fault_class: str
    source: str
    what: str
    excerpt: str


class LeakScanner:
    """Looks for secrets in texts: registered literals (PEM body lines, passphrases), parts of
    known JWTs (:meth:`add_token`: 40+ characters of a signature) and shapes (any JWT, whole or
    cut to a header or claims segment, any ``crs_`` access token, any PEM private-key header)."""

    def __init__(self) -> None:
        self.literals: dict[str, str] = {}
        self.tokens: set[str] = set()
        self._signature_windows: set[str] = set()
        self.findings: list[Finding] = []
        self.texts = 0
        self.chars = 0
        self.by_class: dict[str, int] = defaultdict(int)
        self.sources: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def add_secret(self, value: str, label: str) -> None:
        """Register a secret. A PEM registers each base64 body line (a leak of any one line shows)."""
        if not value:
            return
        if "-----BEGIN" in value:
            body = [ln.strip() for ln in value.strip().splitlines() if ln.strip() and "-----" not in ln
                    and ":" not in ln]
            for ln in body:
                if len(ln) >= 40:
                    self.literals[ln] = f"{label} (PEM body line)"
            self.literals["".join(body)[:200]] = f"{label} (PEM body)"
        elif len(value) >= 6:
            self.literals[value] = label

    def add_token(self, token: str) -> None:
        """Register a JWT we minted: any 40 characters of its signature in a text are a leak (its
        header and claims segments are caught by shape)."""
        if token in self.tokens:
            return
        parts = token.split(".")
        if len(parts) != 3:
            return
        signature = parts[2]
        with self._lock:
            self.tokens.add(token)
            self._signature_windows.update(signature[i:i + SIGNATURE_CHARS]
                                           for i in range(len(signature) - SIGNATURE_CHARS + 1))

    def _signature_at(self, text: str) -> int:
        """Where 40+ characters of a known signature start in ``text``, or -1."""
        if not self._signature_windows:
            return -1
        windows = self._signature_windows
        for m in _B64URL_RUN_RE.finditer(text):
            run = m.group(0)
            for i in range(len(run) - SIGNATURE_CHARS + 1):
                if run[i:i + SIGNATURE_CHARS] in windows:
                    return m.start() + i
        return -1

    def scan(self, fault_class: str, source: str, text: Any) -> list[Finding]:
        if text is None:
            return []
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        text = str(text)
        found: list[Finding] = []
        whole_jwts = set()
        for rx, what in ((JWT_RE, "JWT"), (ACCESS_TOKEN_RE, "access token"), (PEM_HEADER_RE, "PEM private key")):
            for m in rx.finditer(text):
                found.append(Finding(fault_class, source, what, _excerpt(text, m.start())))
                if rx is JWT_RE:
                    whole_jwts.update(range(m.start(), m.end()))
        for m in JWT_PART_RE.finditer(text):
            if m.start() not in whole_jwts:
                found.append(Finding(fault_class, source, "partial JWT", _excerpt(text, m.start())))
        at = self._signature_at(text)
        if at >= 0:
            found.append(Finding(fault_class, source, "JWT signature (40+ characters)", _excerpt(text, at)))
        for literal, label in self.literals.items():
            at = text.find(literal)
            if at >= 0:
                found.append(Finding(fault_class, source, label, _excerpt(text, at)))
        with self._lock:
            self.texts += 1
            self.chars += len(text)
            self.by_class[fault_class] += 1
            self.sources[source.split(":")[0]] += 1
            self.findings.extend(found)
        return found


def _excerpt(text: str, at: int) -> str:
    # Never print the secret itself in a failure message: show what surrounds it, masked.
    start = max(0, at - 40)
    return (text[start:at] + "<SECRET…>").replace("\n", "\\n")


#: texts that never belong in a log or an error text, even when no known key is behind them
MARKERS = {
    "Bearer ": "a bearer header",
    "eyJhbGciOiJSUzI1NiIs": "an RS256 JWT header",  # base64 of '{"alg":"RS256",' = every app JWT
    "PRIVATE KEY-----": "a PEM private-key header",
}


def assert_no_secrets(text: Any, *, secrets: Any = (), tokens: Any = (), markers: bool = True) -> None:
    """Fail if ``text`` holds any of ``secrets`` (PEMs: any body line), any of ``tokens`` (JWTs:
    whole, or 40+ characters of the signature), any JWT or access-token shape, or (``markers``) any
    of ``MARKERS``."""
    scanner = LeakScanner()
    for value, label in (MARKERS.items() if markers else ()):
        scanner.add_secret(value, label)
    for value in secrets:
        if value:
            scanner.add_secret(value, "a secret of the test")
    for token in tokens:
        scanner.add_token(token)
        scanner.add_secret(token, "a token of the test")
    found = scanner.scan("test", "text", text)
    assert not found, "secret(s) in the text: " + "; ".join(f"{f.what}: …{f.excerpt}" for f in found[:5])
