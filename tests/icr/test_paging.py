"""InstallationPager: robust loop, de-duplication, completeness, concurrency; SeenIds memory."""

from __future__ import annotations

import json

import pytest

from icr.auth import AppJWT, load_private_key
from icr.errors import ICRAPIError, ICRSnapshotError
from icr.paging import InstallationPager, Page, PagingLimits, SeenIds

from tests.support.records import make_record

from .conftest import Reply, needs_simulator, page_body


@pytest.fixture
def sim_pager(make_client):
    """pager(sim, **kw) -> (InstallationPager, client) bound to a simulator."""

    def make(sim, client_kw=None, **kw):
        auth = AppJWT(sim.app_id, load_private_key(sim.private_key_pem))
        client = make_client(sim.base_url, auth, **(client_kw or {}))
        return InstallationPager(client, **kw), client

    return make


def _collect(pager) -> tuple[list[Page], list[str]]:
    pages = list(pager)
    ids = [r["id"] for p in pages for r in p.records if isinstance(r, dict) and isinstance(r.get("id"), str)]
    return pages, ids


# --------------------------------------------------------------------------- against the simulator


@needs_simulator
@pytest.mark.parametrize("next_page_on_last", ["null", "absent"])
def test_sequential_full_read(make_simulator, sim_pager, next_page_on_last):
    sim = make_simulator(installations=1000, next_page_on_last=next_page_on_last)
    pager, client = sim_pager(sim, page_size=100)
    pages, ids = _collect(pager)
    assert [p.number for p in pages] == list(range(10))
    assert set(ids) == sim.truth_ids() and len(ids) == 1000
    r = pager.report
    assert r.complete and r.reason is None
    assert (r.pages, r.records, r.distinct_ids, r.duplicates) == (10, 1000, 1000, 0)
    assert r.total_first == r.total_last == 1000 and r.totals_seen == (1000,)
    assert r.stop == ("nextPage null" if next_page_on_last == "null" else "nextPage absent")
    assert all(p.total == 1000 and p.page_count == 10 and p.received == 100 for p in pages)
    assert sim.stats["pages_served"] == 10


@needs_simulator
def test_short_last_page_stops(make_simulator, sim_pager):
    sim = make_simulator(installations=250)
    pager, _ = sim_pager(sim, page_size=100)
    pages, ids = _collect(pager)
    assert [p.received for p in pages] == [100, 100, 50]
    assert pager.report.complete and pager.report.stop == "short page"
    assert sim.stats["pages_served"] == 3


@needs_simulator
def test_empty(make_simulator, sim_pager):
    sim = make_simulator(installations=0)
    pager, _ = sim_pager(sim, page_size=100)
    pages, ids = _collect(pager)
    assert len(pages) == 1 and pages[0].records == [] and ids == []
    r = pager.report
    assert r.complete and r.distinct_ids == 0 and r.total_first == 0 and r.stop == "empty page"


@needs_simulator
@pytest.mark.parametrize("change", [{"add_front": 5}, {"remove": 3}, {"add": 7}])
def test_total_changes_mid_paging_is_incomplete(make_simulator, sim_pager, change):
    sim = make_simulator(installations=500)
    sim.faults.mutate_while_paging = change
    pager, _ = sim_pager(sim, page_size=100)
    _collect(pager)
    r = pager.report
    assert not r.complete
    assert "pagination.total changed" in r.reason
    assert r.total_first == 500 and r.total_last != 500 and len(r.totals_seen) > 1


@needs_simulator
def test_add_front_causes_duplicates_removed_by_dedup(make_simulator, sim_pager):
    sim = make_simulator(installations=300)
    sim.faults.mutate_while_paging = {"add_front": 10}  # shifts every later page by 10
    pager, _ = sim_pager(sim, page_size=100)
    pages, ids = _collect(pager)
    assert len(ids) == len(set(ids))  # streamed records never repeat an id
    r = pager.report
    assert r.duplicates > 0 and r.records == r.distinct_ids + r.duplicates
    assert not r.complete


@needs_simulator
def test_concurrent_matches_sequential(make_simulator, sim_pager):
    sim = make_simulator(installations=1000)
    sim.faults.latency_ms = 20
    seq, _ = sim_pager(sim, page_size=50)
    _, seq_ids = _collect(seq)
    sim.reset_stats()
    con, client = sim_pager(sim, page_size=50, concurrency=6)
    pages, con_ids = _collect(con)
    assert sorted(con_ids) == sorted(seq_ids) and len(con_ids) == 1000
    assert sorted(p.number for p in pages) == list(range(20))
    assert con.report.complete and con.report.pages == 20
    assert sim.stats["pages_served"] == 20 and client.stats.requests == 20


