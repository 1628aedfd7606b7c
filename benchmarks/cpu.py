"""CPU seconds of the processes a benchmark run keeps busy, read from ``/proc`` (Linux).

Why: on a 2-CPU machine the sync, the simulator and PostgreSQL share the CPUs. Wall seconds do
not say whether a step waited on one process (Python's interpreter lock lets a process use about
one CPU; one PostgreSQL statement runs in one backend) or on the whole machine; CPU seconds per
process over the same wall time do. Where ``/proc`` or the server's processes are not visible
(another OS, a remote PostgreSQL), the figures are ``None`` and the table prints "-".
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> list[str] | None:
    """Fields 3.. of ``/proc/<pid>/stat`` (after the command name, which may hold spaces)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def _comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def process_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of one process, all its threads included."""
    fields = _stat(pid) if pid else None
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def server_seconds(postmaster: int | None) -> float | None:
    """CPU seconds of a PostgreSQL server: the postmaster, its live children (backends, the
    checkpointer, the WAL writer, autovacuum) and the children it has reaped (``cutime``), so a
    backend whose connection closed between two readings still counts."""
    fields = _stat(postmaster) if postmaster else None
    if fields is None:
        return None
    # The postmaster first: a child reaped after this reading is missed once, never counted twice.
    total = sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            child = _stat(int(entry.name))
            if child is not None and int(child[1]) == postmaster:
                total += int(child[11]) + int(child[12])
    return total / _TICK


def postmaster_pid(backend_pid: int) -> int | None:
    """The local postmaster behind a backend (``SELECT pg_backend_pid()``), or None when that
    pid is not a PostgreSQL process on this machine (a remote server, another PID namespace)."""
    fields = _stat(backend_pid)
    if fields is None or _comm(backend_pid) != "postgres":
        return None
    parent = int(fields[1])
    return parent if _comm(parent) == "postgres" else None


def sample(pids: dict[str, Any] | None) -> dict[str, float | None]:
    """This process's CPU seconds and those of the named other processes, now.

    ``pids``: ``{"postgresql": <postmaster pid>, "simulator": <pid>}`` (either may be absent).
    """
    pids = pids or {}
    return {"process": time.process_time(),
            "postgresql": server_seconds(pids.get("postgresql")),
            "simulator": process_seconds(pids.get("simulator"))}


def delta(before: dict[str, float | None], after: dict[str, float | None]) -> dict[str, float | None]:
    """CPU seconds spent between two samples, per process (None where either reading is)."""
    return {k: (None if before.get(k) is None or after.get(k) is None else round(after[k] - before[k], 3))
            for k in before}


def busy(cpu: dict[str, float | None], wall: float) -> float | None:
    """How many CPUs the measured processes kept busy on average over ``wall`` seconds."""
    used = [v for v in cpu.values() if v is not None]
    return sum(used) / wall if used and wall > 0 else None
