"""11. A hostile or broken API (issue 19 items 1-5, issue 18 item 5): records the JSON decoder
refuses, paging that never ends, oversized and dribbling answers, absurd pagination numbers, a
page-size limit, and a 20 s outage. One bad record is rejected and everything else loads; the
rest fail at once with a message that names what and where, with the warehouse as it was."""

from __future__ import annotations

import copy
import json
import time
import uuid

import pytest
import sqlalchemy as sa

from tests.faults.conftest import compare_with_truth, dump_warehouse, new_run, staging_tables
from tests.support.warehouse import outcome_fingerprint, run_row, run_rows

FAULT_CLASS = "hostile_api"
pytestmark = pytest.mark.faults

PAGE = 50


def _hostile_records(sim) -> dict[str, tuple[bytes, str]]:
    """Raw JSON texts of real-looking installations with one thing no decoder takes whole:
    {name: (record text, words the reject reason must hold)}."""
    base = copy.deepcopy(next(iter(sim.truth())))

    def raw(extra: bytes) -> bytes:
        rec = dict(base, id=str(uuid.uuid4()))
        return json.dumps(rec).encode()[:-1] + b',"hostile":' + extra + b"}"

    return {
        "deep": (raw(b"[" * 1500 + b"]" * 1500), "nested"),
        "lone_surrogate": (raw(b'"\\ud800"'), "lone surrogate"),
        "huge_float": (raw(b"1e400"), "beyond the range of a double"),
        "huge_int": (raw(b"9" * 4400), "integer too long"),
    }


def _rejects(warehouse) -> list:
    with warehouse.read() as conn:
        return conn.execute(sa.text("SELECT installation_id, reason, raw FROM icr_rejected_records")).all()


# --------------------------------------------------------------------------- 19.1 bad records


def test_each_hostile_record_is_rejected_and_the_rest_loaded(make_simulator, hook_for, faults_pg, ledger, leaks):
    """One record of each kind on its own page: four rejects naming page and problem, 200 rows loaded."""
    from icr.sync import SyncSettings, run_sync

    sim = make_simulator(installations=200, seed=91)
    hostile = _hostile_records(sim)
    sim.faults.extra_records = {page: [text] for page, (text, _) in enumerate(hostile.values())}
    result = run_sync(faults_pg, hook_for(sim), new_run("hostile-records"), SyncSettings(page_size=PAGE))

    diff = compare_with_truth(faults_pg, sim.truth())
    rejects = _rejects(faults_pg)
    reasons = [r.reason for r in rejects]
    matched = [name for name, (_, words) in hostile.items() if any(words in reason for reason in reasons)]
    ledger.record(FAULT_CLASS, injected=len(hostile), runs=1,
                  survived=int(diff.lost == 0 and len(matched) == len(hostile)), rows_lost=diff.lost)
    assert diff.lost == 0 and diff.truth == 200, str(diff)
    assert result["rejected"] == len(hostile) == len(rejects), reasons
    assert sorted(matched) == sorted(hostile), reasons
    for page, (_, words) in enumerate(hostile.values()):
        assert any(f"page={page}" in reason and words in reason for reason in reasons), (page, words, reasons)
    for r in rejects:
        assert r.installation_id and len(r.installation_id) == 36  # the id the scanner read
        assert 0 < len(r.raw) <= 70_000 and "\x00" not in r.raw
        r.raw.encode("utf-8")  # storable text
    (row,) = run_rows(faults_pg)
    assert row["status"] == "success" and row["rejected"] == len(hostile)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_one_hostile_record_among_10000(make_simulator, hook_for, request, ledger, leaks, backend):
    """Issue 19's proof: 9,999 good records and one nested 1,500 deep: 9,999 loaded, one rejected."""
    from icr.sync import SyncSettings, run_sync

    warehouse = request.getfixturevalue("faults_pg" if backend == "postgresql" else "sqlite_warehouse")
    sim = make_simulator(installations=9_999, seed=92)
    text, words = _hostile_records(sim)["deep"]
    sim.faults.extra_records = {57: [text]}
    result = run_sync(warehouse, hook_for(sim), new_run(f"hostile-10k-{backend}"), SyncSettings())

    diff = compare_with_truth(warehouse, sim.truth())
    rejects = _rejects(warehouse)
    ledger.record(FAULT_CLASS, injected=1, runs=1, survived=int(diff.lost == 0 and len(rejects) == 1),
                  rows_lost=diff.lost)
    if backend == "sqlite":
        dump_warehouse(warehouse, leaks)
    assert diff.lost == 0 and diff.active == 9_999, str(diff)
    assert result["records_fetched"] == 10_000 and result["rejected"] == 1 and result["inserted"] == 9_999
    assert bool(result["snapshot_complete"]) is True
    (reject,) = rejects
    assert "page=57" in reject.reason and words in reject.reason
    (row,) = run_rows(warehouse)
    assert row["status"] == "success"