@needs_simulator
def test_concurrent_continues_past_stale_page_count(make_simulator, sim_pager):
    sim = make_simulator(installations=1000)
    grown = {"done": False}

    def grow(s, page):
        if not grown["done"]:
            grown["done"] = True
            s.add_installations(150)

    sim.faults.mutate_while_paging = grow
    pager, _ = sim_pager(sim, page_size=100, concurrency=4)
    pages, ids = _collect(pager)
    assert set(ids) == sim.truth_ids() and len(ids) == 1150
    assert sorted(p.number for p in pages) == list(range(12))
    r = pager.report
    assert not r.complete and "changed" in r.reason  # total went 1000 → 1150 while paging


@needs_simulator
def test_concurrent_paging_survives_rate_limits(make_simulator, sim_pager):
    sim = make_simulator(installations=600)
    sim.faults.update(error_rate=0.3, fault_kinds=["429_seconds", "503", "reset"], retry_after_seconds=0.05, seed=3)
    pager, client = sim_pager(sim, page_size=50, concurrency=4)
    _, ids = _collect(pager)
    assert set(ids) == sim.truth_ids()
    assert pager.report.complete
    assert client.stats.retries > 0 and sim.stats["faults_total"] == client.stats.retries


@needs_simulator
def test_page_failing_after_retries_aborts(make_simulator, sim_pager):
    sim = make_simulator(installations=300)
    pager, _ = sim_pager(sim, client_kw={"max_retries": 2}, page_size=100)
    it = iter(pager)
    next(it)
    sim.fail_next("500", 5)
    with pytest.raises(ICRAPIError) as ei:
        next(it)
    assert ei.value.status == 500 and "page=1" in str(ei.value)
    assert not pager.report.complete and "did not finish" in pager.report.reason


@needs_simulator
def test_concurrent_page_failure_aborts(make_simulator, sim_pager):
    sim = make_simulator(installations=1000)
    pager, _ = sim_pager(sim, client_kw={"max_retries": 1}, page_size=100, concurrency=3)
    it = iter(pager)
    next(it)
    sim.fail_next("502", 1)
    with pytest.raises(ICRAPIError):
        list(it)
    assert not pager.report.complete


# --------------------------------------------------------------------------- odd servers (stub)


def _stub_pager(stub_server, make_client, responder, **kw):
    srv = stub_server(responder)
    return srv, InstallationPager(make_client(srv.base_url), **kw)


def test_streaming_fetches_lazily(stub_server, make_client):
    def responder(seen):
        p = int(seen.query["page"])
        return Reply(200, page_body([make_record(p * 2 + i) for i in range(2)], total=6, page=p, page_count=3))

    srv, pager = _stub_pager(stub_server, make_client, responder, page_size=2)
    it = iter(pager)
    first = next(it)
    assert first.number == 0 and len(srv.requests) == 1
    rest = list(it)
    assert len(rest) == 2 and len(srv.requests) == 3
    assert pager.report.complete


def test_loop_guard(stub_server, make_client):
    def responder(seen):
        p = int(seen.query["page"])
        return Reply(200, page_body([make_record(p * 2 + i) for i in range(2)], total=100, page=p, page_count=None, next_page=p))

    srv, pager = _stub_pager(stub_server, make_client, responder, page_size=2)
    pages = list(pager)
    assert len(pages) == 1 and len(srv.requests) == 1
    r = pager.report
    assert not r.complete and "loop guard" in r.reason and r.stop == "loop guard"


def test_next_page_jump_is_not_followed(stub_server, make_client):
    def responder(seen):
        p = int(seen.query["page"])
        return Reply(200, page_body([make_record(p * 2 + i) for i in range(2)], total=6, page=p, page_count=3, next_page=p + 5 if p < 2 else None))

    srv, pager = _stub_pager(stub_server, make_client, responder, page_size=2)
    assert [p.number for p in pager] == [0, 1, 2]
    assert pager.report.complete


