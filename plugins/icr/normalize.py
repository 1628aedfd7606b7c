"""Installation records (parsed JSON dicts from ``GET /app/installations``) -> a typed chunk.

``normalize_records(records)`` validates each record, flattens the valid ones into a
:class:`pandas.DataFrame` with exactly :data:`STAGE_COLUMNS`, and returns the invalid ones as
:class:`RejectedRecord` objects. It never raises for bad data: schema drift and bad records must
not break a run (the warehouse decides, with a threshold, whether too many rejects mean failure).

Column types of ``NormalizedChunk.frame``
-----------------------------------------
===============================  ==========================  =====================================
column                           dtype                       value
===============================  ==========================  =====================================
installation_id                  object (str)                ``id``, lower-cased canonical UUID
app_id                           object (str or None)        ``appId``
app_name_id                      object (str or None)        ``appNameId``
organization_id                  object (str)                ``organization.id``, as given
organization_name                object (str or None)        ``organization.fullName``
organization_type                object (str or None)        ``organization.type`` (any string)
organization_country_code        object (str or None)        ``organization.countryCode``, stripped
                                                             and upper-cased; "" becomes None; not
                                                             checked against ISO 3166
organization_is_public           boolean (pandas nullable)   ``organization.isPublic``; null -> <NA>
permissions                      object (str)                canonical JSON of ``permissions``
created_at                       datetime64[us, UTC]         ``createdAt``
updated_at                       datetime64[us, UTC]         ``updatedAt``
record_hash                      object (str)                hex SHA-256 of ``raw`` (UTF-8)
raw                              object (str)                canonical JSON of the whole record
===============================  ==========================  =====================================

Text columns are ``object`` dtype holding ``str`` or ``None`` (not pandas' ``str`` dtype, whose
missing value is NaN), so database drivers receive ``None`` -> SQL NULL. An empty chunk has the
same columns and dtypes.

Timestamps: ISO-8601 text parsed with ``pd.to_datetime(..., utc=True, format="ISO8601")``. An
offset other than ``Z`` is converted to UTC; a timestamp without an offset is taken as UTC
[Assumed: the API documents UTC]; a date alone means midnight UTC. The text must start with a
``YYYY-MM-DD`` calendar date (this keeps pandas from accepting ``"now"``/``"today"``). Values
are stored with microsecond resolution (PostgreSQL ``timestamptz`` precision); nanoseconds are
truncated.

``raw`` and ``record_hash``: ``raw`` is :func:`canonical_json` of the record exactly as
received, unknown fields included, so additive API changes never break a run and a change in
any field (known or not) changes ``record_hash`` and gets the stored row rewritten. Key order
does not matter (keys are sorted).

Validation
----------
Each record gets at most one reason, the first rule it breaks, checked in this order:

0. the record is a :class:`BadRecord`: the JSON decoder could not read it (see
   :mod:`icr.pagejson`); its reason (naming the page and the problem) is kept as is;
1. the record is not a JSON object;
2. ``id`` is missing (absent or null), not a string, or not a UUID in the standard 36-character
   ``8-4-4-4-12`` hex form (any case; braces/urn/no-dash forms are rejected);
3. ``createdAt`` is missing, null, not a string, or not an ISO-8601 timestamp;
4. ``updatedAt`` likewise;
5. ``permissions`` is missing or not an object (null is "not an object");
6. a permission value is not a string (unknown permission names and levels are fine);
7. ``organization`` is missing or null; 8. ``organization`` is not an object;
9. ``organization.id`` is missing or not a string;
10. ``appId`` is present, not null and not a string; 11. ``appNameId`` likewise;
12. ``organization.isPublic`` is present, not null and not a boolean (``"true"`` is a reject);
13. ``organization.fullName``, ``.type``, ``.countryCode`` present, not null and not a string;
14. the record cannot be stored as JSON text: a value JSON cannot encode (NaN/Infinity, a
    non-JSON Python object), a string that is not valid Unicode (lone surrogate from a
    ``"\\ud800"`` escape), or a NUL character (U+0000), which PostgreSQL text/jsonb cannot hold.

Unknown organization types, permissions and extra fields are not rejects. Strings are passed
through unchanged (no truncation, no trimming) except ``countryCode``.

Duplicate ids inside one chunk (same canonical UUID, any letter case): the first occurrence wins
(whatever becomes of it), later ones are dropped without a reject and counted in
``NormalizedChunk.duplicates``. The pager already de-duplicates across pages; this keeps the
staging table's key unique even if it did not.

Performance: one Python pass per record builds column lists (one canonical JSON encode per
record gives both ``raw`` and the hash input), timestamps are parsed vectorised once per chunk,
and the frame is built once per chunk. The frame costs a fixed ~0.5 ms per call, so prefer
chunks of 1,000 records (concatenate small pages before calling if page size is small).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import reprlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "BadRecord",
    "STAGE_COLUMNS",
    "STAGE_DTYPES",
    "NormalizedChunk",
    "RejectedRecord",
    "canonical_json",
    "empty_frame",
    "normalize_records",
]

log = logging.getLogger(__name__)

STAGE_COLUMNS: tuple[str, ...] = (
    "installation_id",
    "app_id",
    "app_name_id",
    "organization_id",
    "organization_name",
    "organization_type",
    "organization_country_code",
    "organization_is_public",
    "permissions",
    "created_at",
    "updated_at",
    "record_hash",
    "raw",
)

#: dtype of each column of ``NormalizedChunk.frame`` (as ``str(dtype)``).
STAGE_DTYPES: dict[str, str] = {
    **{c: "object" for c in STAGE_COLUMNS},
    "organization_is_public": "boolean",
    "created_at": "datetime64[us, UTC]",
    "updated_at": "datetime64[us, UTC]",
}

# The object-dtype columns, in frame order; the three typed ones are inserted at their positions.
_OBJECT_COLUMNS: tuple[str, ...] = tuple(c for c in STAGE_COLUMNS if STAGE_DTYPES[c] == "object")
_TS_DTYPE = pd.DatetimeTZDtype(unit="us", tz="UTC")

ID_TEXT_LIMIT = 200  # RejectedRecord.installation_id is cut to this many characters
VALUE_TEXT_LIMIT = 80  # a bad value quoted in a reason is cut to about this many characters

_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DATE_PREFIX_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

# The exact encoder: same output as canonical_json() for every encodable record, but refuses
# NaN/Infinity (not JSON; jsonb rejects them). One object, reused.
_STRICT_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
_exact_encode = _STRICT_ENCODER.encode

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


def _encode_record(record: Any) -> bytes:
    """canonical_json(record) as UTF-8 bytes; raises like the json module (and for NaN)."""
    if _fast_json is not None:
        try:
            if b"\xcb" not in _fast_pack(record):
                return _fast_json(record)
        except Exception:
            pass
    return _exact_encode(record).encode("utf-8")


_MISSING = object()
# permissions object (as a tuple of items) -> its canonical JSON; few distinct values exist.
_PERMISSIONS_CACHE: dict[tuple, str] = {}


def canonical_json(value: Any) -> str:
    """Canonical JSON text: sorted keys, no whitespace, non-ASCII kept as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class RejectedRecord:
    """One record that failed validation.

    ``installation_id``: the canonical UUID if the id was a valid UUID; otherwise the id as text
    if it was a string or a number (cut to 200 characters); else None.
    ``reason``: names the field and quotes the bad value (cut to ~80 characters).
    ``raw``: the record as received, canonical JSON text (for a record that JSON cannot encode,
    the closest text that can be stored: ASCII-escaped, unknown objects as their repr).
    """

    installation_id: str | None
    reason: str
    raw: str


