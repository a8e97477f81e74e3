"""The test driver: run a topology in-process, without a broker, and look at what it did.

Each node gets kstream's own :class:`~kstream.runtime.processor.NodeProcessor` (the decoding,
retries, Trash, key parking, batch pages and cursors of a real worker) on the in-memory broker
(:mod:`kstream.testing.memory`, held to the real broker's behaviour by the contract suite).
What it leaves out is a worker's plumbing: consumer groups and commits, prefetch concurrency,
backpressure, the Trash flood guard and global rate limits (``limit=`` is not enforced).

Time is virtual. An ordered node's retry waits in place: the driver moves its clock instead of
sleeping, so a test with ``Retry(attempts=5, backoff=30)`` takes milliseconds. A retry through
a node's retry topic (``ordering="none"``) waits until :meth:`TopologyDriver.advance` has moved
the clock past its due time; so does the next scheduled run of a batch node with ``every=``.
Async handlers run on the driver's own event loop; their in-place retries wait in real time.

::

    driver = TopologyDriver(topology)
    driver.send("shop.orders.raw", {"order": 1, "customer": "c1", "items": [["apple", 2]]})
    driver.run()
    assert driver.outputs("erp.orders")[0].json() == {...}
    assert driver.trash() == []

Avro nodes need a schema registry and are refused here (:class:`ConfigError`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kstream import headers as hdr
from kstream.batch import BatchRunner, CursorState, CursorView, read_cursors
from kstream.codecs import encode, encode_key, from_json
from kstream.config import Settings
from kstream.errors import ConfigError, NotFound, Unsettled
from kstream.kafka.port import latest_by_key
from kstream.naming import group_id
from kstream.provision import apply, input_topics, plan, retry_topic_of
from kstream.runtime.processor import NodeProcessor
from kstream.testing.memory import (
    MemoryAdmin,
    MemoryBroker,
    MemoryConsumer,
    MemoryProducer,
    MemoryTopicReader,
    MemoryTransactionalProducer,
)
from kstream.topology import Node, Topology
from kstream.trash import TrashCodec, TrashEntry, blocking_keys
from kstream.trash_store import Selection, TrashStore
from kstream.types import HeaderList, Record

MAX_ROUNDS = 10_000
"""Passes over the nodes before :meth:`TopologyDriver.run` gives up (a topology that never settles)."""


@dataclass(frozen=True)
class Output:
    """One record on a topic: its key, raw value and headers."""

    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes | None]

    def json(self) -> Any:
        """The value decoded as JSON."""
        return None if self.value is None else from_json(self.value)


class VirtualClock:
    """Seconds added to the real clock by :meth:`TopologyDriver.advance` and by in-place retries."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset


