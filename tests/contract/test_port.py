"""The broker port's contract, run against the in-memory adapter and real Kafka alike.

One suite, two parameters: what the runtime's unit tests learn from :mod:`kstream.testing.memory`
holds for :mod:`kstream.kafka.confluent` only as long as both pass here. Each test gets its own
namespace (topics, groups, transactional ids), so nothing is shared between tests.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from kstream.errors import BrokerError
from kstream.kafka.port import (
    Admin,
    Cluster,
    Consumer,
    NewTopic,
    Producer,
    TopicPartition,
    TopicReader,
    TopicTail,
    TransactionalProducer,
)
from kstream.types import Record

DEADLINE = 30.0  # the real broker's first assignment takes a second or two; a rebalance as much again


@dataclass
class Ports:
    """Factories for one adapter, everything named inside ``ns``."""

    ns: str
    consumer_of: Callable[[str], Consumer]
    producer: Callable[[], Producer]
    admin: Callable[[], Admin]
    reader: Callable[[], TopicReader]
    transactional: Callable[[str], TransactionalProducer]
    tail: Callable[[str], TopicTail]
    opened: list[Consumer] = field(default_factory=list)
    closed: set[int] = field(default_factory=set)

    def consumer(self, group: str = "g") -> Consumer:
        c = self.consumer_of(f"{self.ns}.{group}")
        self.opened.append(c)
        return c

    def close(self, c: Consumer) -> None:
        self.closed.add(id(c))
        c.close()

    def topic(self, name: str = "in", partitions: int = 1) -> str:
        full = f"{self.ns}.{name}"
        self.admin().create_topics([NewTopic(full, partitions, 1)])
        return full


def _memory(_: pytest.FixtureRequest, ns: str) -> Ports:
    from kstream.testing import memory

    broker = memory.MemoryBroker()
    return Ports(ns, lambda g: memory.MemoryConsumer(broker, g), lambda: memory.MemoryProducer(broker),
                 lambda: memory.MemoryAdmin(broker), lambda: memory.MemoryTopicReader(broker),
                 lambda tid: memory.MemoryTransactionalProducer(broker, tid), lambda t: memory.MemoryTopicTail(broker, t))


def _kafka(request: pytest.FixtureRequest, ns: str) -> Ports:
    from kstream.kafka import confluent

    bootstrap: str = request.getfixturevalue("bootstrap")
    return Ports(ns, lambda g: confluent.KafkaConsumer(bootstrap, g, {}), lambda: confluent.KafkaProducer(bootstrap, {}),
                 lambda: confluent.KafkaAdmin(bootstrap, {}), lambda: confluent.KafkaTopicReader(bootstrap, {}),
                 lambda tid: confluent.KafkaTransactionalProducer(bootstrap, {}, tid),
                 lambda t: confluent.KafkaTopicTail(bootstrap, {}, t))


@pytest.fixture(params=[pytest.param(_memory, id="memory"), pytest.param(_kafka, id="kafka", marks=pytest.mark.integration)])
def ports(request: pytest.FixtureRequest) -> Iterator[Ports]:
    p: Ports = request.param(request, "c" + uuid.uuid4().hex[:10])
    yield p
    for c in p.opened:
        if id(c) not in p.closed:
            c.close()


# -- helpers ----------------------------------------------------------------------------------


class Member:
    """A subscribed consumer that remembers what its rebalance callbacks were given."""

    def __init__(self, consumer: Consumer, *topics: str) -> None:
        self.consumer = consumer
        self.assigned: list[TopicPartition] = []
        self.revoked: list[TopicPartition] = []
        self.records: list[Record] = []
        consumer.subscribe(list(topics), self.assigned.extend, self.revoked.extend)

    def poll(self, timeout: float = 0.1) -> list[Record]:
        got = self.consumer.consume(100, timeout)
        self.records.extend(got)
        return got

    def owned(self) -> set[tuple[str, int]]:
        return {(tp.topic, tp.partition) for tp in self.consumer.assignment()}


def poll_until(members: list[Member], condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g} s"
        for m in members:
            m.poll()


def produce(ports: Ports, topic: str, records: list[tuple[bytes | None, bytes | None, Any]]) -> None:
    p = ports.producer()
    for key, value, headers in records:
        p.produce(topic, value, key, headers)
    assert p.flush(10) == 0
    assert p.take_errors() == []


def by_partition(records: list[Record]) -> dict[int, list[Record]]:
    out: dict[int, list[Record]] = {}
    for r in records:
        out.setdefault(r.partition() or 0, []).append(r)
    return out


# -- produce and consume ----------------------------------------------------------------------


def test_consumed_records_come_per_partition_in_order_with_keys_values_and_headers(ports: Ports) -> None:
    # Given 40 records over 4 keys on 3 partitions, some with headers, one a tombstone
    topic = ports.topic(partitions=3)
    sent = [(f"k{i % 4}".encode(), f"v{i}".encode(), [("h", f"{i}".encode()), ("h", None)] if i % 2 else None)
            for i in range(40)]
    sent.append((b"k0", None, None))
    produce(ports, topic, sent)
    # When a new group reads them
    m = Member(ports.consumer(), topic)
    poll_until([m], lambda: len(m.records) >= len(sent), "every record read")
    # Then each partition is in offset order, each key's values in the order sent, fields intact
    for records in by_partition(m.records).values():
        offsets = [r.offset() or 0 for r in records]
        assert offsets == sorted(offsets)
    for key in {k for k, _, _ in sent}:
        assert [r.value() for r in m.records if r.key() == key] == [v for k, v, _ in sent if k == key]
    got = {r.value(): (r.key(), r.headers(), r.topic()) for r in m.records if r.value() is not None}
    assert got == {v: (k, h, topic) for k, v, h in sent if v is not None}
    assert all(r.timestamp()[1] > 0 for r in m.records)


# Partitions of 5 that Kafka's Java client picks for these keys: ``Utils.toPositive(
# Utils.murmur2(key)) % 5``, printed by kafka-clients 4.3.1 (the jars `kstream dev broker` uses).
JAVA_PARTITION_OF_5 = {
    b"": 1, b"a": 4, b"ab": 4, b"abc": 2, b"abcd": 0, b"abcde": 1, b"21": 0, b"foobar": 1,
    b"customer-1": 1, b"customer-22": 0, b"customer-333": 2, b"order/4444": 2, "\u00fc".encode(): 3,
    b"a-little-bit-longer-string": 4,
}


def test_a_key_lands_on_the_partition_the_java_client_picks(ports: Ports) -> None:
    # Given keys of every length modulo 4 (murmur2's tail cases), non-ASCII and empty ones
    topic = ports.topic(partitions=5)
    keys = list(JAVA_PARTITION_OF_5)
    # When each is produced 3 times by a plain producer and once more in a transaction
    produce(ports, topic, [(k, b"x", None) for k in keys * 3])
    tp = ports.transactional(f"{ports.ns}.tx")
    tp.init(10)
    tp.begin()
    for k in keys:
        tp.produce(topic, b"t", k, None)
    tp.commit(10)
    m = Member(ports.consumer(), topic)
    poll_until([m], lambda: len(m.records) >= 4 * len(keys), "every record read")
    # Then every record of a key is on the partition Java's murmur2 partitioner picks
    for k in keys:
        assert {r.partition() for r in m.records if r.key() == k} == {JAVA_PARTITION_OF_5[k]}, k


def test_a_new_consumer_of_the_group_resumes_after_the_committed_offset(ports: Ports) -> None:
    # Given a group that read 10 records and committed offset 6
    topic = ports.topic()
    produce(ports, topic, [(None, f"{i}".encode(), None) for i in range(10)])
    first = Member(ports.consumer(), topic)
    poll_until([first], lambda: len(first.records) >= 10, "every record read")
    first.consumer.commit([TopicPartition(topic, 0, 6)], asynchronous=False)
    assert first.consumer.committed([TopicPartition(topic, 0)], 10) == [TopicPartition(topic, 0, 6)]
    lag = ports.admin().lag(f"{ports.ns}.g", topic)
    assert [(x.partition, x.committed, x.end) for x in lag] == [(0, 6, 10)]
    ports.close(first.consumer)
    # When another member of the group starts
    second = Member(ports.consumer(), topic)
    poll_until([second], lambda: len(second.records) >= 4, "the rest read")
    # Then it starts at the committed offset; a group that committed nothing has -1001
    assert [r.offset() for r in second.records] == [6, 7, 8, 9]
    other = ports.consumer("other")
    assert other.committed([TopicPartition(topic, 0)], 10) == [TopicPartition(topic, 0, -1001)]


def test_subscribe_assigns_every_partition_to_a_lone_member(ports: Ports) -> None:
    topic = ports.topic(partitions=3)
    m = Member(ports.consumer(), topic)
    poll_until([m], lambda: len(m.owned()) == 3, "assigned")
    assert sorted(m.assigned) == [TopicPartition(topic, p) for p in range(3)]
    assert m.revoked == []


def test_pause_stops_delivery_and_resume_restarts_it(ports: Ports) -> None:
    topic = ports.topic()
    m = Member(ports.consumer(), topic)
    poll_until([m], lambda: len(m.owned()) == 1, "assigned")
    # Given a paused partition, records produced to it are not delivered
    m.consumer.pause(m.consumer.assignment())
    produce(ports, topic, [(None, f"{i}".encode(), None) for i in range(5)])
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert m.poll() == []
    # When resumed, they are, from where the partition stopped
    m.consumer.resume(m.consumer.assignment())
    poll_until([m], lambda: len(m.records) >= 5, "read after resume")
    assert [r.offset() for r in m.records] == [0, 1, 2, 3, 4]


def test_two_members_split_the_partitions_and_the_leaver_hands_its_back(ports: Ports) -> None:
    # Given one member owning all 4 partitions
    topic = ports.topic(partitions=4)
    everything = {(topic, p) for p in range(4)}
    a = Member(ports.consumer(), topic)
    poll_until([a], lambda: a.owned() == everything, "a owns everything")
    # When a second member joins: a gives some partitions up (revoke callback), b gets them
    b = Member(ports.consumer(), topic)
    poll_until([a, b], lambda: bool(a.owned()) and bool(b.owned()) and a.owned() | b.owned() == everything,
               "partitions split")
    assert not a.owned() & b.owned()
    assert {(tp.topic, tp.partition) for tp in a.revoked} == b.owned()
    assert {(tp.topic, tp.partition) for tp in b.assigned} == b.owned()
    # When b leaves, its revoke callback runs inside close, and a takes everything back
    held_by_b = b.owned()
    ports.close(b.consumer)
    assert {(tp.topic, tp.partition) for tp in b.revoked} == held_by_b
    poll_until([a], lambda: a.owned() == everything, "a owns everything again")


# -- producer and admin -----------------------------------------------------------------------


def test_a_successful_flush_returns_zero_and_reports_no_errors(ports: Ports) -> None:
    topic = ports.topic()
    p = ports.producer()
    for i in range(100):
        p.produce(topic, b"v", f"{i}".encode(), [("a", b"b")])
    p.poll(0)
    assert p.flush(10) == 0
    assert p.take_errors() == []


def test_admin_creates_lists_grows_and_configures_topics(ports: Ports) -> None:
    admin = ports.admin()
    name = f"{ports.ns}.admin"
    admin.create_topics([NewTopic(name, 2, 1, {"retention.ms": "60000"})])
    admin.create_topics([NewTopic(name, 2, 1)])  # already there: no error
    state = admin.topics([name, f"{ports.ns}.missing"])
    assert list(state) == [name]
    assert (state[name].partitions, state[name].replication_factor, state[name].config) == (2, 1, {"retention.ms": "60000"})
    assert name in admin.topics()
    admin.create_partitions(name, 3)
    with pytest.raises(BrokerError):
        admin.create_partitions(name, 2)
    admin.alter_config(name, {"cleanup.policy": "compact"})
    assert admin.topics([name])[name].partitions == 3
    assert admin.topics([name])[name].config == {"retention.ms": "60000", "cleanup.policy": "compact"}
    with pytest.raises(BrokerError):
        admin.create_topics([NewTopic(f"{ports.ns}.rf", 1, 3)])  # one broker: replication factor 3 is refused
    assert admin.lag("nobody", f"{ports.ns}.missing") == []


def test_admin_describes_the_cluster_and_creates_with_its_default_replication(ports: Ports) -> None:
    # Given one broker with Kafka's defaults (default.replication.factor 1, min.insync.replicas 1)
    admin = ports.admin()
    assert admin.cluster() == Cluster(brokers=1, default_replication_factor=1, min_insync_replicas=1)
    # When a topic is created without a replication factor, it gets the default
    name = f"{ports.ns}.default-rf"
    admin.create_topics([NewTopic(name, 2, None)])
    assert admin.topics([name])[name].replication_factor == 1


# -- transactions -----------------------------------------------------------------------------


def test_only_committed_transactions_are_visible_to_read_committed_readers(ports: Ports) -> None:
    # Given a committed transaction, an aborted one, a plain record, and one left open
    topic = ports.topic()
    tp = ports.transactional(f"{ports.ns}.tx")
    tp.init(10)
    tp.begin()
    tp.produce(topic, b"c1", b"k", [("h", b"1")])
    tp.produce(topic, b"c2", b"k", None)
    tp.commit(10)
    tp.begin()
    tp.produce(topic, b"a1", b"k", None)
    tp.abort(10)
    produce(ports, topic, [(b"k", b"plain", None)])
    tp.begin()
    tp.produce(topic, b"open", b"k", None)
    # Then the reader returns committed ones only, without waiting for the open transaction
    read = ports.reader().read_compacted(topic, 20)
    assert [(r.value(), r.headers()) for r in read] == [(b"c1", [("h", b"1")]), (b"c2", None), (b"plain", None)]
    # and a commit marker takes an offset, as in Kafka (librdkafka may never send an aborted
    # transaction's records, so what follows an abort is not pinned down)
    assert [r.offset() for r in read][:2] == [0, 1]
    assert (read[2].offset() or 0) >= 3
    assert ports.reader().read_compacted(f"{ports.ns}.missing", 10) == []
    # When another producer with the same id starts, the open transaction is aborted, the old one fenced
    successor = ports.transactional(f"{ports.ns}.tx")
    successor.init(10)
    with pytest.raises(BrokerError):
        tp.commit(10)
    successor.begin()
    successor.produce(topic, b"later", b"k", None)
    successor.commit(10)
    assert [r.value() for r in ports.reader().read_compacted(topic, 20)] == [b"c1", b"c2", b"plain", b"later"]
    # and a group consumer reads committed too
    m = Member(ports.consumer(), topic)
    poll_until([m], lambda: len(m.records) >= 4, "committed read by a consumer")
    assert [r.value() for r in m.records] == [b"c1", b"c2", b"plain", b"later"]


# -- the topic tail (rate limit claims) ----------------------------------------------------------


def test_a_tail_reads_what_comes_after_its_start_in_order_and_a_missing_topic_raises(ports: Ports) -> None:
    topic = ports.topic("tailed", partitions=3)
    prod = ports.producer()
    prod.produce(topic, b"before", b"k", None)
    assert prod.flush(10) == 0
    tail = ports.tail(topic)
    try:
        # Given a tail whose start is surely fixed: a marker produced after its first read came back
        seen: list[bytes | None] = []
        deadline = time.monotonic() + DEADLINE
        while b"marker" not in seen:
            assert time.monotonic() < deadline, "the tail never read the marker"
            prod.produce(topic, b"marker", b"k", None)
            assert prod.flush(10) == 0
            seen += [r.value() for r in tail.read(0.5)]
        # When records of one key (one partition) and of others follow
        for i in range(20):
            prod.produce(topic, str(i).encode(), b"k", None)
            prod.produce(topic, b"other", str(i).encode(), None)
        assert prod.flush(10) == 0
        got: list[Record] = []
        while len(got) < 40:
            assert time.monotonic() < deadline, f"the tail read {len(got)} of 40 records"
            got += [r for r in tail.read(0.5) if r.value() != b"marker"]  # a later marker may come too
        # Then it read them all, those of one partition in order, and nothing from before it started
        assert [r.value() for r in got if r.key() == b"k"] == [str(i).encode() for i in range(20)]
        assert b"before" not in seen + [r.value() for r in got]
    finally:
        tail.close()
    with pytest.raises(BrokerError):
        ports.tail(f"{ports.ns}.missing").read(1.0)


def test_a_follower_reads_a_topic_once_then_only_what_was_added(ports: Ports) -> None:
    # Given a follower of a topic that does not exist yet
    topic = f"{ports.ns}.followed"
    follower = ports.reader().follow(topic)
    try:
        assert follower.read_new(10) == []
        # When the topic gets records on two partitions
        ports.admin().create_topics([NewTopic(topic, 2, 1)])
        produce(ports, topic, [(b"a", b"1", None), (b"b", b"2", None), (b"c", b"3", None)])
        seen: list[tuple[int, int]] = []
        first = follower.read_new(20, lambda done, total: seen.append((done, total)))
        # Then the first read returns them all, with progress up to the total
        assert sorted(r.value() or b"" for r in first) == [b"1", b"2", b"3"]
        assert seen and seen[-1] == (3, 3)
        # and later reads return only what was added since, committed only
        assert follower.read_new(10) == []
        produce(ports, topic, [(b"a", b"4", None)])
        tp = ports.transactional(f"{ports.ns}.ftx")
        tp.init(10)
        tp.begin()
        tp.produce(topic, b"open", b"a", None)
        tp.produce(topic, b"open", b"b", None)
        assert [r.value() for r in follower.read_new(20)] == [b"4"]
        assert follower.read_new(20) == [], "an open transaction is not waited for"
        tp.commit(10)
        # (what a transaction committed after the end was reached may take a moment to be fetched)
        got: list[bytes | None] = []
        deadline = time.monotonic() + 20
        while len(got) < 2 and time.monotonic() < deadline:
            got += [r.value() for r in follower.read_new(20)]
        assert got == [b"open", b"open"]
        tp.close()
    finally:
        follower.close()
