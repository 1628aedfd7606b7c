"""Decode one page of ``GET /app/installations`` so that one bad record never stops a sync.

Fast path: msgspec decodes the whole body at once (the nightly sync parses millions of records
this way). It refuses a whole page for one record nested too deeply (``RecursionError``), one
number beyond a double's range (``1e400``) or an integer of 4,300+ digits, or one lone
surrogate (``"\\ud800"``). Only then the slow path runs:

1. :func:`split_page` walks the body with a small scanner (string- and escape-aware, iterative,
   so depth cannot crash it) and finds the byte span of every element of the top-level
   ``installations`` array, plus the envelope around it;
2. the envelope (with an empty array) is decoded on its own; each record is decoded on its own;
3. a record that cannot be decoded becomes a :class:`~icr.normalize.BadRecord` whose reason names
   the page, its position and the problem, with its raw text cut to :data:`REJECT_RAW_LIMIT`
   bytes of valid UTF-8. It flows through the normal reject path (normalize → staging →
   ``icr_rejected_records``); every other record of the page is loaded.

A body that is not a JSON object holding an ``installations`` array (cut off, a proxy's HTML
page, broken syntax) raises :class:`ValueError`: the client treats that as transient and asks
again, as before. Bounds: a record nested deeper than :data:`MAX_DEPTH` levels is rejected
without being decoded (and anything Python's recursion limit stops earlier is rejected too);
numbers are bounded by the decoders (msgspec: doubles and integers up to 4,300 digits).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import msgspec

from icr.jsontext import encode_record, encoding_problem
from icr.normalize import BadRecord

log = logging.getLogger(__name__)

#: records nested deeper than this are rejected unread (SQLite's JSON functions stop at 1000
#: levels, and Python's default recursion limit is 1000).
MAX_DEPTH = 1000
#: bytes of a rejected record's text kept in icr_rejected_records.raw.
REJECT_RAW_LIMIT = 65_536
ID_TEXT_LIMIT = 200

_decode = msgspec.json.decode
# A complete string (unrolled loop: fast on long strings), a lone quote (an unterminated
# string), or one structural character. Numbers, literals and whitespace are skipped over.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|"|[\[\]{},:]', re.S)
_WS = b" \t\r\n"
_INSTALLATIONS_KEY = b'"installations"'
_ID_KEY = b'"id"'


class NotAPage(ValueError):
    """The body is not a JSON object with an ``installations`` array (transient for the client)."""


def decode_page(content: bytes, *, where: str = "page") -> Any:
    """The decoded page; records msgspec cannot read become :class:`BadRecord` objects."""
    try:
        return _decode(content)
    except (ValueError, RecursionError) as exc:
        first_problem = _problem_text(exc)
    body = _salvage(content, where)
    bad = sum(1 for r in body["installations"] if type(r) is BadRecord)
    log.warning("%s: the JSON decoder refused the page (%s); read its %d records one by one, %d of them "
                "unreadable (rejected)", where, first_problem, len(body["installations"]), bad)
    return body


class SpanBody(dict):
    """A page whose ``installations`` are each record's bytes (``msgspec.Raw``), not decoded;
    ``content`` is the whole body (:func:`decode_page_spans`)."""

    content: bytes


class _Spans(msgspec.Struct):
    installations: list[msgspec.Raw]
    pagination: Any = None


_decode_spans = msgspec.json.Decoder(_Spans).decode


def decode_page_spans(content: bytes, *, where: str = "page") -> Any:
    """The page with each record left as its bytes (:class:`SpanBody`), for
    :class:`icr.unchanged.WireReader`; a page that is not a JSON object with an ``installations``
    array, or that msgspec refuses, is :func:`decode_page`'s answer instead (same errors)."""
    try:
        page = _decode_spans(content)
    except (ValueError, RecursionError):  # msgspec's DecodeError and ValidationError are ValueErrors
        return decode_page(content, where=where)
    body = SpanBody(installations=page.installations, pagination=page.pagination)
    body.content = content
    return body


def decode_installation(content: bytes, *, installation_id: str, where: str = "record") -> Any:
    """One installation answered on its own (``GET /app/installations/{id}``): decoded as usual,
    or a :class:`BadRecord` naming ``where`` when the decoder cannot read it, so the recovery of
    skipped installations rejects a hostile answer instead of retrying it. A body that is not a
    JSON object raises :class:`NotAPage` (transient for the client)."""
    try:
        return _decode(content)
    except (ValueError, RecursionError):
        pass
    start = _object_start(content)
    return _decode_record(content[start:].rstrip(_WS), where, json.dumps(installation_id).encode())


# --------------------------------------------------------------------------- the scanner


