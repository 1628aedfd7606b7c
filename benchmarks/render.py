"""The benchmark's table, as printed and as pasted into benchmarks/README.md."""

from __future__ import annotations

from typing import Any

from benchmarks.sections import RUNS

def _f(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _verdict(speedup: float) -> str:
    """Ours against stock in words that stay true when ours is the slower one."""
    if speedup >= 1:
        return f"ours {speedup:.1f}x faster"
    return f"ours {speedup:.2f}x as fast (stock {1 / speedup:.2f}x faster)"


def render(result: dict[str, Any]) -> str:
    lines: list[str] = []
    meta = result["meta"]
    lines.append(f"ICR sync benchmark — {meta['started_at']} — {meta['cpus']} CPUs, page size {meta['page_size']}, "
                 f"concurrency {meta['concurrency']}, PostgreSQL {meta['pg_version']}, "
                 f"load average before {meta['loadavg_before']}")
    for size in result["sizes"]:
        n, d = size["installations"], size["derived"]
        lines.append("")
        lines.append(f"== {n:,} installations ==")
        lines.append(f"{'stage':<34}{'seconds':>10}{'records/s':>12}")
        for name, st in d["stages"].items():
            lines.append(f"{name:<34}{_f(st['seconds'], 2):>10}{_f(st['records_per_s'], 0):>12}")
        e = d["end_to_end"]
        lines.append(f"{'end to end (migrate..cleanup)':<34}{_f(e['seconds'], 2):>10}{_f(e['records_per_s'], 0):>12}")
        lines.append(f"  API requests {e['api_requests']:,}; peak RSS {e['peak_rss_mb']:.0f} MB "
                     f"(fetch-only process {d['floor']['fetch_only_peak_rss_mb']:.0f} MB)")
        bd = size["sync"].get("breakdown_seconds") or {}
        if bd:
            top = ", ".join(f"{k.split(':', 1)[1]} {v:.2f}" for k, v in list(bd.items())[:6])
            lines.append(f"  slowest load steps (s): {top}")
        fl = d["floor"]
        lines.append(f"{'floor: fetch only':<34}{_f(fl['fetch_only_seconds'], 2):>10}"
                     f"{_f(n / fl['fetch_only_seconds'], 0):>12}")
        lines.append(f"{'floor: bare COPY FROM final rows':<34}{_f(fl['bare_copy_seconds'], 2):>10}"
                     f"{_f(n / fl['bare_copy_seconds'], 0):>12}")
        sio, bio = size["sync"].get("server_io"), size["bare_copy"].get("server_io")
        if sio and bio:
            lines.append(f"  PostgreSQL wrote {sio['wal_mb']:,.0f} MB of WAL in sync #1 ({sio['checkpoints']} checkpoints "
                         f"during it), {bio['wal_mb']:,.0f} MB in the bare COPY ({bio['checkpoints']} checkpoints)")
        lines.append(f"{'  one-table floor (reported)':<34}{_f(fl['seconds'], 2):>10}   end to end = "
                     f"{d['e2e_over_floor']:.2f} x that")
        lines.extend(_round_two_lines(size, d))
        if d.get("cpu"):
            lines.append(f"{'CPU seconds (user+sys)':<34}{'wall s':>8}{'worker':>9}{'PostgreSQL':>12}"
                         f"{'simulator':>11}{'CPUs busy':>11}")
            for c in d["cpu"]:
                lines.append(f"{c['step']:<34}{_f(c['wall_seconds'], 2):>8}{_f(c['process'], 2):>9}"
                             f"{_f(c['postgresql'], 2):>12}{_f(c['simulator'], 2):>11}{_f(c['cpus_busy'], 2):>11}")
            lines.append(f"  worker = the process running the fetch or the sync (all its threads); CPUs busy = "
                         f"the three together / wall, of {result['meta']['cpus']} CPUs")
        cb = d.get("cpu_bound")
        if cb:
            lines.append(f"  least end to end this work allows here: sync #1's extract, {cb['extract_cpu_seconds']:.2f} "
                         f"CPU-s, spread over all {cb['cpus']} CPUs = {cb['extract_spread_seconds']:.2f} s, + merge and "
                         f"other steps as measured {cb['rest_seconds']:.2f} s = {cb['seconds']:.2f} s = "
                         f"{cb['over_floor']:.2f} x floor")
        same = d.get("same_records")
        if same:
            lines.append(f"normalize+load, both on the same {same['stock_sample']:,} records in memory (extrapolated "
                         f"linearly): ours normalize+stage {same['ours_normalize_stage_seconds_extrapolated']:.2f} s "
                         f"+ merge {same['merge_seconds']:.2f} s (full size) = "
                         f"{same['ours_normalize_load_seconds']:.2f} s; stock json_normalize + "
                         f"PostgresHook.insert_rows(replace=True) {same['stock_normalize_load_seconds_extrapolated']:.2f} s "
                         f"-> {_verdict(same['speedup_vs_stock'])}")
        lines.append(f"normalize+stage+merge (ours, in the extract beside fetching) "
                     f"{d['ours_normalize_load_seconds']:.2f} s; stock json_normalize + "
                     f"PostgresHook.insert_rows(replace=True): {d['stock_normalize_load_seconds_extrapolated']:.2f} s "
                     f"(measured on {d['stock_sample']:,} rows, extrapolated linearly) -> "
                     f"{_verdict(d['speedup_vs_stock'])}")
        st = size["stock"]
        lines.append(f"  stock sample: first run normalize {st['first']['normalize_seconds']:.2f} s + insert_rows "
                     f"{st['first']['load_seconds']:.2f} s; no-change rerun {st['rerun']['normalize_seconds']:.2f} s + "
                     f"{st['rerun']['load_seconds']:.2f} s, rewrote {st['rerun_rewritten']:,} of {st['sample']:,} rows "
                     f"(n_tup_upd; hot {st['pg_stat_after_both_runs']['hot_upd']:,})")
        rr = d.get("rerun_no_change")
        if rr:
            lines.append(f"  no-change rerun (the nightly case): ours normalize+stage+merge "
                         f"{rr['ours_normalize_load_seconds']:.2f} s, stock "
                         f"{rr['stock_normalize_load_seconds_extrapolated']:.2f} s (extrapolated) -> "
                         f"{_verdict(rr['speedup_vs_stock'])}, and it rewrites no row")
        lines.append(f"{'run':<30}{'wall s':>9}{'rows rewritten':>16}{'ins/upd/del':>20}{'size growth':>14}")
        for label, key in RUNS:
            r = size[key]
            sd = r["state"]
            counts = f"{sd['ins']}/{sd['upd']}/{sd['del']}"
            lines.append(f"{label:<30}{_f(r['end_to_end_seconds'], 2):>9}{_f(sd['rewritten']):>16}"
                         f"{counts:>20}{_f(sd['size_growth_bytes'] / 1e6, 1) + ' MB':>14}")
        lite = size.get("sqlite")
        if lite:
            pages = f", {lite['page_size'] // 1024} KB pages" if lite.get("page_size") else ""
            lines.append(f"SQLite (the default warehouse{pages}), the same syncs into a file (rows: the load's counts):")
            lines.append(f"{'run':<30}{'wall s':>9}{'extract s':>11}{'load s':>9}{'peak RSS':>10}"
                         f"{'ins/upd/del':>20}{'file growth':>14}")
            for label, key in RUNS:
                r = lite[key]
                w = r["written"]
                counts = f"{w['ins']}/{w['upd']}/{w['del']}"
                lines.append(f"{label:<30}{_f(r['end_to_end_seconds'], 2):>9}{_f(r['extract_wall'], 2):>11}"
                             f"{_f(r['load_wall'], 2):>9}{_f(r['peak_rss_mb'], 0) + ' MB':>10}"
                             f"{counts:>20}{_f(r['file_growth_bytes'] / 1e6, 1) + ' MB':>14}")
        if "proxy" in d:
            p = d["proxy"]
            lines.append(f"via proxy (+{size['proxy']['delay_ms_each_way']} ms each way): ours normalize+load "
                         f"{p['ours_normalize_load_seconds']:.2f} s (end to end {p['end_to_end_seconds']:.2f} s), "
                         f"stock {p['stock_normalize_load_seconds_extrapolated']:.2f} s (measured on "
                         f"{p['stock_sample']:,} rows, extrapolated) -> {_verdict(p['speedup_vs_stock'])}")
            ps = p.get("same_records")
            if ps:
                lines.append(f"  via proxy, both on the same {ps['stock_sample']:,} records in memory: ours "
                             f"{ps['ours_normalize_load_seconds']:.2f} s, stock "
                             f"{ps['stock_normalize_load_seconds_extrapolated']:.2f} s -> "
                             f"{_verdict(ps['speedup_vs_stock'])}")
    conc = result.get("concurrency")
    if conc:
        lines.append("")
        lines.append(f"== fetch only, {conc['installations']:,} installations, {conc['latency_ms']} ms API latency ==")
        for label, key in (("concurrency 1", "serial"), (f"concurrency {conc['concurrent']['concurrency']}",
                                                          "concurrent")):
            r = conc[key]
            lines.append(f"{label:<34}{_f(r['seconds'], 2):>10}{_f(r['records'] / r['seconds'], 0):>12}")
        lines.append(f"speedup {conc['speedup']:.2f}x")
        w = conc["with_429"]
        r = w["result"]
        lines.append(f"with {w['injected']} injected 429s (random requests, Retry-After 1 s): {r['seconds']:.2f} s, complete="
                     f"{r['complete']}, {r['records']:,} records, client retries {r['client_stats']['retries']} "
                     f"{r['client_stats']['retries_by_reason']}, waited {r['client_stats']['wait_seconds']} s "
                     f"(other threads held by the shared gate {r['client_stats']['gate_waits']} times, "
                     f"{r['client_stats']['gate_wait_seconds']} s)")
    lines.append("")
    lines.append("== targets ==")
    for t in result["targets"]:
        mark = "n/a " if t["met"] is None else ("MET " if t["met"] else "MISS")
        lines.append(f"[{mark}] {t['target']:<58} {str(t['value']):>12}   goal {t['goal']}")
    return "\n".join(lines)



def _round_two_lines(size: dict[str, Any], d: dict[str, Any]) -> list[str]:
    """The first load against its own floor, the two nightly runs against fetch only, and dlt."""
    lines = []
    first = d.get("first_load")
    if first:
        lines.append(f"{'first-load floor':<34}{_f(first['floor_seconds'], 2):>10}   fetch only + bare COPY of the "
                     f"{first['rows']:,} rows it wrote into its {first['tables']} tables ({first['copy_seconds']:.2f} s); "
                     f"end to end = {first['over_floor']:.2f} x that")
        tables = size["bare_copy_all_tables"]["tables"]
        lines.append("  bare COPY per table (s): " + ", ".join(
            f"{t} {p['rows']:,} rows {p['seconds']:.2f}" for t, p in tables.items()))
    lines.append(f"{'nightly run':<30}{'wall s':>8}{'/ fetch only':>13}{'extract s':>10}{'load s':>8}"
                 f"{'hash s':>8}{'normalize s':>12}{'kept':>10}{'rows written':>14}{'growth':>11}")
    for key, label in (("rerun_no_change", "no change"), ("rerun_changes", "1% changed, 0.5% removed")):
        night = d.get("nightly", {}).get(key)
        if night:
            growth = night["size_growth_bytes"]
            lines.append(f"{'  ' + label:<30}{_f(night['seconds'], 2):>8}{_f(night['over_fetch_only'], 2):>13}"
                         f"{_f(night['extract_seconds'], 2):>10}{_f(night['load_seconds'], 2):>8}"
                         f"{_f(night['hash_seconds'], 2):>8}{_f(night['normalize_seconds'], 2):>12}"
                         f"{_f(night['unchanged_before_normalize']):>10}{_f(night['rows_written']):>14}"
                         f"{_f(None if growth is None else growth / 1e6, 2) + ' MB':>11}")
    quiet = size.get("rerun_no_change", {}).get("warehouse", {}).get("rows_written_by_table")
    if quiet:
        lines.append("  no change, rows written by table: " + ", ".join(f"{t} {n:,}" for t, n in quiet.items()))
    lines.append("  kept = records found unchanged before decoding (only their ids staged); rows written = "
                 "n_tup_ins + n_tup_upd + n_tup_del over every icr_* table (staging excluded)")
    passes = {label: night.get("fetch_only_passes") for key, label in (("rerun_no_change", "no change"),
                                                                        ("rerun_changes", "1%/0.5%"))
              if (night := d.get("nightly", {}).get(key))}
    if any(passes.values()):
        lines.append("  fetch only = the faster of the first pass and one just before the run (s): " + "; ".join(
            f"{label} " + " / ".join(f"{p:.2f}" for p in values) for label, values in passes.items() if values))
    dlt = d.get("dlt")
    if dlt:
        ver = size["dlt"]["first"].get("dlt_version", "?")
        for key, label in (("first", "first load"), ("rerun", "no-change rerun")):
            r = dlt[key]
            lines.append(f"dlt {ver} rest_api (merge), {label}: {r['dlt_seconds']:.2f} s; ours {r['ours_seconds']:.2f} s "
                         f"-> {_verdict(r['speedup'])}")
    return lines
