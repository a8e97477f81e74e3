"""Where the benchmarks live, run and write (one place, so every piece agrees)."""

from __future__ import annotations

from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
LOGS_DIR = RESULTS_DIR / "logs"
"""Contender output (``<name>.log``); ignored by git (bench/results/.gitignore)."""
