"""Worker status records: what ``kstream lag`` cannot see from outside (messages in flight).

Every worker publishes, at most every :data:`STATUS_EVERY` seconds and on its commit path (never
per message), one small record to the compacted ``{ns}.status`` topic, keyed
``worker/{topology}/{node}/{worker-id}`` (the ``worker/`` prefix leaves the topic's other keys,
e.g. workflow status, to others). A clean stop writes a tombstone for the key; a killed worker's
last record simply ages out: readers count only records younger than :data:`LIVE_FOR` seconds.

Status is best effort: a failure to publish is logged and the worker goes on.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kstream.codecs import from_json, to_json
from kstream.kafka.port import Producer, latest_by_key
from kstream.types import Record

log = logging.getLogger("kstream.worker")

STATUS_EVERY = 2.0
"""Seconds between two status records of one worker (at most one per commit)."""
LIVE_FOR = 10.0
"""Seconds a status record counts as a live worker's."""
PREFIX = "worker/"


def status_key(topology: str, node: str, worker_id: str) -> str:
    return f"{PREFIX}{topology}/{node}/{worker_id}"


class StatusReporter:
    """Publishes one worker's status records with the worker's own producer (in exactly-once
    mode, inside the open transaction: the worker commits it). Called from the poll thread only;
    no method raises."""

    def __init__(self, producer: Producer, topic: str, topology: str, node: str, *,
                 every: float = STATUS_EVERY, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.topic = topic
        self.key = status_key(topology, node, uuid.uuid4().hex)
        self.written = False
        """A record was produced since the worker last cleared this (its transaction must commit)."""
        self._producer = producer
        self._key = self.key.encode()
        self._every = every
        self._clock = clock
        self._wall = wall
        self._next = 0.0
        self._stopped = False

    def publish(self, state: str, in_flight: int, processed: int) -> None:
        """Produce a status record if the last one is older than ``every``."""
        now = self._clock()
        if self._stopped or now < self._next:
            return
        self._next = now + self._every
        value = to_json({"in_flight": in_flight, "processed": processed, "time": int(self._wall() * 1000), "state": state})
        self._produce(value.encode())

    def stop(self) -> None:
        """A clean stop: the tombstone; nothing is published after it."""
        if not self._stopped:
            self._stopped = True
            self._produce(None)

    def owns(self, error: str) -> bool:
        """Whether a delivery error line of the producer is about a status record."""
        return error.startswith(f"delivery to {self.topic} failed")

    def _produce(self, value: bytes | None) -> None:
        try:
            self._producer.produce(self.topic, value, self._key, None)
            self.written = True
        except Exception as exc:  # noqa: BLE001  (status is best effort: never stops a worker)
            log.warning("%s: publishing status to %s failed: %s", self.key, self.topic, exc)


@dataclass(frozen=True)
class WorkerStatus:
    topology: str
    node: str
    worker: str
    in_flight: int
    processed: int
    time: int
    state: str


def live_workers(records: Iterable[Record], *, now_ms: int, live_for: float = LIVE_FOR) -> list[WorkerStatus]:
    """The latest status of every worker that reported in the last ``live_for`` seconds.

    ``records`` are a status topic read from the beginning (per partition in offset order, as
    :meth:`kstream.kafka.port.TopicReader.read_compacted` returns them): the last record of a
    key wins, a tombstone removes it. Keys outside ``worker/`` and unreadable values are skipped.
    """
    prefix = PREFIX.encode()
    result = []
    for raw, rec in latest_by_key(records).items():
        if not raw.startswith(prefix):
            continue
        key, value = raw.decode(errors="replace"), rec.value()
        parts = key[len(PREFIX):].split("/")
        if value is None or len(parts) != 3:
            continue
        try:
            data: Any = from_json(value)
            status = WorkerStatus(parts[0], parts[1], parts[2], int(data["in_flight"]), int(data["processed"]),
                                  int(data["time"]), str(data["state"]))
        except (ValueError, TypeError, KeyError) as exc:
            log.debug("unreadable status %s: %s", key, exc)
            continue
        if now_ms - status.time <= live_for * 1000:
            result.append(status)
    return result


def in_flight_by_node(records: Iterable[Record], topology: str, *, now_ms: int,
                      live_for: float = LIVE_FOR) -> dict[str, int]:
    """Messages in flight per node of ``topology``, summed over its live workers; a node
    without a live worker is missing."""
    result: dict[str, int] = {}
    for s in live_workers(records, now_ms=now_ms, live_for=live_for):
        if s.topology == topology:
            result[s.node] = result.get(s.node, 0) + s.in_flight
    return result
