"""Derived numbers of one size's raw measurements: stages, floors, ratios, CPU rows."""

from __future__ import annotations

import os
from typing import Any

from benchmarks import cpu



def _stock_seconds(stock: dict[str, Any], run: str, n: int) -> float:
    """The stock sample's ``run`` (its first load or its no-change rerun), extrapolated linearly to ``n``."""
    return (stock[run]["normalize_seconds"] + stock[run]["load_seconds"]) * n / stock["sample"]


def _against_stock(ours: float, theirs: float, stock: dict[str, Any]) -> dict[str, Any]:
    return {"ours_normalize_load_seconds": ours, "stock_normalize_load_seconds_extrapolated": theirs,
            "stock_sample": stock["sample"], "speedup_vs_stock": theirs / ours if ours else None}


def _vs_stock(sync: dict[str, Any], stock: dict[str, Any], run: str, n: int) -> dict[str, Any]:
    """Our normalize + stage + merge of one sync against the stock sample's ``run``."""
    ex = sync["extract"]
    ours = ex["normalize_seconds"] + ex["stage_seconds"] + sync["load_wall"]
    return _against_stock(ours, _stock_seconds(stock, run, n), stock)


def _same_records(sync: dict[str, Any], stock: dict[str, Any], n: int) -> dict[str, Any] | None:
    """Ours against the stock path measured the same way: both normalize and stage the sample's
    records from memory (no fetching beside them), extrapolated linearly to ``n``; ours adds the
    merge, measured at full size in ``sync``. None if the stock worker did not measure ours."""
    o = stock.get("ours_same_records")
    if not o:
        return None
    ours_stage = (o["normalize_seconds"] + o["stage_seconds"]) * n / stock["sample"]
    return {"ours_normalize_stage_seconds_extrapolated": ours_stage, "merge_seconds": sync["load_wall"],
            **_against_stock(ours_stage + sync["load_wall"], _stock_seconds(stock, "first", n), stock)}


def _cpu_rows(size: dict[str, Any]) -> list[dict[str, Any]]:
    """CPU seconds per process over the floor's fetch and sync #1's two steps (and SQLite's):
    which process a step waited on, and how much of the machine it left idle."""
    # (label, the worker's result, its cpu_seconds entry — None: the whole of it —, its wall time)
    steps = [("floor: fetch only", size["fetch_only"], None, "seconds"),
             ("sync #1 extract", size["sync"], "extract", "extract_wall"),
             ("sync #1 merge", size["sync"], "load", "load_wall")]
    if size.get("rerun_no_change"):  # the nightly case
        steps += [("sync #2 (no change) extract", size["rerun_no_change"], "extract", "extract_wall"),
                  ("sync #2 (no change) merge", size["rerun_no_change"], "load", "load_wall")]
    lite = (size.get("sqlite") or {}).get("sync")
    if lite:
        steps += [("SQLite sync #1 extract", lite, "extract", "extract_wall"),
                  ("SQLite sync #1 load", lite, "load", "load_wall")]
    rows = []
    for label, run, key, wall_key in steps:
        seconds = run.get("cpu_seconds") or {}
        seconds = seconds if key is None else seconds.get(key)
        if not seconds:  # a result file from before the benchmark measured CPU
            continue
        wall = run[wall_key]
        rows.append({"step": label, "wall_seconds": wall, **seconds, "cpus_busy": cpu.busy(seconds, wall)})
    return rows


def _cpu_bound(size: dict[str, Any], rows: list[dict[str, Any]], floor: float) -> dict[str, Any] | None:
    """The least end-to-end time today's work allows on this machine: the extract's CPU seconds
    (worker, PostgreSQL, simulator) spread perfectly over every CPU, plus the merge and the
    other steps as measured (the merge is one transaction after the extract, one backend)."""
    extract = next((r for r in rows if r["step"] == "sync #1 extract"), None)
    cpus = os.cpu_count() or 1
    if not extract or any(extract[k] is None for k in ("process", "postgresql", "simulator")):
        return None
    s = size["sync"]
    total = extract["process"] + extract["postgresql"] + extract["simulator"]
    rest = s["end_to_end_seconds"] - s["extract_wall"]
    bound = total / cpus + rest
    return {"extract_cpu_seconds": total, "cpus": cpus, "extract_spread_seconds": total / cpus,
            "rest_seconds": rest, "seconds": bound, "over_floor": bound / floor if floor else None}


