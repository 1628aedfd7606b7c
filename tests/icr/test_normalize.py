"""Tests for icr.normalize: records -> typed stage frame + rejects."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest

from icr import jsontext
from icr import normalize as nz
from icr.normalize import (
    STAGE_COLUMNS,
    STAGE_DTYPES,
    NormalizedChunk,
    RejectedRecord,
    canonical_json,
    normalize_records,
)
from tests.support.records import DELETE, SAMPLE, SAMPLE_ID, sample



def one_row(record) -> dict:
    chunk = normalize_records([record])
    assert chunk.rejects == [], chunk.rejects
    assert len(chunk) == 1
    return chunk.frame.iloc[0].to_dict()


def one_reject(record) -> RejectedRecord:
    chunk = normalize_records([record])
    assert len(chunk) == 0, chunk.frame
    assert len(chunk.rejects) == 1
    return chunk.rejects[0]


# ------------------------------------------------------------------------------------ happy path


def test_sample_record_normalizes_to_exact_values():
    chunk = normalize_records([SAMPLE], page_number=3)
    assert isinstance(chunk, NormalizedChunk)
    assert chunk.page_number == 3
    assert chunk.rejects == [] and chunk.duplicates == 0 and len(chunk) == 1
    assert tuple(chunk.frame.columns) == STAGE_COLUMNS
    row = chunk.frame.iloc[0].to_dict()
    raw = json.dumps(SAMPLE, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert row == {
        "installation_id": SAMPLE_ID,
        "app_id": "d23967cc-dd16-452b-8af4-869965745978",
        "app_name_id": "climatetrade-connector",
        "organization_id": "e3f779a2-b502-492a-a74c-599723f24c81",
        "organization_name": "MyFavouriteProjectDeveloper",
        "organization_type": "projectDeveloper",
        "organization_country_code": "CR",
        "organization_is_public": True,
        "permissions": '{"organization_info":"VIEW"}',
        "created_at": pd.Timestamp("2024-03-26 08:47:15.356", tz="UTC"),
        "updated_at": pd.Timestamp("2024-03-26 08:47:15.356", tz="UTC"),
        "record_hash": hashlib.sha256(raw.encode("utf-8")).hexdigest(),
        "raw": raw,
    }
    assert raw == canonical_json(SAMPLE)
    assert json.loads(row["raw"]) == SAMPLE
    assert "…" in row["raw"]  # non-ASCII kept, not \u-escaped


def test_dtypes():
    frame = normalize_records([SAMPLE, sample(id=SAMPLE_ID.replace("8", "9"))]).frame
    assert {c: str(t) for c, t in frame.dtypes.items()} == STAGE_DTYPES
    assert STAGE_DTYPES["organization_is_public"] == "boolean"
    assert STAGE_DTYPES["created_at"] == "datetime64[us, UTC]"
    assert list(frame.index) == [0, 1]


def test_empty_input_gives_empty_frame_with_columns_and_dtypes():
    chunk = normalize_records([])
    assert len(chunk) == 0 and chunk.rejects == [] and chunk.duplicates == 0
    assert tuple(chunk.frame.columns) == STAGE_COLUMNS
    assert {c: str(t) for c, t in chunk.frame.dtypes.items()} == STAGE_DTYPES
    assert nz.empty_frame().dtypes.equals(chunk.frame.dtypes)


def test_all_rejected_gives_typed_empty_frame():
    chunk = normalize_records([1, {"id": "nope"}])
    assert len(chunk) == 0 and len(chunk.rejects) == 2
    assert {c: str(t) for c, t in chunk.frame.dtypes.items()} == STAGE_DTYPES


def test_missing_optional_fields_are_none_not_nan():
    record = sample(id="11111111-1111-4111-8111-111111111111", appId=None, appNameId=DELETE, **{
        "organization.fullName": None, "organization.type": DELETE,
        "organization.countryCode": None, "organization.isPublic": None,
    })
    frame = normalize_records([record, SAMPLE]).frame
    row = frame.iloc[0]
    for column in ("app_id", "app_name_id", "organization_name", "organization_type",
                   "organization_country_code"):
        assert row[column] is None, column
        assert frame[column].dtype == object
    assert frame["organization_is_public"].isna().tolist() == [True, False]
    assert frame["organization_is_public"].dtype == "boolean"


def test_uuid_is_lower_cased():
    assert one_row(sample(id=SAMPLE_ID.upper()))["installation_id"] == SAMPLE_ID


def test_country_code_stripped_and_upper_cased_empty_is_none():
    assert one_row(sample(**{"organization.countryCode": " cr "}))[
        "organization_country_code"] == "CR"
    assert one_row(sample(**{"organization.countryCode": ""}))["organization_country_code"] is None
    # not checked against ISO 3166 (documented)
    assert one_row(sample(**{"organization.countryCode": "xyz"}))[
        "organization_country_code"] == "XYZ"


def test_unknown_permissions_and_org_types_are_not_rejects():
    row = one_row(sample(permissions={"organization_info": "VIEW", "new_thing": "ADMIN"},
                         **{"organization.type": "brandNewType"}))
    assert row["permissions"] == '{"new_thing":"ADMIN","organization_info":"VIEW"}'
    assert row["organization_type"] == "brandNewType"


def test_permissions_canonical_json_is_sorted():
    a = one_row(sample(permissions={"organization_projects": "WRITE", "organization_info": "VIEW"}))
    b = one_row(sample(permissions={"organization_info": "VIEW", "organization_projects": "WRITE"}))
    assert a["permissions"] == b["permissions"] == (
        '{"organization_info":"VIEW","organization_projects":"WRITE"}')


# ----------------------------------------------------------------------------------- raw / hash


def test_unknown_fields_kept_in_raw_and_change_the_hash():
    base = one_row(SAMPLE)
    drifted = one_row(sample(suspendedAt="2024-05-01T00:00:00Z",
                             **{"organization.newField": {"nested": [1, 2]}}))
    assert json.loads(drifted["raw"])["suspendedAt"] == "2024-05-01T00:00:00Z"
    assert json.loads(drifted["raw"])["organization"]["newField"] == {"nested": [1, 2]}
    assert drifted["record_hash"] != base["record_hash"]
    # a changed unknown field changes it too
    changed = one_row(sample(**{"organization.city": "San José"}))
    assert changed["record_hash"] != base["record_hash"]
    assert changed["raw"] != base["raw"]


def test_hash_stable_under_key_order():
    reordered = json.loads(json.dumps(SAMPLE))
    reordered = dict(reversed(list(reordered.items())))
    reordered["organization"] = dict(reversed(list(reordered["organization"].items())))
    assert list(reordered) != list(SAMPLE)
    a, b = one_row(SAMPLE), one_row(reordered)
    assert a["record_hash"] == b["record_hash"]
    assert a["raw"] == b["raw"]


def test_canonical_json():
    assert canonical_json({"b": 1, "a": ["é", None, True]}) == '{"a":["é",null,true],"b":1}'


@pytest.mark.parametrize(
    "extra",
    [
        {"score": 1.5},
        {"big": 1e16, "tiny": 2.5e-05, "neg": -1e-07},
        {"huge_int": 10**30},
        {"ints": [0, -1, 2**63, 2**64 - 1]},
        {"text": "tab\there\nnl \x01 \x7f \u2028 \"quote\" back\\slash /"},
        {"keys": {"é": 1, "e": 2, "E": 3, "\U0001f600": 4, "\uffff": 5}},
        {"nested": [[{"b": [], "a": {}}]]},
    ],
)
def test_raw_is_exactly_canonical_json_for_any_json_value(extra):
    record = sample(**{"organization.extra": extra})
    row = one_row(record)
    expected = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert row["raw"] == expected
    assert row["record_hash"] == hashlib.sha256(expected.encode("utf-8")).hexdigest()


def test_raw_identical_without_fast_encoder(monkeypatch):
    records = [sample(**{"organization.extra": {"f": 1e16, "s": "ñ"}}), SAMPLE]
    fast = normalize_records(records).frame
    monkeypatch.setattr(jsontext, "_fast_json", None)
    monkeypatch.setattr(jsontext, "_fast_pack", None)
    slow = normalize_records(records).frame
    pd.testing.assert_frame_equal(fast, slow)


# ------------------------------------------------------------------------------------ timestamps


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2024-03-26T08:47:15.356Z", "2024-03-26 08:47:15.356"),
        ("2024-03-26T10:47:15.356+02:00", "2024-03-26 08:47:15.356"),
        ("2024-03-26T03:47:15.356-05:00", "2024-03-26 08:47:15.356"),
        ("2024-03-26T08:47:15.356", "2024-03-26 08:47:15.356"),  # naive -> taken as UTC
        ("2024-03-26T08:47:15Z", "2024-03-26 08:47:15"),
        ("2024-03-26", "2024-03-26 00:00:00"),
        ("9999-12-31T23:59:59Z", "9999-12-31 23:59:59"),
    ],
)
def test_timezone_handling(text, expected):
    row = one_row(sample(createdAt=text, updatedAt=text))
    assert row["created_at"] == pd.Timestamp(expected, tz="UTC")
    assert row["updated_at"] == pd.Timestamp(expected, tz="UTC")
    assert str(row["created_at"].tz) == "UTC"


def test_mixed_offsets_in_one_chunk_and_nanoseconds():
    ids = [f"00000000-0000-4000-8000-00000000000{i}" for i in range(4)]
    texts = ["2024-03-26T10:00:00+02:00", "2024-03-26T08:00:00Z", "2024-03-26T08:00:00",
             "2024-03-26T08:00:00.123456789Z"]
    chunk = normalize_records([sample(id=i, createdAt=t) for i, t in zip(ids, texts)]
                              + [sample(id=ids[0][:-1] + "9", createdAt="0001-01-01T00:00:00Z")])
    assert chunk.rejects == []
    got = chunk.frame["created_at"].tolist()
    assert got[:3] == [pd.Timestamp("2024-03-26 08:00:00", tz="UTC")] * 3
    assert got[3] == pd.Timestamp("2024-03-26 08:00:00.123456", tz="UTC")  # truncated to us
    assert got[4] == pd.Timestamp("0001-01-01", tz="UTC")
    assert str(chunk.frame["created_at"].dtype) == "datetime64[us, UTC]"


# --------------------------------------------------------------------------------------- rejects

NOT_UUID = "not-a-uuid"

REJECT_CASES = [
    # (test id, record, expected installation_id on the reject, expected reason)
    ("list record", [1, 2], None, "record is not a JSON object: [1, 2] (array)"),
    ("string record", "hello", None, "record is not a JSON object: 'hello' (string)"),
    ("null record", None, None, "record is not a JSON object: null (null)"),
    ("id absent", sample(id=DELETE), None, "id is missing"),
    ("id null", sample(id=None), None, "id is missing (null)"),
    ("id number", sample(id=12345), "12345", "id is not a string: 12345 (number)"),
    ("id object", sample(id={"x": 1}), None, "id is not a string: {'x': 1} (object)"),
    ("id not uuid", sample(id=NOT_UUID), NOT_UUID, "id is not a UUID: 'not-a-uuid'"),
    ("id braces", sample(id="{" + SAMPLE_ID + "}"), "{" + SAMPLE_ID + "}",
     "id is not a UUID: '{" + SAMPLE_ID + "}'"),
    ("id urn", sample(id="urn:uuid:" + SAMPLE_ID), "urn:uuid:" + SAMPLE_ID,
     "id is not a UUID: 'urn:uuid:" + SAMPLE_ID + "'"),
    ("id no dashes", sample(id=SAMPLE_ID.replace("-", "")), SAMPLE_ID.replace("-", ""),
     "id is not a UUID: '" + SAMPLE_ID.replace("-", "") + "'"),
    ("id trailing newline", sample(id=SAMPLE_ID + "\n"), SAMPLE_ID + "\n",
     "id is not a UUID: " + repr(SAMPLE_ID + "\n")),
    ("createdAt absent", sample(createdAt=DELETE), SAMPLE_ID, "createdAt is missing"),
    ("createdAt null", sample(createdAt=None), SAMPLE_ID, "createdAt is missing (null)"),
    ("createdAt number", sample(createdAt=1711443035), SAMPLE_ID,
     "createdAt is not a string: 1711443035 (number)"),
    ("createdAt words", sample(createdAt="yesterday"), SAMPLE_ID,
     "createdAt is not an ISO-8601 timestamp: 'yesterday'"),
    ("createdAt now", sample(createdAt="now"), SAMPLE_ID,
     "createdAt is not an ISO-8601 timestamp: 'now'"),
    ("createdAt feb 30", sample(createdAt="2024-02-30T00:00:00Z"), SAMPLE_ID,
     "createdAt is not an ISO-8601 timestamp: '2024-02-30T00:00:00Z'"),
    ("createdAt empty", sample(createdAt=""), SAMPLE_ID,
     "createdAt is not an ISO-8601 timestamp: ''"),
    ("updatedAt absent", sample(updatedAt=DELETE), SAMPLE_ID, "updatedAt is missing"),
    ("updatedAt bool", sample(updatedAt=True), SAMPLE_ID,
     "updatedAt is not a string: true (boolean)"),
    ("updatedAt garbage", sample(updatedAt="2024-13-01T00:00:00Z"), SAMPLE_ID,
     "updatedAt is not an ISO-8601 timestamp: '2024-13-01T00:00:00Z'"),
    ("permissions absent", sample(permissions=DELETE), SAMPLE_ID, "permissions is missing"),
    ("permissions null", sample(permissions=None), SAMPLE_ID,
     "permissions is not an object: null (null)"),
    ("permissions list", sample(permissions=["organization_info"]), SAMPLE_ID,
     "permissions is not an object: ['organization_info'] (array)"),
    ("permission value", sample(permissions={"organization_info": 1}), SAMPLE_ID,
     "permissions['organization_info'] is not a string: 1 (number)"),
    ("organization absent", sample(organization=DELETE), SAMPLE_ID, "organization is missing"),
    ("organization null", sample(organization=None), SAMPLE_ID,
     "organization is missing (null)"),
    ("organization string", sample(organization="acme"), SAMPLE_ID,
     "organization is not an object: 'acme' (string)"),
    ("organization.id absent", sample(**{"organization.id": DELETE}), SAMPLE_ID,
     "organization.id is missing"),
    ("organization.id number", sample(**{"organization.id": 7}), SAMPLE_ID,
     "organization.id is not a string: 7 (number)"),
    ("appId number", sample(appId=5), SAMPLE_ID, "appId is not a string: 5 (number)"),
    ("appNameId list", sample(appNameId=["x"]), SAMPLE_ID,
     "appNameId is not a string: ['x'] (array)"),
    ("isPublic string", sample(**{"organization.isPublic": "true"}), SAMPLE_ID,
     "organization.isPublic is not a boolean: 'true' (string)"),
    ("isPublic int", sample(**{"organization.isPublic": 1}), SAMPLE_ID,
     "organization.isPublic is not a boolean: 1 (number)"),
    ("fullName number", sample(**{"organization.fullName": 3}), SAMPLE_ID,
     "organization.fullName is not a string: 3 (number)"),
    ("type object", sample(**{"organization.type": {"a": 1}}), SAMPLE_ID,
     "organization.type is not a string: {'a': 1} (object)"),
    ("countryCode bool", sample(**{"organization.countryCode": False}), SAMPLE_ID,
     "organization.countryCode is not a string: false (boolean)"),
    ("NaN", sample(score=float("nan")), SAMPLE_ID,
     "record contains a non-finite number (NaN or Infinity), which is not valid JSON"),
    ("lone surrogate", sample(**{"organization.fullName": "bad \ud800"}), SAMPLE_ID,
     "record contains a string that is not valid Unicode (a lone surrogate such as \\ud800), "
     "which cannot be stored as UTF-8"),
    ("NUL", sample(**{"organization.city": "a\x00b"}), SAMPLE_ID,
     "organization.city contains a NUL character (U+0000), which PostgreSQL text and jsonb "
     "cannot store"),
]


@pytest.mark.parametrize(
    "record, installation_id, reason",
    [case[1:] for case in REJECT_CASES],
    ids=[case[0] for case in REJECT_CASES],
)
def test_reject_reason(record, installation_id, reason):
    reject = one_reject(record)
    assert reject.reason == reason
    assert reject.installation_id == installation_id
    assert isinstance(reject.raw, str)
    assert reject.raw.encode("utf-8")  # storable as text


def test_reject_raw_is_canonical_json_of_the_record():
    record = sample(createdAt="yesterday")
    assert one_reject(record).raw == canonical_json(record)
    assert one_reject([1, "a"]).raw == '[1,"a"]'


def test_reject_reason_value_is_truncated_and_id_cut_to_200():
    long_id = "x" * 5000
    reject = one_reject(sample(id=long_id))
    assert reject.installation_id == "x" * 200
    assert len(reject.reason) < 150
    assert reject.reason.startswith("id is not a UUID: 'xxx")
    assert "(5000 characters)" in reject.reason


def test_first_rule_wins_in_fixed_order():
    # createdAt unparseable beats updatedAt missing and a bad permission and bad isPublic
    rec = sample(createdAt="nope", updatedAt=DELETE, permissions={"a": 1},
                 **{"organization.isPublic": "yes"})
    assert one_reject(rec).reason == "createdAt is not an ISO-8601 timestamp: 'nope'"
    # updatedAt type beats a later rule
    rec = sample(updatedAt=5, permissions=None)
    assert one_reject(rec).reason == "updatedAt is not a string: 5 (number)"
    # updatedAt unparseable beats permissions
    rec = sample(updatedAt="later", permissions=None)
    assert one_reject(rec).reason == "updatedAt is not an ISO-8601 timestamp: 'later'"
    # permissions beats organization
    rec = sample(permissions=None, organization=None)
    assert one_reject(rec).reason == "permissions is not an object: null (null)"
    # field rules beat encoding problems
    rec = sample(appId=5, score=float("inf"))
    assert one_reject(rec).reason == "appId is not a string: 5 (number)"


def test_rejects_do_not_disturb_valid_rows_and_keep_input_order():
    ids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(6)]
    records = [
        sample(id=ids[0]),
        sample(id=ids[1], createdAt="bad"),  # vectorised reject
        "junk",                              # first-pass reject
        sample(id=ids[3], **{"organization.isPublic": False}),
        sample(id=ids[4], updatedAt="bad"),
        sample(id=ids[5], **{"organization.fullName": "Last"}),
    ]
    chunk = normalize_records(records)
    assert chunk.frame["installation_id"].tolist() == [ids[0], ids[3], ids[5]]
    assert chunk.frame["organization_is_public"].tolist() == [True, False, True]
    assert chunk.frame["organization_name"].tolist()[-1] == "Last"
    assert list(chunk.frame.index) == [0, 1, 2]
    assert [r.installation_id for r in chunk.rejects] == [ids[1], None, ids[4]]
    assert chunk.received == 6
    # every valid row's hash matches its own raw
    for raw, digest in zip(chunk.frame["raw"], chunk.frame["record_hash"]):
        assert hashlib.sha256(raw.encode()).hexdigest() == digest
        assert json.loads(raw)["id"] in ids


def test_non_dict_records():
    chunk = normalize_records([1, "x", None, [SAMPLE], True, SAMPLE])
    assert len(chunk) == 1
    assert [r.installation_id for r in chunk.rejects] == [None] * 5
    assert [r.raw for r in chunk.rejects] == ["1", '"x"', "null", canonical_json([SAMPLE]), "true"]
    assert all(r.reason.startswith("record is not a JSON object: ") for r in chunk.rejects)


def test_non_json_python_object_record_is_rejected_not_raised():
    reject = one_reject({"id": SAMPLE_ID, "x": {1, 2}, "createdAt": object()})
    assert reject.reason.startswith("createdAt is not a string: ")
    assert isinstance(reject.raw, str)


# ------------------------------------------------------------------------------ pass-through data


def test_booleans_are_booleans():
    ids = ["00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002",
           "00000000-0000-4000-8000-000000000003"]
    frame = normalize_records([
        sample(id=ids[0], **{"organization.isPublic": True}),
        sample(id=ids[1], **{"organization.isPublic": False}),
        sample(id=ids[2], **{"organization.isPublic": None}),
    ]).frame
    column = frame["organization_is_public"]
    assert str(column.dtype) == "boolean"
    assert column.iloc[0] is True or column.iloc[0] == True  # noqa: E712 - numpy/pandas bool
    assert column.tolist()[:2] == [True, False]
    assert pd.isna(column.iloc[2])


def test_one_megabyte_string_and_emoji_pass_unchanged():
    big = "ab\u00e9" * 350_000  # ~1 MB of text
    emoji = "Ünïcødé 🌍🌱 👩🏽‍🔬 中文 العربية"
    row = one_row(sample(**{"organization.fullName": big, "organization.type": emoji,
                            "organization.physicalAddress": big}))
    assert row["organization_name"] == big
    assert len(row["organization_name"]) == 1_050_000
    assert row["organization_type"] == emoji
    assert json.loads(row["raw"])["organization"]["physicalAddress"] == big
    assert emoji in row["raw"]


def test_sql_looking_string_passes_unchanged():
    nasty = "Robert'); DROP TABLE icr_installations;-- \\ \" %s %(x)s $1 ${x} ' OR '1'='1"
    row = one_row(sample(appNameId=nasty, **{"organization.fullName": nasty}))
    assert row["app_name_id"] == nasty
    assert row["organization_name"] == nasty
    assert json.loads(row["raw"])["appNameId"] == nasty


# ------------------------------------------------------------------------------------ duplicates


def test_duplicates_in_a_chunk_keep_the_first():
    first = sample(**{"organization.fullName": "first"})
    second = sample(**{"organization.fullName": "second"})
    upper = sample(id=SAMPLE_ID.upper(), **{"organization.fullName": "upper"})
    other = sample(id="11111111-1111-4111-8111-111111111111")
    chunk = normalize_records([first, second, other, upper])
    assert chunk.duplicates == 2
    assert chunk.rejects == []
    assert chunk.frame["installation_id"].tolist() == [SAMPLE_ID, other["id"]]
    assert chunk.frame["organization_name"].tolist()[0] == "first"
    assert chunk.frame["installation_id"].is_unique
    assert chunk.received == 4


def test_a_duplicate_of_a_rejected_record_is_dropped_not_loaded():
    chunk = normalize_records([sample(createdAt="bad"), SAMPLE])
    assert len(chunk) == 0 and chunk.duplicates == 1
    assert [r.installation_id for r in chunk.rejects] == [SAMPLE_ID]


# ---------------------------------------------------------------------------------- scale (small)


def test_thousand_record_chunk_values_line_up():
    records = []
    for i in range(1000):
        iid = f"{i:08x}-0000-4000-8000-000000000000"
        ts = f"2024-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}.000Z"
        records.append(sample(id=iid, createdAt=ts, updatedAt=ts,
                              **{"organization.fullName": f"org {i}",
                                 "organization.isPublic": bool(i % 2)}))
    records[500]["createdAt"] = "garbage"
    chunk = normalize_records(records)
    assert len(chunk) == 999 and len(chunk.rejects) == 1
    frame = chunk.frame
    for i in (0, 1, 499, 501, 999):
        row = frame.iloc[i if i < 500 else i - 1]
        assert row["installation_id"] == f"{i:08x}-0000-4000-8000-000000000000"
        assert row["organization_name"] == f"org {i}"
        assert row["organization_is_public"] == bool(i % 2)
        assert row["created_at"] == pd.Timestamp(
            f"2024-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}", tz="UTC")
        assert json.loads(row["raw"])["id"] == row["installation_id"]
