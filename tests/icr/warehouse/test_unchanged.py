"""Deciding "unchanged" before normalizing (icr.unchanged): only new and changed records are
normalized and staged in full; the load's result is the same as comparing every record in SQL."""

from __future__ import annotations

from itertools import count

import numpy as np
import pytest

from icr import sync as sync_module
from icr.normalize import normalize_records
from icr.sync import SyncSettings, run_sync
from icr.unchanged import KnownHashes
from icr.warehouse.runlog import get_run
from icr.warehouse.housekeeping import drop_orphaned_staging
from icr.warehouse.staging import Staging
from tests.icr.warehouse.helpers import StaticHook, scalar
from tests.support.records import make_record
from tests.support.warehouse import table_fingerprint
from tests.icr.warehouse.test_load import active_ids, ctx

_n = count(1)


def _known(records):
    """A KnownHashes holding ``records`` as the warehouse would (their normalized hashes)."""
    from icr.unchanged import _digest, _key

    frame = normalize_records(records).frame
    return KnownHashes(np.array([_key(i) for i in frame["installation_id"]], dtype=np.int64),
                       np.array([_digest(h) for h in frame["record_hash"]], dtype=np.int64))


def test_split_keeps_only_identical_records_and_sends_the_rest_on():
    stored = [make_record(i) for i in range(6)]
    known = _known(stored)
    changed = make_record(1, permissions={"organization_info": "ADMIN"})
    upper = dict(stored[2], id=stored[2]["id"].upper())  # same installation, other text: hashed differently
    new = make_record(99)
    bad = {"id": "not-a-uuid"}
    records = [stored[0], changed, upper, new, bad, "not an object", stored[3], dict(stored[3]), stored[4]]
    split = known.split(records)
    assert split.kept_ids == [stored[0]["id"], stored[3]["id"], stored[4]["id"]]
    assert split.fresh == [changed, upper, new, bad, "not an object"]  # in their order
    assert split.duplicates == 1  # the second copy of a kept record, as normalize drops duplicates


def test_split_with_a_changed_first_copy_leaves_duplicates_to_normalize():
    stored = [make_record(0)]
    changed = make_record(0, permissions={})
    split = _known(stored).split([changed, stored[0]])
    assert split.kept_ids == [] and split.fresh == [changed, stored[0]]  # normalize keeps the first


def test_a_record_with_a_float_is_judged_by_normalize_when_encoded_differently():
    stored = [make_record(0, score=1e16)]  # msgspec writes 1e16, the canonical form 1e+16
    split = _known(stored).split([make_record(0, score=1e16)])
    assert split.kept_ids == [] and len(split.fresh) == 1  # the safe way: the full comparison


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
    staging.write_kept([make_record(1)["id"]])
    assert staging.kept_table in drop_orphaned_staging(warehouse, lambda: [])
    assert not staging.exists()
    with pytest.raises(Exception):
        scalar(warehouse, f"SELECT count(*) FROM {staging.kept_table}")


def test_ids_sharing_a_lookup_key_are_told_apart(monkeypatch):
    from icr import unchanged

    monkeypatch.setattr(unchanged, "_key", lambda installation_id: 7)  # every id under one key
    stored = [make_record(i) for i in range(4)]
    known = _known(stored)
    changed = make_record(2, permissions={})
    split = known.split([stored[3], changed, stored[0], stored[1]])
    assert split.kept_ids == [stored[3]["id"], stored[0]["id"], stored[1]["id"]]  # walked the run of equal keys
    assert split.fresh == [changed]
