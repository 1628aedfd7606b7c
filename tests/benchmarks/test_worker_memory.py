"""The benchmark's peak memory is the measured process's own, not inherited from its parent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# A parent that touches 400 MB, frees it, then starts a child the way benchmarks.run starts workers.
PARENT = """
import json, subprocess, sys
big = bytearray(400 * 1024 * 1024)
for i in range(0, len(big), 4096):
    big[i] = 1
del big
child = "import json; from benchmarks.worker import _peak_mb; print(json.dumps(_peak_mb()))"
out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True, cwd=sys.argv[1])
print(out.stdout.strip())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the inherited high-water mark is Linux's")
def test_peak_memory_is_not_inherited_from_the_process_that_started_the_worker() -> None:
    out = subprocess.run([sys.executable, "-c", PARENT, str(ROOT)], capture_output=True, text=True, check=True)
    peak = json.loads(out.stdout.strip().splitlines()[-1])
    # the child imports little: far below the parent's 400 MB (ru_maxrss would say > 400)
    assert 1 < peak < 200, peak