class PageSpans:
    """Where the parts of a page are: ``records`` are (start, end, depth too big, id) per
    element of ``installations``; ``array`` is the (open, close) offsets of its brackets."""

    __slots__ = ("array", "records")

    def __init__(self, array: tuple[int, int], records: list[tuple[int, int, bool, bytes | None]]) -> None:
        self.array = array
        self.records = records


def split_page(content: bytes, *, max_depth: int = MAX_DEPTH) -> PageSpans:
    """Find the byte span of each element of the top-level ``installations`` array.

    One pass over the body's tokens: :func:`_scan_envelope` walks the top-level object and
    hands the same tokens to :func:`_split_array` for the array. Iterative: nesting costs a
    counter, not a stack frame. Raises :class:`NotAPage` when the body is not one JSON object
    (and nothing after it) whose ``installations`` is an array."""
    start = _object_start(content)
    tokens = _TOKEN.finditer(content, start)
    end, array, records = _scan_envelope(content, tokens, max_depth)
    if end < 0:
        raise NotAPage("the body ends before its JSON object does (cut off?)")
    if content[end:].strip(_WS):
        raise NotAPage("the body has data after its JSON object")
    if array is None:
        raise NotAPage("the body has no 'installations' array")
    return PageSpans(array, records)


def _object_start(content: bytes) -> int:
    """Where the body's JSON object opens (its ``{``), after any white space."""
    start = _skip_ws(content, 0)
    if start >= len(content) or content[start] != 0x7B:  # "{"
        raise NotAPage("the body is not a JSON object")
    return start


_Records = list[tuple[int, int, bool, bytes | None]]


def _scan_envelope(content: bytes, tokens: Iterator[re.Match[bytes]], max_depth: int
                   ) -> tuple[int, tuple[int, int] | None, _Records]:
    """Walk the top-level object: the end of the object (-1: cut off), the (open, close)
    offsets of its ``installations`` array (None: no such array) and the array's elements."""
    depth = 0
    key: bytes | None = None  # last string at depth 1 (a key candidate)
    key_is_next = False  # depth 1: the last token was ':' after a key
    array: tuple[int, int] | None = None
    records: _Records = []
    for m in tokens:
        tok = m.group()
        c = tok[0]
        if c == 0x22:  # '"'
            if len(tok) == 1:
                raise NotAPage("the body has an unterminated string")
            if depth == 1:
                key = tok
            continue
        if c == 0x5B and depth == 1 and key_is_next and key == _INSTALLATIONS_KEY:  # [
            if array is not None:
                raise NotAPage("the body has two 'installations' keys")
            close, records = _split_array(content, tokens, m.end(), max_depth)
            array = (m.start(), close)
        elif c in (0x7B, 0x5B):  # { [
            depth += 1
        elif c in (0x7D, 0x5D):  # } ]
            depth -= 1
            if depth < 0:
                raise NotAPage("the body has an unbalanced bracket")
            if depth == 0:
                return m.end(), array, records
        elif c == 0x3A:  # :
            if depth == 1:
                key_is_next = key is not None
            continue
        elif depth == 1:  # ,
            key = None
        key_is_next = False
    return -1, array, records


def _split_array(content: bytes, tokens: Iterator[re.Match[bytes]], first: int, max_depth: int
                 ) -> tuple[int, _Records]:
    """Read the tokens of the ``installations`` array up to its closing bracket: its offset
    (-1: the body ends first) and each element's (start, end, nested too deep, top-level id)."""
    depth = 0  # 0: between elements, 1: inside an element's object
    elem_start = first
    elem_too_deep = False
    elem_id: bytes | None = None
    elem_key: bytes | None = None  # last string directly inside the element's object
    elem_colon_end = -1
    after_id_colon = False
    records: _Records = []
    for m in tokens:
        tok = m.group()
        c = tok[0]
        if c == 0x22:  # '"'
            if len(tok) == 1:
                raise NotAPage("the body has an unterminated string")
            if depth == 1:
                if after_id_colon and not content[elem_colon_end:m.start()].strip(_WS):
                    elem_id = tok
                after_id_colon = False
                elem_key = tok
            continue
        if c in (0x7B, 0x5B):  # { [
            depth += 1
            if depth > max_depth:
                elem_too_deep = True
            after_id_colon = False
            continue
        if c in (0x7D, 0x5D):  # } ]
            if depth == 0:
                if c != 0x5D:
                    raise NotAPage("the installations array is not closed properly")
                _add_element(content, elem_start, m.start(), elem_too_deep, elem_id, records, last=True)
                return m.start(), records
            depth -= 1
            continue
        if c == 0x3A:  # :
            if depth == 1:
                after_id_colon = elem_key == _ID_KEY
                elem_colon_end = m.end()
            continue
        if depth == 0:  # ,
            _add_element(content, elem_start, m.start(), elem_too_deep, elem_id, records, last=False)
            elem_start, elem_too_deep, elem_id = m.end(), False, None
        after_id_colon = False
    return -1, records


