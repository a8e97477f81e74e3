"""The composition root: the one place that picks concrete classes and wires a worker."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from kstream.batch import BatchRunner, read_cursor_changes
from kstream.config import Settings
from kstream.errors import BrokerError, ConfigError, KstreamError
from kstream.kafka.confluent import (
    KafkaAdmin,
    KafkaConsumer,
    KafkaProducer,
    KafkaTopicReader,
    KafkaTransactionalProducer,
    KafkaWorkerProducer,
    check_properties,
)
from kstream.kafka.port import TopicPartition
from kstream.limits import GlobalRateLimiter, Limiter
from kstream.naming import group_id
from kstream.provision import retry_topic_of, wanted
from kstream.runtime.processor import NodeProcessor
from kstream.runtime.worker import State, Worker
from kstream.topology import Topology
from kstream.trash import blocking_keys
from kstream.trash_store import TrashStore
from kstream.txns import Hanging, HangingWatch

log = logging.getLogger("kstream")


def admin(settings: Settings, *, timeout: float = 10.0) -> KafkaAdmin:
    return KafkaAdmin(settings.bootstrap_servers, settings.kafka, timeout=timeout)


def producer(settings: Settings) -> KafkaProducer:
    return KafkaProducer(settings.bootstrap_servers, settings.kafka)


def limiter(service: str, settings: Settings) -> GlobalRateLimiter:
    """The rate limiter of ``service`` (``settings.limits``), coordinated through Kafka."""
    def consumer(group: str) -> KafkaConsumer:
        return KafkaConsumer(settings.bootstrap_servers, group, settings.kafka)

    return GlobalRateLimiter(service, settings.limits[service], namespace=settings.namespace, consumer=consumer)


def build_worker(topology: Topology, name: str, settings: Settings, stop: threading.Event,
                 limiters: dict[str, GlobalRateLimiter] | None = None, *, transactional_id: str | None = None) -> Worker:
    """A worker for node ``name``: its own consumer (group ``{ns}.{topology}.{node}``) and producer.

    Workers built with the same ``limiters`` dict share one rate limiter per service (one
    member of its limits group per process); :func:`run_workers` closes them at the end.
    ``transactional_id``: reuse a failed worker's (exactly-once), so the new producer fences it.
    """
    node = topology.get(name)
    ns = settings.namespace
    limits = {} if limiters is None else limiters
    if node.limit is not None and node.limit not in limits:
        if node.limit not in settings.limits:
            raise ConfigError(f"node {topology.name}.{name} has limit={node.limit!r} but settings define no limits.{node.limit}")
        limits[node.limit] = limiter(node.limit, settings)
    group = group_id(ns, topology.name, name)
    exactly_once = topology.processing_of(node) == "exactly_once"
    # Exactly-once: a transactional producer per worker; a unique id, because fencing of a
    # zombie comes from the consumer group generation sent with the offsets (KIP-447).
    txn_id = transactional_id or f"{group}.{uuid.uuid4().hex[:12]}"
    # Before its first transaction the producer waits for leaders of every topic the topology
    # uses: an InitProducerId that aborts a predecessor's transaction while one of its
    # partitions has no leader would drop that partition's marker (a hanging transaction).
    prod = (KafkaWorkerProducer(settings.bootstrap_servers, settings.kafka, txn_id,
                                topics=[w.name for w in wanted(topology, settings)])
            if exactly_once else producer(settings))
    retry = retry_topic_of(topology, node.name, ns)
    batch = None
    if node.batch is not None:
        reader = KafkaTopicReader(settings.bootstrap_servers, settings.kafka)
        batch = BatchRunner(topology=topology.name, node=name, spec=node.batch, cursors_topic=settings.cursors_topic,
                            load=lambda: read_cursor_changes(reader, settings.cursors_topic, topology=topology.name, node=name))
    parked = None
    if node.on_failure == "park_key":
        parked = blocking_keys(KafkaTopicReader(settings.bootstrap_servers, settings.kafka), settings.trash_topic,
                               topology=topology.name, node=name)
    processor = NodeProcessor(
        topology, node, namespace=ns, producer=prod, trash_topic=settings.trash_topic,
        hop_limit=settings.hop_limit, stop=stop, retry_topic=retry, batch=batch, parked=parked,
        limiter=limits.get(node.limit) if node.limit else None,
    )
    consumer = KafkaConsumer(settings.bootstrap_servers, group, settings.kafka)
    topics = [node.input_topic(ns)] + ([retry] if retry else [])
    return Worker(processor, consumer, prod, topics=topics, settings=settings.runtime, stop=stop, retry_topic=retry,
                  transactions=prod if isinstance(prod, KafkaWorkerProducer) else None,
                  status_topic=_status_topic(settings, f"{topology.name}/{name}"),
                  transactional_id=txn_id if exactly_once else None)


def _status_topic(settings: Settings, origin: str) -> str | None:
    """The status topic if it exists. Records for a missing topic would wait in the producer
    until they fail, stalling every flush of the commit path (and failing a transaction)."""
    topic = settings.status_topic
    try:
        if topic in admin(settings, timeout=5.0).topics([topic]):
            return topic
        log.warning("%s: no status topic %s (kstream topics apply creates it): kstream lag shows no in-flight",
                    origin, topic)
    except KstreamError as exc:
        log.warning("%s: cannot check for the status topic %s (%s): no status published", origin, topic, exc)
    return None


Rebuild = Callable[[Worker], Worker]
"""Builds a replacement for a failed exactly-once worker (same node, same ``transactional.id``)."""


def run_workers(workers: Sequence[Worker], stop: threading.Event, rebuild: Rebuild | None = None) -> bool:
    """Run every worker on its own thread until ``stop`` is set or one fails.

    Returns True when all stopped cleanly. A failing worker stops the others: a process runs
    all of its nodes or none (a supervisor restarts it). Except an exactly-once worker whose
    transaction failed in a way a new producer can recover from (aborted, or in doubt after a
    timeout, e.g. during a broker restart): with ``rebuild``, it is replaced in place; the new
    one waits for the cluster (``runtime.broker_outage_timeout``), fences the old producer and
    resumes from the group's committed offsets.
    """
    errors: list[BaseException] = []
    current = list(workers)

    def target(i: int) -> None:
        while True:
            worker = current[i]
            try:
                worker.run()
                return
            except BrokerError as exc:
                if rebuild is None or worker.transactional_id is None or not exc.retryable or stop.is_set():
                    fail(worker, exc)
                    return
                log.warning("%s: %s; replacing its producer (transactional.id %s, new epoch) and resuming from "
                            "the last committed offsets", worker.name, exc, worker.transactional_id)
                try:
                    current[i] = rebuild(worker)
                except BaseException as again:  # noqa: BLE001  (reported below, after the others stop)
                    fail(worker, again)
                    return
            except BaseException as exc:  # noqa: BLE001  (reported below, after the others stop)
                fail(worker, exc)
                return

    def fail(worker: Worker, exc: BaseException) -> None:
        errors.append(exc)
        log.error("worker %s failed: %s", worker.name, exc)
        stop.set()

    threads = [threading.Thread(target=target, args=(i,), name=f"kstream-poll-{w.name}") for i, w in enumerate(workers)]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.2)
    limiters: dict[int, Limiter] = {id(lim): lim for w in current if (lim := w.processor.limiter) is not None}
    for lim in limiters.values():
        lim.close()  # leave the limits group: the other processes take the share over
    if errors:
        raise errors[0]
    return all(w.state is State.STOPPED for w in current)


class HangingMonitor:
    """Watches the last stable offsets of a topology's topics on a daemon thread and says
    loudly (an ERROR line with the remedy command) when one hangs (:mod:`kstream.txns`).
    ``hanging`` is the current set, for health checks and metrics. Best effort: a check that
    cannot reach the cluster is skipped (the worker reports outages itself)."""

    def __init__(self, client: KafkaAdmin, topics: Sequence[str], *, interval: float, after: float,
                 stop: threading.Event) -> None:
        self._client = client
        self._topics = list(topics)
        self._interval = interval
        self._stop = stop
        self._watch = HangingWatch(after)
        self._thread = threading.Thread(target=self._run, name="kstream-hanging-watch", daemon=True)

    @property
    def hanging(self) -> list[Hanging]:
        return list(self._watch.hanging.values())

    def start(self) -> HangingMonitor:
        self._thread.start()
        return self

    def check(self, now: float | None = None) -> None:
        """One observation (the thread calls it every ``interval``)."""
        now = time.monotonic() if now is None else now
        new, gone = self._watch.observe(self._client.stable_offsets(self._topics), now)
        for h in new:
            log.error("%s", h.line(now))
        for h in gone:
            log.warning("transaction on %s[%d] at offset %d is no longer hanging", h.topic, h.partition, h.offset)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.check()
            except KstreamError as exc:
                log.debug("hanging-transaction check skipped: %s", exc)


def hanging_monitor(topology: Topology, settings: Settings, stop: threading.Event) -> HangingMonitor:
    """A (not yet started) :class:`HangingMonitor` over every topic ``topology`` reads or writes."""
    rt = settings.runtime
    return HangingMonitor(admin(settings, timeout=min(10.0, rt.hanging_check_interval)),
                          [w.name for w in wanted(topology, settings)],
                          interval=rt.hanging_check_interval, after=rt.hanging_after, stop=stop)


def trash_store(settings: Settings, *, batch_size: int = 500) -> TrashStore:
    """The Trash tools' store: a ``read_committed`` reader and one transactional producer whose
    stable id (``{ns}.trash-tool``) lets each run fence an earlier, killed one."""
    def transactional() -> KafkaTransactionalProducer:
        return KafkaTransactionalProducer(settings.bootstrap_servers, settings.kafka, f"{settings.namespace}.trash-tool")

    return TrashStore(settings.trash_topic, KafkaTopicReader(settings.bootstrap_servers, settings.kafka), transactional,
                      batch_size=batch_size)


class ReceiptProducer(KafkaProducer):
    """A producer that keeps where each acknowledged record landed, for tools that print it
    (``kstream start``). Positions are known once :meth:`flush` returned."""

    def __init__(self, bootstrap: str, kafka: dict[str, str]) -> None:
        self.written: list[TopicPartition] = []
        super().__init__(bootstrap, kafka, **{"delivery.report.only.error": "false"})

    def _on_delivery(self, err: Any, msg: Any) -> None:
        super()._on_delivery(err, msg)
        if err is None:
            with self._lock:
                self.written.append(TopicPartition(msg.topic(), msg.partition(), msg.offset()))


def receipt_producer(settings: Settings) -> ReceiptProducer:
    return ReceiptProducer(settings.bootstrap_servers, dict(settings.kafka))


def cursor_reader(settings: Settings) -> KafkaTopicReader:
    return KafkaTopicReader(settings.bootstrap_servers, settings.kafka)


def status_reader(settings: Settings) -> KafkaTopicReader:
    """Reads ``{ns}.status`` (:func:`kstream.runtime.status.in_flight_by_node`)."""
    return KafkaTopicReader(settings.bootstrap_servers, settings.kafka)


def check_client_settings(settings: Settings) -> None:
    """:class:`ConfigError` (one line) when librdkafka refuses a property of ``settings.kafka``."""
    check_properties(settings.kafka)
