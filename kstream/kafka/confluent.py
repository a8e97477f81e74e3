"""The Kafka adapter: the only module that imports ``confluent_kafka``.

Client defaults chosen here (any can be overridden through ``Settings.kafka``):

* consumers: manual commits of offsets kstream tracks itself, ``auto.offset.reset=earliest``
  (a new node starts at the beginning of its input), the KIP-848 ``consumer`` group protocol
  (incremental rebalances: unaffected partitions keep flowing);
* producers: idempotent, ``acks=all``, keys partitioned like the Java client
  (``murmur2_random``), a short linger so outputs batch; delivery reports only for failures
  (one bound-method callback, nothing per successful message).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import confluent_kafka
from confluent_kafka import IsolationLevel, KafkaError, KafkaException
from confluent_kafka import TopicPartition as CkTopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    OffsetSpec,
)
from confluent_kafka.admin import NewTopic as CkNewTopic  # type: ignore[attr-defined]

from kstream.errors import BrokerError, BrokerUnavailable, ConfigError, TransactionInDoubt
from kstream.kafka.port import Cluster, GroupLag, NewTopic, PartitionEnds, RebalanceCallback, TopicPartition, TopicState
from kstream.types import HeaderList, Record

CONSUMER_DEFAULTS: dict[str, str] = {
    "enable.auto.commit": "false",
    # Never read outputs of open or aborted transactions (upstream nodes in exactly-once mode).
    "isolation.level": "read_committed",
    "enable.auto.offset.store": "false",
    "auto.offset.reset": "earliest",
    "group.protocol": "consumer",
    "enable.partition.eof": "false",
    # The local fetch queue, per consumer: librdkafka's default (64 MiB) lets a fast worker's
    # memory creep up for minutes; 16 MiB is still many batches ahead of the handlers.
    "queued.max.messages.kbytes": "16384",
}
PRODUCER_DEFAULTS: dict[str, str] = {
    # Stated, not left to librdkafka's defaults: no record is acknowledged before every
    # in-sync replica has it, and retries never duplicate or reorder a partition's records.
    "enable.idempotence": "true",
    "acks": "all",
    # The Java client's partitioner (librdkafka's default, consistent_random, hashes with
    # crc32): a key lands on the same partition whether kstream or a Java service writes it.
    "partitioner": "murmur2_random",
    "linger.ms": "5",
}
# Properties librdkafka rejects under the consumer group protocol (KIP-848); dropped with it.
_CLASSIC_ONLY = ("session.timeout.ms", "heartbeat.interval.ms", "partition.assignment.strategy")
# Error codes where trying again may help: mapped onto ``retryable`` in one place.
_RETRYABLE = {
    KafkaError._TRANSPORT,
    KafkaError._TIMED_OUT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_LEADER_FOR_PARTITION,
}


def broker_error(exc: KafkaException | KafkaError, what: str) -> BrokerError:
    """Map a librdkafka error to kstream's tree (one table, :data:`_RETRYABLE`)."""
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else exc
    if not isinstance(err, KafkaError):
        return BrokerError(f"{what}: {exc}")
    if err.code() in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._TIMED_OUT):
        return BrokerUnavailable(f"{what}: {err.str()}")
    return BrokerError(f"{what}: {err.str()}", code=err.name(), retryable=err.code() in _RETRYABLE)


_LIBRDKAFKA_LOG = logging.getLogger("kstream.librdkafka")


def _config(base: Mapping[str, str], settings: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, Any]:
    # librdkafka's own log lines go to Python logging, not straight to stderr.
    conf: dict[str, Any] = {**base, **settings, **extra, "logger": _LIBRDKAFKA_LOG}
    if conf.get("group.protocol") == "consumer":
        for name in _CLASSIC_ONLY:
            conf.pop(name, None)
    return conf


