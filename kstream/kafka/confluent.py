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

import concurrent.futures
import contextlib
import functools
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

import confluent_kafka
from confluent_kafka import IsolationLevel, KafkaError, KafkaException
from confluent_kafka import TopicPartition as CkTopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    OffsetSpec,
    ResourcePatternType,
    ResourceType,
)
from confluent_kafka.admin import NewTopic as CkNewTopic  # type: ignore[attr-defined]

from kstream.errors import AccessDenied, BrokerError, BrokerUnavailable, ConfigError, TransactionInDoubt
from kstream.kafka.port import (
    AclKey,
    Cluster,
    GroupLag,
    NewTopic,
    PartitionEnds,
    ReadProgress,
    RebalanceCallback,
    TopicPartition,
    TopicState,
)
from kstream.naming import READER_GROUP_PREFIX
from kstream.types import HeaderList, Record

CONSUMER_DEFAULTS: dict[str, str] = {
    "enable.auto.commit": "false",
    # Never read outputs of open or aborted transactions (upstream nodes in exactly-once mode).
    "isolation.level": "read_committed",
    "enable.auto.offset.store": "false",
    "auto.offset.reset": "earliest",
    "group.protocol": "consumer",
    # A node's members share its input topics and its replay topic. The broker's default
    # assignor (uniform) balances the count of partitions over all of them, so a member that
    # joins may get only the (mostly idle) replay partitions and take no load; range spreads
    # every topic's partitions over the members.
    "group.remote.assignor": "range",
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
    # 1 ms, not 5: every hop of a chain waits its linger, so it adds up along the chain. A
    # worker produces a polled batch's outputs in one burst, so they batch without waiting.
    "linger.ms": "1",
}
# Properties librdkafka rejects under the consumer group protocol (KIP-848); dropped with it.
_CLASSIC_ONLY = ("session.timeout.ms", "heartbeat.interval.ms", "partition.assignment.strategy")
# And those of the consumer protocol only, dropped with the classic one.
_CONSUMER_ONLY = ("group.remote.assignor",)
# A commit refused because this consumer is no longer (or not yet again) a member of its group
# generation: at-least-once, the next owner of those partitions processes the messages again.
_NOT_A_MEMBER = {
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.FENCED_INSTANCE_ID,
    KafkaError.STALE_MEMBER_EPOCH,
}
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


# Errors no reconnect fixes (wrong credentials, a broker certificate not trusted): librdkafka
# reports them as non-fatal events and reconnects forever; kstream stops with the reason.
_LOGIN_FAILED = {KafkaError._AUTHENTICATION, KafkaError._SSL, KafkaError.SASL_AUTHENTICATION_FAILED}
# A missing ACL, by the resource type it is about (kstream acls plan lists the rights a node needs).
_DENIED = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED: "TOPIC",
    KafkaError.GROUP_AUTHORIZATION_FAILED: "GROUP",
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED: "TRANSACTIONAL_ID",
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: "CLUSTER",
}
_ACL_HINT = "grant it (kstream acls plan APP lists what each node needs)"


def _principal(conf: Mapping[str, Any]) -> str:
    user = conf.get("sasl.username")
    return f"User:{user}" if user else "this client"


def not_authorized(principal: str, operation: str, resource_type: str, name: str, err: KafkaError) -> AccessDenied:
    """The error of a missing ACL, naming the right: ``User:x may not READ GROUP g``."""
    return AccessDenied(f"not authorized: {principal} may not {operation} {resource_type} {name} ({err.str()}); {_ACL_HINT}",
                       code=err.name())


def broker_error(exc: KafkaException | KafkaError, what: str, right: tuple[str, str, str, str] | None = None) -> BrokerError:
    """Map a librdkafka error to kstream's tree (one table, :data:`_RETRYABLE`). ``right``
    (principal, operation, resource type, name) is what the call needed, named if it was denied."""
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else exc
    if not isinstance(err, KafkaError):
        return BrokerError(f"{what}: {exc}")
    if err.code() in _DENIED and right is not None:
        return not_authorized(*right, err=err)
    if err.code() in _DENIED:
        return AccessDenied(f"{what}: not authorized ({err.str()}); {_ACL_HINT}", code=err.name())
    if err.code() in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._TIMED_OUT):
        return BrokerUnavailable(f"{what}: {err.str()}")
    return BrokerError(f"{what}: {err.str()}", code=err.name(), retryable=err.code() in _RETRYABLE)