def _skip_ws(content: bytes, at: int) -> int:
    n = len(content)
    while at < n and content[at] in _WS:
        at += 1
    return at


def _add_element(content: bytes, start: int, end: int, too_deep: bool, rid: bytes | None,
                 records: list[tuple[int, int, bool, bytes | None]], *, last: bool) -> None:
    a = _skip_ws(content, start)
    b = end
    while b > a and content[b - 1] in _WS:
        b -= 1
    if a == b:
        if last and not records:
            return  # an empty array
        raise NotAPage("the installations array has an empty element")
    records.append((a, b, too_deep, rid))


# --------------------------------------------------------------------------- the slow path


def _salvage(content: bytes, where: str) -> dict[str, Any]:
    spans = split_page(content)
    a, b = spans.array
    body = _decode_envelope(content[: a + 1] + content[b:])
    records: list[Any] = []
    for index, (start, end, too_deep, rid) in enumerate(spans.records):
        span = content[start:end]
        at = f"{where}: installations[{index}]"
        if too_deep:
            records.append(_bad(at, f"record is nested deeper than {MAX_DEPTH} levels", span, rid))
            continue
        records.append(_decode_record(span, at, rid))
    body["installations"] = records
    return body


def _decode_envelope(skeleton: bytes) -> dict[str, Any]:
    """The page without its records. Python's json reads what msgspec refuses (a number out of
    range becomes a :class:`_Unreadable`, which the envelope check then names)."""
    try:
        body = json.loads(skeleton, parse_int=_bounded_int, parse_float=_bounded_float,
                          parse_constant=_Unreadable)
    except (ValueError, RecursionError) as exc:
        raise NotAPage(f"the page's envelope is not valid JSON ({_problem_text(exc)})") from None
    if not isinstance(body, dict) or body.get("installations") != []:
        raise NotAPage("the body is not a JSON object with an installations array")
    return body


class _Unreadable(str):
    """A number of the envelope that no integer check can accept (shown as its text)."""


def _bounded_int(text: str) -> Any:
    return int(text) if len(text) <= 40 else _Unreadable(text[:20] + f"... ({len(text)} digits)")


def _bounded_float(text: str) -> Any:
    value = float(text)
    return value if value not in (float("inf"), float("-inf")) else _Unreadable(text[:40])


def _decode_record(span: bytes, at: str, rid: bytes | None) -> Any:
    try:
        return _decode(span)
    except RecursionError:
        return _bad(at, "record is nested too deeply to decode", span, rid)
    except msgspec.ValidationError as exc:  # numbers msgspec cannot represent
        text = str(exc)
        if "Integer" in text:
            problem = "record holds an integer too long to read (4,300 digits or more)"
        elif "Number" in text:
            problem = "record holds a number beyond the range of a double (such as 1e400)"
        else:
            problem = f"record cannot be decoded: {text[:80]}"
        return _bad(at, problem, span, rid)
    except msgspec.DecodeError:
        pass
    # msgspec refuses lone surrogates and NaN; Python's json reads them, and the record can then
    # be judged like any other (it cannot be stored as text or as JSON: a reject).
    try:
        record = json.loads(span.decode("utf-8"))
    except UnicodeDecodeError:
        return _bad(at, "record holds bytes that are not valid UTF-8", span, rid)
    except RecursionError:
        return _bad(at, "record is nested too deeply to decode", span, rid)
    except json.JSONDecodeError as exc:
        raise NotAPage(f"{at} is not valid JSON ({exc.msg})") from None
    except ValueError as exc:  # e.g. Python's limit on integer digits
        return _bad(at, f"record cannot be decoded: {str(exc)[:80]}", span, rid)
    try:
        encode_record(record)
    except (TypeError, ValueError, RecursionError) as exc:
        return _bad(at, encoding_problem(record, exc), span, rid)
    return record


def _bad(at: str, problem: str, span: bytes, rid: bytes | None) -> BadRecord:
    return BadRecord(_id_text(rid), f"{at}: {problem}", raw_excerpt(span))


def raw_excerpt(span: bytes, limit: int = REJECT_RAW_LIMIT) -> str:
    """Up to ``limit`` bytes of a record's text as valid UTF-8 without NUL, marked when cut."""
    text = span[:limit].decode("utf-8", "replace").replace("\x00", "\ufffd")
    if len(span) > limit:
        text += f"... (cut: {len(span):,} bytes in all)"
    return text


def _id_text(token: bytes | None) -> str | None:
    """The record's top-level ``id`` string, if the scanner saw one and it can be stored."""
    if token is None:
        return None
    try:
        value = json.loads(token)
        value.encode("utf-8")
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, str) or "\x00" in value:
        return None
    return value[:ID_TEXT_LIMIT]


def _problem_text(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc)[:120] or type(exc).__name__