def check_properties(kafka: Mapping[str, str]) -> None:
    """Raise :class:`ConfigError` when librdkafka does not know a property of ``kafka`` or
    refuses its value. Clients are built deep inside commands and workers; checked once up front,
    a typo is one line naming the property instead of a ``KafkaException`` from a constructor.
    Consumer-only properties pass: librdkafka checks every property's value in any client."""
    # delivery.report.only.error is a Python-level option, converted by KafkaProducer.
    props = {k: v for k, v in kafka.items() if k != "delivery.report.only.error"}
    if _refusal(props) is None:
        return
    # librdkafka names an alias ("request.required.acks" for "acks"): name the property as given.
    for name, value in props.items():
        reason = _refusal({name: value})
        if reason is not None:
            raise ConfigError(f"invalid Kafka client setting {name}={value}: {reason}")
    raise ConfigError(f"invalid Kafka client settings: {_refusal(props)}")


def _refusal(props: Mapping[str, str]) -> str | None:
    try:
        # Never connects (no bootstrap servers); log_level 0 silences its "cannot connect" notice.
        confluent_kafka.Producer({**props, "bootstrap.servers": "", "log_level": 0})
    except KafkaException as exc:
        err = exc.args[0] if exc.args else exc
        return err.str() if isinstance(err, KafkaError) else str(err)
    except (TypeError, ValueError) as exc:
        return str(exc)
    return None


def _error_event(err: KafkaError | None) -> bool:
    """True for an error event (dropped: librdkafka retries transient errors); raises on fatal ones."""
    if err is None:
        return False
    if err.fatal() or err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
        raise broker_error(err, "consumer failed")
    return True


class KafkaConsumer:
    """:class:`kstream.kafka.port.Consumer` on ``confluent_kafka.Consumer``."""

    def __init__(self, bootstrap: str, group: str, kafka: Mapping[str, str], **extra: str) -> None:
        conf = _config(CONSUMER_DEFAULTS, kafka, {"bootstrap.servers": bootstrap, "group.id": group, **extra})
        self._consumer = confluent_kafka.Consumer(conf)

    def subscribe(self, topics: Sequence[str], on_assign: RebalanceCallback, on_revoke: RebalanceCallback,
                  on_lost: RebalanceCallback | None = None) -> None:
        def assigned(consumer: Any, parts: list[CkTopicPartition]) -> None:
            # Assign here rather than after the callback, so the worker can pause the new
            # partitions; and resume first: librdkafka keeps a partition's pause flag from an
            # earlier assignment, which would leave a returning partition silently stalled.
            try:
                consumer.incremental_assign(parts)
            except KafkaException:
                consumer.assign(parts)  # the classic eager protocol, if configured
            if parts:
                consumer.resume(parts)
            on_assign([TopicPartition(p.topic, p.partition) for p in parts])

        def revoked(_: object, parts: list[CkTopicPartition]) -> None:
            on_revoke([TopicPartition(p.topic, p.partition) for p in parts])

        def lost(_: object, parts: list[CkTopicPartition]) -> None:
            (on_lost or on_revoke)([TopicPartition(p.topic, p.partition) for p in parts])

        self._consumer.subscribe(list(topics), on_assign=assigned, on_revoke=revoked, on_lost=lost)

    def consume(self, max_messages: int, timeout: float) -> list[Record]:
        # librdkafka's batch consume waits the whole timeout unless the batch fills up: take
        # what is there without waiting, and only when nothing is, wait for the first message.
        messages: list[Any] = self._consumer.consume(max_messages, 0)
        if not messages:
            first = self._consumer.poll(timeout)
            if first is None:
                return []
            messages = [first, *self._consumer.consume(max_messages - 1, 0)] if max_messages > 1 else [first]
        for m in messages:
            if m.error() is not None:
                return [x for x in messages if not _error_event(x.error())]
        return cast(list[Record], messages)

    def pause(self, partitions: Sequence[TopicPartition]) -> None:
        self._consumer.pause([CkTopicPartition(t, p) for t, p, _ in partitions])

    def resume(self, partitions: Sequence[TopicPartition]) -> None:
        self._consumer.resume([CkTopicPartition(t, p) for t, p, _ in partitions])

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(p.topic, p.partition) for p in self._consumer.assignment()]

    def commit(self, offsets: Sequence[TopicPartition], *, asynchronous: bool) -> None:
        try:
            parts = [CkTopicPartition(t, p, o) for t, p, o in offsets]
            if asynchronous:
                self._consumer.commit(offsets=parts, asynchronous=True)
            else:
                self._consumer.commit(offsets=parts, asynchronous=False)
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError._NO_OFFSET:
                return
            raise broker_error(exc, "offset commit failed") from None

    def committed(self, partitions: Sequence[TopicPartition], timeout: float) -> list[TopicPartition]:
        try:
            parts = self._consumer.committed([CkTopicPartition(t, p) for t, p, _ in partitions], timeout=timeout)
        except KafkaException as exc:
            raise broker_error(exc, "reading committed offsets failed") from None
        return [TopicPartition(p.topic, p.partition, p.offset) for p in parts]

    def group_metadata(self) -> object:
        return self._consumer.consumer_group_metadata()

    def close(self) -> None:
        self._consumer.close()