@dataclass(frozen=True)
class BadRecord:
    """A record the JSON decoder could not turn into a value (nested too deeply, a number out of
    range, ...), already judged where it was read (:mod:`icr.pagejson`). It travels with the
    page's other records and :func:`normalize_records` turns it into a :class:`RejectedRecord`
    unchanged: ``reason`` names the page and the problem, ``raw`` is the record's text as
    received, cut to a bounded size (valid UTF-8, no NUL)."""

    installation_id: str | None
    reason: str
    raw: str


@dataclass(frozen=True, eq=False)
class NormalizedChunk:
    """Valid records as a typed frame (``STAGE_COLUMNS``), plus the rejected ones.

    ``duplicates``: records dropped because an earlier record in the same call had the same id.
    ``page_number``: as passed to :func:`normalize_records` (for logs and run bookkeeping).
    ``received`` = ``len(chunk) + len(rejects) + duplicates``.
    """

    frame: pd.DataFrame
    rejects: list[RejectedRecord] = field(default_factory=list)
    duplicates: int = 0
    page_number: int | None = None

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def received(self) -> int:
        return len(self.frame) + len(self.rejects) + self.duplicates


# --------------------------------------------------------------------------- helpers (cold path)

_repr = reprlib.Repr()
_repr.maxstring = VALUE_TEXT_LIMIT
_repr.maxother = VALUE_TEXT_LIMIT
_repr.maxlong = VALUE_TEXT_LIMIT
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 6
_repr.maxlevel = 3


