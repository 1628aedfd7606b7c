"""Records as JSON text: the canonical form stored in ``raw`` and hashed, and what to say or store
when a record cannot be written as JSON text at all.

Canonical JSON: sorted keys, no whitespace, non-ASCII kept as is. :func:`encode_record` makes
it fast (msgspec) and exact (the json module for anything msgspec would write differently).
"""

from __future__ import annotations

import json
from typing import Any

VALUE_TEXT_LIMIT = 80  # a message quoting a problem is cut to about this many characters

# The exact encoder: same output as canonical_json() for every encodable record, but refuses
# NaN/Infinity (not JSON; jsonb rejects them). One object, reused.
_STRICT_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
exact_encode = _STRICT_ENCODER.encode

# The fast encoder. msgspec (an Airflow dependency) writes sorted-key compact JSON 4-6x faster
# than the json module and byte-for-byte the same for dicts, lists, strings (every code point,
# same escapes), ints, booleans and null. Floats differ (1e16 vs 1e+16; NaN becomes null), so
# a record holding any float takes the exact path: msgpack marks every float with byte 0xCB,
# and a stray 0xCB elsewhere only costs a detour through the exact path. Anything msgspec
# refuses (ints beyond 64 bits, str subclasses, lone surrogates) also takes the exact path.
# Values a JSON parser never produces (datetime, UUID, Decimal, set, bytes objects) are written
# by msgspec as text/arrays instead of being rejected: records must come from a JSON parser.
try:
    import msgspec as _msgspec

    _fast_json = _msgspec.json.Encoder(order="sorted").encode
    _fast_pack = _msgspec.msgpack.Encoder().encode
except ImportError:  # pragma: no cover - msgspec ships with Airflow 3
    _fast_json = None
    _fast_pack = None

#: msgspec's encoder without the float check (None without msgspec): a record holding a float may
#: encode differently from canonical_json, so use it only where that is harmless (a hash miss).
fast_encode = _fast_json


def canonical_json(value: Any) -> str:
    """Canonical JSON text: sorted keys, no whitespace, non-ASCII kept as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def encode_record(record: Any) -> bytes:
    """canonical_json(record) as UTF-8 bytes; raises like the json module (and for NaN)."""
    if _fast_json is not None:
        try:
            if b"\xcb" not in _fast_pack(record):
                return _fast_json(record)
        except Exception:
            pass
    return exact_encode(record).encode("utf-8")


def raw_text(value: Any) -> str:
    """Canonical JSON of anything, falling back to storable text for what JSON cannot encode."""
    try:
        text = canonical_json(value)
        text.encode("utf-8")
        return text
    except (TypeError, ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        pass
    for sort_keys in (True, False):
        try:
            return json.dumps(
                value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=True, default=repr
            )
        except (TypeError, ValueError, RecursionError):
            continue
    try:
        return json.dumps(repr(value), ensure_ascii=True)
    except Exception:
        return json.dumps(f"<unrepresentable {type(value).__name__}>")


def find_nul(value: Any, path: str) -> str | None:
    """Path of the first string (or key) holding U+0000, or None."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and "\x00" in key:
                return f"a key of {path or 'the record'}"
            found = find_nul(item, sub)
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = find_nul(item, f"{path}[{index}]")
            if found:
                return found
    return None


def encoding_problem(record: Any, exc: BaseException) -> str:
    """Why ``record`` could not be encoded (``exc`` from :func:`encode_record`), for a reject."""
    if isinstance(exc, UnicodeEncodeError):
        return (
            "record contains a string that is not valid Unicode (a lone surrogate such as "
            "\\ud800), which cannot be stored as UTF-8"
        )
    if isinstance(exc, RecursionError):
        return "record is nested too deeply to encode as JSON"
    message = str(exc)
    if isinstance(exc, ValueError) and "Out of range float" in message:
        return "record contains a non-finite number (NaN or Infinity), which is not valid JSON"
    if isinstance(exc, ValueError) and "ircular" in message:
        return "record contains a circular reference and cannot be encoded as JSON"
    return f"record cannot be encoded as JSON: {message[:VALUE_TEXT_LIMIT]}"

