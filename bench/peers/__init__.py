"""Contender programs the benchmarks run as subprocesses (each in the venv it needs)."""
