"""Performance benchmark of the ICR sync: ``python -m benchmarks.run --help`` (see README.md)."""