class _VirtualWait(threading.Event):
    """The processors' stop event: a retry's wait moves the clock instead of sleeping."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self._clock = clock

    def wait(self, timeout: float | None = None) -> bool:
        if not self.is_set() and timeout:
            self._clock.offset += timeout
        return self.is_set()


class _NodeRun:
    """One node: its processor and its own reader of its input (and retry) topic."""

    def __init__(self, processor: NodeProcessor, consumer: MemoryConsumer, retry_topic: str | None) -> None:
        self.processor = processor
        self.consumer = consumer
        self.retry_topic = retry_topic
        self.waiting: list[Record] = []  # retries not due yet


class TopologyDriver:
    """Feeds records into ``topology`` and runs its nodes in this thread until nothing is left.

    ``settings`` default to namespace ``test``, one partition per topic. The driver owns an
    in-memory broker (``driver.broker``) with every topic the topology needs already created.
    Not thread-safe. Close it (or use it as a context manager) to close its event loop.
    """

    def __init__(self, topology: Topology, settings: Settings | None = None) -> None:
        topology.validate()
        if any(n.avro is not None or n.to_avro is not None for n in topology.nodes.values()):
            raise ConfigError(f"topology {topology.name} has Avro nodes: the test driver runs without a schema registry")
        self.topology = topology
        self.settings = settings or Settings(namespace="test", topics={"partitions": 1})  # type: ignore[arg-type]
        self.clock = VirtualClock()
        self.broker = MemoryBroker()
        admin = MemoryAdmin(self.broker)
        apply(plan(topology, self.settings, admin, create_external=True), admin)
        self._loop = asyncio.new_event_loop()
        self._stop = _VirtualWait(self.clock)
        self._reader = MemoryTopicReader(self.broker)
        self._producer = MemoryProducer(self.broker)
        self._nodes = {name: self._node(topology.nodes[name]) for name in topology.order()}
        self._schedules = {n.name: self.clock.time() + n.batch.every for n in topology.nodes.values()
                           if n.batch is not None and n.batch.every}

    def _node(self, node: Node) -> _NodeRun:
        ns, name = self.settings.namespace, self.topology.name
        retry = retry_topic_of(self.topology, node.name, ns)
        batch = None
        if node.batch is not None:
            view = CursorView(self._reader.follow(self.settings.cursors_topic), topology=name, node=node.name)
            batch = BatchRunner(topology=name, node=node.name, spec=node.batch,
                                cursors_topic=self.settings.cursors_topic, load=view.lookup)
        parked = blocking_keys(self._reader, self.settings.trash_topic, topology=name, node=node.name) \
            if node.on_failure == "park_key" else None
        processor = NodeProcessor(self.topology, node, namespace=ns, producer=self._producer,
                                  trash_topic=self.settings.trash_topic, hop_limit=self.settings.hop_limit,
                                  stop=self._stop, retry_topic=retry, batch=batch, parked=parked)
        consumer = MemoryConsumer(self.broker, group_id(ns, name, node.name))
        consumer.subscribe(input_topics(self.topology, node.name, ns), lambda _: None, lambda _: None)
        return _NodeRun(processor, consumer, retry)

    # -- feeding --------------------------------------------------------------------------

    def send(self, target: str, value: object, *, key: object = None, headers: HeaderList | None = None) -> None:
        """Write one record to a node's input (``target`` a node name) or to a topic, encoded as
        the nodes encode outputs (models and dicts as JSON, bytes as they are)."""
        topic = self.topology.nodes[target].input_topic(self.settings.namespace) if target in self.topology.nodes \
            else target
        if topic not in self.broker.topics:
            raise NotFound(f"{target!r} is neither a node of {self.topology.name} nor one of its topics")
        self._producer.produce(topic, encode(value), encode_key(key), headers)

    def run(self) -> int:
        """Process until every node has read everything due; returns how many records were handled."""
        handled = 0
        for _ in range(MAX_ROUNDS):
            moved = 0
            for run in self._nodes.values():
                moved += self._drain(run)
            handled += moved
            if not moved:
                return handled
        raise Unsettled(f"topology {self.topology.name} did not settle after {MAX_ROUNDS} passes (a loop?)")

    def _drain(self, run: _NodeRun) -> int:
        now_ms = int(self.clock.time() * 1000)
        due = [m for m in run.waiting if hdr.due_ms(m.headers()) <= now_ms]
        run.waiting = [m for m in run.waiting if hdr.due_ms(m.headers()) > now_ms]
        handled = 0
        for msg in due + run.consumer.consume(500, 0):
            if msg.topic() == run.retry_topic and hdr.due_ms(msg.headers()) > now_ms:
                run.waiting.append(msg)
                continue
            if run.processor.node.is_async:
                self._loop.run_until_complete(run.processor.handle_async(msg))
            else:
                run.processor.handle(msg)
            handled += 1
        return handled

    def advance(self, seconds: float) -> int:
        """Move the clock: retries that come due run, batch schedules fire; then :meth:`run`."""
        self.clock.offset += seconds
        now = self.clock.time()
        for name, next_run in list(self._schedules.items()):
            node = self.topology.nodes[name]
            assert node.batch is not None and node.batch.every is not None
            if now >= next_run:
                # Like a worker's schedule: an entry message of scope "" on the node's input.
                self._producer.produce(node.input_topic(self.settings.namespace), b"{}", b"", None)
                self._schedules[name] = now + node.batch.every
        return self.run()

    # -- looking ----------------------------------------------------------------------------

    def outputs(self, target: str) -> list[Output]:
        """Every record on a topic, or on a node's input topic (``target`` a node name)."""
        topic = self.topology.nodes[target].input_topic(self.settings.namespace) if target in self.topology.nodes \
            else target
        return [Output(r.key(), r.value(), dict(r.headers() or [])) for r in self.broker.records(topic)]

    def trash(self) -> list[TrashEntry]:
        """Unresolved Trash entries, oldest failure first."""
        codec = TrashCodec()
        entries = [codec.decode(v) for r in latest_by_key(self.broker.records(self.settings.trash_topic)).values()
                   if (v := r.value()) is not None]
        return sorted(entries, key=lambda e: e.first_failure)

    def replay(self, *entry_ids: str) -> int:
        """Replay Trash entries as ``kstream trash replay`` does, then :meth:`run`."""
        store = self._trash_store()
        store.replay(Selection(ids=entry_ids))
        store.close()
        return self.run()

    def discard(self, *entry_ids: str) -> None:
        """Resolve Trash entries without replaying them (parked messages behind them are released)."""
        store = self._trash_store()
        store.discard(Selection(ids=entry_ids))
        store.close()

    def cursors(self, node: str | None = None) -> list[CursorState]:
        """Batch cursors (of one node, or all)."""
        return read_cursors(self._reader, self.settings.cursors_topic, topology=self.topology.name, node=node)

    def now(self) -> datetime:
        """The driver's clock."""
        return datetime.fromtimestamp(self.clock.time(), UTC)

    def _trash_store(self) -> TrashStore:
        return TrashStore(self.settings.trash_topic, self._reader,
                          lambda: MemoryTransactionalProducer(self.broker, f"{self.settings.namespace}.trash-tool"),
                          namespace=self.settings.namespace)

    def close(self) -> None:
        self._stop.set()
        self._loop.close()

    def __enter__(self) -> TopologyDriver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
