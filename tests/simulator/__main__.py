"""Run the ICR simulator as a process.

    python -m tests.simulator --host 127.0.0.1 --port 8765 --installations 500 --seed 7 \
        [--key-out PATH] [--info-out PATH.json] [--latency-ms N] [--max-page-size N] ...
        [--webhook-url URL ...]  (secret: env ICR_SIMULATOR_WEBHOOK_SECRET)

Prints ``ICR simulator listening on http://HOST:PORT (app <id>, N installations)`` once ready,
serves until SIGTERM/SIGINT, then exits 0. ``--port 0`` picks a free port. ``--key-out`` gets the
app's private key (PEM, mode 0600); if the file already exists its key is used instead, so restarts
keep the key. ``--info-out`` gets ``{"base_url", "app_id", "private_key_path", "fingerprints"}``.
Drive it while it runs through the admin API (``/_sim/...``, see ``tests.simulator.admin``).
``--warm [--warm-workers K]`` pre-generates every installation's JSON before listening (~1 KB each;
benchmarks use it so the simulator's pure-Python generation is not what they measure).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading

from .config import FAULT_KINDS, FaultConfig, SimulatorConfig
from .server import ICRSimulator


def _write_private(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tests.simulator", description="ICR Apps API simulator")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--installations", type=int, default=1000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--key-out", help="write (or, if it exists, load) the app private key PEM here")
    p.add_argument("--info-out", help="write base_url/app_id/private_key_path/fingerprints JSON here")
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--max-page-size", type=int, default=100)
    p.add_argument("--default-page-size", type=int, default=100)
    p.add_argument("--page-base", type=int, choices=(0, 1), default=0)
    p.add_argument("--next-page-on-last", choices=("null", "absent"), default="null")
    p.add_argument("--access-token-status", type=int, choices=(200, 201), default=200)
    p.add_argument("--key-bits", type=int, default=2048)
    p.add_argument("--error-rate", type=float, default=0.0)
    p.add_argument("--fault-kinds", default=None, help=f"comma-separated, among {','.join(FAULT_KINDS)}")
    p.add_argument("--fault-scope", choices=("list", "app"), default="list")
    p.add_argument("--retry-after-seconds", type=float, default=1)
    p.add_argument("--slow-seconds", type=float, default=5.0)
    p.add_argument("--clock-offset-s", type=float, default=0.0)
    p.add_argument("--warm", action="store_true",
                   help="pre-generate every installation's JSON at start (benchmarks: ~1 KB each)")
    p.add_argument("--warm-workers", type=int, default=1, help="processes generating for --warm")
    p.add_argument("--webhook-url", action="append", default=[],
                   help="POST signed webhook deliveries here on every change (repeatable); the secret "
                        "comes from the environment variable ICR_SIMULATOR_WEBHOOK_SECRET")
    p.add_argument("--no-prefetch", action="store_true", help="do not pre-generate the next page in the background")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    faults = FaultConfig(
        error_rate=args.error_rate,
        latency_ms=args.latency_ms,
        scope=args.fault_scope,
        retry_after_seconds=args.retry_after_seconds,
        slow_seconds=args.slow_seconds,
        clock_offset_s=args.clock_offset_s,
        **({"fault_kinds": [k for k in args.fault_kinds.split(",") if k]} if args.fault_kinds else {}),
    )
    key_pem = None
    if args.key_out and os.path.exists(args.key_out):
        with open(args.key_out) as fh:
            key_pem = fh.read()
    cfg = SimulatorConfig(
        installations=args.installations,
        seed=args.seed,
        max_page_size=args.max_page_size,
        default_page_size=min(args.default_page_size, args.max_page_size),
        page_base=args.page_base,
        next_page_on_last=args.next_page_on_last,
        access_token_status=args.access_token_status,
        key_bits=args.key_bits,
        private_key_pem=key_pem,
        faults=faults,
        prefetch=not args.no_prefetch,
        warm=args.warm,
        warm_workers=args.warm_workers,
        webhook_urls=tuple(args.webhook_url),
        webhook_secret=os.environ.get("ICR_SIMULATOR_WEBHOOK_SECRET") or None,
    )
    sim = ICRSimulator(cfg)
    stop = threading.Event()

    def on_signal(signum, frame):  # noqa: ARG001
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sim.start(host=args.host, port=args.port)
    try:
        key_path = None
        if args.key_out:
            key_path = os.path.abspath(args.key_out)
            if key_pem is None:
                _write_private(args.key_out, sim.private_key_pem)
        if args.info_out:
            info = {"base_url": sim.base_url, "app_id": sim.app_id, "private_key_path": key_path,
                    "fingerprints": sim.public_key_fingerprints}
            _write_atomic(args.info_out, json.dumps(info, indent=2) + "\n")
        print(f"ICR simulator listening on {sim.base_url} (app {sim.app_id}, {sim.count} installations)",
              flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
