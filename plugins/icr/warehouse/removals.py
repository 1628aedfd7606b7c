"""Reads of the published installations against a run's staged snapshot: which active ones it
lacks (the candidates the load would mark removed) and how many are active (the mass-removal
guard's denominator). The extract asks ICR by id about each candidate before the load."""

from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa

from icr.warehouse.staging import Staging


def removal_candidates(staging: Staging, batch: int = 1_000) -> Iterator[list[str]]:
    """Active installations missing from the staged snapshot, in batches of ids (as text).

    The caller stages what it recovers between batches. PostgreSQL: one anti-join streamed
    through a server-side cursor (memory stays flat, one pass over both tables; re-running
    the anti-join per batch cost seconds a batch at a million installations). SQLite: a
    short read per batch, keyset-paged (each batch sees what the caller staged before it).
    """
    missing = (
        "SELECT CAST(t.installation_id AS TEXT) AS id FROM icr_installation_state t "
        "WHERE t.deleted_at IS NULL "
        f"AND NOT EXISTS (SELECT 1 FROM {staging.table} s WHERE s.installation_id = t.installation_id) "
        f"AND NOT EXISTS (SELECT 1 FROM {staging.kept_table} k WHERE k.installation_id = t.installation_id) "
        f"AND NOT EXISTS (SELECT 1 FROM {staging.rejects_table} r "
        "WHERE r.installation_id = CAST(t.installation_id AS TEXT))")
    warehouse = staging.warehouse
    if warehouse.dialect.server_side_cursors:
        with warehouse.read() as conn:
            result = conn.execution_options(stream_results=True, yield_per=batch).exec_driver_sql(missing)
            for part in result.partitions(batch):
                yield [row[0] for row in part]
        return
    staging.key_for_lookups()  # each batch's anti-join looks staged ids up by key
    sql = sa.text(missing + " AND t.installation_id > :after ORDER BY t.installation_id LIMIT :n")
    after = ""
    while True:
        with warehouse.read() as conn:
            ids = [row[0] for row in conn.execute(sql, {"after": after, "n": batch})]
        if not ids:
            return
        yield ids
        after = ids[-1]


def active_count(staging: Staging) -> int:
    """Active installations in the published state."""
    with staging.warehouse.read() as conn:
        return int(conn.exec_driver_sql(
            "SELECT count(*) FROM icr_installation_state WHERE deleted_at IS NULL").scalar_one())
