"""The in-memory adapter: a broker in one process, for unit tests of pure logic and the test driver.

:class:`MemoryBroker` holds topics (partitions as lists of records), committed offsets per
group, a group coordinator and transactions; the adapters (:class:`MemoryConsumer`,
:class:`MemoryProducer`, :class:`MemoryAdmin`, :class:`MemoryTopicReader`, :class:`MemoryTopicTail`,
:class:`MemoryTransactionalProducer`) implement :mod:`kstream.kafka.port` on it. One lock
guards everything; rebalance callbacks run on the consuming thread *outside* it, as the
runtime calls back into the producer and the consumer from them.

Matched to the real adapter (``tests/contract/test_port.py`` runs against both):

* keys choose partitions like the Java client (``murmur2_random``, which kstream sets on
  every producer): the positive murmur2 hash of the key modulo partitions, so a key lands
  where the real producer (and any Java producer) puts it;
* consumers read ``read_committed`` (librdkafka's default): a partition is read up to its first
  record of an open transaction; aborted records and commit/abort markers (which, as in Kafka,
  take an offset each) are skipped; a new assignment starts at the committed offset or, with
  none, at the beginning (``auto.offset.reset=earliest``);
* rebalances are incremental (KIP-848): a member joining or leaving moves only the partitions
  it must; a partition is revoked from its owner (callback, inside that owner's ``consume``)
  before it is assigned to the next one; ``close`` revokes what the member owns;
* a paused partition delivers nothing (librdkafka drops what it had fetched); an assignment
  starts unpaused; the topics must exist (``auto.create.topics.enable=false``).

Deliberate differences: everything is immediate (no linger, no rebalance delay, no timeouts);
records without a key go round-robin (librdkafka picks randomly); a delivery to a missing topic
fails at once (librdkafka waits ``topic.metadata.propagation.max.ms`` first); a subscription to
a missing topic assigns nothing instead of raising; partitions are assigned round-robin over
members in join order, sorted by topic and partition.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from kstream.errors import BrokerError
from kstream.kafka.port import Cluster, GroupLag, NewTopic, ReadProgress, RebalanceCallback, TopicPartition, TopicState
from kstream.types import HeaderList, Record

_UNSET = -1001
Partition = tuple[str, int]


def murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2`` (the Java client's key hash), as a signed 32-bit int."""
    m, r, mask = 0x5BD1E995, 24, 0xFFFFFFFF
    length = len(data)
    h = (0x9747B28C ^ length) & mask
    tail = length - length % 4
    for i in range(0, tail, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & mask
        k ^= k >> r
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    rest = length % 4
    if rest:
        # Java's switch falls through from the highest remaining byte down to the first.
        for j in range(rest - 1, -1, -1):
            h ^= data[tail + j] << (8 * j)
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


class _Txn:
    __slots__ = ("state", "touched")

    def __init__(self) -> None:
        self.state = "open"  # -> "committed" | "aborted"
        self.touched: set[Partition] = set()


class MemoryRecord:
    """A stored record; consumers get these objects themselves (they are never mutated)."""

    __slots__ = ("_control", "_headers", "_key", "_offset", "_partition", "_timestamp", "_topic", "_txn", "_value")

    def __init__(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None, *,
                 headers: HeaderList | None = None, txn: _Txn | None = None, control: bool = False) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset
        self._key, self._value, self._headers = key, value, list(headers) if headers else None
        self._timestamp = (1, time.time_ns() // 1_000_000)  # TIMESTAMP_CREATE_TIME, ms
        self._txn, self._control = txn, control

    def topic(self) -> str | None:
        return self._topic

    def partition(self) -> int | None:
        return self._partition

    def offset(self) -> int | None:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> HeaderList | None:
        return list(self._headers) if self._headers is not None else None

    def timestamp(self) -> tuple[int, int]:
        return self._timestamp

    def __repr__(self) -> str:
        return f"MemoryRecord({self._topic}[{self._partition}]@{self._offset}, key={self._key!r})"


@dataclass
class _Topic:
    logs: list[list[MemoryRecord]]
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)


@dataclass(eq=False)
class _Member:
    topics: list[str]
    on_assign: RebalanceCallback
    on_revoke: RebalanceCallback
    owned: list[Partition] = field(default_factory=list)
    paused: set[Partition] = field(default_factory=set)
    positions: dict[Partition, int] = field(default_factory=dict)


@dataclass
class _Group:
    members: list[_Member] = field(default_factory=list)
    committed: dict[Partition, int] = field(default_factory=dict)


class MemoryBroker:
    """One cluster of ``brokers`` nodes (a replication factor above it is refused), with the
    broker defaults ``default.replication.factor`` and ``min.insync.replicas`` (Kafka's: 1)."""

    def __init__(self, *, brokers: int = 1, default_replication_factor: int = 1, min_insync_replicas: int = 1) -> None:
        self.brokers = brokers
        self.default_replication_factor = default_replication_factor
        self.min_insync_replicas = min_insync_replicas
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)  # notified on every new record or group change
        self.topics: dict[str, _Topic] = {}
        self.groups: dict[str, _Group] = {}
        self.epochs: dict[str, tuple[int, _Txn | None]] = {}  # transactional id -> (epoch, its last transaction)
        self._round_robin = 0

    def create_topic(self, name: str, partitions: int, replication_factor: int = 1, config: dict[str, str] | None = None) -> None:
        """Create a topic now (tests use this as their fixture; ``MemoryAdmin`` checks more)."""
        with self.lock:
            self.topics[name] = _Topic([[] for _ in range(partitions)], replication_factor, dict(config or {}))
            self.changed.notify_all()

    def records(self, topic: str) -> list[Record]:
        """Every visible (committed, non-marker) record of ``topic``, per partition in offset order."""
        with self.lock:
            out: list[Record] = []
            for log in self.topics[topic].logs if topic in self.topics else []:
                _read(log, 0, len(log) + len(out), out)
            return out

    def committed(self, group: str) -> dict[Partition, int]:
        with self.lock:
            return dict(self.groups[group].committed) if group in self.groups else {}

    # -- under the lock -------------------------------------------------------------------

    def _append(self, topic: str, key: bytes | None, value: bytes | None, headers: HeaderList | None,
                txn: _Txn | None) -> Partition:
        logs = self.topics[topic].logs
        if key is not None:
            p = (murmur2(key) & 0x7FFFFFFF) % len(logs)
        else:
            p, self._round_robin = self._round_robin % len(logs), self._round_robin + 1
        logs[p].append(MemoryRecord(topic, p, len(logs[p]), key, value, headers=headers, txn=txn))
        self.changed.notify_all()
        return topic, p

    def _end_txn(self, txn: _Txn, state: str) -> None:
        """Close ``txn``: one marker (an offset, never delivered) per partition it wrote to."""
        txn.state = state
        for topic, p in sorted(txn.touched):
            log = self.topics[topic].logs[p]
            log.append(MemoryRecord(topic, p, len(log), None, None, control=True))
        self.changed.notify_all()

    def _target(self, group: _Group) -> dict[int, list[Partition]]:
        """Round-robin over members (join order) of every subscribed partition, sorted."""
        target: dict[int, list[Partition]] = {id(m): [] for m in group.members}
        wanted = sorted({t for m in group.members for t in m.topics if t in self.topics})
        i = 0
        for topic in wanted:
            candidates = [m for m in group.members if topic in m.topics]
            for p in range(len(self.topics[topic].logs)):
                target[id(candidates[i % len(candidates)])].append((topic, p))
                i += 1
        return target


