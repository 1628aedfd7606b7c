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

Rules 0-2 and a missing createdAt are settled while the record is read; a later rule's reason
waits for the batched timestamp parse, since an unparseable createdAt (rule 3) outranks it and
an unparseable updatedAt (rule 4) outranks rules 5-14: each rule has its rank (``_RANK_*``).

Performance: one Python pass per record validates it and keeps its row as one tuple (one
canonical JSON encode per record gives both ``raw`` and the hash input, see
:mod:`icr.jsontext`), the tuples become columns in one transpose, timestamps are parsed
vectorised once per chunk, and the frame is built once per chunk. The frame costs a fixed ~0.5 ms per call, so prefer
chunks of 1,000 records (concatenate small pages before calling if page size is small).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import re
import reprlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from icr.jsontext import (
    VALUE_TEXT_LIMIT,
    canonical_json,
    encode_record,
    encoding_problem,
    exact_encode,
    find_nul,
    raw_text,
)

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

_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DATE_PREFIX_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

_MISSING = object()
# permissions object (as a tuple of items) -> its canonical JSON; few distinct values exist.
_PERMISSIONS_CACHE: dict[tuple, str] = {}


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


# --------------------------------------------------------------------------- per-record validation

# Each rule's rank (the module docstring's numbers). A record gets the reason of its
# lowest-ranked broken rule. Up to _RANK_CREATED the verdict is settled while the record is read;
# above it, it waits for the batched timestamp parse, which finds rules 3 and 4's bad texts.
_RANK_DECODER = 0  # rule 0: the page decoder's BadRecord
_RANK_NOT_OBJECT = 1
_RANK_ID = 2
_RANK_CREATED = 3  # createdAt missing or not a string now; not ISO-8601 after the parse
_RANK_UPDATED = 4  # updatedAt missing or not a string
_RANK_UPDATED_TEXT = 5  # updatedAt not ISO-8601 (the parse): outranks rules 5-14 only
_RANK_FIELDS = 6  # rules 5-14, already ordered among themselves by _check_fields
_RANK_VALID = 99

_NO_VALUES = (None,) * 10  # a row waiting for its reject: (app_id .. raw, is_public) unset
# Rules 10-13, in order: fields that may be absent or null, else must have this type.
_OPTIONAL_FIELDS = (("appId", str, "a string"), ("appNameId", str, "a string"),
                    ("organization.isPublic", bool, "a boolean"), ("organization.fullName", str, "a string"),
                    ("organization.type", str, "a string"), ("organization.countryCode", str, "a string"))
# Every combination of types rules 10-13 accept (None or the field's type), for one set lookup.
_OPTIONAL_TYPES_OK = frozenset(itertools.product(*[(type(None), kind) for _, kind, _ in _OPTIONAL_FIELDS]))
_sha256 = hashlib.sha256
_uuid_match = _UUID_RE.fullmatch


