"""benchmarks.compare: the verdicts follow each metric's direction and the threshold."""

from __future__ import annotations

import copy
import json

import pytest

from benchmarks import compare


def _result(e2e: float = 10.0, rss: float = 250.0, rewritten: int = 0, speedup: float = 1.5,
            stock_met: bool = False, size: int = 1000) -> dict:
    return {
        "meta": {"started_at": "2026-11-28T00:00:00+00:00", "cpus": 2, "page_size": 100, "concurrency": 1,
                 "pg_version": "15", "loadavg_before": [0.1, 0.1, 0.1]},
        "sizes": [{
            "installations": size,
            "sync": {"end_to_end_seconds": e2e, "peak_rss_mb": rss, "api_requests": 10,
                     "server_io": {"wal_mb": 5.0}},
            "derived": {"stages": {name: {"seconds": 1.0} for name in ("fetch", "normalize", "stage", "merge")},
                        "floor": {"seconds": 4.0}, "e2e_over_floor": e2e / 4.0, "speedup_vs_stock": speedup,
                        "rerun_no_change": {"speedup_vs_stock": 2.0}},
            "rerun_no_change": {"end_to_end_seconds": 5.0, "state": {"rewritten": rewritten}},
            "rerun_changes": {"end_to_end_seconds": 6.0, "state": {"rewritten": 15}},
        }],
        "concurrency": {"serial": {"seconds": 4.0}, "concurrent": {"seconds": 1.0}, "speedup": 4.0},
        "targets": [{"target": f"normalize+load vs stock @ {size:,}", "value": speedup, "goal": ">= 2.5x",
                     "met": stock_met}],
    }


def _verdicts(old: dict, new: dict, threshold: float = 0.10) -> dict[str, str]:
    _, rows = compare.compare(old, new, threshold)
    return {r.label.strip(): r.verdict for r in rows}


def test_same_result_has_no_verdicts():
    old = _result()
    text, rows = compare.compare(old, copy.deepcopy(old))
    assert rows and all(r.verdict == "" for r in rows)
    assert "targets: no status changed" in text


def test_slower_and_bigger_are_worse_faster_is_better_small_moves_are_ignored():
    v = _verdicts(_result(e2e=10.0, rss=250.0), _result(e2e=12.0, rss=260.0))
    assert v["end to end s (sync #1)"] == "WORSE"
    assert v["end to end / floor"] == "WORSE"
    assert v["peak RSS MB"] == ""  # +4% is within the 10% threshold
    v = _verdicts(_result(e2e=10.0), _result(e2e=8.0))
    assert v["end to end s (sync #1)"] == "better"
    assert _verdicts(_result(e2e=10.0), _result(e2e=10.5), threshold=0.01)["end to end s (sync #1)"] == "WORSE"


def test_higher_is_better_metrics_and_counts_leaving_zero():
    v = _verdicts(_result(speedup=1.5), _result(speedup=3.0))
    assert v["normalize+load vs stock (x)"] == "better"
    v = _verdicts(_result(speedup=1.5), _result(speedup=1.0))
    assert v["normalize+load vs stock (x)"] == "WORSE"
    # a no-change rerun that starts rewriting rows is a regression, however few
    assert _verdicts(_result(rewritten=0), _result(rewritten=3))["no-change rerun rows rewritten"] == "WORSE"
    assert _verdicts(_result(rewritten=3), _result(rewritten=0))["no-change rerun rows rewritten"] == "better"


def test_target_status_changes_and_unlike_runs_are_reported():
    old = _result(speedup=1.5, stock_met=False)
    new = _result(speedup=3.0, stock_met=True)
    new["meta"]["cpus"] = 8
    text, _ = compare.compare(old, new)
    assert "normalize+load vs stock @ 1,000: MISS -> MET" in text
    assert "cpus differs (2 vs 8)" in text


def test_sizes_measured_by_one_run_only_are_listed_not_compared():
    text, rows = compare.compare(_result(size=1000), _result(size=2000))
    assert "no size was measured by both runs" in text
    assert "1,000, 2,000" in text
    assert all(not r.label.startswith("end to end") for r in rows)


def test_cli_exit_code_and_clear_errors(tmp_path, capsys):
    old, new, bad = tmp_path / "old.json", tmp_path / "new.json", tmp_path / "bad.json"
    old.write_text(json.dumps(_result(e2e=10.0)))
    new.write_text(json.dumps(_result(e2e=20.0)))
    bad.write_text('{"not": "a result"}')
    assert compare.main([str(old), str(new)]) == 0  # report only
    assert compare.main([str(old), str(new), "--fail-on-regression"]) == 1
    assert compare.main([str(old), str(old), "--fail-on-regression"]) == 0
    out = capsys.readouterr().out
    assert "worse beyond 10%: end to end s (sync #1)" in out
    with pytest.raises(SystemExit, match="bad.json is not a benchmark result"):
        compare.main([str(old), str(bad)])
    with pytest.raises(SystemExit, match="cannot read benchmark result .*missing.json"):
        compare.main([str(old), str(tmp_path / "missing.json")])


def test_a_different_sqlite_page_size_is_noted():
    """Results written before the field existed had SQLite's default 4 KB pages."""
    old, new = _result(), _result()
    lite = {"sync": {"end_to_end_seconds": 9.0, "peak_rss_mb": 200.0}, "rerun_no_change": {"end_to_end_seconds": 4.0}}
    old["sizes"][0]["sqlite"] = copy.deepcopy(lite)
    new["sizes"][0]["sqlite"] = {**copy.deepcopy(lite), "page_size": 16384}
    text, _ = compare.compare(old, new)
    assert "SQLite page size differs (4096 vs 16384 bytes)" in text
    old["sizes"][0]["sqlite"]["page_size"] = 16384
    text, _ = compare.compare(old, new)
    assert "page size differs" not in text
    del new["sizes"][0]["sqlite"]  # a run without SQLite: nothing to say
    text, _ = compare.compare(old, new)
    assert "page size differs" not in text
