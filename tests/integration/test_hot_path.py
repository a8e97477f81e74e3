"""The worker's inline hot path (prefetch 1, handlers on the worker thread, a watchdog while a
batch runs long) keeps per-key order and loses nothing through a rebalance, a SIGKILL and a
SIGTERM, at-least-once and exactly-once; and its outputs carry the lineage headers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from kstream import headers as hdr
from kstream.config import Settings
from tests.apps.keyed_chain import make_keyed_chain
from tests.integration.kafkatools import consume, create_topics, jsons, produce, provision, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
APP = "tests/apps/keyed_chain.py:topology"
KEYS = 100


def _start(settings: Settings, src: str, dst: str, log: Path, *, eos: bool) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KCHAIN_SRC": src, "KCHAIN_DST": dst, "KCHAIN_EOS": "1" if eos else "0",
           "KCHAIN_SLEEP_MS": "1", "KSTREAM_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
           "KSTREAM_NAMESPACE": settings.namespace}
    with log.open("ab") as err:
        return subprocess.Popen([sys.executable, "-m", "kstream.cli.main", "run", APP, "--log-level", "info"],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)


def _count(bootstrap: str, topic: str) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks"})
    try:
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1] for p in range(3))
    finally:
        c.close()


def _first_seen_in_order(values: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Per key, the seqs in the order they first appear: a re-run after a crash repeats a key's
    recent seqs, which is allowed at-least-once; a seq first seen after a later one is not."""
    seen: dict[str, set[int]] = defaultdict(set)
    first: dict[str, list[int]] = defaultdict(list)
    for v in values:
        if v["seq"] not in seen[v["key"]]:
            seen[v["key"]].add(v["seq"])
            first[v["key"]].append(v["seq"])
    return first


@pytest.mark.parametrize("eos", [False, True], ids=["at-least-once", "exactly-once"])
def test_per_key_order_and_no_loss_through_a_rebalance_a_sigkill_and_a_sigterm(
        settings: Settings, tmp_path: Path, eos: bool) -> None:
    # Given 12,000 records of 100 keys, each key's seq counting up, and the chain in one process
    src, dst = f"{settings.namespace}.in", f"{settings.namespace}.out"
    create_topics(settings.bootstrap_servers, src, dst)
    provision(make_keyed_chain(src, dst, exactly_once=eos), settings)
    n = 12_000
    produce(settings.bootstrap_servers, src, [(f"k{i % KEYS}", {"key": f"k{i % KEYS}", "seq": i // KEYS})
                                              for i in range(n)])
    log, log2 = tmp_path / "first.log", tmp_path / "second.log"
    first = _start(settings, src, dst, log, eos=eos)
    second: subprocess.Popen[bytes] | None = None
    try:
        wait_until(lambda: _count(settings.bootstrap_servers, dst) >= 1_000, timeout=120, what="1,000 outputs")
        # When a second process joins (the groups rebalance: partitions are revoked mid-stream)
        second = _start(settings, src, dst, log2, eos=eos)
        wait_until(lambda: "kchain/b: assigned" in log2.read_text(), timeout=60,
                   what="the second process assigned its share of b")
        # and the first one is killed while the stream flows
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert _count(settings.bootstrap_servers, dst) < n, "the kill should land mid-stream"
        # Then the second one finishes the stream
        out = consume(settings.bootstrap_servers, dst, timeout=300, committed=eos, settle=2.0 if eos else 0.0,
                      until=lambda ms: len({(v["key"], v["seq"]) for v in jsons(ms)}) >= n)
        values = jsons(out)
        got = {(v["key"], v["seq"]) for v in values}
        assert len(got) == n, f"lost {n - len(got)} records"
        # in order per key: exactly once to read_committed readers, or first seen in order
        per_key = _first_seen_in_order(values)
        for key, seqs in per_key.items():
            assert seqs == sorted(seqs), (key, seqs[:20])
        if eos:
            assert len(values) == n, f"{len(values) - n} duplicates"
        # and it stops cleanly on SIGTERM
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0, log2.read_text()[-3000:]
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    # And the outputs carry their lineage: hop 3, a workflow id, a parent, the writer
    sample = out[-1].headers()
    assert hdr.get(sample, hdr.HOPS) == b"3" and hdr.get(sample, hdr.ORIGIN) == b"kchain/c"
    assert hdr.get(sample, hdr.WORKFLOW) and hdr.get(sample, hdr.PARENT) and hdr.get(sample, hdr.ID)