def _validate(rec: Any) -> tuple[int, Any, Any, str | None]:
    """One record against the rules, in order: ``(rank, id, row or reject, reason)``.

    Rank up to ``_RANK_CREATED``: the :class:`RejectedRecord` (``id`` is the canonical id, or
    None where it was not one). Above it: ``row`` = ``(createdAt, updatedAt, app_id,
    app_name_id, organization_id, name, type, country, permissions JSON, hash, raw,
    is_public)``, and ``reason`` None when no rule is broken yet (``_RANK_VALID``). One function
    for the hot path: a call per rule group cost a tenth of normalize's time.
    """
    if not isinstance(rec, dict):
        if type(rec) is BadRecord:  # judged by the page decoder (cold path)
            return _RANK_DECODER, None, RejectedRecord(rec.installation_id, rec.reason, rec.raw), None
        reason = f"record is not a JSON object: {_show(rec)} ({_json_type(rec)})"
        return _RANK_NOT_OBJECT, None, RejectedRecord(None, reason, raw_text(rec)), None
    rid = rec.get("id")
    if type(rid) is not str or len(rid) != 36 or _uuid_match(rid) is None:
        return _RANK_ID, None, RejectedRecord(*_bad_id(rec, rid), raw_text(rec)), None
    iid = rid.lower()
    created = rec.get("createdAt", _MISSING)
    if type(created) is not str:
        reason = "createdAt is missing (null)" if created is None else _wrong_type("createdAt", "a string", created)
        return _RANK_CREATED, iid, RejectedRecord(iid, reason, raw_text(rec)), None
    updated = rec.get("updatedAt", _MISSING)
    if type(updated) is not str:
        reason = ("updatedAt is missing (null)" if updated is None
                  else _wrong_type("updatedAt", "a string", updated))
        return _RANK_UPDATED, iid, (created, None, *_NO_VALUES), reason
    # Rules 5-14.
    perms = rec.get("permissions", _MISSING)
    if not isinstance(perms, dict):
        return _waits(iid, created, updated, _wrong_type("permissions", "an object", perms))
    for key, level in perms.items():
        if type(level) is not str or type(key) is not str:
            return _waits(iid, created, updated, _permission_problem(key, level))
    org = rec.get("organization", _MISSING)
    if not isinstance(org, dict):
        return _waits(iid, created, updated, _organization_problem(org))
    org_id = org.get("id", _MISSING)
    if type(org_id) is not str:
        return _waits(iid, created, updated, _wrong_type("organization.id", "a string", org_id))
    app_id, app_name_id = rec.get("appId"), rec.get("appNameId")
    is_public, full_name, org_type, country = (org.get("isPublic"), org.get("fullName"), org.get("type"),
                                               org.get("countryCode"))
    if ((type(app_id), type(app_name_id), type(is_public), type(full_name), type(org_type), type(country))
            not in _OPTIONAL_TYPES_OK):
        return _waits(iid, created, updated,
                      _optional_problem((app_id, app_name_id, is_public, full_name, org_type, country)))
    try:
        raw_bytes = encode_record(rec)
    except (TypeError, ValueError, RecursionError) as exc:
        return _waits(iid, created, updated, encoding_problem(rec, exc))
    if b"\\u0000" in raw_bytes and (where := find_nul(rec, "")):
        return _waits(iid, created, updated, f"{where} contains a NUL character (U+0000), which PostgreSQL "
                                             "text and jsonb cannot store")
    if country is not None:
        country = country.strip().upper() or None
    perms_json = _PERMISSIONS_CACHE.get(key := tuple(perms.items()))  # few distinct ones: cached
    if perms_json is None:
        perms_json = _PERMISSIONS_CACHE[key] = exact_encode(perms)
    return _RANK_VALID, iid, (created, updated, app_id, app_name_id, org_id, full_name, org_type, country,
                              perms_json, _sha256(raw_bytes).hexdigest(), raw_bytes.decode("utf-8"),
                              is_public), None


def _waits(iid: str, created: str, updated: str, reason: str) -> tuple[int, str, tuple, str]:
    """A record that broke one of rules 5-14: its row waits for the timestamp parse."""
    return _RANK_FIELDS, iid, (created, updated, *_NO_VALUES), reason


def _organization_problem(org: Any) -> str:
    """Rules 7 and 8."""
    if org is _MISSING or org is None:
        return "organization is missing" + (" (null)" if org is None else "")
    return _wrong_type("organization", "an object", org)


def _bad_id(rec: dict, rid: Any) -> tuple[str | None, str]:
    """Rule 2: (the id as text for the reject, reason)."""
    if type(rid) is str:
        return rid[:ID_TEXT_LIMIT], f"id is not a UUID: {_show(rid)}"
    if rid is None:
        return None, "id is missing" if "id" not in rec else "id is missing (null)"
    return _id_text(rid), _wrong_type("id", "a string", rid)


def _optional_problem(values: tuple) -> str:
    """Rules 10-13: the first field present, not null and of the wrong type."""
    for (name, kind, expected), value in zip(_OPTIONAL_FIELDS, values):
        if value is not None and type(value) is not kind:
            return _wrong_type(name, expected, value)
    raise AssertionError("no optional field is of a wrong type")  # pragma: no cover


def _permission_problem(key: Any, level: Any) -> str:
    """Rule 6 (a permission value is not a string), or a key that is not (a non-JSON caller)."""
    if type(level) is str:
        return f"permissions has a key that is not a string: {_show(key)}"
    return f"permissions[{_show(key)}] is not a string: {_show(level)} ({_json_type(level)})"


# --------------------------------------------------------------------------- the column accumulator