# --------------------------------------------------------------------------- 19.2 paging bounds


def _stop_endless_after(sim, pages: int) -> None:
    """Let old code (which follows nextPage up to 100,000 pages) end: after ``pages`` pages the
    simulator stops being endless, so a test of the bound fails instead of running for hours."""

    def hook(s, page):
        if s.stats["pages_served"] >= pages:
            s.faults.endless_pages = None

    sim.faults.mutate_while_paging = hook


@pytest.mark.parametrize("mode, words", [("repeat", "brought no new installation id"),
                                         ("new", "past what it announced")])
def test_endless_paging_is_bounded(make_simulator, hook_for, faults_pg, ledger, leaks, mode, words):
    from icr.errors import ICRSnapshotError
    from icr.sync import SyncSettings, run_sync

    sim = make_simulator(installations=200, seed=93)
    hook = hook_for(sim)
    run_sync(faults_pg, hook, new_run("endless-seed"), SyncSettings(page_size=PAGE))
    before = outcome_fingerprint(faults_pg)
    sim.faults.endless_pages = mode
    _stop_endless_after(sim, 300)
    sim.reset_stats()
    run = new_run(f"endless-{mode}")
    with pytest.raises(ICRSnapshotError) as info:
        run_sync(faults_pg, hook, run, SyncSettings(page_size=PAGE))
    leaks.feed_exception(info.value)
    served = sim.stats["pages_served"]
    ok = served <= 12 and outcome_fingerprint(faults_pg) == before
    ledger.record(FAULT_CLASS, injected=1, runs=2, survived=1 + int(ok))
    assert words in str(info.value) and f"limit={PAGE}" in str(info.value)
    assert served <= 12, f"{served} pages read from an API that announced 4"
    assert outcome_fingerprint(faults_pg) == before
    assert run_row(faults_pg, run.run_id)["status"] == "failed"
    assert staging_tables(faults_pg) == []


# --------------------------------------------------------------------------- 19.3 size and deadline


def test_oversized_answer_fails_at_once_naming_path_and_cap(make_simulator, hook_for, faults_pg, ledger, leaks):
    from icr.errors import ICRAPIError
    from icr.defaults import DEFAULT_MAX_RESPONSE_BYTES
    from icr.sync import SyncSettings, run_sync

    sim = make_simulator(installations=100, seed=94)
    base = dict(next(iter(sim.truth())), id=str(uuid.uuid4()))
    base["organization"] = dict(base["organization"], fullName="x" * (DEFAULT_MAX_RESPONSE_BYTES + 1024))
    sim.faults.extra_records = {1: [base]}
    run = new_run("oversized")
    with pytest.raises(ICRAPIError) as info:
        run_sync(faults_pg, hook_for(sim), run, SyncSettings(page_size=PAGE))
    leaks.feed_exception(info.value)
    text = str(info.value)
    ledger.record(FAULT_CLASS, injected=1, runs=1, survived=int("cap" in text))
    assert "page=1" in text and f"{DEFAULT_MAX_RESPONSE_BYTES:,} bytes" in text and "max_response_bytes" in text
    assert info.value.attempts == 1  # a cap is not worth retrying
    assert sim.stats["by_kind"]["list"] == 2
    row = run_row(faults_pg, run.run_id)
    assert row["status"] == "failed" and "cap" in row["error"]


