"""The composition root: the one place that picks concrete classes and wires a worker."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from kstream.avro_topics import encoders, registry_of, with_avro_decoder
from kstream.batch import BatchRunner, CursorView
from kstream.config import Settings
from kstream.errors import AccessDenied, BrokerError, ConfigError, KstreamError
from kstream.kafka.confluent import (
    KafkaAckProducer,
    KafkaAdmin,
    KafkaConsumer,
    KafkaProducer,
    KafkaTopicReader,
    KafkaTopicTail,
    KafkaTransactionalProducer,
    KafkaWorkerProducer,
    check_properties,
)
from kstream.kafka.port import TopicPartition
from kstream.limits import GlobalRateLimiter, Limiter
from kstream.metrics import Metrics
from kstream.naming import group_id
from kstream.provision import input_topics, retry_topic_of, wanted
from kstream.runtime.health import ClusterWatch, Health, HttpEndpoint
from kstream.runtime.processor import NodeProcessor
from kstream.runtime.worker import State, Worker
from kstream.topology import Topology
from kstream.tracing import Tracing, otel_tracing
from kstream.trash import blocking_keys
from kstream.trash_store import TrashStore
from kstream.txns import Hanging, HangingWatch
from kstream.workflows.declare import ORCHESTRATOR, WorkflowTopology
from kstream.workflows.engine import bind_workflow

log = logging.getLogger("kstream")


def admin(settings: Settings, *, timeout: float = 10.0) -> KafkaAdmin:
    return KafkaAdmin(settings.bootstrap_servers, settings.client_properties(), timeout=timeout)


def producer(settings: Settings, kafka: dict[str, str] | None = None) -> KafkaProducer:
    return KafkaProducer(settings.bootstrap_servers, settings.client_properties() if kafka is None else kafka)


def client_id(name: str) -> str:
    """``client.id`` of a process's client: what it is for, where it runs (shows in broker logs,
    quotas and ``kafka-consumer-groups --describe``)."""
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())[:40]
    return f"{name}.{host}.{os.getpid()}"


def _with_client_id(settings: Settings, name: str) -> dict[str, str]:
    return {"client.id": client_id(name), **settings.client_properties()}  # a configured client.id wins


def limiter(service: str, settings: Settings) -> GlobalRateLimiter:
    """The rate limiter of ``service`` (``settings.limits``), coordinated through Kafka."""
    def claims_producer() -> KafkaProducer:
        # No linger: a claim's acknowledgement starts the clock of rule 2 (kstream.shares).
        return KafkaProducer(settings.bootstrap_servers, _with_client_id(settings, f"{settings.namespace}.limits.{service}"),
                             **{"linger.ms": "0"})

    def tail(topic: str) -> KafkaTopicTail:
        return KafkaTopicTail(settings.bootstrap_servers, settings.client_properties(), topic)

    return GlobalRateLimiter(service, settings.limits[service], namespace=settings.namespace,
                             producer=claims_producer, tail=tail)


def build_worker(topology: Topology, name: str, settings: Settings, stop: threading.Event,
                 limiters: dict[str, GlobalRateLimiter] | None = None, *, metrics: Metrics | None = None,
                 tracing: Tracing | None = None, transactional_id: str | None = None) -> Worker:
    """A worker for node ``name``: its own consumer (group ``{ns}.{topology}.{node}``) and producer.

    Workers built with the same ``limiters`` dict share one rate limiter per service (one
    member of the service's limit per process); :func:`run_workers` closes them at the end.
    With ``metrics`` the node counts into ``metrics.node(topology, name)``; with ``tracing``
    each attempt of a message runs in a span (:func:`tracing_of`). ``transactional_id``: reuse
    a failed worker's (exactly-once), so the new producer fences it.
    """
    ns = settings.namespace
    if isinstance(topology, WorkflowTopology):  # its nodes' handlers need the namespace (kstream.workflows)
        bind_workflow(topology, namespace=ns, trash_topic=settings.trash_topic, reader=cursor_reader(settings),
                      producer=lambda: producer(settings), stop=stop, orchestrator=name == ORCHESTRATOR)
    node = topology.get(name)
    limits = {} if limiters is None else limiters
    if node.limit is not None and node.limit not in limits:
        if node.limit not in settings.limits:
            raise ConfigError(f"node {topology.name}.{name} has limit={node.limit!r} but settings define no limits.{node.limit}")
        limits[node.limit] = limiter(node.limit, settings)
    group = group_id(ns, topology.name, name)
    kafka = _with_client_id(settings, group)
    exactly_once = topology.processing_of(node) == "exactly_once"
    # Exactly-once: a transactional producer per worker; a unique id, because fencing of a
    # zombie comes from the consumer group generation sent with the offsets (KIP-447).
    txn_id = transactional_id or f"{group}.{uuid.uuid4().hex[:12]}"
    # Before its first transaction the producer waits for leaders of every topic the topology
    # uses: an InitProducerId that aborts a predecessor's transaction while one of its
    # partitions has no leader would drop that partition's marker (a hanging transaction).
    prod = (KafkaWorkerProducer(settings.bootstrap_servers, kafka, txn_id, topics=[w.name for w in wanted(topology, settings)])
            if exactly_once else producer(settings, kafka))
    retry = retry_topic_of(topology, node.name, ns)
    batch = None
    if node.batch is not None:
        cursors = CursorView(KafkaTopicReader(settings.bootstrap_servers, settings.client_properties()).follow(settings.cursors_topic),
                             topology=topology.name, node=name)
        batch = BatchRunner(topology=topology.name, node=name, spec=node.batch, cursors_topic=settings.cursors_topic,
                            load=cursors.lookup)
    parked = None
    if node.on_failure == "park_key":
        parked = blocking_keys(KafkaTopicReader(settings.bootstrap_servers, settings.client_properties()), settings.trash_topic,
                               topology=topology.name, node=name)
    schema_encoders = None
    if any(n.avro is not None or n.to_avro is not None for n in topology.nodes.values()):
        registry = registry_of(settings)
        node = with_avro_decoder(node, ns, registry)
        schema_encoders = encoders(topology, node, settings, registry)
    processor = NodeProcessor(
        topology, node, namespace=ns, encoders=schema_encoders, producer=prod, trash_topic=settings.trash_topic,
        hop_limit=settings.hop_limit, stop=stop, retry_topic=retry, batch=batch, parked=parked,
        limiter=limits.get(node.limit) if node.limit else None,
        stats=metrics.node(topology.name, name) if metrics is not None else None, tracing=tracing,
    )
    consumer = KafkaConsumer(settings.bootstrap_servers, group, kafka)
    topics = input_topics(topology, name, ns)
    return Worker(processor, consumer, prod, topics=topics, settings=settings.runtime, stop=stop, retry_topic=retry,
                  transactions=prod if isinstance(prod, KafkaWorkerProducer) else None,
                  status_topic=_status_topic(settings, f"{topology.name}/{name}"),
                  transactional_id=txn_id if exactly_once else None)


def tracing_of(settings: Settings) -> Tracing | None:
    """OpenTelemetry tracing unless ``observe.tracing`` is off or ``kstream[otel]`` is not installed."""
    return None if settings.observe.tracing == "off" else otel_tracing()


class Observer:
    """The HTTP endpoint of a worker process and the cluster probe behind its lag metrics and
    readiness (:mod:`kstream.runtime.health`). ``close`` stops both."""

    def __init__(self, topology: Topology, workers: Sequence[Worker], settings: Settings, metrics: Metrics,
                 stop: threading.Event) -> None:
        port = settings.observe.http_port
        if port is None:
            raise ConfigError("observe.http_port is not set: no HTTP endpoint to serve")
        self.watch = ClusterWatch(admin(settings, timeout=max(5.0, settings.observe.probe_interval)), topology,
                                  [w.processor.node.name for w in workers], settings.namespace, metrics,
                                  interval=settings.observe.probe_interval)
        self.health = Health(workers, stop, self.watch, liveness_timeout=settings.runtime.liveness_timeout)
        try:
            self.endpoint = HttpEndpoint(metrics, self.health, host=settings.observe.http_host, port=port)
        except OSError as exc:
            raise ConfigError(f"cannot serve HTTP on {settings.observe.http_host}:{port}: {exc.strerror}") from None
        self.watch.start()
        self.endpoint.start()

    @property
    def port(self) -> int:
        return self.endpoint.port

    def close(self) -> None:
        self.watch.close()
        self.endpoint.close()


def _status_topic(settings: Settings, origin: str) -> str | None:
    """The status topic if it exists. Records for a missing topic would wait in the producer
    until they fail, stalling every flush of the commit path (and failing a transaction)."""
    topic = settings.status_topic
    try:
        if admin(settings, timeout=5.0).exists(topic, needed="WRITE"):
            return topic
        log.warning("%s: no status topic %s (kstream topics apply creates it): kstream lag shows no in-flight",
                    origin, topic)
    except AccessDenied:
        raise  # a failed login or a missing ACL: the node cannot run as planned, say which
    except KstreamError as exc:
        log.warning("%s: cannot check for the status topic %s (%s): no status published", origin, topic, exc)
    return None


Rebuild = Callable[[Worker], Worker]
"""Builds a replacement for a failed exactly-once worker (same node, same ``transactional.id``)."""


def run_workers(workers: list[Worker], stop: threading.Event, rebuild: Rebuild | None = None) -> bool:
    """Run every worker on its own thread until ``stop`` is set or one fails.

    Returns True when all stopped cleanly. A failing worker stops the others: a process runs
    all of its nodes or none (a supervisor restarts it). Except an exactly-once worker whose
    transaction failed in a way a new producer can recover from (aborted, or in doubt after a
    timeout, e.g. during a broker restart): with ``rebuild``, it is replaced in place; the new
    one waits for the cluster (``runtime.broker_outage_timeout``), fences the old producer and
    resumes from the group's committed offsets.
    """
    errors: list[BaseException] = []
    current = workers  # a replaced worker takes its predecessor's place (health checks read the list)

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

    limiters: dict[int, Limiter] = {id(lim): lim for w in workers if (lim := w.processor.limiter) is not None}
    for lim in limiters.values():
        lim.start()  # read the others' claims before the first record: it calls sooner
    threads = [threading.Thread(target=target, args=(i,), name=f"kstream-poll-{w.name}") for i, w in enumerate(workers)]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.2)
    limiters = {id(lim): lim for w in current if (lim := w.processor.limiter) is not None}
    for lim in limiters.values():
        lim.close()  # a claim of 0: the other processes take the share over
    if errors:
        raise errors[0]
    return all(w.state is State.STOPPED for w in current)


class HangingMonitor:
    """Watches the last stable offsets of a topology's topics on a daemon thread and says
    loudly (an ERROR line with the remedy command) when one hangs (:mod:`kstream.txns`).
    ``hanging`` is the current set, for health checks and metrics. Best effort: a check that
    cannot reach the cluster is skipped (the worker reports outages itself)."""

    def __init__(self, client: KafkaAdmin, topics: Sequence[str], *, interval: float, after: float,
                 stop: threading.Event, metrics: Metrics | None = None) -> None:
        self._client = client
        self._metrics = metrics
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
            if self._metrics is not None:
                self._metrics.set_hanging(h.topic, h.partition, h.offset)
        for h in gone:
            log.warning("transaction on %s[%d] at offset %d is no longer hanging", h.topic, h.partition, h.offset)
            if self._metrics is not None:
                self._metrics.set_hanging(h.topic, h.partition, None)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.check()
            except KstreamError as exc:
                log.debug("hanging-transaction check skipped: %s", exc)


def hanging_monitor(topology: Topology, settings: Settings, stop: threading.Event,
                    metrics: Metrics | None = None) -> HangingMonitor:
    """A (not yet started) :class:`HangingMonitor` over every topic ``topology`` reads or writes;
    with ``metrics``, hanging partitions also show as ``kstream_hanging_transaction_*`` gauges."""
    rt = settings.runtime
    return HangingMonitor(admin(settings, timeout=min(10.0, rt.hanging_check_interval)),
                          [w.name for w in wanted(topology, settings)],
                          interval=rt.hanging_check_interval, after=rt.hanging_after, stop=stop, metrics=metrics)


def trash_store(settings: Settings, *, batch_size: int = 500, timeout: float = 60.0) -> TrashStore:
    """The Trash tools' store: a ``read_committed`` reader and one transactional producer whose
    stable id (``{ns}.trash-tool``) lets each run fence an earlier, killed one."""
    def transactional() -> KafkaTransactionalProducer:
        return KafkaTransactionalProducer(settings.bootstrap_servers, settings.client_properties(), f"{settings.namespace}.trash-tool")

    def existing(names: Sequence[str]) -> list[str]:
        return list(admin(settings).topics(names))

    return TrashStore(settings.trash_topic, KafkaTopicReader(settings.bootstrap_servers, settings.client_properties()), transactional,
                      namespace=settings.namespace, existing=existing, batch_size=batch_size, timeout=timeout)


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
    return ReceiptProducer(settings.bootstrap_servers, settings.client_properties())


def cursor_reader(settings: Settings) -> KafkaTopicReader:
    return KafkaTopicReader(settings.bootstrap_servers, settings.client_properties())


def status_reader(settings: Settings) -> KafkaTopicReader:
    """Reads ``{ns}.status`` (:func:`kstream.runtime.status.in_flight_by_node`)."""
    return KafkaTopicReader(settings.bootstrap_servers, settings.client_properties())


def ack_producer(settings: Settings) -> KafkaAckProducer:
    """The HTTP API's producer: acks=all, and a callback per record (a start is answered once stored)."""
    return KafkaAckProducer(settings.bootstrap_servers, settings.client_properties())


def tail_consumer(settings: Settings, purpose: str) -> KafkaConsumer:
    """A consumer in a group of its own (nothing committed): it reads all partitions from the start."""
    group = f"{settings.namespace}.{purpose}.{uuid.uuid4().hex[:12]}"
    return KafkaConsumer(settings.bootstrap_servers, group, settings.client_properties())


def check_client_settings(settings: Settings) -> None:
    """:class:`ConfigError` (one line) when librdkafka refuses a property of ``settings.kafka``."""
    check_properties(settings.client_properties())