def test_page_count_stops(stub_server, make_client):
    def responder(seen):  # always says there is a next page; pageCount says 2
        p = int(seen.query["page"])
        return Reply(200, page_body([make_record(p * 2 + i) for i in range(2)], total=4, page=p, page_count=2, next_page=p + 1))

    srv, pager = _stub_pager(stub_server, make_client, responder, page_size=2)
    assert [p.number for p in pager] == [0, 1]
    assert pager.report.complete and pager.report.stop == "last page per pageCount"


def test_next_page_absent_stops(stub_server, make_client):
    def responder(seen):
        p = int(seen.query["page"])
        return Reply(200, page_body([make_record(p * 2 + i) for i in range(2)], total=6, page=p, page_count=3, omit_next=True))

    srv, pager = _stub_pager(stub_server, make_client, responder, page_size=2)
    assert [p.number for p in pager] == [0]
    r = pager.report
    assert r.stop == "nextPage absent" and not r.complete and "total is 6" in r.reason


def test_max_pages_guard(stub_server, make_client):
    def responder(seen):  # an endless API: full pages, nextPage always ahead, no pageCount
        p = int(seen.query["page"])
        return Reply(200, page_body([make_record(p * 2 + i) for i in range(2)], total=None, page=p, page_count=None, next_page=p + 1))

    srv, pager = _stub_pager(stub_server, make_client, responder, page_size=2, max_pages=5)
    assert len(list(pager)) == 5 and len(srv.requests) == 5
    r = pager.report
    assert not r.complete and "max_pages" in r.reason


def test_no_pagination_object_complete_when_loop_ends(stub_server, make_client):
    def responder(seen):
        p = int(seen.query["page"])
        n = 2 if p < 2 else 1
        return Reply(200, {"installations": [make_record(p * 2 + i) for i in range(n)]})

    srv, pager = _stub_pager(stub_server, make_client, responder, page_size=2)
    pages = list(pager)
    assert [p.number for p in pages] == [0, 1, 2] and pages[0].total is None
    r = pager.report
    assert r.complete and r.total_first is None and r.distinct_ids == 5 and r.stop == "short page"


def test_dedup_across_pages_and_records_without_id(stub_server, make_client):
    bodies = {
        0: [make_record(1), make_record(2), make_record(3)],
        1: [make_record(3), {"appId": "no id"}, {"id": 42}, make_record(4)],
        2: [make_record(1)],
    }

    def responder(seen):
        p = int(seen.query["page"])
        return Reply(200, page_body(bodies[p], total=4, page=p, page_count=None if p < 2 else 3, next_page=p + 1 if p < 2 else None))

    srv, pager = _stub_pager(stub_server, make_client, responder, page_size=3)
    pages = list(pager)
    assert [len(p.records) for p in pages] == [3, 3, 0]
    assert [p.received for p in pages] == [3, 4, 1]
    assert {"appId": "no id"} in pages[1].records and {"id": 42} in pages[1].records
    r = pager.report
    assert r.duplicates == 2 and r.records_without_id == 2 and r.distinct_ids == 4
    assert r.complete  # 4 distinct == total 4


@pytest.mark.parametrize(
    "body,expected",
    [
        ([1, 2], "answer is a JSON list"),
        ({"installations": {"a": 1}}, "'installations' is a dict"),
        ({"pagination": {}}, "'installations' is missing"),
    ],
)
def test_bad_envelope_is_snapshot_error(stub_server, make_client, body, expected):
    srv, pager = _stub_pager(stub_server, make_client, lambda s: Reply(200, body), page_size=2)
    with pytest.raises(ICRSnapshotError) as ei:
        list(pager)
    assert expected in str(ei.value) and "page=0" in str(ei.value)
    assert len(srv.requests) == 1  # valid JSON with a wrong shape is not retried
    assert not pager.report.complete


def test_pager_validates_arguments(make_client):
    c = make_client("http://127.0.0.1:1")
    with pytest.raises(ValueError):
        InstallationPager(c, page_size=0)
    with pytest.raises(ValueError):
        InstallationPager(c, concurrency=0)
    assert InstallationPager(c).report.reason == "not iterated yet"


# --------------------------------------------------------------------------- SeenIds


def test_seen_ids_semantics():
    s = SeenIds(merge_every=3)
    assert s.add_batch(["a", "b", "a"]) == [True, True, False]
    assert s.add_batch(["c", "d", "b"]) == [True, True, False]  # merge happened in between
    s.compact()
    assert s.add_batch(["e", "a", "e"]) == [True, False, False]
    assert len(s) == 5 and "a" in s and "z" not in s and 42 not in s