def _read(log: list[MemoryRecord], pos: int, limit: int, out: list[Record]) -> int:
    """Append what a ``read_committed`` reader sees from ``pos`` (up to ``limit`` records, and up
    to the first record of an open transaction) to ``out``; returns the next position."""
    while pos < len(log) and len(out) < limit:
        r = log[pos]
        if r._txn is not None and r._txn.state == "open":
            break
        pos += 1
        if not r._control and (r._txn is None or r._txn.state == "committed"):
            out.append(r)
    return pos


class MemoryConsumer:
    """:class:`kstream.kafka.port.Consumer`: one member of ``group``."""

    def __init__(self, broker: MemoryBroker, group: str) -> None:
        self._broker = broker
        self._group_id = group
        self._member: _Member | None = None
        self._closed = False
        self._next = 0  # the partition to start at next poll: every partition gets its turn

    def subscribe(self, topics: Sequence[str], on_assign: RebalanceCallback, on_revoke: RebalanceCallback,
                  on_lost: RebalanceCallback | None = None) -> None:
        # The in-memory group never fences a member, so partitions are never lost.
        b = self._broker
        with b.lock:
            group = b.groups.setdefault(self._group_id, _Group())
            if self._member is not None:
                self._member.topics = list(topics)
            else:
                self._member = _Member(list(topics), on_assign, on_revoke)
                group.members.append(self._member)
            b.changed.notify_all()

    def consume(self, max_messages: int, timeout: float) -> list[Record]:
        if self._closed:
            raise RuntimeError("Consumer closed")
        member, b = self._member, self._broker
        if member is None:
            raise BrokerError("consume before subscribe", code="_STATE")
        self._rebalance(member)
        deadline = time.monotonic() + timeout
        with b.lock:
            while True:
                out = self._fetch(member, max_messages)
                left = deadline - time.monotonic()
                if out or left <= 0 or any(self._plan(member)):
                    return out
                b.changed.wait(left)

    def _fetch(self, member: _Member, max_messages: int) -> list[Record]:
        b, out = self._broker, list[Record]()
        group = b.groups[self._group_id]
        parts = [tp for tp in member.owned if tp not in member.paused]
        if parts:
            self._next = (self._next + 1) % len(parts)
            parts = parts[self._next:] + parts[: self._next]
        for tp in parts:
            pos = member.positions.get(tp)
            if pos is None:  # as late as librdkafka: a commit made in on_assign still counts
                pos = group.committed.get(tp, 0)
            member.positions[tp] = _read(b.topics[tp[0]].logs[tp[1]], pos, max_messages, out)
        return out

    def _plan(self, member: _Member) -> tuple[list[Partition], list[Partition]]:
        """What the target takes from ``member``, and what it adds that nobody else holds."""
        group = self._broker.groups[self._group_id]
        target = self._broker._target(group)[id(member)]
        held = {tp for m in group.members for tp in m.owned}
        return [tp for tp in member.owned if tp not in target], [tp for tp in target if tp not in held]

    def _rebalance(self, member: _Member) -> None:
        """Revoke first (the partitions stay held meanwhile, so nobody else reads them), then assign."""
        with self._broker.lock:
            revoked, _ = self._plan(member)
        if revoked:
            member.on_revoke([TopicPartition(t, p) for t, p in revoked])
        with self._broker.lock:
            self._release(member, revoked)
            _, added = self._plan(member)
            member.owned.extend(added)
            member.paused.difference_update(added)
        if added:
            member.on_assign([TopicPartition(t, p) for t, p in added])

    def _release(self, member: _Member, partitions: Sequence[Partition]) -> None:
        for tp in partitions:
            if tp in member.owned:
                member.owned.remove(tp)
            member.paused.discard(tp)
            member.positions.pop(tp, None)
        self._broker.changed.notify_all()

    def pause(self, partitions: Sequence[TopicPartition]) -> None:
        with self._broker.lock:
            if self._member is not None:
                self._member.paused.update((t, p) for t, p, _ in partitions if (t, p) in self._member.owned)

    def resume(self, partitions: Sequence[TopicPartition]) -> None:
        with self._broker.lock:
            if self._member is not None:
                self._member.paused.difference_update((t, p) for t, p, _ in partitions)
                self._broker.changed.notify_all()

    def assignment(self) -> list[TopicPartition]:
        with self._broker.lock:
            return [TopicPartition(t, p) for t, p in (self._member.owned if self._member else [])]

    def commit(self, offsets: Sequence[TopicPartition], *, asynchronous: bool) -> None:
        with self._broker.lock:
            group = self._broker.groups.setdefault(self._group_id, _Group())
            for t, p, o in offsets:
                if o >= 0:
                    group.committed[(t, p)] = o

    def committed(self, partitions: Sequence[TopicPartition], timeout: float) -> list[TopicPartition]:
        with self._broker.lock:
            stored = self._broker.groups[self._group_id].committed if self._group_id in self._broker.groups else {}
            return [TopicPartition(t, p, stored.get((t, p), _UNSET)) for t, p, _ in partitions]

    def take_commit_failures(self) -> list[TopicPartition]:
        return []  # commits here cannot fail

    def group_metadata(self) -> object:
        return (self._group_id, id(self._member))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        member = self._member
        if member is None:
            return
        if member.owned:
            member.on_revoke([TopicPartition(t, p) for t, p in member.owned])
        with self._broker.lock:
            self._release(member, list(member.owned))
            self._broker.groups[self._group_id].members.remove(member)