class KafkaProducer:
    """:class:`kstream.kafka.port.Producer` on ``confluent_kafka.Producer``."""

    def __init__(self, bootstrap: str, kafka: Mapping[str, str], **extra: str) -> None:
        self._errors: list[str] = []
        self._lock = threading.Lock()
        conf = _config(PRODUCER_DEFAULTS, kafka, {"bootstrap.servers": bootstrap, **extra})
        # Python-level option (a bool, not a librdkafka string): reports only for failures.
        conf["delivery.report.only.error"] = str(conf.get("delivery.report.only.error", "true")).lower() == "true"
        conf["on_delivery"] = self._on_delivery
        conf["error_cb"] = self._on_error
        self._producer = confluent_kafka.Producer(conf)
        self._produce = self._producer.produce

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            with self._lock:
                self._errors.append(f"delivery to {msg.topic()} failed: {err.str()}")

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            with self._lock:
                self._errors.append(f"producer failed: {err.str()}")

    def produce(self, topic: str, value: bytes | None, key: bytes | None, headers: HeaderList | None) -> None:
        try:
            self._produce(topic, value, key, headers=headers)  # type: ignore[arg-type]
        except BufferError:
            # Local queue full: serve delivery reports until there is room (backpressure).
            while True:
                self._producer.poll(0.05)
                try:
                    self._produce(topic, value, key, headers=headers)  # type: ignore[arg-type]
                    return
                except BufferError:
                    continue
        except KafkaException as exc:
            raise broker_error(exc, f"produce to {topic} failed") from None

    def poll(self, timeout: float) -> None:
        self._producer.poll(timeout)

    def flush(self, timeout: float) -> int:
        return int(self._producer.flush(timeout))

    def take_errors(self) -> list[str]:
        with self._lock:
            errors, self._errors = self._errors, []
        return errors


