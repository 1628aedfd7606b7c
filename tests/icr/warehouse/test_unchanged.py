"""Deciding "unchanged" before normalizing (icr.unchanged): only new and changed records are
normalized and staged in full; the load's result is the same as comparing every record in SQL."""

from __future__ import annotations

import json
import uuid
from itertools import count

import numpy as np
import pytest

from icr import sync as sync_module
from icr.normalize import normalize_records
from icr.sync import SyncSettings, run_sync
from icr.pagejson import decode_page_spans
from icr.paging import SeenIds
from icr.unchanged import KnownHashes, WireReader, wire_hash
from icr.warehouse.runlog import get_run
from icr.warehouse.housekeeping import drop_orphaned_staging
from icr.warehouse.staging import Staging
from tests.icr.warehouse.helpers import StaticHook, scalar
from tests.support.records import make_record
from tests.support.warehouse import table_fingerprint
from tests.icr.warehouse.test_load import active_ids, ctx

_n = count(1)


def _spans(records):
    """The records as the pager cuts them from a page's bytes."""
    body = decode_page_spans(json.dumps({"installations": records}, separators=(",", ":")).encode())
    return body["installations"]


def _known(records):
    """A KnownHashes holding ``records`` as the warehouse would after a load of these bytes."""
    spans = _spans(records)
    ids = b"".join(uuid.UUID(r["id"]).bytes for r in records)
    return KnownHashes(ids, b"".join(wire_hash(s) for s in spans))


def _id_at(known, position):
    return str(uuid.UUID(bytes=known.id_bytes(np.array([position]))))


def _read(known, records, seen=None):
    reader = WireReader(known)
    return reader, reader.accept(reader.sort(_spans(records)), seen or SeenIds())


def test_sort_keeps_only_identical_bytes_and_decodes_the_rest():
    stored = [make_record(i) for i in range(6)]
    known = _known(stored)
    changed = make_record(1, permissions={"organization_info": "ADMIN"})
    reordered = dict(reversed(list(stored[2].items())))  # same record, other bytes: decoded
    new = make_record(99)
    bad = {"id": "not-a-uuid"}
    records = [stored[0], changed, reordered, new, bad, "not an object", stored[3], stored[3], stored[4]]
    reader, out = _read(known, records)
    kept_ids = {_id_at(known, p) for p in out.kept.tolist()}
    assert kept_ids == {stored[0]["id"], stored[3]["id"], stored[4]["id"]}
    assert out.records == [changed, reordered, new, bad, "not an object"]  # decoded, in their order
    assert out.digests[0] == wire_hash(_spans([changed])[0]) and None not in out.digests
    assert out.duplicates == 1 and reader.kept == 3  # the second copy of stored[3]


def test_the_first_copy_wins_whichever_way_it_was_read():
    stored = [make_record(0), make_record(1)]
    changed0, changed1 = make_record(0, permissions={}), make_record(1, permissions={})
    known = _known(stored)
    seen = SeenIds()
    reader = WireReader(known)
    first = reader.accept(reader.sort(_spans([stored[0], changed1])), seen)
    second = reader.accept(reader.sort(_spans([changed0, stored[1]])), seen)
    assert first.kept.size == 1 and first.records == [changed1]
    assert second.kept.size == 0 and second.records == [] and second.duplicates == 2
    assert len(seen) + reader.kept - reader.overlap == 2  # the pager's distinct count


def test_a_span_that_does_not_decode_as_is_sends_the_page_the_slow_way():
    spans = _spans([make_record(0)])
    hostile = decode_page_spans(b'{"installations":[{"id":"x","n":1e400}]}')["installations"]
    assert WireReader(None).sort(spans) is not None
    assert WireReader(None).sort(spans + hostile) is None  # decode_page then names the problem


def test_digests_sharing_their_first_bytes_are_told_apart():
    ids = b"".join(uuid.UUID(int=i).bytes for i in range(1, 4))
    digests = [bytes(8) + bytes([1]) * 8, bytes(8) + bytes([2]) * 8, bytes(8) + bytes([3]) * 8]
    known = KnownHashes(ids, b"".join(digests))
    assert known.match(digests[2] + digests[0] + bytes(8) + bytes([4]) * 8).tolist() == [2, 0, -1]


def test_known_hashes_load_what_the_warehouse_holds(warehouse):
    records = [make_record(i) for i in range(30)]
    _sync(warehouse, records, [])
    known = KnownHashes.load(warehouse)
    assert len(known) == 30 and known.keys.size == 30
    assert sorted(_id_at(known, p) for p in range(30)) == sorted(r["id"] for r in records)
    assert (known.match(b"".join(wire_hash(s) for s in _spans(records))) >= 0).all()


