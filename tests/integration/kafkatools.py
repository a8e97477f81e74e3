"""Test helpers that talk to the real broker with plain confluent-kafka (not through kstream)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from kstream.app import build_worker, run_workers
from kstream.config import Settings
from kstream.provision import apply, plan
from kstream.runtime.worker import Worker
from kstream.topology import Topology


def create_topics(bootstrap: str, *names: str, partitions: int = 3) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    for f in futures.values():
        f.result(30)


def provision(topology: Topology, settings: Settings) -> None:
    from kstream.app import admin

    client = admin(settings)
    apply(plan(topology, settings, client, create_external=True), client)


def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes | str | None, Any]], *, raw: bool = False) -> int:
    """Produce (key, value) pairs; values JSON-encoded unless ``raw``. Returns the count."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True})
    n = 0
    for key, value in records:
        data = value if raw else orjson.dumps(value)
        while True:
            try:
                p.produce(topic, data, key)
                break
            except BufferError:
                p.poll(0.1)
        n += 1
        if n % 10000 == 0:
            p.poll(0)
    assert p.flush(60) == 0
    return n


def consume(bootstrap: str, topic: str, *, count: int = 0, timeout: float = 60.0, committed: bool = False,
            settle: float = 0.0, until: Callable[[list[Any]], bool] | None = None) -> list[Any]:
    """Read ``topic`` from the beginning until ``count`` messages (or ``until(messages)``, or the
    deadline); then keep reading ``settle`` seconds more to catch extra (duplicate) messages."""
    c = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "reader-" + uuid.uuid4().hex, "auto.offset.reset": "earliest",
        "enable.auto.commit": False, "isolation.level": "read_committed" if committed else "read_uncommitted",
    })
    c.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    settle_until: float | None = None
    try:
        while time.monotonic() < deadline:
            for m in c.consume(1000, 0.2):
                if m.error() is None:
                    out.append(m)
            done = until(out) if until is not None else len(out) >= count
            if done and settle_until is None:
                settle_until = time.monotonic() + settle
            if settle_until is not None and time.monotonic() >= settle_until:
                break
    finally:
        c.close()
    return out


def wait_until(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


@contextmanager
def running(topology: Topology, settings: Settings, nodes: list[str] | None = None) -> Iterator[list[Worker]]:
    """Run workers in this process (threads) for the duration of the block; stop them cleanly."""
    stop = threading.Event()
    workers = [build_worker(topology, n, settings, stop) for n in (nodes or topology.order())]
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run_workers(workers, stop)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    try:
        yield workers
    finally:
        stop.set()
        t.join(60)
        assert not t.is_alive(), "workers did not stop within 60 s"
    if errors:
        raise errors[0]


def jsons(messages: list[Any]) -> list[Any]:
    return [orjson.loads(m.value()) for m in messages]