def _show(value: Any) -> str:
    """A short, quoted rendering of a bad value for a reason text (JSON words for JSON atoms)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str) and len(value) > VALUE_TEXT_LIMIT:
        return repr(value[: VALUE_TEXT_LIMIT - 3]) + f"... ({len(value)} characters)"
    try:
        text = _repr.repr(value)
    except Exception:  # a hostile __repr__ must not break the run
        text = f"<{type(value).__name__}>"
    if len(text) > VALUE_TEXT_LIMIT:
        text = text[: VALUE_TEXT_LIMIT - 3] + "..."
    return text


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _wrong_type(name: str, expected: str, value: Any) -> str:
    if value is _MISSING:
        return f"{name} is missing"
    return f"{name} is not {expected}: {_show(value)} ({_json_type(value)})"


def _id_text(value: Any) -> str | None:
    """The id as text for a reject, if it was a string or a number at all."""
    if isinstance(value, str):
        return value[:ID_TEXT_LIMIT]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return str(value)[:ID_TEXT_LIMIT]
        except ValueError:  # int too long to print (sys.int_info.str_digits_check_threshold)
            return None
    return None


def _raw_text(value: Any) -> str:
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


def _find_nul(value: Any, path: str) -> str | None:
    """Path of the first string (or key) holding U+0000, or None."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and "\x00" in key:
                return f"a key of {path or 'the record'}"
            found = _find_nul(item, sub)
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _find_nul(item, f"{path}[{index}]")
            if found:
                return found
    return None


def _encoding_problem(record: dict, exc: BaseException) -> str:
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


def empty_frame() -> pd.DataFrame:
    """A frame with no rows and the stage columns and dtypes."""
    return _build_frame([[] for _ in _OBJECT_COLUMNS], [], _empty_ts(), _empty_ts())


def _empty_ts() -> pd.DatetimeIndex:
    return pd.DatetimeIndex([], dtype=_TS_DTYPE)


def _build_frame(
    object_lists: list[list], is_public: list, created: pd.DatetimeIndex, updated: pd.DatetimeIndex
) -> pd.DataFrame:
    # One 2-D object block (no per-column str inference, which pandas 3 would otherwise apply,
    # turning None into NaN), then the three typed columns inserted at their positions. This
    # is several times faster than a dict of columns.
    n = len(is_public)
    block = np.empty((n, len(_OBJECT_COLUMNS)), dtype=object)
    for j, values in enumerate(object_lists):
        block[:, j] = values
    frame = pd.DataFrame(block, columns=list(_OBJECT_COLUMNS), dtype=object)
    frame.insert(7, "organization_is_public", pd.array(is_public, dtype="boolean"))
    frame.insert(9, "created_at", created)
    frame.insert(10, "updated_at", updated)
    return frame


def _parse_timestamps(texts: list[str | None]) -> pd.DatetimeIndex:
    """ISO-8601 texts (None for "no value") -> DatetimeIndex[us, UTC]; unparseable -> NaT."""
    if not texts:
        return _empty_ts()
    match = _DATE_PREFIX_RE.match
    guarded = [t if t is not None and match(t) else None for t in texts]
    parsed = pd.to_datetime(guarded, utc=True, format="ISO8601", errors="coerce")
    if parsed.unit != "us":
        # A text with nanoseconds makes pandas parse the whole batch at ns resolution, where
        # dates outside 1677..2262 become NaT. Re-parse those failures on their own.
        missing = np.flatnonzero(parsed.isna())
        retry_at = [i for i in missing if guarded[i] is not None]
        parsed = parsed.as_unit("us")
        if retry_at:
            again = pd.to_datetime(
                [guarded[i] for i in retry_at], utc=True, format="ISO8601", errors="coerce"
            )
            if again.unit != "us":  # a far-out date with nanoseconds: truncate the digits
                again = pd.to_datetime(
                    [re.sub(r"(\.[0-9]{6})[0-9]+", r"\1", guarded[i]) for i in retry_at],
                    utc=True,
                    format="ISO8601",
                    errors="coerce",
                )
            values = parsed.to_numpy(copy=True)
            values[retry_at] = again.as_unit("us").to_numpy()
            parsed = pd.DatetimeIndex(values, dtype=_TS_DTYPE)
    if parsed.dtype != _TS_DTYPE:
        parsed = parsed.tz_convert("UTC").as_unit("us")
    return parsed


