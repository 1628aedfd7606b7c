"""Reading a test's warehouse: its run log and fingerprints of its tables.

* ``table_fingerprint`` — every row of every table a load may change, exactly: to prove that a
  failed run changed nothing (compare the same warehouse before and after).
* ``outcome_fingerprint`` — what two runs made at different times must agree on (ids, hashes and
  removal flags of the state, row counts, successful runs; no timestamps): to compare a warehouse
  with a reference one, or cheaply before/after on a large one.
"""

from __future__ import annotations

import hashlib
from typing import Any

import sqlalchemy as sa

#: the tables a load may change, each with the order that makes its rows comparable
LOADED_TABLES = [
    ("icr_installation_state", "installation_id"),
    ("icr_installation_permissions", "installation_id, permission"),
    ("icr_installation_history", "installation_id, valid_from"),
    ("icr_installation_daily", "snapshot_date, installation_id"),  # a view since 0011
    ("icr_installation_daily_archive", "snapshot_date, installation_id"),  # a rerun of an archived date
    ("icr_rejected_records", "reject_id"),
    ("icr_daily_totals", "snapshot_date"),
    ("icr_daily_org_counts", "snapshot_date, organization_type, organization_country_code"),
    ("icr_daily_type_counts", "snapshot_date, organization_type"),
    ("icr_daily_country_counts", "snapshot_date, organization_country_code"),
    ("icr_daily_permission_counts", "snapshot_date, permission, access"),
]


def run_rows(warehouse: Any) -> list[dict[str, Any]]:
    """Every row of ``icr_sync_runs``, oldest first."""
    with warehouse.read() as conn:
        return [dict(r) for r in conn.execute(sa.text(
            "SELECT * FROM icr_sync_runs ORDER BY started_at")).mappings()]


def run_row(warehouse: Any, run_id: str) -> dict[str, Any] | None:
    """The ``icr_sync_runs`` row of ``run_id`` (None if there is none)."""
    with warehouse.read() as conn:
        row = conn.execute(sa.text("SELECT * FROM icr_sync_runs WHERE run_id = :r"), {"r": run_id}).mappings().first()
    return None if row is None else dict(row)


def table_fingerprint(warehouse: Any, *, ignore_run_ids: bool = False) -> dict[str, Any]:
    """Everything a load may change, in a comparable form (to prove a failed run changed nothing).

    ``ignore_run_ids`` leaves out which run wrote a row, to compare the results of two runs.
    """
    out: dict[str, Any] = {}
    with warehouse.read() as conn:
        for table, order in LOADED_TABLES:
            result = conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY {order}"))
            keep = [i for i, name in enumerate(result.keys())
                    if not (ignore_run_ids and name in ("sync_run_id", "last_sync_run_id", "loaded_at"))]
            out[table] = [tuple(str(row[i]) for i in keep) for row in result]
    return out


def outcome_fingerprint(warehouse: Any) -> dict[str, Any]:
    """What "the warehouse as it is" means across runs: state ids + hashes + removal flags, history,
    daily, permissions, rejects, and the set of successful runs (timestamps are left out on purpose)."""
    pg = warehouse.dialect_name == "postgresql"
    agg = "string_agg(x, ',' ORDER BY x)" if pg else "group_concat(x, ',')"
    cat = ("CAST(installation_id AS text) || ':' || record_hash || ':' || "
           "CASE WHEN deleted_at IS NULL THEN 'A' ELSE 'D' END")
    out: dict[str, Any] = {}
    with warehouse.read() as conn:
        def q(sql: str) -> Any:
            return conn.execute(sa.text(sql)).scalar()

        state = q(f"SELECT {agg} FROM (SELECT {cat} AS x FROM icr_installation_state ORDER BY 1) s")
        out["state_md5"] = hashlib.md5((state or "").encode()).hexdigest()
        out["state"] = q("SELECT count(*) FROM icr_installation_state")
        out["active"] = q("SELECT count(*) FROM icr_installation_state WHERE deleted_at IS NULL")
        out["history"] = q("SELECT count(*) FROM icr_installation_history")
        out["history_open"] = q("SELECT count(*) FROM icr_installation_history WHERE valid_to IS NULL")
        out["daily"] = q("SELECT count(*) FROM icr_installation_daily")
        out["permissions"] = q("SELECT count(*) FROM icr_installation_permissions")
        out["rejected"] = q("SELECT count(*) FROM icr_rejected_records")
        out["successful_runs"] = q("SELECT count(*) FROM icr_sync_runs WHERE status = 'success'")
    return out