_LIBRDKAFKA_LOG = logging.getLogger("kstream.librdkafka")
_EVENTS_LOG = logging.getLogger("kstream.kafka")
_NUMBERS = re.compile(r"\d+")


class _ErrorEvents:
    """A client's error events (``error_cb``), logged once per change of state: each kind of
    error once until the client works again (:meth:`ok`), which is logged too."""

    def __init__(self, client_id: str, watch: _LoginWatch | None = None) -> None:
        self.client = client_id
        self._watch = watch
        self._seen: set[int] = set()
        self._lock = threading.Lock()

    def __call__(self, err: KafkaError) -> None:
        if self._watch is not None:
            self._watch.on_error(err)
        if _login_failed(err) is not None:
            return  # the client stops with it: that is its one error line
        with self._lock:
            if err.code() in self._seen and not err.fatal():
                return
            self._seen.add(err.code())
        _EVENTS_LOG.log(logging.ERROR if err.fatal() else logging.WARNING, "%s: %s", self.client, err.str())

    def ok(self) -> None:
        if self._seen:
            with self._lock:
                self._seen.clear()
            _EVENTS_LOG.info("%s: working again", self.client)


class _LibrdkafkaLog:
    """librdkafka's log lines of one client, to Python logging; less those of failed logins,
    which come as error events too and stop the client with that same text as its one error
    line. Keeps the topics a transaction was denied: only this log line names them.

    Each distinct line (numbers aside) is logged at most once per ``every`` seconds: a broker
    that is down for a minute otherwise logs a reconnect failure per broker thread every few
    hundred milliseconds."""

    _LOGIN_FAILED = ("SASL authentication error", "SSL handshake failed", "certificate verify failed",
                     "in state SSL_HANDSHAKE)", "in state AUTH_REQ)")
    _TXN_DENIED = re.compile(r'Failed to add partition "([^"]+)" \[\d+\] to transaction: Broker: Topic authorization failed')

    def __init__(self, every: float = 60.0) -> None:
        self.denied_topics: list[str] = []
        self._every = every
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def log(self, level: int, msg: str, *args: Any) -> None:
        text = msg % args if args else msg
        if (denied := self._TXN_DENIED.search(text)) and denied[1] not in self.denied_topics:
            self.denied_topics.append(denied[1])
        if any(part in text for part in self._LOGIN_FAILED):
            return
        key = _NUMBERS.sub("#", text)
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, -self._every) < self._every:
                return
            if len(self._last) > 1000:
                self._last.clear()
            self._last[key] = now
        _LIBRDKAFKA_LOG.log(level, "%s", text)


def _login_failed(err: KafkaError) -> AccessDenied | None:
    """The error of a failed login (:data:`_LOGIN_FAILED`), or None for any other event."""
    # Of TLS errors only an untrusted certificate: others (a reset mid-handshake) may pass.
    if err.code() not in _LOGIN_FAILED or (err.code() == KafkaError._SSL and "certificate verify failed" not in err.str()):
        return None
    what = "TLS handshake failed" if err.code() == KafkaError._SSL else "authentication failed"
    return AccessDenied(f"{what}: {err.str()}", code=err.name())


class _LoginWatch:
    """Keeps the first error event that no reconnect fixes (:data:`_LOGIN_FAILED`) of a client,
    for the calls that wait on it to raise at once instead of timing out. Thread-safe: librdkafka
    calls ``on_error`` from whichever thread serves it."""

    def __init__(self) -> None:
        self._failed: AccessDenied | None = None

    def on_error(self, err: KafkaError) -> None:
        if self._failed is None:
            self._failed = _login_failed(err)

    def check(self) -> None:
        if self._failed is not None:
            raise self._failed


