"""What the console reads and keeps between requests: the topology, cached Trash entries, the
previous lag sample (for rates), bulk jobs. Blocking Kafka calls: run them in a thread."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from kstream.api.server import Api
from kstream.app import admin, status_reader, trash_store
from kstream.config import Settings
from kstream.graph import shape
from kstream.kafka.confluent import KafkaAdmin
from kstream.lag import NodeLag, bottleneck, sample, since
from kstream.runtime.status import LIVE_FOR, in_flight_by_node
from kstream.topology import Topology
from kstream.trash import TrashEntry
from kstream.trash_store import Selection

TRASH_FRESH = 3.0
"""Seconds a read of the Trash topic is reused: pages and the topology's counts share it."""


@dataclass
class Job:
    """A bulk replay or discard running in a thread of its own."""

    id: str
    verb: Literal["replay", "discard"]
    total: int
    done: int = 0
    state: Literal["running", "done", "failed"] = "running"
    error: str | None = None


@dataclass
class Console:
    topology: Topology
    settings: Settings
    workflows: Api | None = None
    jobs: dict[str, Job] = field(default_factory=dict)
    _trash: tuple[float, list[TrashEntry]] | None = None
    _lag: list[NodeLag] = field(default_factory=list)
    _admin: KafkaAdmin | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- the Trash ---------------------------------------------------------------------------

    def trash(self, *, fresh: bool = False) -> list[TrashEntry]:
        """Every unresolved entry, oldest failure first (a read at most TRASH_FRESH old)."""
        with self._lock:
            cached = self._trash
            if cached is not None and not fresh and time.monotonic() - cached[0] < TRASH_FRESH:
                return cached[1]
            entries = trash_store(self.settings).entries()
            self._trash = (time.monotonic(), entries)
            return entries

    def forget_trash(self) -> None:
        with self._lock:
            self._trash = None

    def start_job(self, verb: Literal["replay", "discard"], selection: Selection, total: int) -> Job:
        job = Job(uuid.uuid4().hex[:12], verb, total)
        self.jobs[job.id] = job

        def progress(done: int, total: int) -> None:
            job.done, job.total = done, total

        def run() -> None:
            store = trash_store(self.settings)
            try:
                act = store.replay if verb == "replay" else store.discard
                done = act(selection, progress=progress)
                job.done = job.total = len(done)
                job.state = "done"
            except Exception as exc:  # noqa: BLE001  (shown on the job's page: the operator decides)
                job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
            finally:
                store.close()
                self.forget_trash()

        threading.Thread(target=run, name=f"kstream-console-{verb}", daemon=True).start()
        return job

    # -- the topology ------------------------------------------------------------------------

    def topology_data(self) -> dict[str, Any]:
        """The graph (the data of ``kstream graph``) and, per node, lag, rates, in-flight, Trash count."""
        ns = self.settings.namespace
        with self._lock:
            if self._admin is None:
                self._admin = admin(self.settings, timeout=10.0)
            client = self._admin
        now = sample(client, self.topology, ns)
        with self._lock:
            nodes = since(self._lag, now) if self._lag else now
            self._lag = now
        records = status_reader(self.settings).read_compacted(self.settings.status_topic, 10.0)
        in_flight = in_flight_by_node(records, self.topology.name, now_ms=int(time.time() * 1000), live_for=LIVE_FOR)
        trashed: dict[str, int] = {}
        for e in self.trash():
            if e.topology == self.topology.name:
                trashed[e.node] = trashed.get(e.node, 0) + 1
        worst = bottleneck(nodes)
        drawn = shape(self.topology, ns)
        return {
            "topology": self.topology.name, "bottleneck": worst,
            "boxes": [{"id": i, "label": label, "kind": kind, "name": drawn.names[i]} for i, (label, kind) in drawn.labels.items()],
            "edges": [{"from": a, "to": b, "label": label} for a, b, label in drawn.edges],
            "nodes": {n.node: {"lag": n.lag, "rate_in": n.rate("in"), "rate_out": n.rate("out"),
                               "in_flight": in_flight.get(n.node), "trash": trashed.get(n.node, 0),
                               "bottleneck": n.node == worst} for n in nodes},
        }
