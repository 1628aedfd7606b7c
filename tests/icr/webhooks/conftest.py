"""Fixtures for the webhook tests: a receiver app with test parts, a real Redis when there is one."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import pytest

from icr.webhooks.delivery import Delivery

REDIS_URL = os.environ.get("ICR_E2E_REDIS_URL", "redis://127.0.0.1:6379")


class RecordingPublisher:
    """Publisher stand-in: remembers what would have been published."""

    def __init__(self) -> None:
        self.published: list[Delivery] = []
        self.closed = False

    async def publish_many(self, deliveries: list[Delivery]) -> None:
        self.published.extend(deliveries)

    async def close(self) -> None:
        self.closed = True

    def describe(self) -> str:
        return "recorded"


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def redis_url() -> str:
    """Redis at ICR_E2E_REDIS_URL (127.0.0.1:6379); skips without it unless ICR_REQUIRE_E2E=1 (CI)."""
    parts = urlsplit(REDIS_URL)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 2).close()
    except OSError as exc:
        problem = f"Redis is not reachable at {REDIS_URL}: {exc}"
        if os.environ.get("ICR_REQUIRE_E2E", "") not in ("", "0", "false", "False"):
            pytest.fail(problem + " (ICR_REQUIRE_E2E=1)", pytrace=False)
        pytest.skip(problem)
    return REDIS_URL.rstrip("/") + "/15"
