"""Prefetch N with per-key order, retries through the retry topic, slow handlers, rebalances."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import defaultdict

import orjson
import pytest
from confluent_kafka.admin import AdminClient

from kstream import Retry, Topology
from kstream.config import Settings
from tests.integration.kafkatools import consume, create_topics, jsons, produce, provision, running, wait_until

pytestmark = pytest.mark.integration


def _keyed(n: int, keys: int) -> list[tuple[str, dict[str, int | str]]]:
    seq: dict[str, int] = defaultdict(int)
    out = []
    for i in range(n):
        k = f"k{i % keys}"
        seq[k] += 1
        out.append((k, {"id": i, "key": k, "seq": seq[k]}))
    return out


def _assert_key_order(values: list[dict[str, int | str]]) -> None:
    last: dict[str, int] = {}
    for v in values:
        key, seq = str(v["key"]), int(v["seq"])
        assert seq > last.get(key, 0), f"key {key}: seq {seq} after {last.get(key)}"
        last[key] = seq


def test_prefetch_keeps_key_order_and_runs_keys_concurrently(settings: Settings) -> None:
    # Given an I/O-bound async node (10 ms per message), prefetch 20, one partition, 40 keys
    src, dst = f"{settings.namespace}.in", f"{settings.namespace}.out"
    create_topics(settings.bootstrap_servers, src, dst, partitions=1)
    topology = Topology("io")
    running_keys: dict[str, int] = defaultdict(int)
    overlaps: list[str] = []
    peak = [0, 0]

    @topology.node("call", source=src, to=dst, prefetch=20)
    async def call(order: dict[str, int | str]) -> dict[str, int | str]:
        key = str(order["key"])
        running_keys[key] += 1
        peak[0] += 1
        peak[1] = max(peak[1], peak[0])
        if running_keys[key] > 1:
            overlaps.append(key)
        await asyncio.sleep(0.01)
        running_keys[key] -= 1
        peak[0] -= 1
        return order

    provision(topology, settings)
    produce(settings.bootstrap_servers, src, _keyed(1000, 40))
    start = time.monotonic()
    with running(topology, settings):
        out = consume(settings.bootstrap_servers, dst, count=1000, timeout=60)
    elapsed = time.monotonic() - start
    values = jsons(out)
    # Then: all arrive, per key in order, never two of a key at once, many keys at once
    assert sorted(int(v["id"]) for v in values) == list(range(1000))
    _assert_key_order(values)
    assert overlaps == []
    assert peak[1] > 10, f"at most {peak[1]} in flight"
    assert elapsed < 10 * 1000 * 0.01 / 2, "with prefetch 20, 1000 x 10 ms takes far less than 10 s"


def test_sync_handlers_use_a_thread_pool_of_prefetch_size(settings: Settings) -> None:
    src, dst = f"{settings.namespace}.in", f"{settings.namespace}.out"
    create_topics(settings.bootstrap_servers, src, dst, partitions=1)
    topology = Topology("threads")
    threads: set[str] = set()

    @topology.node("call", source=src, to=dst, prefetch=8)
    def call(order: dict[str, int | str]) -> dict[str, int | str]:
        threads.add(threading.current_thread().name)
        time.sleep(0.01)
        return order

    provision(topology, settings)
    produce(settings.bootstrap_servers, src, _keyed(300, 30))
    with running(topology, settings):
        out = consume(settings.bootstrap_servers, dst, count=300, timeout=60)
    _assert_key_order(jsons(out))
    assert 2 < len(threads) <= 8


def test_unordered_retry_through_retry_topic_holds_nothing_up(settings: Settings) -> None:
    # Given an unordered node where one message fails its first 3 attempts with a 1 s backoff
    src, dst = f"{settings.namespace}.in", f"{settings.namespace}.out"
    create_topics(settings.bootstrap_servers, src, dst, partitions=1)
    topology = Topology("unordered")
    arrivals: dict[int, float] = {}
    attempts: list[float] = []

    @topology.node("call", source=src, to=dst, prefetch=4, ordering="none",
                   retry=Retry(attempts=5, backoff=1.0, jitter=0))
    def call(n: int) -> int:
        if n == 0:
            attempts.append(time.monotonic())
            if len(attempts) <= 3:
                raise ConnectionError("service unavailable")
        arrivals[n] = time.monotonic()
        return n

    provision(topology, settings)
    produce(settings.bootstrap_servers, src, [(f"k{i}", i) for i in range(1001)])
    with running(topology, settings):
        out = consume(settings.bootstrap_servers, dst, count=1001, timeout=90)
    # Then the 1,000 others finish long before its retries end, and it arrives after 4 attempts
    assert sorted(jsons(out)) == list(range(1001))
    assert len(attempts) == 4
    assert max(t for n, t in arrivals.items() if n != 0) < attempts[-1] - 2
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.95 and gaps[1] >= 1.95 and gaps[2] >= 3.9, gaps  # 1 s, 2 s, 4 s
    headers = dict(next(m for m in out if orjson.loads(m.value()) == 0).headers())
    assert headers["kstream-origin"] == b"unordered/call"


def test_handler_slower_than_max_poll_interval_causes_no_rebalance_storm(settings: Settings) -> None:
    # Given max.poll.interval.ms of 3 s and a handler taking 4.5 s on a few messages
    src, dst = f"{settings.namespace}.in", f"{settings.namespace}.out"
    create_topics(settings.bootstrap_servers, src, dst, partitions=2)
    topology = Topology("slow")
    calls: dict[int, int] = defaultdict(int)

    @topology.node("slow", source=src, to=dst)
    def slow(n: int) -> int:
        calls[n] += 1
        if n in (3, 17):
            time.sleep(4.5)
        return n

    strict = settings.model_copy(update={"kafka": {"max.poll.interval.ms": "3000"}})
    provision(topology, strict)
    produce(settings.bootstrap_servers, src, [(f"k{i}", i) for i in range(40)])
    with running(topology, strict) as workers:
        out = consume(settings.bootstrap_servers, dst, count=40, timeout=60, settle=1.0)
        assert workers[0].state.value == "running"
    # Then each message ran once: the worker was never evicted from its group
    assert sorted(jsons(out)) == list(range(40))
    assert max(calls.values()) == 1


# Kafka's classic group protocol, for clusters older than Kafka 4 (kstream's default is KIP-848's).
CLASSIC = {"group.protocol": "classic", "partition.assignment.strategy": "cooperative-sticky"}


def _group_protocol(bootstrap: str, group: str) -> tuple[str, str]:
    """The group's type (CONSUMER or CLASSIC) and assignor, as the broker describes it."""
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept referenced until the answer is in
    described = admin.describe_consumer_groups([group], request_timeout=30)[group].result(40)
    return described.type.name, described.partition_assignor


