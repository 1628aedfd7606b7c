"""A nightly's per-day counts made from the previous nightly's counts and the installations whose
history moved since (icr.warehouse.daily, issue 21), on both dialects: a no-change night copies
a few hundred rows; after any sequence of nightlies, webhook applies, backfills, reruns and full
resyncs the counts equal a full recount; where the warehouse cannot prove what changed it
recounts; the load's check fails on counts the current rows do not have.

The nights run on a fake clock (``now_utc`` of every module that reads it), so consecutive dates
are each loaded while in progress, as the scheduled run loads them.
"""

from __future__ import annotations

import copy
import json
import random
from collections import Counter
from datetime import date, datetime, time, timedelta, timezone
from itertools import count
from typing import Any

import pytest
import sqlalchemy as sa

import icr.sync
import icr.warehouse.daily
import icr.warehouse.merge
import icr.warehouse.runlog
import icr.webhooks.apply
from icr.errors import QualityCheckError
from icr.sync import SyncSettings, run_sync
from icr.warehouse import migrations, statements
from icr.warehouse.merge import verify_run
from icr.warehouse.migrations import apply_migrations
from icr.warehouse.runlog import RunContext, get_run
from icr.webhooks.apply import apply_pending
from tests.icr.warehouse.helpers import StaticHook, scalar
from tests.icr.webhooks.test_apply import deliver
from tests.support.records import make_record

_runs = count(1)
START = date(2026, 3, 1)


