"""Applying inbox events (icr.webhooks.apply) on both warehouses: installs, removals with their
reason, out-of-order and duplicate deliveries, a 404 on confirm, transaction events, one bad
event among good ones, and the nightly sync agreeing with what the events wrote.

The confirm call is a dict lookup here (the records a test declares ICR holds now); the real
``GET /app/installations/{id}`` against the simulator is covered by ``test_confirm_over_http``
and the e2e suite.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime, timedelta, timezone
from itertools import count
from typing import Any

import pytest
import sqlalchemy as sa

from icr.sync import SyncSettings, run_sync
from icr.warehouse.migrations import apply_migrations
from icr.warehouse.runlog import RunContext
from icr.webhooks import inbox
from icr.webhooks.apply import apply_pending, confirm_with
from icr.webhooks.delivery import Delivery
from tests.icr.warehouse.helpers import StaticHook
from tests.support.records import make_record

_n = count(1)


class FakeICR:
    """What GET /app/installations/{id} answers now: the record, None (404) or an exception."""

    def __init__(self) -> None:
        self.records: dict[str, Any] = {}
        self.calls: list[str] = []

    def __call__(self, installation_id: str) -> Any:
        self.calls.append(installation_id)
        answer = self.records.get(installation_id)
        if isinstance(answer, Exception):
            raise answer
        return answer


def deliver(warehouse, event: str, record: dict[str, Any] | None, **extra: Any) -> bool:
    body: dict[str, Any] = {"event": event, "installation": record or {}, "sender": {"id": "u1"}, **extra}
    signed = base64.b64encode(json.dumps(body, sort_keys=True).encode()).decode()
    payload = json.dumps({**body, "signedData": signed})
    iid = record.get("id") if record else None
    return inbox.insert_event(warehouse, Delivery(hashlib.sha256(signed.encode()).hexdigest(), event, iid, payload))


def apply(warehouse, icr: FakeICR):
    return apply_pending(warehouse, icr, f"events_run_{next(_n)}")


def state(warehouse) -> dict[str, tuple[bool, str | None]]:
    """installation id -> (active, removal_reason), from the view dashboards read."""
    with warehouse.read() as conn:
        rows = conn.execute(sa.text(
            "SELECT installation_id, deleted_at IS NULL, removal_reason FROM icr_installations")).all()
    return {str(r[0]): (bool(r[1]), r[2]) for r in rows}


def reported(warehouse) -> set[str]:
    with warehouse.read() as conn:
        return {str(r[0]) for r in conn.execute(sa.text(
            "SELECT installation_id FROM icr_report_active_installations"))}


def statuses(warehouse) -> list[tuple[str, str, str | None]]:
    with warehouse.read() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT event, status, error FROM icr_webhook_inbox ORDER BY seq"))]


def history(warehouse, iid: str) -> list[tuple[bool, str | None]]:
    with warehouse.read() as conn:
        return [(bool(r[0]), r[1]) for r in conn.execute(sa.text(
            "SELECT is_deleted, removal_reason FROM icr_installation_history "
            "WHERE CAST(installation_id AS TEXT) = :i ORDER BY history_id"), {"i": iid})]


def installed_then(warehouse, n: int, event: str) -> tuple[FakeICR, dict[str, Any]]:
    """Record ``n`` installed and applied, then ``event`` delivered and applied while ICR answers
    404 for it."""
    icr, rec = FakeICR(), make_record(n)
    icr.records[rec["id"]] = rec
    deliver(warehouse, "installed", rec)
    apply(warehouse, icr)
    icr.records[rec["id"]] = None
    deliver(warehouse, event, rec)
    apply(warehouse, icr)
    return icr, rec


@pytest.fixture
def wh(warehouse):
    apply_migrations(warehouse)
    return warehouse


def test_install_then_uninstall_updates_state_history_and_report(wh):
    icr, rec = FakeICR(), make_record(1)
    icr.records[rec["id"]] = rec
    deliver(wh, "installed", rec)
    result = apply(wh, icr)
    assert (result.applied, result.upserted, result.failed) == (1, 1, 0)
    assert state(wh) == {rec["id"]: (True, None)}
    assert reported(wh) == {rec["id"]}
    with wh.read() as conn:
        perms = conn.execute(sa.text("SELECT count(*) FROM icr_installation_permissions")).scalar_one()
    assert perms == len(rec["permissions"])

    icr.records[rec["id"]] = None  # ICR answers 404 now
    deliver(wh, "uninstalled", rec)
    assert apply(wh, icr).removed == 1
    assert state(wh) == {rec["id"]: (False, "uninstalled")}
    assert reported(wh) == set()
    assert history(wh, rec["id"]) == [(False, None), (True, "uninstalled")]
    assert [s for _, s, _ in statuses(wh)] == ["applied", "applied"]


def test_suspend_and_unsuspend_restore_and_clear_the_reason(wh):
    icr, rec = installed_then(wh, 2, "suspended")
    assert state(wh) == {rec["id"]: (False, "suspended")}
    icr.records[rec["id"]] = rec
    deliver(wh, "unsuspended", {**rec, "updatedAt": "2026-11-30T00:00:00.000Z"})
    apply(wh, icr)
    assert state(wh) == {rec["id"]: (True, None)}
    assert history(wh, rec["id"]) == [(False, None), (True, "suspended"), (False, None)]


def test_out_of_order_deliveries_neither_resurrect_nor_remove(wh):
    icr, a, b = FakeICR(), make_record(3), make_record(4)
    # a: uninstalled for good, but its late 'installed' arrives after the 'uninstalled'
    icr.records[a["id"]] = None
    deliver(wh, "uninstalled", a)
    deliver(wh, "installed", a)
    # b: suspended then unsuspended, delivered the other way round
    icr.records[b["id"]] = b
    deliver(wh, "unsuspended", b)
    deliver(wh, "suspended", b)
    apply(wh, icr)
    assert state(wh) == {b["id"]: (True, None)}  # a was never seen active: nothing to remove
    # a late suspension of an installation already recorded as uninstalled keeps 'uninstalled'
    icr.records[b["id"]] = None
    deliver(wh, "uninstalled", b)
    apply(wh, icr)
    deliver(wh, "suspended", {**b, "updatedAt": "2020-01-01T00:00:00.000Z"})
    apply(wh, icr)
    assert state(wh)[b["id"]] == (False, "uninstalled")


def test_duplicates_and_reapplying_change_nothing(wh):
    icr, rec = FakeICR(), make_record(5)
    icr.records[rec["id"]] = rec
    assert deliver(wh, "installed", rec)
    assert not deliver(wh, "installed", rec)  # the same delivery again: the inbox refuses it
    deliver(wh, "newPermissionsAccepted", rec)  # a different event for the same, unchanged record
    apply(wh, icr)
    assert icr.calls == [rec["id"]]  # one confirm per installation and batch
    deliver(wh, "installed", {**rec, "sender": "again"})
    apply(wh, icr)
    assert history(wh, rec["id"]) == [(False, None)]  # nothing changed: no new version


def test_new_permissions_are_upserted(wh):
    icr, rec = FakeICR(), make_record(6)
    icr.records[rec["id"]] = rec
    deliver(wh, "installed", rec)
    apply(wh, icr)
    changed = {**rec, "permissions": {"organization_info": "VIEW", "credits": "WRITE"},
               "updatedAt": "2026-11-30T10:00:00.000Z"}
    icr.records[rec["id"]] = changed
    deliver(wh, "newPermissionsAccepted", changed)
    apply(wh, icr)
    with wh.read() as conn:
        perms = dict(conn.execute(sa.text("SELECT permission, access FROM icr_installation_permissions")).all())
    assert perms == changed["permissions"]
    assert len(history(wh, rec["id"])) == 2


def test_404_on_a_non_removal_event_removes_with_unknown_reason(wh):
    icr, rec = installed_then(wh, 7, "newPermissionsAccepted")
    assert state(wh) == {rec["id"]: (False, None)}


def test_transaction_events_are_stored_not_applied(wh):
    icr, rec = FakeICR(), make_record(8)
    deliver(wh, "warehouseTransaction", rec, transaction={"id": "t1", "status": "processed"})
    deliver(wh, "organizationTransaction", rec, transaction={"id": "t2", "status": "pending_queue"})
    result = apply(wh, icr)
    assert (result.stored, result.applied, icr.calls) == (2, 0, [])
    assert [s for _, s, _ in statuses(wh)] == ["stored", "stored"]
    assert state(wh) == {}


def test_one_bad_event_never_stops_the_others(wh):
    icr = FakeICR()
    good, broken, down, alien = make_record(9), make_record(10), make_record(11), make_record(12)
    icr.records[good["id"]] = good
    icr.records[broken["id"]] = {**broken, "createdAt": "not a date"}
    icr.records[down["id"]] = RuntimeError("ICR API GET /app/installations/x failed with HTTP 503 after 4 attempts")
    icr.records[alien["id"]] = good  # ICR answers another installation
    deliver(wh, "installed", broken)
    deliver(wh, "installed", down)
    deliver(wh, "somethingNew", good)
    deliver(wh, "installed", alien)
    deliver(wh, "installed", {"organization": {}})  # no installation id
    deliver(wh, "installed", {"id": "../accessTokens"})  # never put into the confirm call's URL
    deliver(wh, "installed", good)
    result = apply(wh, icr)
    assert (result.applied, result.failed) == (1, 6)
    assert state(wh) == {good["id"]: (True, None)}
    assert "../accessTokens" not in icr.calls
    by_event = statuses(wh)
    assert [s for _, s, _ in by_event] == ["failed"] * 6 + ["applied"]
    assert "is not a UUID" in by_event[5][2]
    errors = [e for _, _, e in by_event[:5]]
    assert "createdAt" in errors[0] and broken["id"] in errors[0]
    assert "HTTP 503" in errors[1]
    assert "'somethingNew'" in errors[2] and "not a known ICR event" in errors[2]
    assert "answered installation" in errors[3]
    assert "no installation.id" in errors[4]


def test_events_arriving_while_applying_are_applied_by_the_same_run(wh):
    icr, a, b = FakeICR(), make_record(13), make_record(14)
    icr.records[a["id"]], icr.records[b["id"]] = a, b
    deliver(wh, "installed", a)
    deliver(wh, "installed", b)
    result = apply_pending(wh, icr, "events_run_batches", batch=1)
    assert result.applied == 2 and set(state(wh)) == {a["id"], b["id"]}


def test_nightly_sync_agrees_and_records_drift(wh):
    """Events applied, then the nightly list: what they got right is unchanged; what they got
    wrong (removed but listed, active but not listed) is corrected and counted as drift."""
    icr = FakeICR()
    kept, wrongly_removed, wrongly_active = make_record(20), make_record(21), make_record(22)
    for rec in (kept, wrongly_removed, wrongly_active):
        icr.records[rec["id"]] = rec
        deliver(wh, "installed", rec)
    apply(wh, icr)
    icr.records[wrongly_removed["id"]] = None
    deliver(wh, "suspended", wrongly_removed)
    apply(wh, icr)
    run = RunContext(run_id="nightly_1", logical_date=datetime.now(timezone.utc), dag_id="test")
    result = run_sync(wh, StaticHook([kept, wrongly_removed]), run, SyncSettings())
    assert (result["inserted"], result["unchanged"]) == (0, 1)
    assert state(wh) == {kept["id"]: (True, None), wrongly_removed["id"]: (True, None),
                         wrongly_active["id"]: (False, None)}
    with wh.read() as conn:
        drift, detail = conn.execute(sa.text(
            "SELECT drift, drift_detail FROM icr_sync_runs WHERE run_id = 'nightly_1'")).one()
    assert drift == 2
    assert wrongly_removed["id"] in detail and wrongly_active["id"] in detail


def _nightly_then_event(wh, listed: list[dict[str, Any]], event: str, icr: FakeICR, record: dict[str, Any]):
    """A nightly reads ``listed``; while it pages, ``event`` for ``record`` is delivered and applied
    (ICR answers what ``icr`` holds then); then the nightly loads its older list."""
    from icr.sync import cleanup, extract, load

    run = RunContext(run_id=f"nightly_{next(_n)}", logical_date=datetime.now(timezone.utc), dag_id="test")
    extract(wh, StaticHook(listed), run, SyncSettings())
    deliver(wh, event, record)
    apply(wh, icr)
    result = load(wh, run, SyncSettings())
    cleanup(wh, run)
    return result


def _loaded(wh, records: list[dict[str, Any]]) -> None:
    run = RunContext(run_id=f"nightly_{next(_n)}", logical_date=datetime.now(timezone.utc), dag_id="test")
    run_sync(wh, StaticHook(records), run, SyncSettings())


def test_an_install_applied_while_the_nightly_pages_survives_its_older_list(wh):
    """The nightly read its list before the install's event was applied: that list cannot know
    the installation, so the load keeps it instead of removing it until the next night."""
    icr, listed, installed_meanwhile = FakeICR(), make_record(30), make_record(31)
    icr.records[installed_meanwhile["id"]] = installed_meanwhile
    result = _nightly_then_event(wh, [listed], "installed", icr, installed_meanwhile)
    assert result["removed"] == 0
    assert state(wh) == {listed["id"]: (True, None), installed_meanwhile["id"]: (True, None)}
    assert installed_meanwhile["id"] in reported(wh)


@pytest.mark.parametrize("changed_in_list", [False, True], ids=["unchanged", "changed"])
def test_an_uninstall_applied_while_the_nightly_pages_is_not_undone_by_its_older_list(wh, changed_in_list):
    """The list was read before the uninstall's event was applied: it still shows the installation
    (unchanged, or changed since the last night), and must neither restore it nor fail the run."""
    icr, rec, gone = FakeICR(), make_record(40), make_record(41)
    others = [make_record(50 + i) for i in range(20)]
    _loaded(wh, [rec, gone, *others])
    listed = {**rec, "permissions": {"organization_info": "WRITE"}} if changed_in_list else rec
    icr.records[rec["id"]] = None  # uninstalled: GET /app/installations/{id} answers 404
    # the list still shows rec, and no longer shows gone: that one is removed by this run
    result = _nightly_then_event(wh, [listed, *others], "uninstalled", icr, rec)
    assert state(wh) == {rec["id"]: (False, "uninstalled"), gone["id"]: (False, None),
                         **{o["id"]: (True, None) for o in others}}
    assert rec["id"] not in reported(wh)
    assert result["active_after"] == len(others) and result["removed"] == 1


def test_new_permissions_applied_while_the_nightly_pages_are_not_overwritten_by_its_older_list(wh):
    icr, rec = FakeICR(), make_record(42)
    _loaded(wh, [rec])
    older = {**rec, "permissions": {"organization_info": "WRITE"}, "updatedAt": "2026-11-30T09:00:00.000Z"}
    newer = {**rec, "permissions": {"organization_info": "VIEW", "credits": "WRITE"},
             "updatedAt": "2026-11-30T10:00:00.000Z"}
    icr.records[rec["id"]] = newer
    _nightly_then_event(wh, [older], "newPermissionsAccepted", icr, newer)
    with wh.read() as conn:
        perms = dict(conn.execute(sa.text("SELECT permission, access FROM icr_installation_permissions")).all())
    assert perms == newer["permissions"]


def test_removals_by_reason_reach_the_daily_totals(wh):
    """icr_report_new_removed_daily splits the day's removed by the reason the events gave;
    an installation that just vanished from the list counts in removed only."""
    icr = FakeICR()
    uninstalled, suspended, vanished, stays = (make_record(i) for i in (40, 41, 42, 43))
    yesterday = datetime.now(timezone.utc) - timedelta(days=1)
    run_sync(wh, StaticHook([uninstalled, suspended, vanished, stays]), RunContext("day_1", yesterday, "test"))
    for rec, event in ((uninstalled, "uninstalled"), (suspended, "suspended")):
        icr.records[rec["id"]] = None
        deliver(wh, event, rec)
    apply(wh, icr)
    run_sync(wh, StaticHook([stays]), RunContext("day_2", datetime.now(timezone.utc), "test"))
    with wh.read() as conn:
        rows = conn.execute(sa.text(
            "SELECT new, removed, removed_uninstalled, removed_suspended FROM icr_report_new_removed_daily "
            "ORDER BY snapshot_date")).all()
    assert [tuple(r) for r in rows] == [(None, None, None, None), (0, 3, 1, 1)]


def test_confirm_over_http(make_simulator, icr_connection, sqlite_warehouse):
    """The real GET /app/installations/{id} (app JWT, the hook's client) against the simulator:
    200 upserts the record ICR answers, 404 removes it."""
    from icr.hooks import ICRHook

    sim = make_simulator(installations=3, seed=11)
    icr_connection(sim)
    apply_migrations(sqlite_warehouse)
    confirm = confirm_with(ICRHook(icr_conn_id="icr_default").get_conn())
    iid = sim.truth_id_list()[0]
    deliver(sqlite_warehouse, "installed", {"id": iid})
    apply_pending(sqlite_warehouse, confirm, "events_http_1")
    assert state(sqlite_warehouse) == {iid: (True, None)}
    sim.remove_installations([iid])
    deliver(sqlite_warehouse, "uninstalled", {"id": iid})
    apply_pending(sqlite_warehouse, confirm, "events_http_2")
    assert state(sqlite_warehouse) == {iid: (False, "uninstalled")}


def test_unreachable_icr_leaves_events_pending_for_a_retry(wh):
    from icr.errors import ICRAPIError
    from icr.webhooks.apply import EventsLeftPending

    icr, down, fine = FakeICR(), make_record(40), make_record(41)
    icr.records[down["id"]] = ICRAPIError(503, "GET", f"/app/installations/{down['id']}", "busy", attempts=4)
    icr.records[fine["id"]] = fine
    deliver(wh, "installed", down)
    deliver(wh, "installed", fine)
    with pytest.raises(EventsLeftPending, match="1 inbox event"):
        apply(wh, icr)
    assert [s for _, s, _ in statuses(wh)] == ["pending", "applied"]
    icr.records[down["id"]] = down  # ICR is back: the retry applies it
    assert apply(wh, icr).applied == 1
    assert set(state(wh)) == {down["id"], fine["id"]}


def test_the_event_run_keeps_applying_until_the_inbox_is_quiet(wh):
    import threading

    from icr.webhooks.apply import apply_until_quiet

    icr, first, late = FakeICR(), make_record(42), make_record(43)
    icr.records[first["id"]], icr.records[late["id"]] = first, late
    deliver(wh, "installed", first)
    threading.Timer(0.5, deliver, (wh, "installed", late)).start()  # while the run is going
    result = apply_until_quiet(wh, icr, "events_run_quiet", quiet_s=1.5, max_s=10, poll_s=0.1)
    assert result.applied == 2 and set(state(wh)) == {first["id"], late["id"]}
