"""ICR API simulator: a strict, fast, standard-library stand-in for the ICR Apps API.

    from tests.simulator import ICRSimulator, SimulatorConfig, FaultConfig
    with ICRSimulator(SimulatorConfig(installations=1000, seed=7)) as sim:
        ...  # sim.base_url, sim.app_id, sim.private_key_pem, sim.faults, sim.truth() ...

Run standalone with ``python -m tests.simulator --help``; pytest fixtures live in
``tests.simulator.fixtures``. The admin HTTP API is documented in ``tests.simulator.admin``.
"""

from .config import DEFAULT_FAULT_KINDS, FAULT_KINDS, FaultConfig, SimulatorConfig
from .server import ICRSimulator
from .tokens import forge_token, mint_app_jwt

__all__ = [
    "ICRSimulator",
    "SimulatorConfig",
    "FaultConfig",
    "FAULT_KINDS",
    "DEFAULT_FAULT_KINDS",
    "mint_app_jwt",
    "forge_token",
]