class MemoryProducer:
    """:class:`kstream.kafka.port.Producer`: a record is in its partition when ``produce`` returns."""

    def __init__(self, broker: MemoryBroker) -> None:
        self._broker = broker
        self._errors: list[str] = []

    def produce(self, topic: str, value: bytes | None, key: bytes | None, headers: HeaderList | None) -> None:
        with self._broker.lock:
            if topic not in self._broker.topics:
                self._errors.append(f"delivery to {topic} failed: Broker: Unknown topic or partition")
                return
            self._broker._append(topic, key, value, headers, None)

    def poll(self, timeout: float) -> None:
        return None

    def flush(self, timeout: float) -> int:
        return 0

    def take_errors(self) -> list[str]:
        with self._broker.lock:
            errors, self._errors = self._errors, []
        return errors


class MemoryAdmin:
    """:class:`kstream.kafka.port.Admin` with the broker's error codes."""

    def __init__(self, broker: MemoryBroker) -> None:
        self._broker = broker

    def topics(self, names: Sequence[str] | None = None) -> dict[str, TopicState]:
        with self._broker.lock:
            return {
                name: TopicState(name, len(t.logs), t.replication_factor, dict(t.config))
                for name, t in self._broker.topics.items()
                if (names is None or name in names) and not name.startswith("__")
            }

    def create_topics(self, topics: Sequence[NewTopic]) -> None:
        rf = {t.name: t.replication_factor or self._broker.default_replication_factor for t in topics}
        for t in topics:
            if t.partitions < 1:
                raise BrokerError(f"create topic {t.name} failed: Number of partitions must be larger than 0.",
                                  code="INVALID_PARTITIONS")
            if rf[t.name] > self._broker.brokers:
                raise BrokerError(f"create topic {t.name} failed: Replication factor: {rf[t.name]} larger than "
                                  f"available brokers: {self._broker.brokers}.", code="INVALID_REPLICATION_FACTOR")
        for t in topics:
            if t.name not in self._broker.topics:  # TOPIC_ALREADY_EXISTS is no error here, as in the real one
                self._broker.create_topic(t.name, t.partitions, rf[t.name], dict(t.config))

    def create_partitions(self, topic: str, total: int) -> None:
        with self._broker.lock:
            t = self._topic(topic, "grow partitions of")
            if total <= len(t.logs):
                raise BrokerError(f"grow partitions of {topic} failed: Topic currently has {len(t.logs)} partitions, "
                                  f"which is higher than the requested {total}.", code="INVALID_PARTITIONS")
            t.logs.extend([] for _ in range(total - len(t.logs)))
            self._broker.changed.notify_all()

    def alter_config(self, topic: str, config: dict[str, str]) -> None:
        with self._broker.lock:
            self._topic(topic, "alter config of").config.update(config)

    def lag(self, group: str, topic: str) -> list[GroupLag]:
        with self._broker.lock:
            t = self._broker.topics.get(topic)
            stored = self._broker.groups[group].committed if group in self._broker.groups else {}
            return [GroupLag(topic, p, stored.get((topic, p)), len(log)) for p, log in enumerate(t.logs if t else [])]

    def cluster(self) -> Cluster:
        return Cluster(self._broker.brokers, self._broker.default_replication_factor, self._broker.min_insync_replicas)

    def _topic(self, name: str, what: str) -> _Topic:
        t = self._broker.topics.get(name)
        if t is None:
            raise BrokerError(f"{what} {name} failed: Broker: Unknown topic or partition", code="UNKNOWN_TOPIC_OR_PART")
        return t