def _config(base: Mapping[str, str], settings: Mapping[str, str], extra: Mapping[str, str],
            watch: _LoginWatch | None = None) -> dict[str, Any]:
    # librdkafka's own log lines go to Python logging, not straight to stderr.
    conf: dict[str, Any] = {**base, **settings, **extra, "logger": _LibrdkafkaLog()}
    if watch is not None:
        conf["error_cb"] = watch.on_error
    if conf.get("group.protocol") == "consumer":
        for name in _CLASSIC_ONLY:
            conf.pop(name, None)
    elif "group.protocol" in conf:
        for name in _CONSUMER_ONLY:
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


_C = TypeVar("_C")


def _client(kind: Callable[[dict[str, Any]], _C], conf: dict[str, Any]) -> _C:
    """A librdkafka client; settings it rejects are one :class:`ConfigError` line, not a traceback."""
    try:
        return kind(conf)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        raise ConfigError(f"invalid Kafka client settings: {err.str() if isinstance(err, KafkaError) else exc}") from None


def _list_topics(client: Any, watch: _LoginWatch, topic: str | None, deadline: float) -> Any:
    """Metadata from an admin client or consumer, None if no broker answered by ``deadline``.
    Asked in short slices, serving callbacks in between, so that a failed login fails at once."""
    while True:
        try:
            return client.list_topics(topic, timeout=min(1.0, max(0.1, deadline - time.monotonic())))
        except KafkaException:
            client.poll(0)  # serves error_cb
            watch.check()
            if time.monotonic() >= deadline:
                return None


def _error_event(err: KafkaError | None, principal: str = "this client", read: Sequence[str] = (),
                 group: str | None = None, topic: str | None = None) -> bool:
    """True for an error event (dropped: librdkafka retries transient errors); raises on fatal
    ones, failed logins and denied rights (``read`` topics and ``group`` name what was needed)."""
    if err is None:
        return False
    code = err.code()
    if code == KafkaError.GROUP_AUTHORIZATION_FAILED and group is not None:
        raise not_authorized(principal, "READ", "GROUP", group, err)
    if code == KafkaError.TOPIC_AUTHORIZATION_FAILED and (topic or read):
        raise not_authorized(principal, "READ", "TOPIC", topic or " or ".join(read), err)
    if err.fatal() or code == KafkaError.UNKNOWN_TOPIC_OR_PART or code in _DENIED:
        raise broker_error(err, "consumer failed")
    failed = _login_failed(err)
    if failed is not None:
        raise failed
    return True