def derive(size: dict[str, Any]) -> dict[str, Any]:
    n = size["installations"]
    s = size["sync"]
    ex = s["extract"]
    rate = lambda secs: (n / secs) if secs else None  # noqa: E731
    floor = size["fetch_only"]["seconds"] + size["bare_copy"]["seconds"]
    all_tables = size.get("bare_copy_all_tables")
    floor_all = size["fetch_only"]["seconds"] + all_tables["seconds"] if all_tables else None
    d: dict[str, Any] = {
        "stages": {
            "fetch": {"seconds": s["extract_wall"], "records_per_s": rate(s["extract_wall"])},
            "normalize": {"seconds": ex["normalize_seconds"], "records_per_s": rate(ex["normalize_seconds"])},
            "stage": {"seconds": ex["stage_seconds"], "records_per_s": rate(ex["stage_seconds"])},
            "merge": {"seconds": s["load_wall"], "records_per_s": rate(s["load_wall"])},
        },
        "end_to_end": {"seconds": s["end_to_end_seconds"], "records_per_s": rate(s["end_to_end_seconds"]),
                       "api_requests": s["api_requests"], "peak_rss_mb": s["peak_rss_mb"]},
        "floor": {"fetch_only_seconds": size["fetch_only"]["seconds"],
                  "bare_copy_seconds": size["bare_copy"]["seconds"], "seconds": floor,
                  "fetch_only_peak_rss_mb": size["fetch_only"]["peak_rss_mb"]},
        "e2e_over_floor": s["end_to_end_seconds"] / floor if floor else None,
        "floor_all_tables": ({
            "seconds": floor_all,
            "bare_copy_seconds": all_tables["seconds"],
            "rows": all_tables["rows"],
            "e2e_over_floor": s["end_to_end_seconds"] / floor_all,
        } if all_tables else None),
        **_vs_stock(s, size["stock"], "first", n),
        "same_records": _same_records(s, size["stock"], n),
    }
    d["first_load"] = _first_load(size)
    d["nightly"] = {key: _nightly(size, key) for key in ("rerun_no_change", "rerun_changes")}
    if size.get("dlt"):
        d["dlt"] = _against_dlt(size)
    d["cpu"] = _cpu_rows(size)
    d["cpu_bound"] = _cpu_bound(size, d["cpu"], floor)
    # The nightly case: nothing changed. Ours reads, compares and writes the daily snapshot;
    # the stock path upserts (rewrites) every row again.
    if size.get("rerun_no_change") and "rerun" in size["stock"]:
        d["rerun_no_change"] = _vs_stock(size["rerun_no_change"], size["stock"], "rerun", n)
    if "proxy" in size:
        p = size["proxy"]
        d["proxy"] = {**_vs_stock(p["sync"], p["stock"], "first", n),
                      "end_to_end_seconds": p["sync"]["end_to_end_seconds"],
                      "same_records": _same_records(p["sync"], p["stock"], n)}
    return d



def _first_load(size: dict[str, Any]) -> dict[str, Any] | None:
    """Sync #1 against its own floor: fetch only + a bare COPY of exactly the rows it wrote into
    every one of its tables."""
    tables = size.get("bare_copy_all_tables")
    if not tables:
        return None
    floor = size["fetch_only"]["seconds"] + tables["seconds"]
    e2e = size["sync"]["end_to_end_seconds"]
    return {"seconds": e2e, "floor_seconds": floor, "copy_seconds": tables["seconds"], "rows": tables["rows"],
            "tables": len(tables["tables"]), "over_floor": e2e / floor if floor else None}


def _nightly(size: dict[str, Any], key: str) -> dict[str, Any] | None:
    """A nightly run (no change, or 1% changed and 0.5% removed) against the fetch-only floor, and
    what it wrote: rows over every icr_* table and their growth in bytes. The floor is the faster
    of the size's first fetch-only pass and the one taken just before this run: this machine's
    speed drifts between runs (the same fetch took 12.5 s and 24.1 s in two runs an hour apart),
    and the faster floor never flatters the ratio."""
    run = size.get(key)
    if not run:
        return None
    passes = [size["fetch_only"]["seconds"], *([run["fetch_only_next_to_it"]["seconds"]]
                                               if run.get("fetch_only_next_to_it") else [])]
    fetch = min(passes)
    wrote = run.get("warehouse") or {}
    return {"seconds": run["end_to_end_seconds"], "fetch_only_seconds": fetch, "fetch_only_passes": passes,
            "over_fetch_only": run["end_to_end_seconds"] / fetch if fetch else None,
            "rows_written": wrote.get("rows_written"), "size_growth_bytes": wrote.get("size_growth_bytes"),
            "extract_seconds": run["extract_wall"], "load_seconds": run["load_wall"],
            "hash_seconds": run["extract"].get("hash_seconds"), "normalize_seconds": run["extract"].get("normalize_seconds"),
            "unchanged_before_normalize": run["extract"].get("unchanged_before_normalize")}


def _against_dlt(size: dict[str, Any]) -> dict[str, Any]:
    """dlt's rest_api pipeline (its ``pipeline.run`` wall time) against our end to end, first load
    and no-change rerun."""
    dlt = size["dlt"]
    ours_first, ours_rerun = size["sync"]["end_to_end_seconds"], size["rerun_no_change"]["end_to_end_seconds"]
    return {"first": {"dlt_seconds": dlt["first"]["seconds"], "ours_seconds": ours_first,
                      "speedup": dlt["first"]["seconds"] / ours_first},
            "rerun": {"dlt_seconds": dlt["rerun"]["seconds"], "ours_seconds": ours_rerun,
                      "speedup": dlt["rerun"]["seconds"] / ours_rerun}}
