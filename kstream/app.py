"""The composition root: the one place that picks concrete classes and wires a worker."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from kstream.config import Settings
from kstream.kafka.confluent import KafkaAdmin, KafkaConsumer, KafkaProducer, KafkaTopicReader, KafkaTransactionalProducer
from kstream.naming import group_id
from kstream.provision import retry_topic_of
from kstream.runtime.processor import NodeProcessor
from kstream.runtime.worker import State, Worker
from kstream.topology import Topology
from kstream.trash_store import TrashStore

log = logging.getLogger("kstream")


def admin(settings: Settings, *, timeout: float = 10.0) -> KafkaAdmin:
    return KafkaAdmin(settings.bootstrap_servers, settings.kafka, timeout=timeout)


def producer(settings: Settings) -> KafkaProducer:
    return KafkaProducer(settings.bootstrap_servers, settings.kafka)


def build_worker(topology: Topology, name: str, settings: Settings, stop: threading.Event) -> Worker:
    """A worker for node ``name``: its own consumer (group ``{ns}.{topology}.{node}``) and producer."""
    node = topology.get(name)
    ns = settings.namespace
    prod = producer(settings)
    retry = retry_topic_of(topology, node.name, ns)
    processor = NodeProcessor(
        topology, node, namespace=ns, producer=prod, trash_topic=settings.trash_topic,
        hop_limit=settings.hop_limit, stop=stop, retry_topic=retry,
    )
    consumer = KafkaConsumer(settings.bootstrap_servers, group_id(ns, topology.name, name), settings.kafka)
    topics = [node.input_topic(ns)] + ([retry] if retry else [])
    return Worker(processor, consumer, prod, topics=topics, settings=settings.runtime, stop=stop, retry_topic=retry)


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

    threads = [threading.Thread(target=target, args=(w,), name=f"kstream-poll-{w.name}") for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.2)
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
