"""The composition root: the one place that picks concrete classes and wires a worker."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Sequence
from typing import Any

from kstream.batch import BatchRunner, read_cursor_changes
from kstream.config import Settings
from kstream.errors import ConfigError, KstreamError
from kstream.kafka.confluent import (
    KafkaAdmin,
    KafkaConsumer,
    KafkaProducer,
    KafkaTopicReader,
    KafkaTopicTail,
    KafkaTransactionalProducer,
    KafkaWorkerProducer,
)
from kstream.kafka.port import TopicPartition
from kstream.limits import GlobalRateLimiter, Limiter
from kstream.naming import group_id
from kstream.provision import retry_topic_of
from kstream.runtime.processor import NodeProcessor
from kstream.runtime.worker import State, Worker
from kstream.topology import Topology
from kstream.trash import blocking_keys
from kstream.trash_store import TrashStore

log = logging.getLogger("kstream")


def admin(settings: Settings, *, timeout: float = 10.0) -> KafkaAdmin:
    return KafkaAdmin(settings.bootstrap_servers, settings.kafka, timeout=timeout)


def producer(settings: Settings) -> KafkaProducer:
    return KafkaProducer(settings.bootstrap_servers, settings.kafka)


def limiter(service: str, settings: Settings) -> GlobalRateLimiter:
    """The rate limiter of ``service`` (``settings.limits``), coordinated through Kafka."""
    def claims_producer() -> KafkaProducer:
        # No linger: a claim's acknowledgement starts the clock of rule 2 (kstream.shares).
        return KafkaProducer(settings.bootstrap_servers, settings.kafka, **{"linger.ms": "0"})

    def tail(topic: str) -> KafkaTopicTail:
        return KafkaTopicTail(settings.bootstrap_servers, settings.kafka, topic)

    return GlobalRateLimiter(service, settings.limits[service], namespace=settings.namespace,
                             producer=claims_producer, tail=tail)


def build_worker(topology: Topology, name: str, settings: Settings, stop: threading.Event,
                 limiters: dict[str, GlobalRateLimiter] | None = None) -> Worker:
    """A worker for node ``name``: its own consumer (group ``{ns}.{topology}.{node}``) and producer.

    Workers built with the same ``limiters`` dict share one rate limiter per service (one
    member of its limits group per process); :func:`run_workers` closes them at the end.
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
    prod = (KafkaWorkerProducer(settings.bootstrap_servers, settings.kafka, f"{group}.{uuid.uuid4().hex[:12]}")
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
                  status_topic=_status_topic(settings, f"{topology.name}/{name}"))


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


def run_workers(workers: Sequence[Worker], stop: threading.Event) -> bool:
    """Run every worker on its own thread until ``stop`` is set or one fails.

    Returns True when all stopped cleanly. A failing worker stops the others: a process runs
    all of its nodes or none (a supervisor restarts it).
    """
    errors: list[BaseException] = []

    def target(worker: Worker) -> None:
        try:
            worker.run()
        except BaseException as exc:  # noqa: BLE001  (reported below, after the others stop)
            errors.append(exc)
            log.error("worker %s failed: %s", worker.name, exc)
            stop.set()

    limiters: dict[int, Limiter] = {id(lim): lim for w in workers if (lim := w.processor.limiter) is not None}
    for lim in limiters.values():
        lim.start()  # read the others' claims before the first record: it calls sooner
    threads = [threading.Thread(target=target, args=(w,), name=f"kstream-poll-{w.name}") for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.2)
    for lim in limiters.values():
        lim.close()  # a claim of 0: the other processes take the share over
    if errors:
        raise errors[0]
    return all(w.state is State.STOPPED for w in workers)


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
