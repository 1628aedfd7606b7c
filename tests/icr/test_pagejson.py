"""icr.pagejson: the fast path, the scanner that splits a refused page into records, and the
judgement of each record (reject it, or keep it)."""

from __future__ import annotations

import json

import pytest

from icr.normalize import BadRecord, normalize_records
from icr.pagejson import MAX_DEPTH, REJECT_RAW_LIMIT, NotAPage, decode_page, raw_excerpt, split_page

from tests.support.records import DELETE, make_record


def _stub(i: int) -> dict:
    """Record ``i`` without ``createdAt``: normalize rejects every record of a page of these."""
    return make_record(i, createdAt=DELETE)


def _page(*records: bytes, pagination: bytes = b'{"total":3,"currentPage":0}') -> bytes:
    return b'{"pagination":' + pagination + b',"installations":[' + b",".join(records) + b"]}"


def _good(i: int) -> bytes:
    return json.dumps(_stub(i)).encode()


def _with(i: int, extra: bytes) -> bytes:
    return _good(i)[:-1] + b',"x":' + extra + b"}"


def test_fast_path_returns_what_msgspec_returns():
    body = _page(_good(1), _good(2))
    assert decode_page(body) == json.loads(body)


@pytest.mark.parametrize("extra, words", [
    (b"[" * (MAX_DEPTH + 5) + b"]" * (MAX_DEPTH + 5), f"nested deeper than {MAX_DEPTH} levels"),
    (b'"\\ud800"', "lone surrogate"),
    (b'"a\\udc00b"', "lone surrogate"),
    (b"1e400", "beyond the range of a double"),
    (b"-1e400", "beyond the range of a double"),
    (b"1" * 4400, "integer too long"),
    (b"NaN", "non-finite number"),
])
def test_a_hostile_record_is_rejected_and_its_neighbours_kept(extra, words):
    body = decode_page(_page(_good(1), _with(2, extra), _good(3)), where="GET /app/installations?limit=3&page=4")
    first, bad, last = body["installations"]
    assert first == _stub(1) and last == _stub(3)
    assert type(bad) is BadRecord
    assert bad.reason.startswith("GET /app/installations?limit=3&page=4: installations[1]: ") and words in bad.reason
    assert bad.installation_id == _stub(2)["id"]
    assert body["pagination"] == {"total": 3, "currentPage": 0}
    chunk = normalize_records(body["installations"])  # the stubs lack createdAt: all three rejected
    assert chunk.rejects[1].reason == bad.reason and chunk.rejects[1].installation_id == bad.installation_id


def test_the_top_level_id_is_found_not_a_nested_one():
    rec = b'{"organization":{"id":"nested"},"x":1e400,"id":"top"}'
    (bad,) = decode_page(_page(rec))["installations"]
    assert bad.installation_id == "top"
    (bad,) = decode_page(_page(b'{"organization":{"id":"nested"},"x":1e400}'))["installations"]
    assert bad.installation_id is None


def test_raw_text_is_bounded_valid_utf8_without_nul():
    span = b'{"a":"' + "é".encode() * REJECT_RAW_LIMIT + b'\x00"}'
    text = raw_excerpt(span)
    assert len(text.encode("utf-8")) <= REJECT_RAW_LIMIT + 100 and "\x00" not in text
    assert text.endswith(f"(cut: {len(span):,} bytes in all)")
    assert raw_excerpt(b'{"a":"\x00"}') == '{"a":"\ufffd"}'


def test_strings_with_brackets_commas_and_escapes_do_not_confuse_the_scanner():
    tricky = json.dumps({"id": "t", "s": '],{"installations":[}\\"', "x": "[[[["}).encode()
    body = _page(_good(1), tricky, _with(2, b"1e400"))
    spans = split_page(body)
    assert [json.loads(body[a:b]) for a, b, _, _ in spans.records[:2]] == [_stub(1), json.loads(tricky)]
    assert len(decode_page(body)["installations"]) == 3


def test_the_scanner_is_iterative():
    depth = 200_000  # far past any recursion limit: a counter, not a stack frame
    (bad,) = decode_page(_page(b"[" * depth + b"]" * depth))["installations"]
    assert "nested deeper" in bad.reason and len(bad.raw) < REJECT_RAW_LIMIT + 100


def test_empty_installations_and_whitespace():
    assert decode_page(b' {"installations": [ ] , "x": 1e400 } \n') == {"installations": [], "x": "1e400"}


@pytest.mark.parametrize("body", [
    _page(_good(1), _with(2, b"1e400"))[:-7],  # cut off
    b"<html><body>502 Bad Gateway</body></html>",
    b"",
    b"[1e400, 2]",  # valid-looking but not an object
    b'{"pagination": {}, "items": [1e400]}',  # no installations array
    b'{"installations": {"a": 1e400}}',
    _page(_good(1), b'{"a": tru}', _with(2, b"1e400")),  # broken syntax: a transport problem
    _page(_good(1), _with(2, b"1e400")) + b" trailing",
    b'{"installations": [1,,2], "x": 1e400}',
    b'{"installations": [1e400], "installations": [1e400]}',
    b'{"installations": ["unterminated, 1e400]}',
])
def test_a_body_that_is_no_page_is_not_a_page(body):
    with pytest.raises(NotAPage):
        decode_page(body)
    assert issubclass(NotAPage, ValueError)  # the client retries ValueError as transient


def test_absurd_envelope_numbers_survive_for_the_envelope_check():
    body = decode_page(_page(_good(1), pagination=b'{"total":1e400,"pageCount":' + b"9" * 5000 + b"}"))
    assert body["pagination"]["total"] == "1e400"
    assert "5000 digits" in body["pagination"]["pageCount"]
    assert body["installations"] == [_stub(1)]