class _TransactionalProducer(KafkaProducer):
    """:class:`KafkaProducer` with librdkafka's transaction calls mapped to kstream errors.

    librdkafka does not implement KIP-890 (Kafka 4's transaction protocol v2): a commit that
    times out or fails ambiguously leaves the transaction's outcome unknown. Such a call raises
    :class:`TransactionInDoubt` and sends no abort: an EndTxn(abort) while the transaction's
    partitions have no leader (a restarting broker) is answered, but its markers are dropped,
    which leaves the partition's last stable offset pinned for good (a hanging transaction).
    The owner discards this producer and creates a new one with the same ``transactional.id``;
    its :meth:`init` waits until every partition of ``topics`` has a leader, then bumps the
    epoch, which fences this one and aborts what it left open, markers included.
    """

    def __init__(self, bootstrap: str, kafka: Mapping[str, str], transactional_id: str,
                 topics: Sequence[str] = ()) -> None:
        # A short retry backoff: after a commit, the next transaction's first request can meet
        # CONCURRENT_TRANSACTIONS and wait retry.backoff.ms (100 ms by default) for nothing.
        # Kafka's own 60 s transaction timeout (not shorter): the coordinator aborts a crashed
        # producer's transaction only after it, so a broker that restarts within it has its
        # partitions' leaders back before that abort writes its markers. The price: after a
        # worker is killed, read_committed readers of the partitions it was writing wait up to
        # 60 s (kstream's ids are unique per worker, so nothing aborts it sooner).
        defaults = {"retry.backoff.ms": "20", "transaction.timeout.ms": "60000"}
        super().__init__(bootstrap, {**defaults, **kafka}, **{"transactional.id": transactional_id})
        self.transactional_id = transactional_id
        self._topics = list(topics)
        self.abort_on_failure = True

    def init(self, timeout: float) -> None:
        """Wait (up to ``timeout``) until the partitions of ``topics`` have leaders, then init."""
        deadline = time.monotonic() + timeout
        self._wait_for_leaders(deadline)
        try:
            self._producer.init_transactions(max(1.0, deadline - time.monotonic()))
        except KafkaException as exc:
            raise broker_error(exc, "initialising transactions failed") from None

    def _wait_for_leaders(self, deadline: float) -> None:
        wanted = set(self._topics)
        if not wanted:
            return
        missing = "the cluster did not answer"
        while True:
            try:
                meta = self._producer.list_topics(timeout=max(0.5, min(5.0, deadline - time.monotonic())))
                leaderless = sorted(
                    f"{name}[{p.id}]" for name, t in meta.topics.items() if name in wanted
                    for p in t.partitions.values() if p.leader < 0
                )
                if not leaderless:
                    return
                missing = f"no leader for {', '.join(leaderless[:5])}"
            except KafkaException:
                missing = "the cluster did not answer"
            if time.monotonic() >= deadline:
                raise BrokerUnavailable(f"transactional producer {self.transactional_id}: {missing}")
            time.sleep(0.5)

    def begin(self) -> None:
        try:
            self._producer.begin_transaction()
        except KafkaException as exc:
            raise broker_error(exc, "beginning a transaction failed") from None

    def abort(self, timeout: float) -> None:
        try:
            self._producer.abort_transaction(timeout)
        except KafkaException as exc:
            raise broker_error(exc, "aborting the transaction failed") from None

    def _commit(self, offsets: Sequence[TopicPartition], group_metadata: object, timeout: float) -> None:
        """Send ``offsets`` (if any) and commit, retrying retriable errors until ``timeout``.

        Raises :class:`TransactionInDoubt` when the outcome is unknown (timed out, retriable
        to the end, or neither fatal nor abortable): nothing is aborted, see the class doc.
        An abortable error is aborted here if ``abort_on_failure``, then raised as a retryable
        :class:`BrokerError`; else it is in doubt too. A fatal one (fenced) is raised as is.
        """
        deadline = time.monotonic() + timeout
        parts = [CkTopicPartition(t, p, o) for t, p, o in offsets]
        producer = self._producer
        try:
            if parts:
                self._bounded(functools.partial(producer.send_offsets_to_transaction, parts, group_metadata, timeout), timeout,
                              "sending the offsets to the transaction")
            while True:
                try:
                    left = max(0.1, deadline - time.monotonic())
                    self._bounded(functools.partial(producer.commit_transaction, left), left, "committing the transaction")
                    return
                except KafkaException as exc:
                    err = exc.args[0] if exc.args else None
                    if isinstance(err, KafkaError) and err.retriable() and time.monotonic() < deadline:
                        continue
                    raise
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if not isinstance(err, KafkaError) or err.fatal():
                raise broker_error(exc, "committing the transaction failed") from None
            if err.txn_requires_abort() and self.abort_on_failure:
                self.abort(timeout)
                failed = broker_error(exc, "committing the transaction failed (aborted)")
                failed.retryable = True
                raise failed from None
            raise TransactionInDoubt(f"committing the transaction failed, outcome unknown: {err.str()}",
                                     code=err.name()) from None

    def _bounded(self, call: Callable[[], object], timeout: float, what: str) -> None:
        """Make ``call`` on a helper thread and give up on it after ``timeout`` (+5 s).

        librdkafka ignores the timeout of its coordinator requests when the coordinator goes
        down (librdkafka issues #5456, #5511: ``send_offsets_to_transaction`` then blocks
        forever, even after the broker is back). A call that does not return is in doubt; its
        thread stays blocked in librdkafka until the successor producer fences this one.
        """
        done = threading.Event()
        failed: list[BaseException] = []

        def run() -> None:
            try:
                call()
            except BaseException as exc:  # noqa: BLE001  (handed to the caller below)
                failed.append(exc)
            finally:
                done.set()

        threading.Thread(target=run, name="kstream-txn-call", daemon=True).start()
        if not done.wait(timeout + 5.0):
            raise TransactionInDoubt(f"{what} did not return within {timeout + 5.0:g} s; outcome unknown")
        if failed:
            raise failed[0]

    def discard(self) -> None:
        """Drop the producer without aborting (see the class doc): queued records are purged."""
        try:
            self._producer.purge(in_queue=True, in_flight=True, blocking=False)
        except (KafkaException, RuntimeError):
            pass  # nothing queued, or already unusable: either way it is dropped