def test_seen_ids_million_ids_compact():
    s = SeenIds()
    batch = 50_000
    for start in range(0, 1_000_000, batch):
        flags = s.add_batch([f"00000000-0000-4000-8000-{i:012d}" for i in range(start, start + batch)])
        assert all(flags)
    s.compact()
    assert len(s) == 1_000_000
    assert s.nbytes < 30 * 1024 * 1024
    assert s.add_batch(["00000000-0000-4000-8000-000000123456", "new-id"]) == [False, True]


@needs_simulator
def test_long_paging_remints_jwt_before_expiry(make_simulator, make_client):
    """Each page 'takes' 200 s (server and client clocks jump together): the first JWT would
    expire after ~3 pages; the client re-mints ahead of time and ICR never answers 401."""
    import time as _time

    sim = make_simulator(installations=1000)
    offset = {"s": 0.0}
    auth = AppJWT(sim.app_id, load_private_key(sim.private_key_pem), clock=lambda: _time.time() + offset["s"])

    def jump(s, page):
        offset["s"] += 200
        s.faults.clock_offset_s = offset["s"]

    sim.faults.mutate_while_paging = jump
    client = make_client(sim.base_url, auth)
    pager = InstallationPager(client, page_size=100)
    _, ids = _collect(pager)
    assert len(ids) == 1000 and pager.report.complete
    assert sim.stats["tokens_rejected"] == 0 and client.stats.retries == 0
    assert auth.minted == 3 and client.stats.tokens_minted == 3  # pages at t=0..1600 s: mints at 0, 600, 1200


# --------------------------------------------------------------------------- bounds (issue 19.2/19.4/19.5)


@pytest.mark.parametrize("field, value, shown", [
    ("total", -1, "-1"), ("total", 2**31, str(2**31)), ("total", 10**400, "401 digits"), ("total", 1.5, "1.5"),
    ("total", True, "True"), ("pageCount", "many", "'many'"), ("currentPage", -2, "-2"), ("nextPage", [1], "[1]"),
])
def test_absurd_pagination_numbers_fail_when_the_page_arrives(stub_server, make_client, field, value, shown):
    def responder(seen):
        body = page_body([make_record(1), make_record(2)], total=2, page=0, page_count=1)
        body["pagination"][field] = value
        return Reply(200, json.dumps(body).encode())

    srv, pager = _stub_pager(stub_server, make_client, responder, page_size=2)
    with pytest.raises(ICRSnapshotError) as ei:
        list(pager)
    assert f"pagination.{field}" in str(ei.value) and "page=0" in str(ei.value) and shown in str(ei.value)
    assert len(srv.requests) == 1


def test_the_largest_sane_total_is_accepted(stub_server, make_client):
    srv, pager = _stub_pager(stub_server, make_client, lambda s: Reply(200, page_body(
        [make_record(1)], total=2**31 - 1, page=0, page_count=None, next_page=None)), page_size=2)
    assert [p.total for p in pager] == [2**31 - 1]


def test_full_pages_past_the_announced_total_fail(stub_server, make_client):
    def responder(seen):  # new ids on every page, total stays 4, nextPage always ahead
        p = int(seen.query["page"])
        return Reply(200, page_body([make_record(p * 2 + i) for i in range(2)], total=4, page=p, page_count=None,
                                    next_page=p + 1))

    srv, pager = _stub_pager(stub_server, make_client, responder, page_size=2,
                             limits=PagingLimits(extra_pages=3, extra_share=0.0))
    with pytest.raises(ICRSnapshotError) as ei:
        list(pager)
    assert "pagination.total=4" in str(ei.value) and "at most 5 pages" in str(ei.value)
    assert len(srv.requests) == 5  # 2 announced + 3 margin


def test_the_margin_grows_with_the_total(stub_server, make_client):
    limits = PagingLimits(extra_pages=2, extra_share=0.10)
    assert limits.allowed_pages(10) == 12 and limits.allowed_pages(1000) == 1100


def test_full_pages_of_known_ids_fail(stub_server, make_client):
    def responder(seen):  # always the same two installations, nextPage always ahead, no total
        p = int(seen.query["page"])
        return Reply(200, page_body([make_record(1), make_record(2)], total=None, page=p, page_count=None,
                                    next_page=p + 1))

    srv, pager = _stub_pager(stub_server, make_client, responder, page_size=2, limits=PagingLimits(max_repeat_pages=2))
    with pytest.raises(ICRSnapshotError) as ei:
        list(pager)
    assert "2 full pages in a row brought no new installation id" in str(ei.value)
    assert len(srv.requests) == 3


