"""A worker process killed with SIGKILL loses nothing; SIGTERM stops it cleanly with exit 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from kstream.config import Settings
from kstream.naming import group_id
from tests.apps.chain import make_chain
from tests.integration.kafkatools import consume, create_topics, jsons, produce, provision, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _start(settings: Settings, src: str, dst: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CHAIN_SRC": src, "CHAIN_DST": dst,
           "KSTREAM_BOOTSTRAP_SERVERS": settings.bootstrap_servers, "KSTREAM_NAMESPACE": settings.namespace}
    with log.open("ab") as err:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "kstream.cli.main", "run", "tests/apps/chain.py:topology", "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err,
        )


def _output_count(bootstrap: str, topic: str, partitions: int = 3) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks"})
    try:
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1] for p in range(partitions))
    finally:
        c.close()


def test_sigkill_mid_stream_loses_nothing_and_sigterm_exits_cleanly(settings: Settings, tmp_path: Path) -> None:
    # Given 50,000 orders and the chain running in its own process
    src, dst = f"{settings.namespace}.in", f"{settings.namespace}.out"
    create_topics(settings.bootstrap_servers, src, dst)
    provision(make_chain(src, dst), settings)
    n = 50_000
    produce(settings.bootstrap_servers, src, [(f"k{i % 500}", {"id": i, "key": f"k{i % 500}", "seq": i, "amount": 1.0})
                                              for i in range(n)])
    proc = _start(settings, src, dst, tmp_path / "worker.log")
    try:
        wait_until(lambda: _output_count(settings.bootstrap_servers, dst) >= 8_000, timeout=120, what="8,000 outputs")
        # When it is killed mid-stream and started again
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        killed_at = _output_count(settings.bootstrap_servers, dst)
        assert killed_at < n, "the kill should land mid-stream"
        proc = _start(settings, src, dst, tmp_path / "worker.log")
        # Then every input id reaches the output (duplicates only from what was in flight)
        out = consume(settings.bootstrap_servers, dst, timeout=240,
                      until=lambda msgs: len(msgs) >= n and len({m.value() for m in msgs}) >= n)
        ids = [v["id"] for v in jsons(out)]
        assert set(ids) == set(range(n)), f"lost {n - len(set(ids))} ids"
        # Each of the 3 nodes re-runs at most its uncommitted window once, so a message is
        # repeated by at most one re-run per node: at most 4 copies at the end.
        copies = Counter(ids)
        assert max(copies.values()) <= 4, copies.most_common(3)
        # And SIGTERM stops it: exit 0, offsets committed up to the end of the input
        wait_until(lambda: _committed(settings, src) == n, timeout=60, what="commits of the whole input")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, (tmp_path / "worker.log").read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _committed(settings: Settings, topic: str) -> int:
    c = Consumer({"bootstrap.servers": settings.bootstrap_servers,
                  "group.id": group_id(settings.namespace, "chain", "parse")})
    try:
        parts = c.committed([TopicPartition(topic, p) for p in range(3)], timeout=5)
        return sum(max(p.offset, 0) for p in parts)
    finally:
        c.close()
