"""Staging writes: one COPY per pass on PostgreSQL, committed only at a clean end."""

from __future__ import annotations

import json

import pytest

from icr.normalize import normalize_records
from icr.warehouse.migrations import apply_migrations
from icr.warehouse.staging import Staging
from tests.icr.warehouse.helpers import make_record, scalar


def _staging(warehouse, run_id: str) -> Staging:
    apply_migrations(warehouse)
    staging = Staging(warehouse, run_id)
    staging.create()
    return staging


def test_writer_appends_every_chunk_and_commits_at_the_end(warehouse):
    staging = _staging(warehouse, "stage_writer_ok")
    bad = {**make_record(99), "createdAt": "yesterday"}
    chunks = [normalize_records([make_record(i) for i in range(n, n + 10)]) for n in (0, 10, 20)]
    chunks.append(normalize_records([bad, make_record(30)]))
    with staging.writer() as writer:
        for chunk in chunks:
            writer.write(chunk.frame, chunk.rejects)
    assert scalar(warehouse, f"SELECT count(*) FROM {staging.table}") == 31
    assert scalar(warehouse, f"SELECT count(*) FROM {staging.rejects_table}") == 1
    # The staged raw record reads back as the record (jsonb on PostgreSQL, text on SQLite).
    raw = scalar(warehouse, f"SELECT raw FROM {staging.table} WHERE installation_id = :i",
                 i=make_record(5)["id"])
    assert (raw if isinstance(raw, dict) else json.loads(raw)) == make_record(5)
    staging.drop()


@pytest.mark.postgres
def test_a_pass_that_fails_midway_stages_nothing(pg_warehouse):
    staging = _staging(pg_warehouse, "stage_writer_abort")
    with pytest.raises(RuntimeError, match="fetch failed"):
        with staging.writer() as writer:
            for n in (0, 10):
                writer.write(normalize_records([make_record(i) for i in range(n, n + 10)]).frame)
            raise RuntimeError("fetch failed after two chunks")
    assert scalar(pg_warehouse, f"SELECT count(*) FROM {staging.table}") == 0
    # The pooled connection that held the aborted COPY is usable again.
    staging.write(normalize_records([make_record(1)]).frame)
    assert scalar(pg_warehouse, f"SELECT count(*) FROM {staging.table}") == 1
    staging.drop()
