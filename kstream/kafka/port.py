"""The broker port: what the runtime and the tools need from Kafka, as Protocols.

Two adapters implement it: :mod:`kstream.kafka.confluent` (librdkafka, the real thing) and
:mod:`kstream.testing.memory` (in-process, for unit tests of pure logic and
the users' test driver). Consumed records are
:class:`kstream.types.Record`; the adapters pass their native message objects through, so
nothing is allocated per message on the way in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from kstream.types import HeaderList, Record


def latest_by_key(records: Iterable[Record]) -> dict[bytes, Record]:
    """The last record of every key, as a compacted topic means it: ``records`` per partition
    in offset order (as :meth:`TopicReader.read_compacted` returns them); keyless records are
    skipped; tombstones are kept (value ``None``: the key was deleted).

    A key found on several partitions was written with two partitioners (kstream before it set
    the Java client's ``murmur2_random`` used librdkafka's crc32 default): the newest record by
    timestamp wins across partitions, the later offset within one, so Trash entries, cursors and
    status written before the change still read right (a tombstone or update lands elsewhere)."""
    latest: dict[bytes, Record] = {}
    for rec in records:
        key = rec.key()
        if key is None:
            continue
        seen = latest.get(key)
        if seen is None or seen.partition() == rec.partition() or rec.timestamp()[1] >= seen.timestamp()[1]:
            latest[key] = rec
    return latest


class TopicPartition(NamedTuple):
    topic: str
    partition: int
    offset: int = -1001
    """For commits: the offset of the next record to read. -1001 means 'unset'."""


RebalanceCallback = Callable[[list[TopicPartition]], None]


class PartitionEnds(NamedTuple):
    """Where a partition ends for the two isolation levels."""

    topic: str
    partition: int
    stable: int
    """Last stable offset: ``read_committed`` readers see the records below it."""
    high: int
    """High watermark: ``read_uncommitted`` readers see the records below it."""


class Consumer(Protocol):
    """One member of one consumer group. Not thread-safe: one thread calls it.

    ``consume`` may block up to ``timeout`` seconds; rebalance callbacks run inside it, on the
    calling thread. ``commit`` with ``asynchronous=False`` returns once the broker stored the
    offsets and raises :class:`kstream.errors.BrokerError` otherwise; asynchronous commits only
    promise an attempt.
    """

    def subscribe(
        self,
        topics: Sequence[str],
        on_assign: RebalanceCallback,
        on_revoke: RebalanceCallback,
        on_lost: RebalanceCallback | None = None,
    ) -> None:
        """``on_revoke``: partitions handed back in a rebalance (commit what is done first).
        ``on_lost``: partitions taken away because this member was fenced (a pause past the
        session timeout): someone else may own them already, so nothing of them may be
        committed. Without ``on_lost``, ``on_revoke`` is called for lost partitions too."""
        ...

    def consume(self, max_messages: int, timeout: float) -> list[Record]: ...

    def pause(self, partitions: Sequence[TopicPartition]) -> None: ...

    def resume(self, partitions: Sequence[TopicPartition]) -> None: ...

    def assignment(self) -> list[TopicPartition]: ...

    def commit(self, offsets: Sequence[TopicPartition], *, asynchronous: bool) -> None: ...

    def committed(self, partitions: Sequence[TopicPartition], timeout: float) -> list[TopicPartition]: ...

    def take_commit_failures(self) -> list[TopicPartition]:
        """Offsets whose (asynchronous) commit failed since the last call (already logged);
        the caller commits them again."""
        ...

    def group_metadata(self) -> object:
        """Opaque group metadata for :meth:`WorkerTransactions.commit` (zombie fencing)."""
        ...

    def close(self) -> None:
        """Leave the group (a clean rebalance for the others) and free the client."""
        ...


class Producer(Protocol):
    """An asynchronous producer. Thread-safe.

    ``produce`` only queues the record (it blocks briefly if the local queue is full); it does
    *not* promise delivery. ``flush`` returns once every queued record was acknowledged or
    failed; failures are reported through :meth:`take_errors`, never silently dropped.
    """

    def produce(
        self, topic: str, value: bytes | None, key: bytes | None, headers: HeaderList | None
    ) -> None: ...

    def poll(self, timeout: float) -> None: ...

    def flush(self, timeout: float) -> int:
        """Wait for outstanding deliveries; returns how many are still outstanding."""
        ...

    def take_errors(self) -> list[str]:
        """Delivery failures since the last call, as one line each."""
        ...


@dataclass(frozen=True)
class TopicState:
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NewTopic:
    name: str
    partitions: int
    replication_factor: int | None
    """None: the cluster's ``default.replication.factor``."""
    config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Cluster:
    """What the cluster applies where a topic says nothing."""

    brokers: int
    default_replication_factor: int
    min_insync_replicas: int


@dataclass(frozen=True)
class GroupLag:
    topic: str
    partition: int
    committed: int | None
    end: int


AclKey = tuple[str, str, str, str, str]
"""An ALLOW-from-any-host ACL binding: principal, resource type (``TOPIC``, ``GROUP``,
``TRANSACTIONAL_ID``), resource name, pattern type (``LITERAL``, ``PREFIXED``), operation."""