class Clock:
    """``now_utc`` for the code under test: a settable instant that moves on 1 ms per reading."""

    def __init__(self, day: date) -> None:
        self.now = datetime.combine(day, time(2, 0), tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now

    def next_day(self) -> None:
        self.now = datetime.combine(self.now.date() + timedelta(days=1), time(2, 0), tzinfo=timezone.utc)


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock(START)
    for module in (icr.sync, icr.warehouse.merge, icr.warehouse.daily, icr.warehouse.runlog, icr.webhooks.apply):
        monkeypatch.setattr(module, "now_utc", fake)
    return fake


@pytest.fixture
def wh(warehouse):
    apply_migrations(warehouse)
    return warehouse


def night(warehouse, clock: Clock, records: list[dict[str, Any]], *, day: date | None = None,
          full_resync: bool = False) -> RunContext:
    """A run for ``day`` (default: the clock's date, in progress: the nightly) listing ``records``."""
    when = datetime.combine(day, time(12), tzinfo=timezone.utc) if day else clock.now
    run = RunContext(run_id=f"counts_run_{next(_runs)}", logical_date=when, dag_id="test")
    run_sync(warehouse, StaticHook(copy.deepcopy(records)), run, SyncSettings(full_resync=full_resync))
    return run


def steps_of(warehouse, run: RunContext) -> set[str]:
    seconds = get_run(warehouse, run.run_id)["step_seconds"]
    return set(seconds if isinstance(seconds, dict) else json.loads(seconds))


def stored_counts(warehouse, day: date) -> tuple[Counter, Counter]:
    with warehouse.read() as conn:
        d = {"d": warehouse.day(day)}
        orgs = Counter({(t, c): n for t, c, n in conn.execute(sa.text(
            "SELECT organization_type, organization_country_code, installations FROM icr_daily_org_counts "
            "WHERE snapshot_date = :d"), d)})
        perms = Counter({(p, a): n for p, a, n in conn.execute(sa.text(
            "SELECT permission, access, installations FROM icr_daily_permission_counts WHERE snapshot_date = :d"), d)})
    return orgs, perms


def recounted(warehouse, day: date) -> tuple[Counter, Counter]:
    """The date's counts as the full recount makes them from the current rows (a date in progress)."""
    with warehouse.read() as conn:
        params = {"snapshot_date": warehouse.day(day),
                  "cutoff": warehouse.ts(icr.warehouse.daily.cutoff_of(day))}
        daily = statements.queries("daily_common")
        orgs, perms = Counter(), Counter()
        for name, into in (("org_counts_insert_current", orgs), ("permission_counts_insert_current", perms)):
            select = daily[name][daily[name].index("SELECT"):]
            for row in conn.execute(sa.text(select), params):
                into[tuple(row[1:-1])] += row[-1]
    return orgs, perms


def view_org_counts(warehouse, day: date) -> Counter:
    with warehouse.read() as conn:
        return Counter({(t, c): n for t, c, n in conn.execute(sa.text(
            "SELECT organization_type, organization_country_code, count(*) FROM icr_installation_daily "
            "WHERE snapshot_date = :d GROUP BY organization_type, organization_country_code"),
            {"d": warehouse.day(day)})})


def assert_counts_are_a_full_recount(warehouse, day: date, *, history_agrees: bool = True) -> None:
    """The date's stored counts are the full recount and, unless rows were rewritten without a
    history version (``history_agrees=False``), what the view's rows for the date add up to."""
    orgs, perms = stored_counts(warehouse, day)
    assert (orgs, perms) == recounted(warehouse, day)
    if history_agrees:
        assert orgs == view_org_counts(warehouse, day)


def records(n: int, *, first: int = 0) -> list[dict[str, Any]]:
    return [make_record(first + i, created=datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(hours=i))
            for i in range(n)]


def retype(record: dict[str, Any], kind: str) -> dict[str, Any]:
    record = copy.deepcopy(record)
    record["organization"]["type"] = kind
    return record


def test_a_nightly_builds_on_the_previous_nightly_and_the_changes_since(wh, clock):
    listed = records(30)
    night(wh, clock, listed)
    clock.next_day()
    quiet = night(wh, clock, listed)
    assert "merge:org_counts_insert_since" in steps_of(wh, quiet)
    assert "merge:org_counts_insert_current" not in steps_of(wh, quiet)
    assert_counts_are_a_full_recount(wh, clock.now.date())
    clock.next_day()
    listed = [retype(listed[0], "buyer"), *listed[2:], *records(3, first=100)]
    listed[5] = {**listed[5], "permissions": {"organization_info": "EDIT", "new_scope": "VIEW"}}
    changed = night(wh, clock, listed)
    assert "merge:permission_counts_insert_since" in steps_of(wh, changed)
    assert_counts_are_a_full_recount(wh, clock.now.date())


def test_the_first_nightly_recounts_a_rerun_builds_on_itself_and_a_backfill_changes_nothing(wh, clock):
    listed = records(10)
    first = night(wh, clock, listed)
    assert "merge:org_counts_insert_current" in steps_of(wh, first)
    rerun = night(wh, clock, [retype(listed[0], "buyer"), *listed[1:]])  # same date: its own counts
    assert "merge:org_counts_insert_since" in steps_of(wh, rerun)
    assert_counts_are_a_full_recount(wh, clock.now.date())
    clock.next_day()
    clock.next_day()
    backfill = night(wh, clock, listed, day=clock.now.date() - timedelta(days=1))  # a past date
    assert "merge:org_counts_insert" in steps_of(wh, backfill)
    assert scalar(wh, "SELECT counted_history_id FROM icr_daily_totals WHERE snapshot_date = :d",
                  d=wh.day(clock.now.date() - timedelta(days=1))) is None
    tonight = night(wh, clock, listed)  # still builds on the first date
    assert "merge:org_counts_insert_since" in steps_of(wh, tonight)
    assert_counts_are_a_full_recount(wh, clock.now.date())


def test_a_full_resync_recounts_and_forgets_every_base(wh, clock):
    """A full resync rewrites rows whose record_hash did not change, without a history version
    (a new release may normalize them differently): no date counted before it is a base."""
    listed = records(12)
    night(wh, clock, listed)
    with wh.write() as conn:  # as an older release normalized the type: rows, history and counts
        for table in ("icr_installation_state", "icr_installation_history", "icr_daily_org_counts"):
            conn.execute(sa.text(f"UPDATE {table} SET organization_type = 'buyer'"))
    clock.next_day()
    night(wh, clock, listed, day=START - timedelta(days=1), full_resync=True)  # rewrites the type
    assert scalar(wh, "SELECT count(*) FROM icr_daily_totals WHERE counted_history_id IS NOT NULL") == 0
    tonight = night(wh, clock, listed)
    assert "merge:org_counts_insert_current" in steps_of(wh, tonight)
    assert_counts_are_a_full_recount(wh, clock.now.date(), history_agrees=False)


def test_an_installation_created_after_the_date_makes_it_no_base(wh, clock):
    """A nightly counts only installations created before the date's end; one ICR says was created
    later is left out, and a later date must count it: that date recounts."""
    listed = records(8)
    tomorrow = datetime.combine(clock.now.date() + timedelta(days=1), time(6), tzinfo=timezone.utc)
    early = make_record(50, created=tomorrow)  # ICR's createdAt is ahead of the date being loaded
    night(wh, clock, [*listed, early])
    today = clock.now.date()
    assert scalar(wh, "SELECT counted_history_id FROM icr_daily_totals") is None
    assert sum(stored_counts(wh, today)[0].values()) == 8
    clock.next_day()
    night(wh, clock, [*listed, early])
    assert sum(stored_counts(wh, clock.now.date())[0].values()) == 9
    assert_counts_are_a_full_recount(wh, clock.now.date())


def test_a_migration_applied_later_forgets_every_base(wh, clock, monkeypatch):
    """A migration may rewrite rows without a history version: the next nightly recounts."""
    night(wh, clock, records(5))
    assert scalar(wh, "SELECT count(*) FROM icr_daily_totals WHERE counted_history_id IS NOT NULL") == 1
    real = migrations.available
    later = migrations.Migration("9999", "test_later", "UPDATE icr_installation_state SET organization_type = 'buyer'")
    monkeypatch.setattr(migrations, "available", lambda dialect: [*real(dialect), later])
    assert apply_migrations(wh) == ["9999"]
    assert scalar(wh, "SELECT count(*) FROM icr_daily_totals WHERE counted_history_id IS NOT NULL") == 0
    clock.next_day()
    night(wh, clock, records(5))
    assert_counts_are_a_full_recount(wh, clock.now.date(), history_agrees=False)


def test_the_load_fails_and_rolls_back_when_the_counts_miss_the_current_rows(wh, clock):
    """The load's own check counts the current rows: counts built on a base that is wrong (here
    the previous date's, tampered with) fail the load, which writes nothing."""
    listed = records(6)
    night(wh, clock, listed)
    with wh.write() as conn:
        conn.execute(sa.text("UPDATE icr_daily_org_counts SET installations = installations + 1"))
    clock.next_day()
    with pytest.raises(QualityCheckError, match="current rows"):
        night(wh, clock, listed)
    assert scalar(wh, "SELECT count(*) FROM icr_daily_totals WHERE snapshot_date = :d",
                  d=wh.day(clock.now.date())) == 0


def test_verify_counts_the_view_against_the_counts(wh, clock):
    """The verify task derives the date's rows from the history (the view) and compares them with
    the counts the load wrote: a history that lost a version fails it."""
    listed = records(6)
    run = night(wh, clock, listed)
    verify_run(wh, run)
    with wh.write() as conn:
        conn.execute(sa.text("DELETE FROM icr_installation_history WHERE history_id = "
                             "(SELECT max(history_id) FROM icr_installation_history)"))
    with pytest.raises(QualityCheckError, match="daily snapshot"):
        verify_run(wh, run)


# -- the property: whatever happened, the counts are the full recount -----------------------------

def _mutate(rng: random.Random, listed: dict[str, dict[str, Any]], gone: dict[str, dict[str, Any]],
            fresh: count, today: date) -> None:
    """Change what ICR lists: new, changed (type, country, permissions, createdAt), removed, back."""
    for _ in range(rng.randint(0, 6)):
        kind = rng.choice(["new", "type", "country", "permissions", "created", "remove", "restore"])
        ids = sorted(listed)
        if kind == "new" or not ids:
            # mostly created earlier; sometimes on the day or after its end (ICR's clock is ahead)
            created = datetime.combine(today, time(0), tzinfo=timezone.utc) + timedelta(hours=rng.choice([-900, -30, 1, 30]))
            rec = make_record(next(fresh), created=created)
            listed[rec["id"]] = rec
            continue
        iid = rng.choice(ids)
        rec = copy.deepcopy(listed[iid])
        if kind == "type":
            rec["organization"]["type"] = rng.choice(["buyer", "projectDeveloper", "other", None])
        elif kind == "country":
            rec["organization"]["countryCode"] = rng.choice(["CR", "DE", "SE", None])
        elif kind == "permissions":
            rec["permissions"] = {k: rng.choice(["VIEW", "EDIT"]) for k in rng.sample(
                ["organization_info", "organization_projects", "credits"], rng.randint(0, 3))}
        elif kind == "created":
            stamp = datetime.combine(today, time(0), tzinfo=timezone.utc) + timedelta(hours=rng.choice([-50, 5, 40]))
            rec["createdAt"] = stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        elif kind == "remove":
            gone[iid] = listed.pop(iid)
            continue
        if kind == "restore" and gone:
            back = rng.choice(sorted(gone))
            listed[back] = gone.pop(back)
            continue
        listed[iid] = rec


def _webhook(warehouse, rng: random.Random, listed: dict[str, dict[str, Any]],
             gone: dict[str, dict[str, Any]], fresh: count) -> None:
    """An uninstall, a suspension or an install arrives by webhook and is applied."""
    kind = rng.choice(["uninstalled", "suspended", "installed"])
    if kind == "installed":
        rec = gone.pop(rng.choice(sorted(gone))) if gone and rng.random() < 0.5 else make_record(next(fresh))
        listed[rec["id"]] = rec
    elif listed:
        rec = listed.pop(rng.choice(sorted(listed)))
        gone[rec["id"]] = rec
    else:
        return
    deliver(warehouse, kind, rec)
    apply_pending(warehouse, lambda iid: listed.get(iid), f"counts_events_{next(_runs)}")


@pytest.mark.parametrize("seed", range(4))
def test_incremental_counts_always_equal_a_full_recount(wh, clock, seed):
    rng = random.Random(seed)
    fresh = count(1000)
    listed = {r["id"]: r for r in records(40)}
    gone: dict[str, dict[str, Any]] = {}
    night(wh, clock, list(listed.values()))
    incremental = 0
    for _ in range(14):
        action = rng.choice(["night", "night", "night", "webhook", "webhook", "backfill", "rerun", "resync"])
        if action == "night":
            clock.next_day()
        if action == "webhook":
            _webhook(wh, rng, listed, gone, fresh)
            continue
        _mutate(rng, listed, gone, fresh, clock.now.date())
        if action == "backfill":
            day = clock.now.date() - timedelta(days=rng.randint(1, 3))
            night(wh, clock, list(listed.values()), day=day)
            continue
        run = night(wh, clock, list(listed.values()), full_resync=action == "resync")
        incremental += "merge:org_counts_insert_since" in steps_of(wh, run)
        assert_counts_are_a_full_recount(wh, clock.now.date())
    assert incremental  # the sequence did exercise the incremental path