def test_concurrent_paging_does_not_trust_an_absurd_page_count(stub_server, make_client):
    def responder(seen):
        p = int(seen.query["page"])
        items = [make_record(p * 2 + i) for i in range(2)] if p < 2 else []
        return Reply(200, page_body(items, total=4, page=p, page_count=2**31 - 1, next_page=p + 1))

    srv, pager = _stub_pager(stub_server, make_client, responder, page_size=2, concurrency=3,
                             limits=PagingLimits(extra_pages=2, extra_share=0.0))
    pages = list(pager)
    assert sum(len(p.records) for p in pages) == 4
    assert len(srv.requests) == 4  # 2 announced by total + 2 margin, not 2^31 - 1


def test_limit_too_high_is_retried_once_with_the_api_maximum(stub_server, make_client, caplog):
    def responder(seen):
        limit, p = int(seen.query["limit"]), int(seen.query["page"])
        if limit > 2:
            return Reply(400, {"statusCode": 400, "message": ["limit must not be greater than 2"],
                               "error": "Bad Request"})
        n = 2 if p < 2 else 1
        return Reply(200, page_body([make_record(p * 2 + i) for i in range(n)], total=5, page=p, page_count=3))

    srv, pager = _stub_pager(stub_server, make_client, responder, page_size=5)
    _, ids = _collect(pager)
    assert len(ids) == 5 and pager.report.complete and pager.page_size == 2
    assert [r.query["limit"] for r in srv.requests] == ["5", "2", "2", "2"]
    assert "retrying once with page size 2" in caplog.text


def test_limit_too_high_is_not_retried_twice(stub_server, make_client):
    srv, pager = _stub_pager(stub_server, make_client, lambda s: Reply(
        400, {"statusCode": 400, "message": "limit must not be greater than 3", "error": "Bad Request"}), page_size=5)
    with pytest.raises(ICRAPIError) as ei:
        list(pager)
    assert ei.value.status == 400 and len(srv.requests) == 2


def test_a_hostile_record_reaches_the_page_as_a_bad_record(stub_server, make_client):
    good = json.dumps(make_record(1)).encode()
    body = b'{"pagination":{"total":2},"installations":[' + good + b',{"id":"x","n":1e400}]}'
    srv, pager = _stub_pager(stub_server, make_client, lambda s: Reply(200, body), page_size=5)
    (page,) = list(pager)
    assert page.records[0] == make_record(1)
    assert type(page.records[1]).__name__ == "BadRecord" and "page=0" in page.records[1].reason
    assert len(srv.requests) == 1  # not retried: the page was read


# --------------------------------------------------------------------------- one installation by id


@pytest.mark.parametrize("extra, words", [
    (b"[" * 1500 + b"]" * 1500, "nested"),
    (b'"\\ud800"', "lone surrogate"),
    (b"1e400", "beyond the range of a double"),
])
def test_fetch_installation_rejects_an_unreadable_answer(stub_server, make_client, extra, words):
    """The by-id recovery of skipped installations gets a reject, not a retried 'bad JSON'."""
    from icr.normalize import BadRecord, normalize_records
    from icr.paging import fetch_installation

    rec = make_record(1)
    body = json.dumps(rec).encode()[:-1] + b',"hostile":' + extra + b"}"
    srv = stub_server(lambda seen: Reply(body=body))
    client = make_client(srv.base_url, max_retries=3)
    got = fetch_installation(client, rec["id"])
    assert isinstance(got, BadRecord) and len(srv.requests) == 1
    chunk = normalize_records([got])
    (reject,) = chunk.rejects
    assert reject.installation_id == rec["id"] and words in reject.reason
    assert f"/app/installations/{rec['id']}" in reject.reason


def test_fetch_installation_reads_a_good_answer_and_retries_a_cut_one(stub_server, make_client):
    from icr.paging import fetch_installation

    rec = make_record(2)
    answers = [json.dumps(rec).encode()[:40], json.dumps(rec).encode()]
    srv = stub_server(lambda seen: Reply(body=answers.pop(0)))
    client = make_client(srv.base_url, max_retries=3, backoff_base_s=0.01)
    assert fetch_installation(client, rec["id"]) == rec and len(srv.requests) == 2
