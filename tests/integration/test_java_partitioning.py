"""Kafka's own Java console clients and kstream share topics: same key, same partition, order kept."""

from __future__ import annotations

import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from kstream.config import Settings
from kstream.dev.broker import CONSOLE_CONSUMER, CONSOLE_PRODUCER, LocalBroker, java_tool
from tests.apps.chain import make_chain
from tests.integration.kafkatools import consume, create_topics, provision, running

pytestmark = pytest.mark.integration

KEYS = 1000
SEQS = 3
PARTITIONS = 5


def _libs(tmp_path: Path) -> Path:
    return LocalBroker(tmp_path / "unused-broker").resolve()


def _partitions(messages: list[Any]) -> dict[bytes, set[int]]:
    found: dict[bytes, set[int]] = defaultdict(set)
    for m in messages:
        found[m.key()].add(m.partition())
    return found


def test_java_and_kstream_agree_on_partitions_and_order(settings: Settings, tmp_path: Path) -> None:
    # Given a source topic fed by Kafka's Java console producer (parse.key=true): 1,000 keys,
    # each with sequence numbers 1..3, interleaved
    src, dst = f"{settings.namespace}.java.in", f"{settings.namespace}.java.out"
    settings = settings.model_copy(update={"topics": settings.topics.model_copy(update={"partitions": PARTITIONS})})
    create_topics(settings.bootstrap_servers, src, dst, partitions=PARTITIONS)
    topology = make_chain(src, dst)
    provision(topology, settings)
    lines = "".join(
        f"k{i}\t{orjson.dumps({'id': seq * KEYS + i, 'key': f'k{i}', 'seq': seq, 'amount': 1.0}).decode()}\n"
        for seq in range(1, SEQS + 1) for i in range(KEYS)
    )
    libs = _libs(tmp_path)
    produced = subprocess.run(
        java_tool(libs, CONSOLE_PRODUCER, "--bootstrap-server", settings.bootstrap_servers, "--topic", src,
                  "--reader-property", "parse.key=true", "--reader-property", "key.separator=\t"),
        input=lines, capture_output=True, text=True, timeout=300, check=False)
    assert produced.returncode == 0, produced.stderr[-2000:]

    # When a kstream chain reads it and writes every record on, through its own topics, to dst
    with running(topology, settings):
        out = consume(settings.bootstrap_servers, dst, count=KEYS * SEQS, timeout=240)
    assert len(out) == KEYS * SEQS

    # Then every key is on one partition, the same one, in the Java-written topic, in a topic
    # a kstream node wrote (the chain's last input) and in the to= topic
    java = _partitions(consume(settings.bootstrap_servers, src, count=KEYS * SEQS, timeout=60))
    inner = _partitions(consume(settings.bootstrap_servers, f"{settings.namespace}.chain.deliver",
                                count=KEYS * SEQS, timeout=60))
    assert len(java) == KEYS and all(len(p) == 1 for p in java.values())
    assert len(set().union(*java.values())) == PARTITIONS  # the keys do spread
    assert inner == java
    assert _partitions(out) == java

    # And per key the sequence numbers arrive in the order the Java producer wrote them
    seqs: dict[bytes, list[int]] = defaultdict(list)
    for m in out:
        seqs[m.key()].append(orjson.loads(m.value())["seq"])
    assert all(s == list(range(1, SEQS + 1)) for s in seqs.values())

    # And Kafka's Java console consumer reads the to= topic: every key with its JSON payload
    read = subprocess.run(
        java_tool(libs, CONSOLE_CONSUMER, "--bootstrap-server", settings.bootstrap_servers, "--topic", dst,
                  "--from-beginning", "--max-messages", str(KEYS * SEQS), "--timeout-ms", "120000",
                  "--formatter-property", "print.key=true", "--formatter-property", "key.separator=\t"),
        capture_output=True, text=True, timeout=300, check=False)
    assert read.returncode == 0, read.stderr[-2000:]
    pairs = set()
    for line in read.stdout.splitlines():
        key, _, value = line.partition("\t")
        doc = orjson.loads(value)
        assert doc["key"] == key and doc["parsed"] is True
        pairs.add((key, doc["seq"]))
    assert pairs == {(f"k{i}", seq) for i in range(KEYS) for seq in range(1, SEQS + 1)}
