"""Benchmarks: run each from the repository root as `python -m benchmarks.<name>` (see README.md)."""
from desom.runtime import prefer_passive_waiting

prefer_passive_waiting()      # every `python -m benchmarks.<name>`, before torch loads