class MemoryTopicReader:
    """:class:`kstream.kafka.port.TopicReader`: never waits, so never times out."""

    def __init__(self, broker: MemoryBroker) -> None:
        self._broker = broker

    def read_compacted(self, topic: str, timeout: float, progress: ReadProgress | None = None) -> list[Record]:
        return self.follow(topic).read_new(timeout, progress)

    def follow(self, topic: str) -> MemoryTopicFollower:
        return MemoryTopicFollower(self._broker, topic)


class MemoryTopicFollower:
    """:class:`kstream.kafka.port.TopicFollower`: never waits, so never times out."""

    def __init__(self, broker: MemoryBroker, topic: str) -> None:
        self._broker = broker
        self._topic = topic
        self._next: list[int] = []
        """Per partition: the position after the last record returned (or skipped marker)."""

    def read_new(self, timeout: float, progress: ReadProgress | None = None) -> list[Record]:
        out: list[Record] = []
        with self._broker.lock:
            topic = self._broker.topics.get(self._topic)
            for i, log in enumerate(topic.logs if topic is not None else []):
                if i == len(self._next):
                    self._next.append(0)
                self._next[i] = _read(log, self._next[i], len(log) + len(out), out)
        if progress is not None:
            progress(len(out), len(out))
        return out

    def close(self) -> None:
        pass


