"""What a test logged, for the secret checks."""

from __future__ import annotations

import logging

import pytest


def captured_log_text(caplog: pytest.LogCaptureFixture) -> str:
    """Every record the test logged, in all its phases (setup, call, and teardown so far).

    ``caplog.text`` alone holds only the current phase's records: read at teardown, it would
    miss everything the test itself logged."""
    formatter = logging.Formatter("%(levelname)s %(name)s %(message)s")
    records = [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records]
    lines = []
    for record in dict.fromkeys(records):  # teardown's records may be the same objects
        try:
            lines.append(formatter.format(record))
        except Exception as exc:  # noqa: BLE001 - a bad format string must not hide the rest
            lines.append(f"{record.levelname} {record.name} {record.msg!r} {record.args!r} ({exc})")
    return "\n".join(lines)
