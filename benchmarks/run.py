"""The ICR sync benchmark: the real sync (ICRHook → normalize → staging → merge) against the
simulator (its own process, loopback HTTP) into the local PostgreSQL, with its floor and a
stock-Airflow baseline measured in the same run.

    .venv/bin/python -m benchmarks.run                      # 1,000,000 installations
    .venv/bin/python -m benchmarks.run --quick              # 100,000
    .venv/bin/python -m benchmarks.run --sizes 100000,1000000
    .venv/bin/python -m benchmarks.run --smoke              # 2,000, every section (CI)

Prints a table and writes ``benchmarks/results/<timestamp>-<size>.json``. See README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.derive import derive
from benchmarks.pg import PG_ADMIN_URL, pg_version
from benchmarks.processes import log
from benchmarks.render import render
from benchmarks.sections import measure_concurrency, measure_size
from benchmarks.targets import check_targets

RESULTS = Path(__file__).resolve().parent / "results"


def rerender(result: dict[str, Any]) -> str:
    """The table of a result file, with today's derived numbers and targets."""
    for size in result["sizes"]:
        size["derived"] = derive(size)
    result["targets"] = check_targets(result["sizes"], result.get("concurrency"))
    return render(result)


def _chosen_sizes(choice: str, sizes: list[int]) -> set[int]:
    """The sizes a section runs at: 'smallest', 'all', 'none' or a comma-separated list."""
    if choice == "smallest":
        return set(sizes[:1])
    if choice == "all":
        return set(sizes)
    if choice == "none":
        return set()
    return {int(x) for x in choice.split(",")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Benchmark the ICR sync against the simulator and PostgreSQL.")
    p.add_argument("--installations", type=int, default=1_000_000)
    p.add_argument("--sizes", help="comma-separated sizes, e.g. 100000,1000000 (overrides --installations)")
    p.add_argument("--quick", action="store_true", help="100,000 installations")
    p.add_argument("--smoke", action="store_true", help="2,000 installations, every section (CI)")
    p.add_argument("--page-size", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=1, help="the connection's concurrency extra for the syncs")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--stock-sample", type=int, default=50_000)
    p.add_argument("--proxy-stock-sample", type=int, default=10_000)
    p.add_argument("--proxy-delay-ms", type=float, default=1.0)
    p.add_argument("--proxy-sizes", default="smallest", help="'smallest', 'all', 'none' or comma-separated sizes")
    p.add_argument("--concurrency-installations", type=int, default=20_000)
    p.add_argument("--latency-ms", type=float, default=20.0)
    p.add_argument("--fetch-concurrency", type=int, default=8)
    p.add_argument("--inject-429", type=int, default=5)
    p.add_argument("--no-concurrency", action="store_true", help="skip the API latency / concurrency section")
    p.add_argument("--only-concurrency", action="store_true", help="run only the API latency / concurrency section")
    p.add_argument("--pg-url", default=PG_ADMIN_URL, help="admin URL; databases icr_bench_* are created/dropped")
    p.add_argument("--results-dir", default=str(RESULTS))
    p.add_argument("--keep-db", action="store_true")
    p.add_argument("--no-sqlite", dest="sqlite", action="store_false",
                   help="skip the same syncs into an SQLite file (the default warehouse)")
    p.add_argument("--sqlite-page-size", type=int, metavar="BYTES",
                   help="make the SQLite file with this page size first (default: the warehouse's own, "
                        "icr.warehouse.engine.SQLITE_PAGE_SIZE; 4096 is what earlier releases made)")
    p.add_argument("--dlt", dest="dlt", action="store_true", default=None,
                   help="run the dlt peer (default: on, except with --smoke)")
    p.add_argument("--no-dlt", dest="dlt", action="store_false", help="skip the dlt peer")
    p.add_argument("--dlt-sizes", default="all", help="'smallest', 'all', 'none' or comma-separated sizes "
                                                      "(dlt takes minutes per 100,000 installations)")
    p.add_argument("--dlt-python", help="a Python with benchmarks/requirements-dlt.txt installed "
                                        "(default: benchmarks/.venv-dlt, made on first use)")
    p.add_argument("--rerender", metavar="RESULT_JSON",
                   help="derive, judge and print an earlier run's raw numbers again (no measuring)")
    opts = p.parse_args(argv)
    if opts.rerender:
        print(rerender(json.loads(Path(opts.rerender).read_text())))
        return 0
    if opts.dlt is None:
        opts.dlt = not opts.smoke

    if opts.smoke:
        sizes = [2_000]
        opts.stock_sample = min(opts.stock_sample, 2_000)
        opts.proxy_stock_sample = min(opts.proxy_stock_sample, 500)
        opts.concurrency_installations = min(opts.concurrency_installations, 2_000)
        opts.inject_429 = min(opts.inject_429, 2)
    elif opts.sizes:
        sizes = sorted(int(x) for x in opts.sizes.split(","))
    elif opts.quick:
        sizes = [100_000]
    else:
        sizes = [opts.installations]
    if opts.only_concurrency:
        sizes = []
    proxy_sizes = _chosen_sizes(opts.proxy_sizes, sizes)
    opts.dlt_sizes = _chosen_sizes(opts.dlt_sizes, sizes) if opts.dlt else set()

    started = datetime.now(timezone.utc)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    result: dict[str, Any] = {
        "meta": {"started_at": started.isoformat(timespec="seconds"), "cpus": os.cpu_count(),
                 "page_size": opts.page_size, "concurrency": opts.concurrency, "seed": opts.seed,
                 "pg_version": pg_version(opts.pg_url), "loadavg_before": [round(x, 2) for x in os.getloadavg()],
                 "argv": sys.argv[1:] if argv is None else argv, "python": sys.version.split()[0]},
        "sizes": [],
    }
    workdir = Path(tempfile.mkdtemp(prefix="icr-bench-"))
    try:
        for n in sizes:
            size = measure_size(n, opts, workdir, n in proxy_sizes, n in opts.dlt_sizes)
            size["derived"] = derive(size)
            result["sizes"].append(size)
            if len(sizes) > 1:  # keep what is done if a later, larger size fails or is stopped
                partial = {**result, "partial": True, "targets": check_targets(result["sizes"], None)}
                Path(opts.results_dir).mkdir(parents=True, exist_ok=True)
                (Path(opts.results_dir) / f"{stamp}-{n}.partial.json").write_text(
                    json.dumps(partial, indent=2, default=str) + "\n")
                log("\n" + render(partial))
        result["concurrency"] = None if opts.no_concurrency else measure_concurrency(opts, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["meta"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    result["meta"]["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    result["targets"] = check_targets(result["sizes"], result["concurrency"])
    text = render(result)
    result["table"] = text
    out_dir = Path(opts.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    if not result["sizes"]:
        path = out_dir / f"{stamp}-concurrency.json"
        path.write_text(json.dumps(result, indent=2, default=str) + "\n")
        paths.append(path)
    for size in result["sizes"]:
        (out_dir / f"{stamp}-{size['installations']}.partial.json").unlink(missing_ok=True)
        path = out_dir / f"{stamp}-{size['installations']}.json"
        path.write_text(json.dumps(result, indent=2, default=str) + "\n")
        paths.append(path)
    print(text)
    print("\nresults: " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
