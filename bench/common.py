"""The names benchmarks imported from here before the split, re-exported.

The pieces now live in their own modules: :mod:`bench.harness` (broker, topics, input data, the
throughput meter, rounds), :mod:`bench.procstats` (``/proc`` statistics, process contenders),
:mod:`bench.contenders` (``kstream run``, peer venvs) and :mod:`bench.results` (provenance,
verdicts, tables, results files). New code imports from those.
"""

from __future__ import annotations

from bench.contenders import kstream_run, peer_venv, provision_topology
from bench.harness import (
    BOOTSTRAP_ENV,
    LOW_MARK,
    SAMPLE_INTERVAL,
    BenchError,
    BrokerHandle,
    Contender,
    Measurement,
    ProcessFactory,
    Rounds,
    WatermarkCounter,
    broker,
    create_topics,
    delete_topics,
    free_port,
    payload,
    produce_input,
    read_all,
    run_contender,
    run_process_rounds,
)
from bench.paths import BENCH_DIR, LOGS_DIR, REPO, RESULTS_DIR
from bench.procstats import ProcessContender, proc_status_kb, process_cpu, rss_bytes
from bench.results import machine, median_of, package_versions, summary, table, versions, write_json

__all__ = [
    "BENCH_DIR", "BOOTSTRAP_ENV", "LOGS_DIR", "LOW_MARK", "REPO", "RESULTS_DIR", "SAMPLE_INTERVAL", "BenchError",
    "BrokerHandle", "Contender", "Measurement", "ProcessContender", "ProcessFactory", "Rounds", "WatermarkCounter",
    "broker", "create_topics", "delete_topics", "free_port", "kstream_run", "machine", "median_of", "package_versions",
    "payload", "peer_venv", "proc_status_kb", "process_cpu", "produce_input", "provision_topology", "read_all",
    "rss_bytes", "run_contender", "run_process_rounds", "summary", "table", "versions", "write_json",
]
