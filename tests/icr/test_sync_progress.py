"""What the extract says while it runs (issue 18 item 6): a line when it starts, the snapshot's size
after the first page, progress lines with an ETA, and a warning when the page size makes a run
need very many requests. Real simulator over loopback, real ICRHook, SQLite warehouse; progress
is logged for every page (progress_every_s=0), so nothing here depends on timing."""

from __future__ import annotations

import logging
import re
from datetime import datetime, timezone

import pytest

SYNC_LOGGER = "icr.sync"


@pytest.fixture
def extract_logs(make_simulator, icr_connection, sqlite_warehouse, caplog):
    """extract_logs(settings, installations=..., **extras) -> the icr.sync log lines of one extract."""
    from icr.hooks import ICRHook
    from icr.sync import extract, migrate
    from icr.warehouse.runlog import RunContext

    def run(settings, installations: int = 120, **extras):
        sim = make_simulator(installations=installations, seed=5)
        icr_connection(sim, **extras)
        migrate(sqlite_warehouse)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger=SYNC_LOGGER):
            extract(sqlite_warehouse, ICRHook(), RunContext(run_id="progress", logical_date=datetime.now(timezone.utc)),
                    settings)
        return sim, [r for r in caplog.records if r.name == SYNC_LOGGER]

    return run


def test_start_line_first_page_total_and_progress_with_eta(extract_logs):
    from icr.sync import SyncSettings

    sim, records = extract_logs(SyncSettings(page_size=10, concurrency=3, progress_every_s=0))
    lines = [r.getMessage() for r in records]
    start = lines[0]
    assert start.startswith("Extract started"), lines[:3]
    for part in (sim.base_url, sim.app_id, "page size 10", "3 concurrent"):
        assert part in start, start
    assert "ICR lists 120 installations: 12 pages of 10" in lines
    progress = [line for line in lines if line.startswith("Fetched page")]
    assert len(progress) == 12, lines
    assert re.fullmatch(r"Fetched page 1 of 12: 10 of 120 records, \d+ records/s, about \S+ left", progress[0]), progress[0]
    assert re.fullmatch(r"Fetched page 12 of 12: 120 of 120 records, \d+ records/s, about 0s left", progress[-1]), \
        progress[-1]
    assert not [r for r in records if r.levelno >= logging.WARNING], lines


def test_a_tiny_page_size_warns_with_the_request_count(extract_logs):
    """The issue's page_size=1 (1,000 requests for 1,000 installations, without a word), scaled down."""
    from icr.sync import SyncSettings

    _, records = extract_logs(SyncSettings(page_size=1, progress_every_s=3600), installations=150)
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert warnings == ["page_size=1 makes this run send 150 page requests (2 at page_size=100): set a larger "
                        "page size in the connection's page_size or the run's page_size param"], warnings


def test_more_pages_than_many_pages_warns(extract_logs):
    from icr.sync import SyncSettings

    _, records = extract_logs(SyncSettings(page_size=10, many_pages=5, progress_every_s=3600), installations=120)
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "page_size=10 makes this run send 12 page requests" in warnings[0], warnings


def test_duration_text():
    from icr.sync import _duration

    assert [_duration(s) for s in (0, 12.4, 59.6, 185, 3725)] == ["0s", "12s", "1m00s", "3m05s", "1h02m"]
