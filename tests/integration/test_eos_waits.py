"""Exactly-once with slow handlers and long in-place retries: no transaction outlives its timeout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from kstream.config import Settings
from tests.integration.kafkatools import consume, create_topics, jsons, produce

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("mode", "n"), [("slow", 2_000), ("retry", 1_000)])
def test_an_exactly_once_node_that_waits_commits_around_the_wait(settings: Settings, tmp_path: Path, mode: str,
                                                                 n: int) -> None:
    # Given an exactly-once node whose transactions time out after 10 s, and that either takes
    # 50 ms per message (2,000 messages: 100 s of work) or waits 15 s in place to retry some
    src, dst = f"{settings.namespace}.in", f"{settings.namespace}.out"
    create_topics(settings.bootstrap_servers, src, dst, partitions=2)
    produce(settings.bootstrap_servers, src, [(f"k{i % 10}", i) for i in range(n)])
    env = {**os.environ, "WAITS_SRC": src, "WAITS_DST": dst, "WAITS_MODE": mode,
           "KSTREAM_KAFKA_TRANSACTION_TIMEOUT_MS": "10000",
           "KSTREAM_BOOTSTRAP_SERVERS": settings.bootstrap_servers, "KSTREAM_NAMESPACE": settings.namespace}
    log = tmp_path / "worker.log"
    with log.open("ab") as err:
        subprocess.run([sys.executable, "-m", "kstream.cli.main", "topics", "apply", "tests/apps/eos_waits.py:topology"],
                       cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err, check=True)
        proc = subprocess.Popen([sys.executable, "-m", "kstream.cli.main", "run", "tests/apps/eos_waits.py:topology",
                                 "--log-level", "info"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        # When it has worked through all of it (read_committed: only committed transactions count)
        out = consume(settings.bootstrap_servers, dst, count=n, timeout=240, committed=True, settle=2.0)
        # Then every message arrived exactly once
        counts = Counter(jsons(out))
        assert set(counts) == set(range(n)), f"lost {n - len(counts)}"
        assert max(counts.values()) == 1
        # and no transaction was aborted or replaced on the way; the worker never stopped
        text = log.read_text()
        assert proc.poll() is None, text[-2000:]
        for sign in ("replacing its producer", "committing the transaction failed", "worker waits/work failed"):
            assert sign not in text, text[-3000:]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
