pytest_plugins = ["tests.simulator.fixtures"]
