"""Keep the receiver's full garbage collections short: freeze the heap it has after start-up.

The receiver imports Airflow (for the connection lookup), SQLAlchemy and the warehouse
migrations: some 180,000 objects that live as long as the process. CPython's full
(generation-2) collection walks every tracked object, so each one took 130-250 ms on a 2-CPU
machine, and while it runs no request is answered (issue 23: it was the p99 at 500 events/s).
:func:`freeze_startup_heap` collects once and moves what survived into the permanent generation
(:func:`gc.freeze`), which later collections skip; they then walk only what was allocated since,
as gunicorn's and Instagram's servers do after loading their application.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)


def freeze_startup_heap() -> int:
    """Collect, then freeze every surviving object; returns how many are frozen."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("Froze %d start-up objects out of garbage collection (full collections now skip them)", frozen)
    return frozen
