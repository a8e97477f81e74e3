"""`kstream run` says in one line, within 10 s, when it cannot start: no cluster, or a missing input."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kstream.config import Settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(bootstrap: str, namespace: str, src: str) -> tuple[int, list[str], float]:
    env = {**os.environ, "CHAIN_SRC": src, "CHAIN_DST": f"{namespace}.out", "KSTREAM_BOOTSTRAP_SERVERS": bootstrap,
           "KSTREAM_NAMESPACE": namespace}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "kstream.cli.main", "run", "tests/apps/chain.py:topology"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
    return done.returncode, done.stderr.strip().splitlines(), time.monotonic() - started


def test_a_worker_that_cannot_reach_the_cluster_says_so_in_one_line_within_10_s() -> None:
    port = _closed_port()
    code, lines, took = _run(f"127.0.0.1:{port}", "tnocluster", "nowhere.in")
    assert code == 1
    assert len(lines) == 1 and lines[0].startswith(f"error: no Kafka broker answered at 127.0.0.1:{port} within 10 s")
    assert took < 15.0  # 10 s of waiting plus the interpreter's start


def test_a_missing_input_topic_is_one_line(settings: Settings) -> None:
    src = f"{settings.namespace}.missing"
    code, lines, _ = _run(settings.bootstrap_servers, settings.namespace, src)
    assert code == 1
    ns = settings.namespace
    missing = ", ".join([src, f"{ns}.chain.parse.replay", f"{ns}.chain.enrich", f"{ns}.chain.deliver"])
    assert lines == [f"error: input topic {missing} does not exist: run `kstream topics apply tests/apps/chain.py:topology` "
                     "first (with --create-external for source= topics)"]