class MemoryTopicTail:
    """:class:`kstream.kafka.port.TopicTail`: starts at the end of each partition at the first ``read``."""

    def __init__(self, broker: MemoryBroker, topic: str) -> None:
        self._broker = broker
        self._topic = topic
        self._positions: list[int] | None = None

    def read(self, timeout: float) -> list[Record]:
        b, deadline = self._broker, time.monotonic() + timeout
        with b.lock:
            if self._topic not in b.topics:
                raise BrokerError(f"topic {self._topic} does not exist", code="UNKNOWN_TOPIC_OR_PART")
            logs = b.topics[self._topic].logs
            if self._positions is None:
                self._positions = [len(log) for log in logs]
            positions = self._positions
            while True:
                out: list[Record] = []
                for p, log in enumerate(logs):
                    positions[p] = _read(log, positions[p], 1000, out)
                left = deadline - time.monotonic()
                if out or left <= 0:
                    return out
                b.changed.wait(left)

    def close(self) -> None:
        return None


class MemoryTransactionalProducer:
    """:class:`kstream.kafka.port.TransactionalProducer`; ``init`` fences earlier holders of the id."""

    def __init__(self, broker: MemoryBroker, transactional_id: str) -> None:
        self._broker = broker
        self._id = transactional_id
        self._epoch = -1
        self._txn: _Txn | None = None

    def init(self, timeout: float) -> None:
        with self._broker.lock:
            epoch, last = self._broker.epochs.get(self._id, (-1, None))
            if last is not None and last.state == "open":
                self._broker._end_txn(last, "aborted")
            self._epoch = epoch + 1
            self._broker.epochs[self._id] = (self._epoch, None)

    def begin(self) -> None:
        with self._broker.lock:
            self._check("beginning a transaction")
            if self._txn is not None:
                raise BrokerError("beginning a transaction failed: a transaction is already open", code="_STATE")
            self._txn = _Txn()
            self._broker.epochs[self._id] = (self._epoch, self._txn)

    def produce(self, topic: str, value: bytes | None, key: bytes | None, headers: HeaderList | None) -> None:
        with self._broker.lock:
            txn = self._open(f"produce to {topic}")
            if topic not in self._broker.topics:
                raise BrokerError(f"produce to {topic} failed: Broker: Unknown topic or partition", code="UNKNOWN_TOPIC_OR_PART")
            txn.touched.add(self._broker._append(topic, key, value, headers, txn))

    def commit(self, timeout: float) -> None:
        self._finish("committed", "committing the transaction")

    def abort(self, timeout: float) -> None:
        self._finish("aborted", "aborting the transaction")

    def close(self) -> None:
        return None  # an open transaction stays open until the next ``init`` of this id, as in Kafka

    def _finish(self, state: str, what: str) -> None:
        with self._broker.lock:
            txn = self._open(what)
            self._broker._end_txn(txn, state)
            self._txn = None

    def _open(self, what: str) -> _Txn:
        self._check(what)
        if self._txn is None:
            raise BrokerError(f"{what} failed: no transaction is open", code="_STATE")
        return self._txn

    def _check(self, what: str) -> None:
        if self._epoch < 0:
            raise BrokerError(f"{what} failed: init() was not called", code="_STATE")
        if self._broker.epochs[self._id][0] != self._epoch:
            raise BrokerError(f"{what} failed: fenced by a newer producer with the same transactional.id", code="_FENCED")
