"""The benchmark's wording of ours against stock stays true either way round."""

from __future__ import annotations

from benchmarks.render import _verdict


def test_verdict_when_ours_is_faster() -> None:
    assert _verdict(2.54) == "ours 2.5x faster"
    assert _verdict(1.0) == "ours 1.0x faster"


def test_verdict_when_stock_is_faster() -> None:
    assert _verdict(0.8) == "ours 0.80x as fast (stock 1.25x faster)"
    assert _verdict(0.995) == "ours 0.99x as fast (stock 1.01x faster)"
