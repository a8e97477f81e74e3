"""Retries in place, the flood limit and the hop limit, on the real broker."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict

import pytest
from confluent_kafka import Consumer, TopicPartition

from kstream import Context, Emit, Retry, Topology
from kstream.config import Settings
from kstream.errors import TrashFlood
from kstream.naming import group_id
from kstream.runtime.worker import State
from kstream.trash import TrashCodec
from tests.integration.kafkatools import consume, create_topics, jsons, produce, provision, running, wait_until

pytestmark = pytest.mark.integration


def test_in_place_retry_succeeds_on_third_attempt_with_backoff(settings: Settings) -> None:
    # Given a node that fails the first 2 attempts of every 10th message, backoff 0.2 s
    src, dst = f"{settings.namespace}.in", f"{settings.namespace}.out"
    create_topics(settings.bootstrap_servers, src, dst, partitions=1)
    topology = Topology("retrying")
    attempts: dict[int, list[tuple[int, float]]] = defaultdict(list)

    @topology.node("flaky", source=src, to=dst, retry=Retry(attempts=3, backoff=0.2, jitter=0))
    def flaky(n: int, ctx: Context) -> int:
        attempts[n].append((ctx.attempt, time.monotonic()))
        if n % 10 == 0 and ctx.attempt < 3:
            raise ConnectionError(f"flaky service for {n}")
        return n

    provision(topology, settings)
    produce(settings.bootstrap_servers, src, [("k", i) for i in range(50)])
    with running(topology, settings):
        out = consume(settings.bootstrap_servers, dst, count=50, timeout=60, settle=0.5)
    # Then all arrive, in order (the partition waited), nothing in the Trash
    assert jsons(out) == list(range(50))
    assert consume(settings.bootstrap_servers, settings.trash_topic, count=1, timeout=2) == []
    for n in range(0, 50, 10):
        tries = attempts[n]
        assert [a for a, _ in tries] == [1, 2, 3]
        gaps = [b - a for (_, a), (_, b) in itertools.pairwise(tries)]
        assert 0.18 <= gaps[0] < 1.0 and 0.38 <= gaps[1] < 1.5, gaps  # 0.2 s, then 0.4 s


def test_exhausted_retries_go_to_trash_with_attempt_history(settings: Settings) -> None:
    src, dst = f"{settings.namespace}.in", f"{settings.namespace}.out"
    create_topics(settings.bootstrap_servers, src, dst, partitions=1)
    topology = Topology("exhaust")

    @topology.node("fails", source=src, to=dst, retry=Retry(attempts=3, backoff=0.05, jitter=0))
    def fails(n: int) -> int:
        if n == 7:
            raise TimeoutError("upstream timed out")
        return n

    provision(topology, settings)
    produce(settings.bootstrap_servers, src, [("k", i) for i in range(20)])
    with running(topology, settings):
        out = consume(settings.bootstrap_servers, dst, count=19, timeout=60)
        trash = consume(settings.bootstrap_servers, settings.trash_topic, count=1, timeout=30)
    assert sorted(jsons(out)) == [i for i in range(20) if i != 7]
    entry = TrashCodec().decode(trash[0].value())
    assert entry.node == "fails" and entry.error_type == "TimeoutError" and len(entry.attempts) == 3
    assert all("upstream timed out" in a.error for a in entry.attempts)
    assert entry.first_failure < entry.last_failure


def test_flood_limit_stops_the_node_without_committing_past_the_stop(settings: Settings) -> None:
    # Given a bad deploy: a handler that raises on every message, and 1,000 messages
    src = f"{settings.namespace}.in"
    create_topics(settings.bootstrap_servers, src, partitions=1)
    topology = Topology("flood")

    @topology.node("broken", source=src)
    def broken(n: int) -> int:
        raise RuntimeError("bad deploy")

    provision(topology, settings)
    produce(settings.bootstrap_servers, src, [("k", i) for i in range(1000)])
    # When it runs, the worker stops with TrashFlood instead of trashing everything
    with pytest.raises(TrashFlood, match="stopped: 100 of its last 100 messages"), running(topology, settings) as workers:
        wait_until(lambda: workers[0].state is State.FAILED, timeout=60, what="the flood limit to stop the worker")
    trash = consume(settings.bootstrap_servers, settings.trash_topic, count=100, timeout=30, settle=1.0)
    assert 100 <= len(trash) < 1000
    c = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": group_id(settings.namespace, "flood", "broken")})
    committed = c.committed([TopicPartition(src, 0)], timeout=10)[0].offset
    c.close()
    assert committed <= len(trash), "nothing committed past the stop"


def test_hop_limit_sends_a_looping_message_to_trash(settings: Settings) -> None:
    # Given a cycle created on purpose through Emit(to=...), and a hop limit of 20
    topology = Topology("loop")
    seen: list[int] = []

    @topology.node("start", source=f"{settings.namespace}.in")
    def start(n: int) -> Emit:
        return Emit(n, to="again")

    @topology.node("again", after="start")
    def again(n: int) -> Emit:
        seen.append(n)
        return Emit(n + 1, to="again")

    create_topics(settings.bootstrap_servers, f"{settings.namespace}.in", partitions=1)
    limited = settings.model_copy(update={"hop_limit": 20})
    provision(topology, limited)
    produce(settings.bootstrap_servers, f"{settings.namespace}.in", [("k", 0)])
    with running(topology, limited):
        trash = consume(settings.bootstrap_servers, settings.trash_topic, count=1, timeout=60)
    entry = TrashCodec().decode(trash[0].value())
    assert entry.reason == "hop limit" and entry.node == "again" and "hop limit of 20" in entry.error_message
    assert len(seen) == 19  # hops 1..19 processed, the 20th is over the limit


def test_retry_timeout_cancels_a_hung_async_attempt(settings: Settings) -> None:
    # Given an async node whose first attempt on message 3 hangs, with a 0.3 s per-attempt timeout
    src, dst = f"{settings.namespace}.in", f"{settings.namespace}.out"
    create_topics(settings.bootstrap_servers, src, dst, partitions=1)
    topology = Topology("hung")
    calls: dict[int, int] = defaultdict(int)

    @topology.node("call", source=src, to=dst, retry=Retry(attempts=3, backoff=0.05, jitter=0, timeout=0.3))
    async def call(n: int) -> int:
        calls[n] += 1
        if n == 3 and calls[n] == 1:
            await asyncio.sleep(3600)
        return n

    provision(topology, settings)
    produce(settings.bootstrap_servers, src, [("k", i) for i in range(6)])
    start = time.monotonic()
    with running(topology, settings):
        out = consume(settings.bootstrap_servers, dst, count=6, timeout=30)
    # Then the hung attempt was cancelled and counted as failed, the second one succeeded
    assert jsons(out) == list(range(6))
    assert calls[3] == 2
    assert time.monotonic() - start < 20
