"""pytest plugin for the ICR simulator (``pytest_plugins = ["tests.simulator.fixtures"]``).

* ``simulator``       — function scope: 1,000 installations, seed 7, started; stopped at teardown.
* ``make_simulator``  — factory ``make_simulator(**SimulatorConfig fields) -> started ICRSimulator``
                        (``faults=`` may be a FaultConfig or a dict); every simulator it made is
                        stopped at teardown.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from .config import FaultConfig, SimulatorConfig
from .server import ICRSimulator


@pytest.fixture
def make_simulator() -> Iterator[Callable[..., ICRSimulator]]:
    made: list[ICRSimulator] = []

    def factory(**config: Any) -> ICRSimulator:
        faults = config.pop("faults", None)
        if isinstance(faults, dict):
            faults = FaultConfig(**faults)
        cfg = SimulatorConfig(**config)
        if faults is not None:
            cfg.faults = faults
        sim = ICRSimulator(cfg)
        made.append(sim)
        return sim.start()

    yield factory
    for sim in made:
        sim.stop()


@pytest.fixture
def simulator(make_simulator: Callable[..., ICRSimulator]) -> ICRSimulator:
    return make_simulator(installations=1000, seed=7)
