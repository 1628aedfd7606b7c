"""The benchmark's smoke mode (2,000 installations, every section) runs and reports sane numbers."""

from __future__ import annotations

import json

import pytest

from tests.conftest import REQUIRE_PG

pytestmark = pytest.mark.slow


def _positive(value, where: str) -> None:
    assert isinstance(value, (int, float)) and value > 0, f"{where} = {value!r}, expected a positive number"


def test_benchmark_smoke(pg_admin_url: str, tmp_path) -> None:
    from benchmarks import run

    code = run.main(["--smoke", "--pg-url", pg_admin_url, "--results-dir", str(tmp_path)])
    assert code == 0
    files = sorted(tmp_path.glob("*-2000.json"))
    assert len(files) == 1, files
    result = json.loads(files[0].read_text())

    assert result["meta"]["page_size"] == 100
    (size,) = result["sizes"]
    assert size["installations"] == 2000
    d = size["derived"]
    for stage in ("fetch", "normalize", "stage", "merge"):
        _positive(d["stages"][stage]["seconds"], f"{stage} seconds")
        _positive(d["stages"][stage]["records_per_s"], f"{stage} records/s")
    for key in ("seconds", "records_per_s", "api_requests", "peak_rss_mb"):
        _positive(d["end_to_end"][key], f"end_to_end.{key}")
    assert d["end_to_end"]["api_requests"] >= 2000 // 100
    for key in ("fetch_only_seconds", "bare_copy_seconds", "seconds"):
        _positive(d["floor"][key], f"floor.{key}")
    assert size["fetch_only"]["records"] == 2000 and size["fetch_only"]["complete"]
    assert size["bare_copy"]["rows"] == 2000
    # every table the first load wrote: 2,000 installations and their history rows, their permissions
    # (icr_installation_daily is a view since migration 0011: no per-installation daily rows)
    tables = size["bare_copy_all_tables"]["tables"]
    assert tables["icr_installation_state"]["rows"] == tables["icr_installation_history"]["rows"] == 2000
    assert "icr_installation_daily" not in tables and "icr_installation_daily_archive" not in tables
    assert tables["icr_installation_permissions"]["rows"] > 2000
    assert d["floor_all_tables"]["seconds"] > d["floor"]["seconds"]
    # issue 21: the first load against a bare COPY of every table it wrote (the run log included)
    assert {"icr_sync_runs", "icr_daily_totals"} <= set(tables)
    first = d["first_load"]
    assert first["floor_seconds"] == pytest.approx(size["fetch_only"]["seconds"] + first["copy_seconds"])
    assert first["over_floor"] == pytest.approx(size["sync"]["end_to_end_seconds"] / first["floor_seconds"])
    # the nightly runs against fetch only; a no-change night normalizes nothing (decided by hash)
    quiet, changed = d["nightly"]["rerun_no_change"], d["nightly"]["rerun_changes"]
    assert quiet["unchanged_before_normalize"] == 2000 and quiet["normalize_seconds"] == 0
    assert 0 < changed["unchanged_before_normalize"] < 2000
    # against the faster of the first fetch-only pass and the one taken just before the run
    floor = min(size["fetch_only"]["seconds"], size["rerun_no_change"]["fetch_only_next_to_it"]["seconds"])
    assert quiet["fetch_only_seconds"] == floor
    assert quiet["over_fetch_only"] == pytest.approx(size["rerun_no_change"]["end_to_end_seconds"] / floor)
    # a no-change night writes the run row and the date's per-day counts, no row per installation
    assert 0 < quiet["rows_written"] < 2000
    written = size["rerun_no_change"]["warehouse"]["rows_written_by_table"]
    assert set(written) <= {"icr_sync_runs", "icr_daily_totals", "icr_daily_org_counts", "icr_daily_type_counts",
                            "icr_daily_country_counts", "icr_daily_permission_counts"}, written
    by_name = {t["target"]: t for t in result["targets"]}
    for name in ("nightly, no change: end to end / fetch only @ 2,000",
                 "nightly, 1% changed 0.5% removed: end to end / fetch only @ 2,000",
                 "nightly, no change: storage growth @ 2,000 (MB)", "first load: end to end / its floor @ 2,000",
                 "nightly, no change: ours vs stock @ 2,000"):
        assert by_name[name]["met"] in (True, False), name
    assert by_name["ours vs dlt rest_api, first load @ 2,000"]["value"] == "not run"  # --smoke skips dlt
    assert size["sync"]["server_io"]["wal_mb"] > 0
    _positive(d["stock_normalize_load_seconds_extrapolated"], "stock seconds")
    _positive(d["speedup_vs_stock"], "speedup vs stock")
    _positive(d["proxy"]["speedup_vs_stock"], "speedup vs stock via proxy")
    _positive(d["rerun_no_change"]["speedup_vs_stock"], "speedup vs stock on the no-change rerun")
    assert "no-change rerun (the nightly case)" in result["table"]
    # ours measured like the stock path, on the same sample of records in memory, every record staged
    ours = size["stock"]["ours_same_records"]
    assert ours["rows"] == size["stock"]["sample"] == 2000
    same = d["same_records"]
    _positive(same["ours_normalize_stage_seconds_extrapolated"], "ours on the same records")
    assert same["ours_normalize_load_seconds"] == pytest.approx(
        same["ours_normalize_stage_seconds_extrapolated"] + size["sync"]["load_wall"])
    _positive(same["speedup_vs_stock"], "speedup vs stock on the same records")
    _positive(d["proxy"]["same_records"]["speedup_vs_stock"], "same, via proxy")
    (target,) = [t for t in result["targets"] if t["target"] == "normalize+load vs stock @ 2,000"]
    assert target["value"] == round(same["speedup_vs_stock"], 1)
    assert "both on the same 2,000 records in memory" in result["table"]

    # first sync inserts everything; the no-change rerun rewrites nothing; the stock rerun rewrites all
    assert size["sync"]["state"]["ins"] == 2000
    assert size["rerun_no_change"]["state"]["rewritten"] == 0
    assert size["rerun_no_change"]["verify"]["unchanged"] == 2000
    assert size["stock"]["rerun_rewritten"] == size["stock"]["sample"] == 2000
    changes = size["rerun_changes"]
    assert changes["state"]["rewritten"] == changes["changes"]["updated"] + changes["changes"]["removed"]
    _positive(changes["end_to_end_seconds"], "changes run seconds")

    # the same three syncs into an SQLite file (the default warehouse)
    lite = size["sqlite"]
    # it starts from what the API lists after PostgreSQL's three syncs
    assert lite["sync"]["written"]["ins"] == size["rerun_changes"]["verify"]["active_after"] > 0
    assert lite["rerun_no_change"]["written"] == {"ins": 0, "upd": 0, "del": 0, "rewritten": 0}
    assert lite["rerun_changes"]["written"]["rewritten"] == sum(lite["rerun_changes"]["changes"].values())
    for key in ("sync", "rerun_no_change", "rerun_changes"):
        _positive(lite[key]["end_to_end_seconds"], f"SQLite {key} seconds")
        _positive(lite[key]["peak_rss_mb"], f"SQLite {key} peak RSS")
    assert lite["sync"]["file_growth_bytes"] > 0
    (target,) = [t for t in result["targets"] if t["target"] == "SQLite no-change rerun rows rewritten @ 2,000"]
    assert target["met"] is True
    from icr.warehouse.engine import SQLITE_PAGE_SIZE

    assert lite["page_size"] == SQLITE_PAGE_SIZE
    assert f"SQLite (the default warehouse, {SQLITE_PAGE_SIZE // 1024} KB pages)" in result["table"]

    # CPU seconds per process for the fetch floor and sync #1's steps (PostgreSQL's when it is local)
    steps = {c["step"]: c for c in d["cpu"]}
    assert list(steps) == ["floor: fetch only", "sync #1 extract", "sync #1 merge", "sync #2 (no change) extract",
                           "sync #2 (no change) merge", "SQLite sync #1 extract", "SQLite sync #1 load"]
    for step in ("floor: fetch only", "sync #1 extract", "SQLite sync #1 extract"):
        _positive(steps[step]["process"], f"{step}: worker CPU seconds")
        assert steps[step]["simulator"] is not None and steps[step]["simulator"] >= 0
        _positive(steps[step]["cpus_busy"], f"{step}: CPUs busy")
    assert steps["SQLite sync #1 extract"]["postgresql"] is None  # not asked for: no server involved
    if steps["sync #1 merge"]["postgresql"] is None:  # a server elsewhere: its processes are not visible
        assert not REQUIRE_PG, "CI's PostgreSQL runs on this machine: its CPU seconds must be measured"
    else:  # the staging COPY and the merge run in the server
        _positive(steps["sync #1 extract"]["postgresql"], "sync #1 extract: PostgreSQL CPU seconds")
        _positive(steps["sync #1 merge"]["postgresql"], "sync #1 merge: PostgreSQL CPU seconds")
        bound = d["cpu_bound"]
        ext = steps["sync #1 extract"]
        assert bound["extract_cpu_seconds"] == pytest.approx(ext["process"] + ext["postgresql"] + ext["simulator"])
        assert bound["seconds"] == pytest.approx(
            bound["extract_cpu_seconds"] / bound["cpus"] + size["sync"]["end_to_end_seconds"] - size["sync"]["extract_wall"])
        assert 0 < bound["seconds"] <= size["sync"]["end_to_end_seconds"] * 1.05  # a bound, not above the measured
        assert "least end to end this work allows here" in result["table"]
    assert "CPU seconds (user+sys)" in result["table"]

    conc = result["concurrency"]
    _positive(conc["speedup"], "concurrency speedup")
    limited = conc["with_429"]["result"]
    assert limited["complete"] and limited["records"] == 2000
    assert limited["client_stats"]["retries"] >= 1
    assert {t["target"] for t in result["targets"]}
    assert "end to end" in result["table"]

    # benchmarks.compare reads every headline number of a real result (guards against drift
    # between what run.py writes and what compare.py looks up)
    from benchmarks import compare

    text, rows = compare.compare(result, result)
    found = {r.label for r in rows if r.old is not None}
    expected = {m.label for m in compare.SIZE_METRICS + compare.CONCURRENCY_METRICS}
    assert found == expected, f"compare could not find: {sorted(expected - found)}"
    assert all(r.verdict == "" for r in rows) and "== 2,000 installations ==" in text