class Admin(Protocol):
    """Cluster metadata and topic management. Each call blocks up to its timeout and raises
    :class:`kstream.errors.BrokerUnavailable` when no broker answers."""

    def topics(self, names: Sequence[str] | None = None) -> dict[str, TopicState]:
        """Existing topics (all, or those of ``names`` that exist) with their non-default configs."""
        ...

    def create_topics(self, topics: Sequence[NewTopic]) -> None: ...

    def create_partitions(self, topic: str, total: int) -> None: ...

    def alter_config(self, topic: str, config: dict[str, str]) -> None: ...

    def lag(self, group: str, topic: str) -> list[GroupLag]: ...

    def cluster(self) -> Cluster:
        """The number of brokers and the broker defaults for replication (read from one broker)."""
        ...


ReadProgress = Callable[[int, int], None]
"""Called while a topic is read with (records read so far, records to read in all); the total
counts offsets, so it may exceed what is returned (compacted gaps, transaction markers)."""


class TopicFollower(Protocol):
    """One topic read outside any consumer group, from the beginning and then onwards. One
    thread calls it (the caller locks)."""

    def read_new(self, timeout: float, progress: ReadProgress | None = None) -> list[Record]:
        """The committed records added since the last call (the first call: since the beginning),
        up to the end as of the call, per partition in offset order.

        Reads with ``read_committed`` isolation: records of open or aborted transactions are not
        returned, and a partition whose end is held by an open transaction counts as read to its
        end (what that transaction commits comes with a later call). Raises
        :class:`kstream.errors.BrokerError` when the end is not reached within ``timeout`` seconds
        (the position is kept: the next call goes on from there). A topic that does not exist
        reads as empty until it does. Partitions added after the first call are not followed.
        """
        ...

    def close(self) -> None: ...


class TopicReader(Protocol):
    """Reads whole topics outside any consumer group."""

    def read_compacted(self, topic: str, timeout: float, progress: ReadProgress | None = None) -> list[Record]:
        """Every committed record of ``topic`` from the beginning to the end as of the call
        (:meth:`TopicFollower.read_new` of a new follower). Nothing is merged or compacted here
        (the caller keeps the latest value per key: :func:`latest_by_key`)."""
        ...

    def follow(self, topic: str) -> TopicFollower:
        """A follower of ``topic``: read it once, then only what is added (workers' state)."""
        ...


class TopicTail(Protocol):
    """Follows every partition of one topic from its end, outside any consumer group.

    The start position is the end of each partition as of the first ``read`` (librdkafka
    resolves it lazily, so a record produced just before may or may not be returned: a caller
    that needs a sure starting point produces a record and waits to read it back). Records
    of a partition come in offset order. ``read`` blocks up to ``timeout`` seconds when there
    is nothing new; it raises :class:`kstream.errors.BrokerError` when the topic is missing.
    One thread calls it; nothing is committed.
    """

    def read(self, timeout: float) -> list[Record]: ...

    def close(self) -> None: ...


class TransactionalProducer(Protocol):
    """A producer whose writes become visible (to ``read_committed`` readers) all or nothing.

    One thread calls it. ``init`` must come first: it fences any earlier producer with the same
    ``transactional.id`` and aborts that producer's open transaction, waiting until it is
    aborted. ``produce`` only queues the record inside the open transaction. ``commit`` returns
    once the whole transaction is committed and raises :class:`kstream.errors.BrokerError`
    otherwise, in which case the transaction was aborted and none of it is visible.
    """

    def init(self, timeout: float) -> None: ...

    def begin(self) -> None: ...

    def produce(self, topic: str, value: bytes | None, key: bytes | None, headers: HeaderList | None) -> None: ...

    def commit(self, timeout: float) -> None: ...

    def abort(self, timeout: float) -> None: ...

    def close(self) -> None: ...


class WorkerTransactions(Protocol):
    """The transactional side of a worker's producer (exactly-once processing).

    ``init`` once (it may wait for the cluster up to ``timeout``), then ``begin``; outputs
    produced meanwhile belong to the open transaction. ``commit`` adds the consumed ``offsets``
    to the transaction (with the group metadata, so a zombie that lost its partitions is fenced)
    and commits it all at once, then begins the next one. When the transaction could not
    commit it raises :class:`kstream.errors.BrokerError`, and the worker must not go on from its
    in-memory position: either the transaction was aborted (``retryable`` set), or it raises
    :class:`kstream.errors.TransactionInDoubt` (timed out, outcome unknown: nothing was
    aborted, and the producer must be dropped with ``discard`` and replaced by a new one with
    the same ``transactional.id``), or the producer was fenced (fatal).
    """

    def init(self, timeout: float) -> None: ...

    def begin(self) -> None: ...

    def commit(self, offsets: Sequence[TopicPartition], group_metadata: object, timeout: float) -> None: ...

    def abort(self, timeout: float) -> None: ...

    def discard(self) -> None:
        """Drop queued records; write and abort nothing more (the producer is being replaced)."""
        ...