def test_dribbling_server_is_cut_at_the_request_deadline(make_simulator, hook_for, ledger, leaks):
    """The body arrives at 200 bytes/s: each socket read succeeds, so only a total deadline ends it."""
    from icr.errors import ICRAPIError

    sim = make_simulator(installations=3, seed=95)
    sim.faults.dribble_seconds = 0.005
    hook = hook_for(sim, timeout=2, max_retries=1)
    t0 = time.monotonic()
    with pytest.raises(ICRAPIError) as info:
        list(hook.installations(page_size=PAGE))
    took = time.monotonic() - t0
    leaks.feed_exception(info.value)
    ledger.record(FAULT_CLASS, injected=1, runs=1, survived=int(took < 8))
    assert took < 8, f"a 2 s request deadline held the request for {took:.1f}s"
    assert "still arriving after 2s" in str(info.value) and "/app/installations" in str(info.value)


# --------------------------------------------------------------------------- 19.4 envelope numbers


@pytest.mark.parametrize("field, value, shown", [
    ("total", 3_000_000_000, "3000000000"),
    ("total", b"1" * 400, "400 digits"),
    ("total", b"1e400", "1e400"),
    ("total", -5, "-5"),
    ("pageCount", 2.5, "2.5"),
    ("currentPage", "first", "'first'"),
    ("nextPage", b"9" * 5000, "digits"),
])
def test_absurd_pagination_number_fails_on_the_first_page(make_simulator, hook_for, faults_pg, ledger, leaks,
                                                          field, value, shown):
    from icr.errors import ICRSnapshotError
    from icr.sync import SyncSettings, run_sync

    sim = make_simulator(installations=120, seed=96)
    hook = hook_for(sim)
    run_sync(faults_pg, hook, new_run("envelope-seed"), SyncSettings(page_size=PAGE))
    before = outcome_fingerprint(faults_pg)
    sim.faults.pagination_override = {field: value}
    sim.reset_stats()
    run = new_run("envelope")
    with pytest.raises(ICRSnapshotError) as info:
        run_sync(faults_pg, hook, run, SyncSettings(page_size=PAGE))
    leaks.feed_exception(info.value)
    text = str(info.value)
    ok = f"pagination.{field}" in text and sim.stats["pages_served"] == 1
    ledger.record(FAULT_CLASS, injected=1, runs=2, survived=1 + int(ok and outcome_fingerprint(faults_pg) == before))
    assert f"pagination.{field}" in text and "page=0" in text and shown in text, text
    assert sim.stats["pages_served"] == 1, "the page was not refused when it arrived"
    assert outcome_fingerprint(faults_pg) == before
    row = run_row(faults_pg, run.run_id)
    assert row["status"] == "failed" and f"pagination.{field}" in row["error"]


# --------------------------------------------------------------------------- 19.5 page-size maximum


def test_page_size_above_the_maximum_is_refused_before_any_request(make_simulator, hook_for, faults_pg, ledger,
                                                                    leaks):
    from icr.errors import ICRConfigError
    from icr.sync import SyncSettings, run_sync

    sim = make_simulator(installations=50, seed=97)
    with pytest.raises(ICRConfigError) as info:
        run_sync(faults_pg, hook_for(sim), new_run("page-max"), SyncSettings(page_size=500))
    leaks.feed_exception(info.value)
    ledger.record(FAULT_CLASS, injected=1, runs=1, survived=int(sim.stats["by_kind"].get("list", 0) == 0))
    assert "500" in str(info.value) and "maximum page size 100" in str(info.value)
    assert sim.stats["by_kind"].get("list", 0) == 0