class _Rows:
    """The rows that passed the checks made while reading (the valid and the waiting ones), in
    input order: one value tuple each, its position in the input and its record (for a late
    reject), and the reason a waiting one carries, by row index."""

    __slots__ = ("ids", "values", "positions", "records", "waiting")

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.values: list[tuple] = []
        self.positions: list[int] = []
        self.records: list[dict] = []
        self.waiting: dict[int, tuple[int, str]] = {}

    def columns(self) -> list[list]:
        """(createdAt, updatedAt, app_id .. raw, is_public) as one list per column."""
        if not self.values:
            return [[] for _ in range(12)]
        return [list(column) for column in zip(*self.values)]


# --------------------------------------------------------------------------- the vectorised steps


def _late_rejects(rows: _Rows, created_texts: list, updated_texts: list, bad_created: np.ndarray,
                  bad_updated: np.ndarray) -> tuple[list[int] | None, list[tuple[int, RejectedRecord]]]:
    """The final verdict of each row a rule or the timestamp parse flagged: its waiting rule
    against what the parse found, by rank. Returns the rows to keep (None: all of them) and the
    rejects with their input positions."""
    flagged = set(np.flatnonzero(bad_created | bad_updated).tolist())
    flagged.update(rows.waiting)
    if not flagged:
        return None, []
    rejected: list[tuple[int, RejectedRecord]] = []
    for i in sorted(flagged):
        rank, reason = rows.waiting.get(i, (_RANK_VALID, None))
        if bad_created[i]:
            reason = f"createdAt is not an ISO-8601 timestamp: {_show(created_texts[i])}"
        elif bad_updated[i] and rank > _RANK_UPDATED_TEXT:
            reason = f"updatedAt is not an ISO-8601 timestamp: {_show(updated_texts[i])}"
        rejected.append((rows.positions[i], RejectedRecord(rows.ids[i], reason, raw_text(rows.records[i]))))
    keep = np.ones(len(rows.ids), dtype=bool)
    keep[sorted(flagged)] = False
    return np.flatnonzero(keep).tolist(), rejected


def _frame(rows: _Rows) -> tuple[pd.DataFrame, list[tuple[int, RejectedRecord]]]:
    """The typed frame of the rows that stay, after the batched timestamp parse; and the late rejects."""
    created_texts, updated_texts, *object_lists, is_public = rows.columns()
    # One parse for both columns: half the fixed cost, and pandas' cache sees that createdAt
    # and updatedAt are often the same text.
    both = _parse_timestamps(created_texts + updated_texts)
    created_at = both[: len(created_texts)]
    updated_at = both[len(created_texts) :]
    keep, rejected = _late_rejects(rows, created_texts, updated_texts, created_at.isna(), updated_at.isna())
    object_lists.insert(0, rows.ids)
    if keep is not None and len(keep) != len(rows.ids):
        object_lists = [[values[i] for i in keep] for values in object_lists]
        is_public = [is_public[i] for i in keep]
        created_at = created_at[keep]
        updated_at = updated_at[keep]
    return _build_frame(object_lists, is_public, created_at, updated_at), rejected


def normalize_records(
    records: Iterable[Any], *, page_number: int | None = None
) -> NormalizedChunk:
    """Validate and flatten installation records; see the module docstring for the rules."""
    if len(_PERMISSIONS_CACHE) > 10_000:
        _PERMISSIONS_CACHE.clear()
    rows = _Rows()
    rejected: list[tuple[int, RejectedRecord]] = []
    seen: set[str] = set()
    duplicates = 0
    ids, values, positions, candidates = rows.ids.append, rows.values.append, rows.positions.append, rows.records.append
    settled_at = _RANK_CREATED
    for pos, rec in enumerate(records):
        rank, iid, row, reason = _validate(rec)
        if rank < settled_at:  # no usable id: rejected whatever else it repeats
            rejected.append((pos, row))
            continue
        if iid in seen:
            duplicates += 1
            continue
        seen.add(iid)
        if rank == settled_at:
            rejected.append((pos, row))
            continue
        if reason is not None:
            rows.waiting[len(rows.ids)] = (rank, reason)
        ids(iid)
        values(row)
        positions(pos)
        candidates(rec)
    frame, late = _frame(rows)
    rejected.extend(late)
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