# --------------------------------------------------------------------------- the hot path


def normalize_records(
    records: Iterable[Any], *, page_number: int | None = None
) -> NormalizedChunk:
    """Validate and flatten installation records; see the module docstring for the rules."""
    ids: list[str] = []
    app_ids: list[str | None] = []
    app_name_ids: list[str | None] = []
    org_ids: list[str | None] = []
    org_names: list[str | None] = []
    org_types: list[str | None] = []
    org_countries: list[str | None] = []
    org_public: list[bool | None] = []
    permissions_json: list[str | None] = []
    created_texts: list[str | None] = []
    updated_texts: list[str | None] = []
    hashes: list[str | None] = []
    raws: list[str | None] = []
    # For each candidate row: None, or (reason, whether it beats an updatedAt parse failure).
    pending: list[tuple[str, bool] | None] = []
    has_pending = False
    positions: list[int] = []  # input position of each candidate row
    candidates: list[dict] = []  # the record of each candidate row (for late rejects)
    rejected: list[tuple[int, RejectedRecord]] = []
    seen: set[str] = set()
    duplicates = 0

    sha256 = hashlib.sha256
    encode_record = _encode_record
    perm_cache = _PERMISSIONS_CACHE
    if len(perm_cache) > 10_000:
        perm_cache.clear()
    uuid_match = _UUID_RE.fullmatch

    for pos, rec in enumerate(records):
        if not isinstance(rec, dict):
            if type(rec) is BadRecord:  # judged by the page decoder (cold path)
                rejected.append((pos, RejectedRecord(rec.installation_id, rec.reason, rec.raw)))
                continue
            rejected.append(
                (pos, RejectedRecord(
                    None, f"record is not a JSON object: {_show(rec)} ({_json_type(rec)})",
                    _raw_text(rec),
                ))
            )
            continue
        rid = rec.get("id")
        if type(rid) is not str:
            if rid is None:
                reason = "id is missing" if "id" not in rec else "id is missing (null)"
            else:
                reason = _wrong_type("id", "a string", rid)
            rejected.append((pos, RejectedRecord(_id_text(rid), reason, _raw_text(rec))))
            continue
        if len(rid) != 36 or uuid_match(rid) is None:
            rejected.append(
                (pos, RejectedRecord(rid[:ID_TEXT_LIMIT], f"id is not a UUID: {_show(rid)}",
                                     _raw_text(rec)))
            )
            continue
        iid = rid.lower()
        if iid in seen:
            duplicates += 1
            continue
        seen.add(iid)

        created = rec.get("createdAt", _MISSING)
        if type(created) is not str:
            if created is None:
                reason = "createdAt is missing (null)"
            else:
                reason = _wrong_type("createdAt", "a string", created)
            rejected.append((pos, RejectedRecord(iid, reason, _raw_text(rec))))
            continue

        # From here on a failure waits for the vectorised createdAt parse, which comes first.
        reason = None
        beats_updated_parse = False
        updated = rec.get("updatedAt", _MISSING)
        if type(updated) is not str:
            reason = (
                "updatedAt is missing (null)" if updated is None
                else _wrong_type("updatedAt", "a string", updated)
            )
            beats_updated_parse = True
            updated = None

        if reason is None:
            perms = rec.get("permissions", _MISSING)
            org = rec.get("organization", _MISSING)
            if not isinstance(perms, dict):
                reason = _wrong_type("permissions", "an object", perms)
            else:
                for key, level in perms.items():
                    if type(level) is not str or type(key) is not str:
                        if type(level) is str:  # only a non-JSON Python caller can do this
                            reason = f"permissions has a key that is not a string: {_show(key)}"
                            break
                        reason = (
                            f"permissions[{_show(key)}] is not a string: "
                            f"{_show(level)} ({_json_type(level)})"
                        )
                        break
            if reason is not None:
                pass
            elif org is _MISSING or org is None:
                reason = "organization is missing" + (" (null)" if org is None else "")
            elif not isinstance(org, dict):
                reason = _wrong_type("organization", "an object", org)
            else:
                org_id = org.get("id", _MISSING)
                app_id = rec.get("appId")
                app_name_id = rec.get("appNameId")
                is_public = org.get("isPublic")
                full_name = org.get("fullName")
                org_type = org.get("type")
                country = org.get("countryCode")
                if type(org_id) is not str:
                    reason = _wrong_type("organization.id", "a string", org_id)
                elif app_id is not None and type(app_id) is not str:
                    reason = _wrong_type("appId", "a string", app_id)
                elif app_name_id is not None and type(app_name_id) is not str:
                    reason = _wrong_type("appNameId", "a string", app_name_id)
                elif is_public is not None and type(is_public) is not bool:
                    reason = _wrong_type("organization.isPublic", "a boolean", is_public)
                elif full_name is not None and type(full_name) is not str:
                    reason = _wrong_type("organization.fullName", "a string", full_name)
                elif org_type is not None and type(org_type) is not str:
                    reason = _wrong_type("organization.type", "a string", org_type)
                elif country is not None and type(country) is not str:
                    reason = _wrong_type("organization.countryCode", "a string", country)

        if reason is None:
            try:
                raw_bytes = encode_record(rec)
                if b"\\u0000" in raw_bytes:
                    where = _find_nul(rec, "")
                    if where:
                        reason = (
                            f"{where} contains a NUL character (U+0000), which PostgreSQL "
                            "text and jsonb cannot store"
                        )
            except (TypeError, ValueError, RecursionError) as exc:
                reason = _encoding_problem(rec, exc)

        positions.append(pos)
        candidates.append(rec)
        ids.append(iid)
        created_texts.append(created)
        updated_texts.append(updated)
        if reason is not None:
            has_pending = True
            pending.append((reason, beats_updated_parse))
            app_ids.append(None)
            app_name_ids.append(None)
            org_ids.append(None)
            org_names.append(None)
            org_types.append(None)
            org_countries.append(None)
            org_public.append(None)
            permissions_json.append(None)
            hashes.append(None)
            raws.append(None)
            continue
        pending.append(None)
        app_ids.append(app_id)
        app_name_ids.append(app_name_id)
        org_ids.append(org_id)
        org_names.append(full_name)
        org_types.append(org_type)
        if country is not None:
            country = country.strip().upper() or None
        org_countries.append(country)
        org_public.append(is_public)
        perm_key = tuple(perms.items())
        perm_text = perm_cache.get(perm_key)
        if perm_text is None:
            perm_text = perm_cache[perm_key] = _exact_encode(perms)
        permissions_json.append(perm_text)
        hashes.append(sha256(raw_bytes).hexdigest())
        raws.append(raw_bytes.decode("utf-8"))

    # One parse for both columns: half the fixed cost, and pandas' cache sees that createdAt
    # and updatedAt are often the same text.
    both = _parse_timestamps(created_texts + updated_texts)
    created_at = both[: len(created_texts)]
    updated_at = both[len(created_texts) :]
    bad_created = created_at.isna()
    bad_updated = updated_at.isna()

    object_lists = [
        ids, app_ids, app_name_ids, org_ids, org_names, org_types, org_countries,
        permissions_json, hashes, raws,
    ]
    if has_pending or bad_created.any() or bad_updated.any():
        keep: list[int] = []
        for i, pos in enumerate(positions):
            item = pending[i]
            if bad_created[i]:
                reason = f"createdAt is not an ISO-8601 timestamp: {_show(created_texts[i])}"
            elif item is not None and item[1]:
                reason = item[0]
            elif bad_updated[i]:
                reason = f"updatedAt is not an ISO-8601 timestamp: {_show(updated_texts[i])}"
            elif item is not None:
                reason = item[0]
            else:
                keep.append(i)
                continue
            rejected.append((pos, RejectedRecord(ids[i], reason, _raw_text(candidates[i]))))
        if len(keep) != len(positions):
            object_lists = [[values[i] for i in keep] for values in object_lists]
            org_public = [org_public[i] for i in keep]
            created_at = created_at[keep]
            updated_at = updated_at[keep]

    frame = _build_frame(object_lists, org_public, created_at, updated_at)
    rejected.sort(key=lambda item: item[0])
    rejects = [reject for _, reject in rejected]
    if rejects:
        log.warning(
            "page %s: %d of %d records rejected, e.g. %s",
            "?" if page_number is None else page_number,
            len(rejects),
            len(frame) + len(rejects) + duplicates,
            "; ".join(f"{r.installation_id}: {r.reason}" for r in rejects[:3]),
        )
    return NormalizedChunk(frame, rejects, duplicates, page_number)