class KafkaConsumer:
    """:class:`kstream.kafka.port.Consumer` on ``confluent_kafka.Consumer``."""

    def __init__(self, bootstrap: str, group: str, kafka: Mapping[str, str], **extra: str) -> None:
        self._watch = _LoginWatch()
        conf = _config(CONSUMER_DEFAULTS, kafka, {"bootstrap.servers": bootstrap, "group.id": group, **extra}, self._watch)
        self._principal = _principal(conf)
        self._group = group
        self._topics: list[str] = []
        self.events = _ErrorEvents(str(conf.get("client.id") or group), self._watch)
        conf["error_cb"] = self.events
        conf["on_commit"] = self._on_commit
        self._failed_commits: list[TopicPartition] = []
        self._consumer = _client(confluent_kafka.Consumer, conf)

    def _on_commit(self, err: KafkaError | None, parts: list[CkTopicPartition]) -> None:
        # Served inside consume(), on the polling thread.
        failed = [TopicPartition(p.topic, p.partition, p.offset) for p in parts
                  if err is not None or p.error is not None]
        if not failed or (err is not None and err.code() == KafkaError._NO_OFFSET):
            return
        first = err if err is not None else next(p.error for p in parts if p.error is not None)
        if first.code() in _NOT_A_MEMBER:
            # Out of the group (a rebalance or an expired session): the partitions' next owner
            # repeats these messages; committing them again could not succeed.
            _EVENTS_LOG.warning("%s: offset commit of %d partitions refused (%s): no longer their owner; "
                                "they are processed again", self.events.client, len(failed), first.str())
            return
        _EVENTS_LOG.warning("%s: offset commit of %d partitions failed (%s); will retry", self.events.client,
                            len(failed), first.str())
        self._failed_commits += failed

    def take_commit_failures(self) -> list[TopicPartition]:
        failed, self._failed_commits = self._failed_commits, []
        return failed

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

        self._topics = list(topics)
        self._consumer.subscribe(list(topics), on_assign=assigned, on_revoke=revoked, on_lost=lost)

    def consume(self, max_messages: int, timeout: float) -> list[Record]:
        # librdkafka's batch consume waits the whole timeout unless the batch fills up: take
        # what is there without waiting, and only when nothing is, wait for the first message.
        messages: list[Any] = self._consumer.consume(max_messages, 0)
        self._watch.check()
        if not messages:
            first = self._consumer.poll(timeout)
            if first is None:
                return []
            messages = [first, *self._consumer.consume(max_messages - 1, 0)] if max_messages > 1 else [first]
        for m in messages:
            if m.error() is not None:
                return [x for x in messages if not self._error_event(x)]
        self.events.ok()
        return cast(list[Record], messages)

    def _error_event(self, message: Any) -> bool:
        """True for an error event (raising when it is fatal); False for a record of the same batch."""
        err = message.error()
        if err is None:
            return False
        topic = message.topic() if err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED else None
        return _error_event(err, self._principal, self._topics, self._group, topic)

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
            if exc.args and exc.args[0].code() in _NOT_A_MEMBER:
                _EVENTS_LOG.warning("%s: offset commit refused (%s): no longer the partitions' owner; they are "
                                    "processed again", self.events.client, exc.args[0].str())
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
        self._principal = _principal(conf)
        self._log: _LibrdkafkaLog = conf["logger"]
        self._transactional_id: str | None = conf.get("transactional.id")
        # Python-level option (a bool, not a librdkafka string): reports only for failures.
        conf["delivery.report.only.error"] = str(conf.get("delivery.report.only.error", "true")).lower() == "true"
        conf["on_delivery"] = self._on_delivery
        conf["error_cb"] = self._on_error
        self._events = _ErrorEvents(str(conf.get("client.id") or conf.get("transactional.id") or "producer"))
        self._producer = _client(confluent_kafka.Producer, conf)
        self._produce = self._producer.produce

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            if err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                text = str(not_authorized(self._principal, "WRITE", "TOPIC", msg.topic(), err))
            else:
                text = f"delivery to {msg.topic()} failed: {err.str()}"
            with self._lock:
                self._errors.append(text)

    def _on_error(self, err: KafkaError) -> None:
        self._events(err)
        if err.code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED and self._transactional_id:
            text = str(not_authorized(self._principal, "WRITE", "TRANSACTIONAL_ID", self._transactional_id, err))
        elif err.fatal() or err.code() in _LOGIN_FAILED:
            text = f"producer failed: {err.str()}"
        else:
            return
        with self._lock:
            if text not in self._errors:
                self._errors.append(text)

    def produce(self, topic: str, value: bytes | None, key: bytes | None, headers: HeaderList | None) -> None:
        # Positional arguments, in the order of confluent-kafka's stub: partition -1 (the
        # partitioner chooses), callback and on_delivery None (the producer's own _on_delivery),
        # timestamp 0 (now), headers. Passing headers as a keyword costs its argument parsing
        # about 0.3 us more per message, a tenth of a hop's whole Python overhead.
        try:
            self._produce(topic, value, key, -1, None, None, 0, headers)  # type: ignore[arg-type]
        except BufferError:
            # Local queue full: serve delivery reports until there is room (backpressure).
            while True:
                self._producer.poll(0.05)
                try:
                    self._produce(topic, value, key, -1, None, None, 0, headers)  # type: ignore[arg-type]
                    return
                except BufferError:
                    continue
        except KafkaException as exc:
            raise broker_error(exc, f"produce to {topic} failed", (self._principal, "WRITE", "TOPIC", topic)) from None

    def poll(self, timeout: float) -> None:
        self._producer.poll(timeout)

    def flush(self, timeout: float) -> int:
        left = int(self._producer.flush(timeout))
        if not left:
            self._events.ok()
        return left

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
            right = (self._principal, "WRITE", "TRANSACTIONAL_ID", self._transactional_id or "")
            raise broker_error(exc, "initialising transactions failed", right) from None

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
            if not isinstance(err, KafkaError) or err.fatal() or err.code() in _DENIED:
                right = None
                if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                    # Only librdkafka's log line names the topic; with the call made on a helper
                    # thread (_bounded) that line can come a moment after the error.
                    waited = time.monotonic() + 1.0
                    while not self._log.denied_topics and time.monotonic() < waited:
                        self._producer.poll(0.05)
                if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED and self._log.denied_topics:
                    right = (self._principal, "WRITE", "TOPIC", " and ".join(self._log.denied_topics))
                if isinstance(err, KafkaError) and err.txn_requires_abort() and self.abort_on_failure:
                    # Failing that too (an invalid state) must not hide why the commit failed; the
                    # broker aborts the transaction when it times out.
                    with contextlib.suppress(BrokerError):
                        self.abort(timeout)
                raise broker_error(exc, "committing the transaction failed", right) from None
            if err.txn_requires_abort() and self.abort_on_failure:
                with contextlib.suppress(BrokerError):
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
        self._watch = _LoginWatch()
        self._admin = _client(AdminClient, _config({}, kafka, {"bootstrap.servers": bootstrap}, self._watch))
        self._principal = _principal(kafka)

    def _metadata(self, topic: str | None = None) -> Any:
        meta = _list_topics(self._admin, self._watch, topic, time.monotonic() + self._timeout)
        if meta is None:
            raise BrokerUnavailable(f"no Kafka broker answered at {self._bootstrap} within {self._timeout:g} s")
        return meta

    def topics(self, names: Sequence[str] | None = None) -> dict[str, TopicState]:
        meta = self._metadata()
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
                entries = self._result(fut)
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

    def _result(self, future: Any) -> Any:
        """A request's result; waited for in short slices so that a failed login fails at once."""
        deadline = time.monotonic() + self._timeout + 5
        while True:
            try:
                return future.result(timeout=0.5)
            except concurrent.futures.TimeoutError:
                self._check_login()
                if time.monotonic() >= deadline:
                    raise BrokerUnavailable(f"no Kafka broker answered at {self._bootstrap} within {self._timeout:g} s") from None

    def _check_login(self) -> None:
        self._admin.poll(0)  # serves error_cb
        self._watch.check()

    def exists(self, topic: str, *, needed: str = "DESCRIBE") -> bool:
        """Whether ``topic`` exists, from metadata alone: a client may see every topic it may
        read or write (READ and WRITE imply DESCRIBE), but not their configs. Raises
        :class:`AccessDenied` naming the ``needed`` operation when the topic is hidden from it."""
        tmeta = self._metadata(topic).topics.get(topic)
        if tmeta is not None and tmeta.error is not None and tmeta.error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            raise not_authorized(self._principal, needed, "TOPIC", topic, tmeta.error)
        return tmeta is not None and tmeta.error is None

    def create_acls(self, acls: Sequence[AclKey]) -> None:
        """Create ALLOW-from-any-host bindings (creating one that exists changes nothing), and
        return once the broker lists them: it enforces them from then on (they reach it from
        the controller a moment after the call succeeded)."""
        if not acls:
            return
        self._wait(self._admin.create_acls([_binding(a) for a in acls], request_timeout=self._timeout), "create ACL")
        deadline = time.monotonic() + self._timeout
        while not set(acls) <= set(self.acls()):
            if time.monotonic() > deadline:
                raise BrokerError(f"ACLs were created but the broker did not list them within {self._timeout:g} s")
            time.sleep(0.1)

    def delete_acls(self, acls: Sequence[AclKey]) -> None:
        if acls:
            self._wait(self._admin.delete_acls([_binding(a, AclBindingFilter) for a in acls], request_timeout=self._timeout),
                       "delete ACL")

    def acls(self, principal: str | None = None) -> list[AclKey]:
        """The ALLOW bindings of ``principal`` (or of everyone) on topics, groups and transactional ids."""
        wanted = cast(Any, AclBindingFilter)(ResourceType.ANY, None, ResourcePatternType.ANY, principal, None,
                                  AclOperation.ANY, AclPermissionType.ALLOW)
        try:
            found = self._result(self._admin.describe_acls(wanted, request_timeout=self._timeout))
        except KafkaException as exc:
            raise broker_error(exc, "listing ACLs failed", (self._principal, "DESCRIBE", "CLUSTER", "kafka-cluster")) from None
        return [(b.principal, b.restype.name, b.name, b.resource_pattern_type.name, b.operation.name) for b in found]

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
                self._result(fut)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if isinstance(err, KafkaError) and ok and err.code() in ok:
                    continue
                raise broker_error(exc, f"{what} {getattr(name, 'name', name)} failed") from None

    def lag(self, group: str, topic: str) -> list[GroupLag]:
        meta = self._metadata(topic)
        tmeta = meta.topics.get(topic)
        if tmeta is None or tmeta.error is not None:
            return []
        consumer = _client(confluent_kafka.Consumer, {**self._kafka, "bootstrap.servers": self._bootstrap, "group.id": group,
                                                      "enable.auto.commit": "false", "logger": _LibrdkafkaLog()})
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
        return sorted(self._metadata().brokers)

    def existing(self, names: Sequence[str]) -> set[str]:
        """Those of ``names`` the cluster has (metadata only: needs no DESCRIBE_CONFIGS right).
        A topic this client may not see raises :class:`AccessDenied` naming the right (READ)."""
        found = set()
        for name in names:
            tmeta = self._metadata(name).topics.get(name)
            if tmeta is None:
                continue
            if tmeta.error is not None and tmeta.error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                raise not_authorized(self._principal, "READ", "TOPIC", name, tmeta.error)
            if tmeta.error is None:
                found.add(name)
        return found

    def stable_offsets(self, topics: Sequence[str]) -> list[PartitionEnds]:
        """Last stable offset and high watermark of every partition of ``topics`` (those that exist)."""
        meta = self._metadata()
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
        consumer = _client(confluent_kafka.Consumer, {
            **self._kafka, "bootstrap.servers": self._bootstrap, "group.id": f"{READER_GROUP_PREFIX}{time.time_ns()}",
            "enable.auto.commit": "false", "isolation.level": "read_uncommitted", "logger": _LibrdkafkaLog()})
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
    """:class:`kstream.kafka.port.TopicReader`: assigned (group-less) ``read_committed`` consumers."""

    def __init__(self, bootstrap: str, kafka: Mapping[str, str]) -> None:
        self._bootstrap = bootstrap
        self._kafka = dict(kafka)

    def read_compacted(self, topic: str, timeout: float, progress: ReadProgress | None = None) -> list[Record]:
        follower = self.follow(topic)
        try:
            return follower.read_new(timeout, progress)
        finally:
            follower.close()

    def follow(self, topic: str) -> KafkaTopicFollower:
        return KafkaTopicFollower(self._bootstrap, self._kafka, topic)