def test_limit_too_high_400_is_retried_once_with_the_api_maximum(make_simulator, hook_for, faults_pg, ledger, leaks,
                                                                 caplog):
    from icr.sync import SyncSettings, run_sync

    sim = make_simulator(installations=130, seed=98, max_page_size=40, default_page_size=40)
    result = run_sync(faults_pg, hook_for(sim), new_run("page-400"), SyncSettings(page_size=PAGE))
    diff = compare_with_truth(faults_pg, sim.truth())
    ledger.record(FAULT_CLASS, injected=1, runs=1, survived=int(diff.lost == 0), rows_lost=diff.lost)
    assert diff.lost == 0 and result["snapshot_complete"] is True, str(diff)
    assert sim.stats["by_status"][400] == 1 and result["pages"] == 4  # 130 at 40 a page
    assert "retrying once with page size 40" in caplog.text


# --------------------------------------------------------------------------- 18.5 retry budget


def test_a_20s_outage_is_ridden_out_within_the_retry_budget(make_simulator, hook_for, faults_pg, ledger, leaks):
    from icr.sync import SyncSettings, run_sync

    sim = make_simulator(installations=150, seed=99)
    # the connection's defaults for attempts and waits: the budget governs
    hook = hook_for(sim, max_retries=None, max_retry_wait=None, retry_budget=60, timeout=2)
    sim.outage(20, "reset")
    t0 = time.monotonic()
    result = run_sync(faults_pg, hook, new_run("outage"), SyncSettings(page_size=PAGE))
    took = time.monotonic() - t0
    diff = compare_with_truth(faults_pg, sim.truth())
    ledger.record(FAULT_CLASS, injected=sim.stats["faults_total"], runs=1, survived=int(diff.lost == 0),
                  rows_lost=diff.lost)
    assert diff.lost == 0 and result["snapshot_complete"] is True, str(diff)
    assert took >= 20 and sim.stats["faults_total"] >= 5


def test_an_outage_longer_than_the_budget_fails_saying_how_long_it_tried(make_simulator, hook_for, ledger, leaks):
    from icr.errors import ICRAPIError

    sim = make_simulator(installations=10, seed=100)
    hook = hook_for(sim, max_retries=None, max_retry_wait=None, retry_budget=6, timeout=2)
    sim.outage(60, "503")
    t0 = time.monotonic()
    with pytest.raises(ICRAPIError) as info:
        list(hook.installations())
    took = time.monotonic() - t0
    leaks.feed_exception(info.value)
    text = str(info.value)
    ledger.record(FAULT_CLASS, injected=sim.stats["faults_total"], runs=1, survived=int("tried for" in text))
    assert info.value.status == 503 and took < 10
    assert "tried for" in text and f"in {info.value.attempts} attempts" in text and "retry budget of 6s" in text


def test_not_found_fails_at_once_without_spending_the_budget(make_simulator, hook_for, ledger, leaks):
    from icr.errors import ICRAPIError

    sim = make_simulator(installations=10, seed=101)
    client = hook_for(sim, retry_budget=60).get_conn()
    with pytest.raises(ICRAPIError) as info:
        client.get_installation(str(uuid.uuid4()))
    ledger.record(FAULT_CLASS, injected=1, runs=1, survived=int(info.value.attempts == 1))
    assert info.value.status == 404 and info.value.attempts == 1 and sim.stats["by_kind"]["get"] == 1


def test_sync_tasks_have_an_execution_timeout():
    """A task stuck anywhere (a hung socket outside the client's deadline) is killed by Airflow."""
    from pathlib import Path

    from airflow.dag_processing.dagbag import DagBag

    dag_file = Path(__file__).resolve().parents[2] / "dags" / "icr_installations_sync.py"
    dag = DagBag(dag_folder=str(dag_file)).dags["icr_installations_sync"]
    timeouts = {t.task_id: t.execution_timeout for t in dag.tasks}
    assert timeouts and all(timeouts.values()), timeouts
    assert all(t <= dag.dagrun_timeout for t in timeouts.values()), timeouts
