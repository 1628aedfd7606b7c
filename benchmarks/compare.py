"""Compare two benchmark result files: what got faster, what got slower, which targets changed.

    python -m benchmarks.compare benchmarks/results/OLD.json benchmarks/results/NEW.json
    python -m benchmarks.compare OLD.json NEW.json --fail-on-regression --threshold 0.10

Prints, for every size both runs measured, each headline number before and after and the ratio
new/old, marking changes beyond the threshold (default 10%) as better or WORSE according to the
metric's direction; then the concurrency section and every target whose status changed. Timings
move by a few percent between runs on a busy machine, which is why the ratios against the floor
(measured in the same run) are listed too. With ``--fail-on-regression`` the exit code is 1 when
any metric got worse beyond the threshold (for a CI job or a pre-merge check), 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Metric:
    label: str
    get: Callable[[dict[str, Any]], Any]
    lower_is_better: bool = True
    digits: int = 2


def _path(*keys: str) -> Callable[[dict[str, Any]], Any]:
    def get(obj: dict[str, Any]) -> Any:
        for key in keys:
            if not isinstance(obj, dict) or key not in obj:
                return None
            obj = obj[key]
        return obj
    return get


def _cpu(step: str, key: str) -> Callable[[dict[str, Any]], Any]:
    """One figure of the CPU table (``derived.cpu``, a list of steps) of a size."""
    def get(size: dict[str, Any]) -> Any:
        for row in _path("derived", "cpu")(size) or []:
            if row.get("step") == step:
                return row.get(key)
        return None
    return get


# Per size (one entry of result["sizes"]).
SIZE_METRICS = (
    Metric("end to end s (sync #1)", _path("sync", "end_to_end_seconds")),
    Metric("  fetch (extract) s", _path("derived", "stages", "fetch", "seconds")),
    Metric("  normalize s", _path("derived", "stages", "normalize", "seconds")),
    Metric("  stage s", _path("derived", "stages", "stage", "seconds")),
    Metric("  merge s", _path("derived", "stages", "merge", "seconds")),
    Metric("peak RSS MB", _path("sync", "peak_rss_mb"), digits=0),
    Metric("API requests", _path("sync", "api_requests"), digits=0),
    Metric("floor s (fetch only + bare COPY)", _path("derived", "floor", "seconds")),
    Metric("end to end / floor", _path("derived", "e2e_over_floor")),
    Metric("  least this work allows / floor", _path("derived", "cpu_bound", "over_floor")),
    Metric("normalize+load vs stock (x)", _path("derived", "speedup_vs_stock"), lower_is_better=False, digits=1),
    Metric("  same, on the same records (x)", _path("derived", "same_records", "speedup_vs_stock"),
           lower_is_better=False, digits=1),
    Metric("  same, no-change rerun (x)", _path("derived", "rerun_no_change", "speedup_vs_stock"),
           lower_is_better=False, digits=1),
    Metric("WAL MB in sync #1", _path("sync", "server_io", "wal_mb"), digits=0),
    Metric("CPU s, extract: worker", _cpu("sync #1 extract", "process")),
    Metric("CPU s, extract: PostgreSQL", _cpu("sync #1 extract", "postgresql")),
    Metric("CPU s, merge: PostgreSQL", _cpu("sync #1 merge", "postgresql")),
    Metric("first load / its floor (all tables)", _path("derived", "first_load", "over_floor")),
    Metric("nightly no change / fetch only", _path("derived", "nightly", "rerun_no_change", "over_fetch_only")),
    Metric("nightly 1%/0.5% / fetch only", _path("derived", "nightly", "rerun_changes", "over_fetch_only")),
    Metric("nightly no change: bytes grown", _path("derived", "nightly", "rerun_no_change", "size_growth_bytes"),
           digits=0),
    Metric("no-change rerun s", _path("rerun_no_change", "end_to_end_seconds")),
    Metric("no-change rerun rows rewritten", _path("rerun_no_change", "state", "rewritten"), digits=0),
    Metric("1%/0.5% rerun s", _path("rerun_changes", "end_to_end_seconds")),
    Metric("1%/0.5% rerun rows rewritten", _path("rerun_changes", "state", "rewritten"), digits=0),
    Metric("SQLite end to end s (sync #1)", _path("sqlite", "sync", "end_to_end_seconds")),
    Metric("SQLite peak RSS MB", _path("sqlite", "sync", "peak_rss_mb"), digits=0),
    Metric("SQLite no-change rerun s", _path("sqlite", "rerun_no_change", "end_to_end_seconds")),
)

CONCURRENCY_METRICS = (
    Metric("serial fetch s", _path("serial", "seconds")),
    Metric("concurrent fetch s", _path("concurrent", "seconds")),
    Metric("concurrency speedup (x)", _path("speedup"), lower_is_better=False),
)


@dataclass
class Row:
    label: str
    old: Any
    new: Any
    verdict: str  # "", "better", "WORSE", "changed"
    digits: int


def _fmt(value: Any, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)):
        return f"{value:,.{digits}f}"
    return str(value)


def compare_values(metric: Metric, old: Any, new: Any, threshold: float) -> Row:
    verdict = ""
    if isinstance(old, (int, float)) and isinstance(new, (int, float)):
        if old == 0 or new == 0:
            # counts such as rows rewritten: any move away from zero matters
            if old != new:
                worse = (new > old) if metric.lower_is_better else (new < old)
                verdict = "WORSE" if worse else "better"
        else:
            ratio = new / old
            if abs(ratio - 1) > threshold:
                worse = (ratio > 1) if metric.lower_is_better else (ratio < 1)
                verdict = "WORSE" if worse else "better"
    elif old != new:
        verdict = "changed"
    return Row(metric.label, old, new, verdict, metric.digits)


def _ratio(old: Any, new: Any) -> str:
    if isinstance(old, (int, float)) and isinstance(new, (int, float)) and old:
        return f"{new / old:.2f}x"
    return ""


def compare(old: dict[str, Any], new: dict[str, Any], threshold: float = 0.10) -> tuple[str, list[Row]]:
    """The comparison as text, and every row (for callers that decide on the verdicts)."""
    lines: list[str] = []
    rows: list[Row] = []
    om, nm = old.get("meta", {}), new.get("meta", {})
    lines.append(f"old: {om.get('started_at')} — {om.get('cpus')} CPUs, page size {om.get('page_size')}, "
                 f"load average before {om.get('loadavg_before')}")
    lines.append(f"new: {nm.get('started_at')} — {nm.get('cpus')} CPUs, page size {nm.get('page_size')}, "
                 f"load average before {nm.get('loadavg_before')}")
    for key in ("cpus", "page_size", "concurrency", "pg_version"):
        if om.get(key) != nm.get(key):
            lines.append(f"  note: {key} differs ({om.get(key)} vs {nm.get(key)}): the runs are not like for like")
    lines.append(f"changes beyond {threshold:.0%} are marked better / WORSE")

    def section(title: str, metrics: tuple[Metric, ...], o: dict[str, Any], n: dict[str, Any]) -> None:
        lines.append("")
        lines.append(title)
        lines.append(f"{'metric':<36}{'old':>12}{'new':>12}{'new/old':>9}  verdict")
        for metric in metrics:
            row = compare_values(metric, metric.get(o), metric.get(n), threshold)
            if row.old is None and row.new is None:
                continue
            rows.append(row)
            lines.append(f"{row.label:<36}{_fmt(row.old, row.digits):>12}{_fmt(row.new, row.digits):>12}"
                         f"{_ratio(row.old, row.new):>9}  {row.verdict}")

    old_sizes = {s["installations"]: s for s in old.get("sizes", [])}
    new_sizes = {s["installations"]: s for s in new.get("sizes", [])}
    common = sorted(set(old_sizes) & set(new_sizes))
    for n in common:
        section(f"== {n:,} installations ==", SIZE_METRICS, old_sizes[n], new_sizes[n])
        pages = _sqlite_page_size(old_sizes[n]), _sqlite_page_size(new_sizes[n])
        if None not in pages and pages[0] != pages[1]:
            lines.append(f"  note: SQLite page size differs ({pages[0]} vs {pages[1]} bytes)")
    only = sorted(set(old_sizes) ^ set(new_sizes))
    if only:
        lines.append("")
        lines.append("sizes measured by only one run (not compared): " + ", ".join(f"{n:,}" for n in only))
    if not common:
        lines.append("")
        lines.append("no size was measured by both runs")
    if old.get("concurrency") and new.get("concurrency"):
        section("== fetch concurrency ==", CONCURRENCY_METRICS, old["concurrency"], new["concurrency"])

    old_targets = {t["target"]: t for t in old.get("targets", [])}
    changed = []
    for t in new.get("targets", []):
        before = old_targets.get(t["target"])
        if before is not None and before.get("met") != t.get("met"):
            changed.append(f"  {t['target']}: {_status(before)} -> {_status(t)} ({before['value']} -> {t['value']}, "
                           f"goal {t['goal']})")
    lines.append("")
    lines.append("targets whose status changed:" if changed else "targets: no status changed")
    lines.extend(changed)
    return "\n".join(lines), rows


def _sqlite_page_size(size: dict[str, Any]) -> int | None:
    """None when the run measured no SQLite; results written before the field existed had 4 KB."""
    lite = size.get("sqlite")
    return lite.get("page_size", 4096) if lite else None


def _status(target: dict[str, Any]) -> str:
    met = target.get("met")
    return "n/a" if met is None else ("MET" if met else "MISS")


def _load(path: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise SystemExit(f"cannot read benchmark result {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise SystemExit(f"{path} is not a benchmark result (invalid JSON at line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict) or "sizes" not in data or "meta" not in data:
        raise SystemExit(f"{path} is not a benchmark result (no 'meta' and 'sizes'): "
                         "pass the files benchmarks.run writes to benchmarks/results/")
    return data


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Compare two benchmarks.run result files (old, new).")
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--threshold", type=float, default=0.10, help="relative change that counts (default 0.10)")
    p.add_argument("--fail-on-regression", action="store_true",
                   help="exit 1 when a metric got worse beyond the threshold")
    opts = p.parse_args(argv)
    if opts.threshold < 0:
        p.error("--threshold must be >= 0")
    text, rows = compare(_load(opts.old), _load(opts.new), opts.threshold)
    print(text)
    worse = [r.label.strip() for r in rows if r.verdict == "WORSE"]
    if worse:
        print(f"\nworse beyond {opts.threshold:.0%}: " + ", ".join(worse))
    return 1 if (opts.fail_on_regression and worse) else 0


if __name__ == "__main__":
    sys.exit(main())