class KafkaTopicFollower:
    """:class:`kstream.kafka.port.TopicFollower`: one assigned ``read_committed`` consumer kept open.

    After the first read, where each partition ends is asked of an admin client (its last stable
    offset, one request for the topic): the consumer's own connection may then be holding a
    long-poll fetch, behind which an offsets request would wait ~``fetch.wait.max.ms``.
    Partition EOF (which ``read_committed`` reports at the last stable offset) moves the position
    there, past transaction markers and aborted records.
    """

    _PROGRESS_EVERY = 0.25  # seconds between progress calls

    def __init__(self, bootstrap: str, kafka: Mapping[str, str], topic: str) -> None:
        self._watch = _LoginWatch()
        conf = _config({}, kafka, {
            "bootstrap.servers": bootstrap, "group.id": f"{READER_GROUP_PREFIX}{time.time_ns()}",
            "enable.auto.commit": "false", "enable.partition.eof": "true",
            "isolation.level": "read_committed", "auto.offset.reset": "earliest",
        }, self._watch)
        conf.pop("group.protocol", None)
        self.topic = topic
        self._principal = _principal(conf)
        self._consumer = _client(confluent_kafka.Consumer, conf)
        self._bootstrap, self._kafka = bootstrap, dict(kafka)
        self._admin: KafkaAdmin | None = None
        self._next: dict[int, int] | None = None
        """Per partition, the offset after the last record (or end) seen; None before assignment."""

    def read_new(self, timeout: float, progress: ReadProgress | None = None) -> list[Record]:
        deadline = time.monotonic() + timeout
        try:
            return self._read(deadline, timeout, progress)
        except KafkaException as exc:
            raise broker_error(exc, f"reading {self.topic} failed") from None

    def _read(self, deadline: float, timeout: float, progress: ReadProgress | None) -> list[Record]:
        first = self._next is None
        if self._next is None:
            meta = _list_topics(self._consumer, self._watch, self.topic, deadline)
            if meta is None:
                raise BrokerUnavailable(f"no Kafka broker answered at {self._bootstrap} within {timeout:g} s")
            tmeta = meta.topics.get(self.topic)
            if tmeta is not None and tmeta.error is not None and tmeta.error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                raise not_authorized(self._principal, "READ", "TOPIC", self.topic, tmeta.error)
            if tmeta is None or tmeta.error is not None or not tmeta.partitions:
                return []
            # Before assign no fetch is in flight, so the consumer's own offsets requests are quick.
            # The first read ends at the high watermarks or at EOF, whichever comes first (EOF is
            # at the last stable offset: an open transaction is not waited for).
            marks = {p: self._watermarks(p, deadline) for p in sorted(tmeta.partitions)}
            self._consumer.assign([CkTopicPartition(self.topic, p, confluent_kafka.OFFSET_BEGINNING) for p in marks])
            self._next = {p: low for p, (low, _) in marks.items()}
            ends = {p: high for p, (_, high) in marks.items()}
        else:
            ends = self._ends(deadline)
        positions = self._next
        pending = {p for p, end in ends.items() if p in positions and positions[p] < end}
        start, total = dict(positions), sum(ends[p] - positions[p] for p in pending)
        out: list[Record] = []
        reported = time.monotonic()
        while True:
            # Without pending partitions, one pass that does not wait takes what was fetched already.
            for m in self._consumer.consume(1000, 0.2 if pending else 0.0):
                err, p = m.error(), int(m.partition() or 0)
                if err is None:
                    out.append(cast(Record, m))
                    positions[p] = int(m.offset() or 0) + 1
                elif err.code() == KafkaError._PARTITION_EOF:
                    positions[p] = max(positions[p], int(m.offset() or 0))
                    if first:
                        pending.discard(p)
                else:
                    _error_event(err, self._principal, [self.topic], f"{READER_GROUP_PREFIX}* (prefixed)")
                    continue
                if positions[p] >= ends.get(p, 0):  # (an EOF left over from an earlier end is not this end)
                    pending.discard(p)
            now = time.monotonic()
            if progress is not None and (not pending or now - reported >= self._PROGRESS_EVERY):
                reported = now
                progress(min(total, sum(positions[p] - start[p] for p in ends if p in positions)), total)
            if not pending:
                return out
            if now > deadline:
                raise BrokerError(f"reading {self.topic} did not reach its end within {timeout:g} s")

    def _ends(self, deadline: float) -> dict[int, int]:
        """Partition -> last stable offset; empty while the topic does not exist."""
        # Right after a topic is created its leaders may not be known yet: retry until the deadline.
        while True:
            try:
                if self._admin is None:
                    self._admin = KafkaAdmin(self._bootstrap, self._kafka)
                return {e.partition: e.stable for e in self._admin.stable_offsets([self.topic])}
            except BrokerError as exc:
                if not exc.retryable or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _watermarks(self, partition: int, deadline: float) -> tuple[int, int]:
        # Right after a topic is created its leader may not be known yet: retry until the deadline.
        while True:
            try:
                low, high = self._consumer.get_watermark_offsets(
                    CkTopicPartition(self.topic, partition), timeout=max(0.5, deadline - time.monotonic()), cached=False)
                return int(low), int(high)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                retry = isinstance(err, KafkaError) and (err.retriable() or err.code() in _RETRYABLE)
                if not retry or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def close(self) -> None:
        self._consumer.close()