def _feed_until(bootstrap: str, topic: str, records: list[tuple[str, dict[str, int | str]]],
                done: threading.Event) -> tuple[threading.Thread, list[int]]:
    """Keep producing ``records`` (200 a second) in a thread until ``done``: the stream flows for
    as long as a rebalance takes, however loaded the machine. The list holds how many were sent."""
    sent = [0]

    def feed() -> None:
        while not done.is_set() and sent[0] < len(records):
            sent[0] += produce(bootstrap, topic, records[sent[0]:sent[0] + 20])
            done.wait(0.1)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return thread, sent


# The stream keeps flowing (a feeder thread) until the second worker has processed a message, so
# the test does not depend on how long a rebalance takes on a loaded machine.
@pytest.mark.parametrize("kafka", [pytest.param({}, id="consumer-protocol"), pytest.param(CLASSIC, id="classic-cooperative")])
def test_second_worker_joining_and_leaving_keeps_key_order_and_loses_nothing(settings: Settings,
                                                                              kafka: dict[str, str]) -> None:
    # Given an I/O-bound prefetch-10 node on 4 partitions and 2,000 messages over 200 keys, with
    # more written while the second worker joins
    settings = settings.model_copy(update={"kafka": {**settings.kafka, **kafka}})
    src, dst = f"{settings.namespace}.in", f"{settings.namespace}.out"
    create_topics(settings.bootstrap_servers, src, dst, partitions=4)
    topology = Topology("scale")

    @topology.node("call", source=src, to=dst, prefetch=10)
    async def call(order: dict[str, int | str]) -> dict[str, int | str]:
        await asyncio.sleep(0.04)
        return order

    provision(topology, settings)
    records = _keyed(40_000, 200)
    produce(settings.bootstrap_servers, src, records[:2000])
    joined = threading.Event()
    with running(topology, settings):
        consume(settings.bootstrap_servers, dst, count=400, timeout=60)
        # When a second worker joins mid-stream, and leaves again while messages still flow
        feeder, sent = _feed_until(settings.bootstrap_servers, src, records[2000:], joined)
        try:
            with running(topology, settings) as second:
                wait_until(lambda: second[0].processed > 0, timeout=90, what="the second worker to take partitions over")
                took_part = second[0].processed
                protocol = _group_protocol(settings.bootstrap_servers, f"{settings.namespace}.scale.call")
                consume(settings.bootstrap_servers, dst, count=1400, timeout=60)
        finally:
            joined.set()
            feeder.join(30)
        total = 2000 + sent[0]
        out = consume(settings.bootstrap_servers, dst, timeout=120,
                      until=lambda msgs: len({m.value() for m in msgs}) >= total)
    # Then every message arrived, and every key's messages in input order
    values = jsons(out)
    assert {int(v["id"]) for v in values} == set(range(total))
    assert took_part > 0, "the second worker took over some partitions"
    assert protocol == (("CLASSIC", "cooperative-sticky") if kafka else ("CONSUMER", "range"))
    seen: set[int] = set()
    first = [v for v in values if not (int(v["id"]) in seen or seen.add(int(v["id"])))]  # type: ignore[func-returns-value]
    _assert_key_order(first)