def test_rows_without_a_wire_hash_take_the_full_path_once(warehouse):
    records = [make_record(i) for i in range(20)]
    _sync(warehouse, records, [])
    with warehouse.engine.begin() as conn:  # as rows written before migration 0012, or by a webhook
        conn.exec_driver_sql("UPDATE icr_installation_state SET wire_hash = NULL")
    normalized: list[int] = []
    _, first = _sync(warehouse, records, normalized)
    assert sum(normalized) == 20 and first["unchanged"] == 20 and first["updated"] == 0
    normalized.clear()
    _, second = _sync(warehouse, records, normalized)
    assert sum(normalized) == 0 and second["unchanged_before_normalize"] == 20


def _sync(warehouse, records, normalized: list[int], settings=None):
    run = ctx()
    calls = normalized

    def counting(recs, *args, **kwargs):
        calls.append(len(recs))
        return normalize_records(recs, *args, **kwargs)

    original = sync_module.normalize_records
    sync_module.normalize_records = counting
    try:
        return run, run_sync(warehouse, StaticHook(records), run, settings or SyncSettings())
    finally:
        sync_module.normalize_records = original


def test_no_change_night_normalizes_nothing_and_writes_nothing(warehouse):
    records = [make_record(i) for i in range(80)]
    _sync(warehouse, records, [])
    before = table_fingerprint(warehouse)
    normalized: list[int] = []
    run, result = _sync(warehouse, records, normalized)
    assert sum(normalized) == 0
    assert result["unchanged_before_normalize"] == 80
    assert (result["inserted"], result["updated"], result["unchanged"], result["removed"]) == (0, 0, 80, 0)
    after = table_fingerprint(warehouse)
    assert after["icr_installation_state"] == before["icr_installation_state"]
    assert after["icr_installation_history"] == before["icr_installation_history"]
    assert get_run(warehouse, run.run_id)["records_fetched"] == 80
    assert not Staging(warehouse, run.run_id).exists()


def test_changes_removals_returns_and_rejects_match_the_full_comparison(warehouse):
    records = [make_record(i) for i in range(50)]
    _sync(warehouse, records, [])
    gone = records.pop(7)
    _sync(warehouse, records, [])  # 7 removed
    records[3] = make_record(3, permissions={"credits_read": "VIEW"})  # changed
    records.append(gone)  # returns
    records.append(make_record(500))  # new
    records[10] = {"id": records[10]["id"], "createdAt": "garbage"}  # rejected, but still there
    normalized: list[int] = []
    run, result = _sync(warehouse, records, normalized)
    assert sum(normalized) == 4  # changed, returning, new, rejected: the other 47 never normalized
    assert result["unchanged_before_normalize"] == 47
    assert (result["inserted"], result["updated"], result["restored"], result["removed"]) == (1, 2, 1, 0)
    assert result["unchanged"] == 47 and result["rejected"] == 1
    assert active_ids(warehouse) == {r["id"] for r in records}
    # a full resync (no shortcut) of the same snapshot finds nothing left to change
    normalized.clear()
    run, again = _sync(warehouse, records, normalized, SyncSettings(full_resync=True))
    assert sum(normalized) == len(records)
    assert (again["inserted"], again["removed"], again["restored"]) == (0, 0, 0)
    assert scalar(warehouse, "SELECT count(*) FROM icr_installation_history WHERE valid_to IS NULL") == 51


def test_a_removal_is_still_found_when_every_other_record_is_kept(warehouse):
    records = [make_record(i) for i in range(40)]
    _sync(warehouse, records, [])
    run, result = _sync(warehouse, records[:-1], [])
    assert result["removed"] == 1 and result["unchanged"] == 39
    assert scalar(warehouse, "SELECT deleted_at FROM icr_installations WHERE installation_id = :i",
                  i=records[-1]["id"]) is not None


def test_orphaned_kept_ids_are_dropped_with_the_rest_of_the_staging(warehouse):
    from icr.warehouse.migrations import apply_migrations

    apply_migrations(warehouse)
    staging = Staging(warehouse, f"orphan_{next(_n)}")
    staging.create()
    staging.write_kept(uuid.UUID(make_record(1)["id"]).bytes)
    assert staging.kept_table in drop_orphaned_staging(warehouse, lambda: [])
    assert not staging.exists()
    with pytest.raises(Exception):
        scalar(warehouse, f"SELECT count(*) FROM {staging.kept_table}")


