"""Lag of a topology's nodes: queue depth (consumer lag), rates from two samples, the bottleneck.

Shared by ``kstream lag`` and the operator console (which keeps the previous sample between
polls, so its rates need no sleep), and the same reading as the workers'
``kstream_consumer_lag_records`` / ``kstream_committed_offset`` metrics (:func:`node_lag`), so all
show the same figures (per partition: the group's committed offset and the end offset; the lag
is :func:`kstream.metrics.partition_lag` of the two).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from kstream.kafka.port import Admin, GroupLag
from kstream.metrics import partition_lag
from kstream.naming import group_id
from kstream.provision import input_topics
from kstream.topology import Topology


@dataclass(frozen=True)
class Sample:
    """One node's partitions at one moment."""

    at: float
    parts: list[GroupLag]

    @property
    def end(self) -> int:
        return sum(p.end for p in self.parts)

    @property
    def committed(self) -> int:
        # No commit yet: the group starts at the beginning (auto.offset.reset=earliest). Counted
        # as offset 0, so lag is an upper bound where retention already deleted the start.
        return sum(p.committed or 0 for p in self.parts)

    @property
    def lag(self) -> int:
        return sum(partition_lag(p.committed, p.end) for p in self.parts)


@dataclass(frozen=True)
class NodeLag:
    node: str
    group: str
    topics: list[str]
    first: Sample
    last: Sample | None
    in_flight: int | None = None
    """Summed over the node's live workers (status younger than LIVE_FOR); None: none reports."""

    @property
    def lag(self) -> int:
        return (self.last or self.first).lag

    def rate(self, what: str) -> float | None:
        if self.last is None or self.last.at <= self.first.at:
            return None
        delta = self.last.end - self.first.end if what == "in" else self.last.committed - self.first.committed
        return max(0, delta) / (self.last.at - self.first.at)


def node_topics(topology: Topology, name: str, namespace: str) -> list[str]:
    """The topics a node's group reads: its input, its retry topic, its replay topic (kstream.provision)."""
    return input_topics(topology, name, namespace)


def node_lag(admin: Admin, topology: Topology, name: str, namespace: str) -> list[GroupLag]:
    """Per partition of the node's topics, committed and end offsets of ``{ns}.{topology}.{node}``.
    Raises :class:`kstream.errors.BrokerUnavailable` when no broker answers."""
    group = group_id(namespace, topology.name, name)
    return [part for topic in node_topics(topology, name, namespace) for part in admin.lag(group, topic)]


def targets(topology: Topology, namespace: str) -> list[tuple[str, str, list[str]]]:
    """(node, group, topics read) of every node, in topology order."""
    return [(name, group_id(namespace, topology.name, name), node_topics(topology, name, namespace))
            for name in topology.order()]


def sample(client: Admin, topology: Topology, namespace: str) -> list[NodeLag]:
    """One sample of every node (no rates: ``last`` is None)."""
    return [NodeLag(n, g, t, Sample(time.monotonic(), node_lag(client, topology, n, namespace)), None)
            for n, g, t in targets(topology, namespace)]


def since(previous: list[NodeLag], now: list[NodeLag]) -> list[NodeLag]:
    """``now`` with rates over the time since ``previous`` (same topology)."""
    before = {n.node: n.first for n in previous}
    return [replace(n, first=before[n.node], last=n.first) if n.node in before else n for n in now]


def measure(client: Admin, topology: Topology, namespace: str, interval: float) -> list[NodeLag]:
    """Lag of every node (topology order), with rates over ``interval`` seconds (0: no rates)."""
    started = time.monotonic()
    first = sample(client, topology, namespace)
    if interval <= 0:
        return first
    time.sleep(max(0.0, started + interval - time.monotonic()))  # the interval itself: rates need two samples
    return since(first, sample(client, topology, namespace))


def bottleneck(nodes: list[NodeLag]) -> str | None:
    """The node with the largest lag, if any node lags at all (the first of equals)."""
    worst = max(nodes, key=lambda n: n.lag, default=None)
    return worst.node if worst is not None and worst.lag > 0 else None


def with_in_flight(nodes: list[NodeLag], in_flight: dict[str, int]) -> list[NodeLag]:
    return [replace(n, in_flight=in_flight.get(n.node)) for n in nodes]