class KafkaWorkerProducer(_TransactionalProducer):
    """A worker's producer in exactly-once mode: :class:`KafkaProducer` plus
    :class:`kstream.kafka.port.WorkerTransactions`.

    A failed commit is never aborted here, only reported as :class:`TransactionInDoubt`: the
    failure is often the cluster itself (a broker restarting), when an abort is the dangerous
    call. The worker is replaced, and its successor's ``init`` aborts the transaction once
    every partition has a leader again.
    """

    def __init__(self, bootstrap: str, kafka: Mapping[str, str], transactional_id: str,
                 topics: Sequence[str] = ()) -> None:
        super().__init__(bootstrap, kafka, transactional_id, topics)
        self.abort_on_failure = False

    def commit(self, offsets: Sequence[TopicPartition], group_metadata: object, timeout: float) -> None:
        self._commit(offsets, group_metadata, timeout)
        self.begin()


class KafkaAdmin:
    """:class:`kstream.kafka.port.Admin` on ``confluent_kafka.admin.AdminClient``."""

    def __init__(self, bootstrap: str, kafka: Mapping[str, str], *, timeout: float = 10.0) -> None:
        self._bootstrap = bootstrap
        self._timeout = timeout
        self._kafka = dict(kafka)
        self._admin = AdminClient({**kafka, "bootstrap.servers": bootstrap, "logger": cast(Any, _LIBRDKAFKA_LOG)})

    def _unavailable(self) -> BrokerUnavailable:
        # An admin client hands its log lines (the cause: authentication, TLS, refused
        # connection) to the logger only when polled.
        self._admin.poll(0)
        return BrokerUnavailable(f"no Kafka broker answered at {self._bootstrap} within {self._timeout:g} s")

    def topics(self, names: Sequence[str] | None = None) -> dict[str, TopicState]:
        try:
            meta = self._admin.list_topics(timeout=self._timeout)
        except KafkaException:
            raise self._unavailable() from None
        wanted = set(names) if names is not None else None
        found = {
            name: t for name, t in meta.topics.items()
            if (wanted is None or name in wanted) and t.error is None and not name.startswith("__")
        }
        if not found:
            return {}
        resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in found]
        futures = self._admin.describe_configs(resources, request_timeout=self._timeout)
        result = {}
        for res, fut in futures.items():
            try:
                entries = fut.result(timeout=self._timeout)
            except KafkaException as exc:
                raise broker_error(exc, f"describe {res.name} failed") from None
            config = {
                e.name: e.value for e in entries.values()
                if e.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value and e.value is not None
            }
            t = found[res.name]
            rf = len(next(iter(t.partitions.values())).replicas) if t.partitions else 0
            result[res.name] = TopicState(res.name, len(t.partitions), rf, config)
        return result

    def create_topics(self, topics: Sequence[NewTopic]) -> None:
        if not topics:
            return
        # -1: the broker's default.replication.factor (KIP-464).
        new = [CkNewTopic(t.name, t.partitions, t.replication_factor or -1, config=dict(t.config)) for t in topics]
        self._wait(self._admin.create_topics(new, request_timeout=self._timeout), "create topic", ok={KafkaError.TOPIC_ALREADY_EXISTS})
        self._wait_for_leaders([t.name for t in topics])

    def _wait_for_leaders(self, names: Sequence[str]) -> None:
        """Creation returns before every partition has a leader; callers expect usable topics."""
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            meta = self._admin.list_topics(timeout=self._timeout)
            if all(
                name in meta.topics and meta.topics[name].partitions
                and all(p.leader >= 0 for p in meta.topics[name].partitions.values())
                for name in names
            ):
                return
            time.sleep(0.1)
        raise BrokerError(f"topics {', '.join(names)} were created but have no leader after {self._timeout:g} s")

    def create_partitions(self, topic: str, total: int) -> None:
        self._wait(self._admin.create_partitions([NewPartitions(topic, total)], request_timeout=self._timeout), "grow partitions of")
        self._wait_for_leaders([topic])

    def alter_config(self, topic: str, config: dict[str, str]) -> None:
        entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in config.items()]
        res = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=entries)
        self._wait(self._admin.incremental_alter_configs([res], request_timeout=self._timeout), "alter config of")

    def _wait(self, futures: Mapping[Any, Any], what: str, ok: set[int] | None = None) -> None:
        for name, fut in futures.items():
            try:
                fut.result(timeout=self._timeout + 5)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if isinstance(err, KafkaError) and ok and err.code() in ok:
                    continue
                raise broker_error(exc, f"{what} {getattr(name, 'name', name)} failed") from None

    def lag(self, group: str, topic: str) -> list[GroupLag]:
        try:
            meta = self._admin.list_topics(topic, timeout=self._timeout)
        except KafkaException:
            raise self._unavailable() from None
        tmeta = meta.topics.get(topic)
        if tmeta is None or tmeta.error is not None:
            return []
        consumer = confluent_kafka.Consumer({**self._kafka, "bootstrap.servers": self._bootstrap, "group.id": group,
                                             "enable.auto.commit": "false"})
        try:
            parts = [CkTopicPartition(topic, p) for p in sorted(tmeta.partitions)]
            committed = consumer.committed(parts, timeout=self._timeout)
            result = []
            for tp in committed:
                _, high = consumer.get_watermark_offsets(CkTopicPartition(topic, tp.partition), timeout=self._timeout)
                result.append(GroupLag(topic, tp.partition, tp.offset if tp.offset >= 0 else None, high))
            return result
        except KafkaException as exc:
            raise broker_error(exc, f"reading lag of {group} failed") from None
        finally:
            consumer.close()

    def cluster(self) -> Cluster:
        ids = self.broker_ids()
        res = ConfigResource(ConfigResource.Type.BROKER, str(ids[0]))
        try:
            entries = self._admin.describe_configs([res], request_timeout=self._timeout)[res].result(timeout=self._timeout)
        except KafkaException as exc:
            raise broker_error(exc, f"describe broker {ids[0]} failed") from None

        def value(name: str) -> int:
            entry = entries.get(name)
            return int(entry.value) if entry is not None and entry.value is not None else 1

        return Cluster(len(ids), value("default.replication.factor"), value("min.insync.replicas"))

    def broker_ids(self) -> list[int]:
        try:
            return sorted(self._admin.list_topics(timeout=self._timeout).brokers)
        except KafkaException:
            raise self._unavailable() from None

    def stable_offsets(self, topics: Sequence[str]) -> list[PartitionEnds]:
        """Last stable offset and high watermark of every partition of ``topics`` (those that exist)."""
        try:
            meta = self._admin.list_topics(timeout=self._timeout)
        except KafkaException:
            raise self._unavailable() from None
        parts = [CkTopicPartition(t, p) for t in topics if t in meta.topics and meta.topics[t].error is None
                 for p in sorted(meta.topics[t].partitions)]
        if not parts:
            return []
        ends: dict[tuple[str, int], list[int]] = {}
        latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
        for level in (IsolationLevel.READ_COMMITTED, IsolationLevel.READ_UNCOMMITTED):
            futures = self._admin.list_offsets({tp: latest for tp in parts}, isolation_level=level,
                                               request_timeout=self._timeout)
            for tp, fut in futures.items():
                try:
                    ends.setdefault((tp.topic, tp.partition), []).append(fut.result(timeout=self._timeout + 5).offset)
                except KafkaException as exc:
                    raise broker_error(exc, f"listing offsets of {tp.topic}[{tp.partition}] failed") from None
        return [PartitionEnds(t, p, o[0], o[1]) for (t, p), o in sorted(ends.items()) if len(o) == 2]

    def timestamp_at(self, topic: str, partition: int, offset: int) -> int | None:
        """The timestamp (ms) of the record at ``offset``, read uncommitted; None if there is none."""
        consumer = confluent_kafka.Consumer({**self._kafka, "bootstrap.servers": self._bootstrap,
                                             "group.id": f"kstream-probe-{time.time_ns()}", "enable.auto.commit": "false",
                                             "isolation.level": "read_uncommitted", "logger": cast(Any, _LIBRDKAFKA_LOG)})
        try:
            consumer.assign([CkTopicPartition(topic, partition, offset)])
            deadline = time.monotonic() + self._timeout
            while time.monotonic() < deadline:
                m = consumer.poll(0.5)
                if m is not None and m.error() is None:
                    return int(m.timestamp()[1])
            return None
        finally:
            consumer.close()