class KafkaTopicTail:
    """:class:`kstream.kafka.port.TopicTail`: an assigned (group-less) consumer at the end of every partition."""

    def __init__(self, bootstrap: str, kafka: Mapping[str, str], topic: str) -> None:
        conf = _config({}, kafka, {
            "bootstrap.servers": bootstrap, "group.id": f"{READER_GROUP_PREFIX}tail-{time.time_ns()}",
            "enable.auto.commit": "false", "auto.offset.reset": "latest",
        })
        conf.pop("group.protocol", None)
        self._consumer = confluent_kafka.Consumer(conf)
        self._topic = topic
        self._assigned = False

    def read(self, timeout: float) -> list[Record]:
        try:
            if not self._assigned:
                tmeta = self._consumer.list_topics(self._topic, timeout=max(timeout, 5.0)).topics.get(self._topic)
                if tmeta is None or tmeta.error is not None or not tmeta.partitions:
                    raise BrokerError(f"topic {self._topic} does not exist", code="UNKNOWN_TOPIC_OR_PART")
                self._consumer.assign([CkTopicPartition(self._topic, p, confluent_kafka.OFFSET_END)
                                       for p in sorted(tmeta.partitions)])
                self._assigned = True
            # As KafkaConsumer.consume: a batch consume would wait the whole timeout.
            messages: list[Any] = self._consumer.consume(1000, 0)
            if not messages:
                first = self._consumer.poll(timeout)
                messages = [] if first is None else [first, *self._consumer.consume(999, 0)]
        except KafkaException as exc:
            raise broker_error(exc, f"reading {self._topic} failed") from None
        return [cast(Record, m) for m in messages if not _error_event(m.error())]

    def close(self) -> None:
        self._consumer.close()


class KafkaTransactionalProducer(_TransactionalProducer):
    """:class:`kstream.kafka.port.TransactionalProducer` (the Trash tools' producer)."""

    def commit(self, timeout: float) -> None:
        self._commit((), None, timeout)

    def close(self) -> None:
        self._producer.flush(5)


class KafkaAckProducer(KafkaProducer):
    """A producer that tells the caller when each record is acknowledged (the HTTP API answers
    a start only once it is stored). ``on_ack`` runs on the thread that calls :meth:`poll`,
    with ``None`` or the error as one line."""

    def __init__(self, bootstrap: str, kafka: Mapping[str, str]) -> None:
        # Successes are the point; a request waits for its record, so batching buys little
        # (linger.ms 1 unless the settings say otherwise).
        super().__init__(bootstrap, {"linger.ms": "1", **kafka}, **{"delivery.report.only.error": "false"})

    def send(self, topic: str, value: bytes, key: bytes, headers: HeaderList,
             on_ack: Callable[[str | None], None]) -> None:
        def delivered(err: KafkaError | None, msg: Any) -> None:
            on_ack(None if err is None else f"delivery to {topic} failed: {err.str()}")

        try:
            self._producer.produce(topic, value, key, headers=headers, on_delivery=delivered)  # type: ignore[arg-type]
        except BufferError:
            on_ack(f"delivery to {topic} failed: the producer's queue is full")
        except KafkaException as exc:
            on_ack(str(broker_error(exc, f"produce to {topic} failed")))


def _binding(acl: AclKey, kind: Any = AclBinding) -> Any:
    principal, resource_type, name, pattern, operation = acl
    return kind(ResourceType[resource_type], name, ResourcePatternType[pattern], principal, "*",
                AclOperation[operation], AclPermissionType.ALLOW)