class KafkaTopicReader:
    """:class:`kstream.kafka.port.TopicReader`: an assigned (group-less) ``read_committed`` consumer.

    The end of each partition is where librdkafka reports partition EOF: under ``read_committed``
    that is the last stable offset, so an open transaction is neither waited for nor returned.
    """

    def __init__(self, bootstrap: str, kafka: Mapping[str, str]) -> None:
        self._bootstrap = bootstrap
        self._kafka = dict(kafka)

    def read_compacted(self, topic: str, timeout: float) -> list[Record]:
        conf = _config({}, self._kafka, {
            "bootstrap.servers": self._bootstrap, "group.id": f"kstream-reader-{time.time_ns()}",
            "enable.auto.commit": "false", "enable.partition.eof": "true",
            "isolation.level": "read_committed", "auto.offset.reset": "earliest",
        })
        conf.pop("group.protocol", None)
        consumer = confluent_kafka.Consumer(conf)
        deadline = time.monotonic() + timeout
        try:
            meta = consumer.list_topics(topic, timeout=timeout)
            tmeta = meta.topics.get(topic)
            if tmeta is None or tmeta.error is not None or not tmeta.partitions:
                return []
            pending = {p for p in sorted(tmeta.partitions) if self._has_records(consumer, topic, p, deadline)}
            if not pending:
                return []
            consumer.assign([CkTopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING) for p in sorted(pending)])
            out: list[Record] = []
            while pending:
                if time.monotonic() > deadline:
                    raise BrokerError(f"reading {topic} did not reach its end within {timeout:g} s")
                for m in consumer.consume(1000, 0.2):
                    err = m.error()
                    if err is None:
                        out.append(cast(Record, m))
                    elif err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(m.partition())
                    else:
                        _error_event(err)
            return out
        except KafkaException as exc:
            raise broker_error(exc, f"reading {topic} failed") from None
        finally:
            consumer.close()


    @staticmethod
    def _has_records(consumer: Any, topic: str, partition: int, deadline: float) -> bool:
        # Right after a topic is created its leader may not be known yet: retry until the deadline.
        while True:
            try:
                low, high = consumer.get_watermark_offsets(
                    CkTopicPartition(topic, partition), timeout=max(0.5, deadline - time.monotonic()), cached=False)
                return bool(high > low)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                retry = isinstance(err, KafkaError) and (err.retriable() or err.code() in _RETRYABLE)
                if not retry or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


class KafkaTransactionalProducer(_TransactionalProducer):
    """:class:`kstream.kafka.port.TransactionalProducer` (the Trash tools' producer)."""

    def commit(self, timeout: float) -> None:
        self._commit((), None, timeout)

    def close(self) -> None:
        self._producer.flush(5)
